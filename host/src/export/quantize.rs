//! Static int8 quantization of our graphs, in the forms tract executes in integer arithmetic.
//!
//! tract does not fuse DequantizeLinear → Conv → QuantizeLinear into an integer kernel (the convolution
//! would run in float and pay for the conversions), so the weighted layers are written as its integer
//! operators: convolutions as QLinearConv, dense layers as QLinearMatMul. Weights are int8, symmetric,
//! one scale per output channel; activations are int8, asymmetric, one scale per tensor, calibrated by
//! running the float graph over a sample of training images with every weighted layer's input and
//! output as extra outputs. Both are int8, as tract and onnxruntime want the two types consistent.
//!
//! A ReLU right after a convolution is folded into the convolution's output range: with the real zero
//! at −128, negatives saturate to it. Everything else stays in float between DequantizeLinear and
//! QuantizeLinear: pools (max commutes with the monotone dequantization, so they may also run on the
//! int8 values), BatchNorm affines, spatial transformers (localization net and sampler), the last dense
//! layer (the logits or code, where rounding would move assignments for a few hundred multiplications'
//! saving) and DAC's constraint layer.

use anyhow::Context;

use super::onnx::{conv_attributes, GraphBuilder, Input, Layer, TractRunner, Wired};

/// The smallest and largest value seen at one point of the graph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub lo: f32,
    pub hi: f32,
}

impl Range {
    fn of(values: &[f32]) -> Range {
        values.iter().fold(Range { lo: f32::INFINITY, hi: f32::NEG_INFINITY }, |r, &v| Range {
            lo: r.lo.min(v),
            hi: r.hi.max(v),
        })
    }
}

/// Per-tensor parameters of int8 values: real = scale · (q − zero_point).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i8,
}

impl QParams {
    /// The parameters that cover `range`, widened to hold 0 exactly (zero padding must stay zero).
    pub fn covering(range: Range) -> QParams {
        let (lo, hi) = (range.lo.min(0.0), range.hi.max(0.0));
        let scale = ((hi - lo) / 255.0).max(1e-8);
        let zero_point = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i8;
        QParams { scale, zero_point }
    }

    pub fn quantize(&self, x: f32) -> i8 {
        (x / self.scale + self.zero_point as f32).round().clamp(-128.0, 127.0) as i8
    }

    pub fn dequantize(&self, q: i8) -> f32 {
        self.scale * (q as f32 - self.zero_point as f32)
    }
}

/// What calibration saw: per layer, the ranges of a weighted layer's input and output.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// How many images were run.
    pub images: usize,
    ranges: Vec<Option<(Range, Range)>>,
}

/// Runs the float graph of `layers` over the `n` inputs in `values` and records the range of every
/// weighted layer's input and output.
pub fn calibrate(layers: &[Layer], input: &Input, values: &[f32], n: usize) -> anyhow::Result<Calibration> {
    let mut g = GraphBuilder::default();
    let Wired { output, taps, .. } = g.network(input.name.clone(), layers);
    let mut named: Vec<(String, String)> = vec![(output, "output".into())];
    for (i, tap) in taps.iter().enumerate() {
        if let Some(tap) = tap {
            named.push((tap.input.clone(), format!("tap_{i}_input")));
            named.push((tap.output.clone(), format!("tap_{i}_output")));
        }
    }
    let outputs: Vec<(&str, &str, Option<Vec<usize>>)> =
        named.iter().map(|(value, name)| (value.as_str(), name.as_str(), None)).collect();
    let graph = super::onnx::encode(&g.finish(input, &outputs, "stdac calibration"));
    let results = TractRunner::new(&graph, &input.dims)?
        .run(values, n)
        .context("tract cannot run the calibration graph")?;
    let mut seen = results[1..].iter().map(|r| Range::of(r));
    let ranges =
        taps.iter().map(|tap| tap.as_ref().map(|_| (seen.next().unwrap(), seen.next().unwrap()))).collect();
    Ok(Calibration { images: n, ranges })
}

/// A value of the graph being built: float, or int8 with its parameters.
enum Value {
    Float(String),
    Int8(String, QParams),
}

/// Wires `layers` after the float value `x` with the weighted layers in int8 (all but the last dense
/// layer), and returns the float output and each transformer's θ.
pub fn int8_network(g: &mut GraphBuilder, x: String, layers: &[Layer], calibration: &Calibration) -> Wired {
    assert_eq!(calibration.ranges.len(), layers.len(), "calibrated on another network");
    let last_dense = layers.iter().rposition(|l| matches!(l, Layer::Dense { .. }));
    let mut thetas = Vec::new();
    let mut value = Value::Float(x);
    let mut i = 0;
    while i < layers.len() {
        let ranges = calibration.ranges[i];
        value = match (&layers[i], ranges) {
            (Layer::Conv { weight, bias, channels, kernel, stride, padding }, Some((input, output))) => {
                let (x, qx) = to_int8(g, value, QParams::covering(input));
                // A following ReLU becomes the output's range: negatives saturate at the real zero.
                let relu = matches!(layers.get(i + 1), Some(Layer::Relu));
                let qy = QParams::covering(if relu { Range { lo: 0.0, hi: output.hi } } else { output });
                let per_filter = channels[0] * kernel[0] * kernel[1];
                let (w, scales) = per_channel(weight, channels[1], |j| j / per_filter);
                let dims = [channels[1], channels[0], kernel[0], kernel[1]];
                let w = g.constant_i8("qconv_w", &dims, &w);
                let b: Vec<i32> =
                    bias.iter().zip(&scales).map(|(b, s)| (b / (qx.scale * s)).round() as i32).collect();
                let b = g.constant_i32("qconv_b", &[channels[1]], &b);
                let [xs, xz] = scalars(g, qx);
                let [ws, wz] = weight_scales(g, &scales);
                let [ys, yz] = scalars(g, qy);
                let attributes = conv_attributes(*kernel, *stride, *padding);
                let y = g.node("QLinearConv", &[&x, &xs, &xz, &w, &ws, &wz, &ys, &yz, &b], attributes);
                i += relu as usize;
                Value::Int8(y, qy)
            }
            (Layer::Dense { weight, bias, inputs, outputs }, Some((input, output)))
                if Some(i) != last_dense =>
            {
                let (x, qx) = to_int8(g, value, QParams::covering(input));
                let qy = QParams::covering(output);
                let (w, scales) = per_channel(weight, *outputs, |j| j % outputs);
                let w = g.constant_i8("qdense_w", &[*inputs, *outputs], &w);
                let [xs, xz] = scalars(g, qx);
                let [ws, wz] = weight_scales(g, &scales);
                let [ys, yz] = scalars(g, qy);
                let y = g.node("QLinearMatMul", &[&x, &xs, &xz, &w, &ws, &wz, &ys, &yz], Vec::new());
                // QLinearMatMul has no bias: it is added in float.
                let y = g.node("DequantizeLinear", &[&y, &ys, &yz], Vec::new());
                let b = g.constant("dense_b", &[*outputs], bias);
                Value::Float(g.node("Add", &[&y, &b], Vec::new()))
            }
            // Reshaping and max pooling commute with dequantization: they stay on the int8 values.
            (layer @ (Layer::Flatten | Layer::MaxPool { .. }), _) if matches!(value, Value::Int8(..)) => {
                let Value::Int8(x, q) = value else { unreachable!() };
                Value::Int8(g.float_op(&x, layer), q)
            }
            (layer, _) => {
                let x = to_float(g, value);
                let mut wired = g.network(x, std::slice::from_ref(layer));
                thetas.append(&mut wired.thetas);
                Value::Float(wired.output)
            }
        };
        i += 1;
    }
    Wired { output: to_float(g, value), thetas, taps: Vec::new() }
}

fn to_int8(g: &mut GraphBuilder, value: Value, q: QParams) -> (String, QParams) {
    match value {
        Value::Int8(x, q) => (x, q),
        Value::Float(x) => {
            let [s, z] = scalars(g, q);
            (g.node("QuantizeLinear", &[&x, &s, &z], Vec::new()), q)
        }
    }
}

fn to_float(g: &mut GraphBuilder, value: Value) -> String {
    match value {
        Value::Float(x) => x,
        Value::Int8(x, q) => {
            let [s, z] = scalars(g, q);
            g.node("DequantizeLinear", &[&x, &s, &z], Vec::new())
        }
    }
}

/// A per-tensor scale and zero point as scalar constants.
fn scalars(g: &mut GraphBuilder, q: QParams) -> [String; 2] {
    [g.constant("scale", &[], &[q.scale]), g.constant_i8("zero_point", &[], &[q.zero_point])]
}

/// Per-channel weight scales and their zero points (all 0: symmetric).
fn weight_scales(g: &mut GraphBuilder, scales: &[f32]) -> [String; 2] {
    let n = scales.len();
    [g.constant("w_scale", &[n], scales), g.constant_i8("w_zero_point", &[n], &vec![0; n])]
}

/// Symmetric int8 weights, one scale per output channel; `channel(j)` is the channel weight `j` feeds.
fn per_channel(weight: &[f32], channels: usize, channel: impl Fn(usize) -> usize) -> (Vec<i8>, Vec<f32>) {
    let mut largest = vec![0f32; channels];
    for (j, w) in weight.iter().enumerate() {
        largest[channel(j)] = largest[channel(j)].max(w.abs());
    }
    let scales: Vec<f32> = largest.iter().map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 }).collect();
    let q = weight
        .iter()
        .enumerate()
        .map(|(j, w)| (w / scales[channel(j)]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_cover_their_range_and_hold_zero_exactly() {
        let q = QParams::covering(Range { lo: -1.0, hi: 3.0 });
        assert!((q.scale - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(q.dequantize(q.quantize(0.0)), 0.0);
        assert_eq!(q.quantize(-1.0), -128);
        assert_eq!(q.quantize(3.0), 127);
        // After a ReLU the range starts at 0, which sits at −128.
        let relu = QParams::covering(Range { lo: 0.0, hi: 2.0 });
        assert_eq!(relu.zero_point, -128);
        assert_eq!(relu.quantize(-5.0), -128);
        // A range that misses 0 is widened to include it.
        assert_eq!(QParams::covering(Range { lo: 1.0, hi: 2.0 }).quantize(0.0), -128);
    }

    #[test]
    fn weights_take_one_scale_per_output_channel() {
        // Dense [2 inputs, 2 outputs]: column 0 holds (1, −0.25), column 1 (0.005, 0.02).
        let (q, scales) = per_channel(&[1.0, 0.005, -0.25, 0.02], 2, |j| j % 2);
        assert_eq!(scales, vec![1.0 / 127.0, 0.02 / 127.0]);
        assert_eq!(q, vec![127, 32, -32, 127]);
        // A channel of zeros keeps a usable scale.
        assert_eq!(per_channel(&[0.0, 0.0], 1, |_| 0).1, vec![1.0]);
    }
}

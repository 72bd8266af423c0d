//! Writing our networks as standard ONNX graphs, built directly from tract-onnx's protobuf types.
//!
//! A model describes itself as a list of [`Layer`]s (weights as plain row-major `f32`s); [`graph`] turns
//! that list into an ONNX model with one input and the named outputs. The graph uses opset 17 and only
//! core operators, so any conforming runtime (tract on the board, onnxruntime on a desktop) loads it.

use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto, AttributeProto,
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// The ONNX operator set the graphs are written for.
pub const OPSET: i64 = 17;
/// ONNX IR version 8 goes with opset 17.
const IR_VERSION: i64 = 8;

/// One step of a network, as the exporter sees it. Weights are plain row-major `f32`s in burn's layouts;
/// BatchNorm is already folded into its neighbour or written as a [`Layer::ChannelAffine`].
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// [N, …] → [N, product of the rest].
    Flatten,
    /// y = x·W + b with `weight` [inputs, outputs] row-major (burn's layout).
    Dense {
        weight: Vec<f32>,
        bias: Vec<f32>,
        inputs: usize,
        outputs: usize,
    },
    /// A 2-D convolution, `weight` [out, in, kh, kw] row-major, symmetric zero padding.
    Conv {
        weight: Vec<f32>,
        bias: Vec<f32>,
        channels: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    },
    Relu,
    Tanh,
    /// Max over `size` × `size` windows with stride `size`, no padding (a ragged edge is dropped).
    MaxPool {
        size: usize,
    },
    /// y[n, c, …] = x[n, c, …]·scale[c] + shift[c]: a BatchNorm in evaluation that no neighbour can
    /// absorb exactly (it follows a pool and precedes a zero-padded convolution).
    ChannelAffine {
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    /// A spatial transformer on a [N, C, height, width] map: θ = identity + `localization`(x), as
    /// [N, 2, 3]; the map is resampled through θ (bilinear, zeros outside, −1 and 1 at the corner
    /// pixels' centres). There is no AffineGrid in tract, so the grid is a MatMul of a constant base
    /// grid by θᵀ, fed to GridSample (opset ≥ 16).
    SpatialTransformer {
        localization: Vec<Layer>,
        height: usize,
        width: usize,
    },
    /// DAC's constraint layer on [N, k]: exp(x − max x), then L2-normalised per row.
    Constraint,
}

/// The graph's input.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub name: String,
    /// Dimensions after the batch, which is left free (`N`).
    pub dims: Vec<usize>,
}

/// Where a weighted layer's calibration values are read: its input, and its output before any
/// activation (a dense layer's before its bias, as QLinearMatMul produces it).
#[derive(Debug, Clone, PartialEq)]
pub struct Tap {
    pub input: String,
    pub output: String,
}

/// A network wired into a graph.
pub struct Wired {
    /// The last layer's output.
    pub output: String,
    /// θ [N, 2, 3] of each spatial transformer, in order.
    pub thetas: Vec<String>,
    /// One per layer: its tap when it is a Conv or a Dense.
    pub taps: Vec<Option<Tap>>,
}

/// Builds a graph, naming every value uniquely.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    next: usize,
}

impl GraphBuilder {
    fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
    }

    /// A constant of shape `dims` from its little-endian bytes.
    fn initializer(&mut self, hint: &str, dims: &[usize], data_type: DataType, raw_data: Vec<u8>) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type as i32,
            raw_data,
            ..Default::default()
        });
        name
    }

    /// A float constant of shape `dims`.
    pub fn constant(&mut self, hint: &str, dims: &[usize], values: &[f32]) -> String {
        assert_eq!(dims.iter().product::<usize>(), values.len(), "{hint}: shape and values disagree");
        self.initializer(hint, dims, DataType::Float, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// An int64 constant (shapes for Reshape).
    pub fn constant_i64(&mut self, hint: &str, values: &[i64]) -> String {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(hint, &[values.len()], DataType::Int64, bytes)
    }

    /// An int8 constant of shape `dims` (an empty `dims` for a scalar).
    pub fn constant_i8(&mut self, hint: &str, dims: &[usize], values: &[i8]) -> String {
        assert_eq!(dims.iter().product::<usize>(), values.len(), "{hint}: shape and values disagree");
        self.initializer(hint, dims, DataType::Int8, values.iter().map(|&v| v as u8).collect())
    }

    /// An int32 constant of shape `dims` (quantized biases).
    pub fn constant_i32(&mut self, hint: &str, dims: &[usize], values: &[i32]) -> String {
        assert_eq!(dims.iter().product::<usize>(), values.len(), "{hint}: shape and values disagree");
        self.initializer(hint, dims, DataType::Int32, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// Adds a node of `op` on `inputs` and returns the name of its one output.
    pub fn node(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        let output = self.fresh(&op.to_lowercase());
        self.nodes.push(NodeProto {
            name: format!("{op}_{}", self.next),
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            attribute: attributes,
            ..Default::default()
        });
        output
    }

    /// Gives the value `from` the graph-level name `to` (an output's name), through an Identity node.
    pub fn rename(&mut self, from: &str, to: &str) {
        self.nodes.push(NodeProto {
            name: format!("output_{to}"),
            op_type: "Identity".into(),
            input: vec![from.to_string()],
            output: vec![to.to_string()],
            ..Default::default()
        });
    }

    /// Wires `layers` after the value `x` in float and returns the last value's name.
    pub fn layers(&mut self, x: String, layers: &[Layer]) -> String {
        self.network(x, layers).output
    }

    /// Wires `layers` after the value `x` in float, keeping θ of each transformer and each weighted
    /// layer's tap.
    pub fn network(&mut self, mut x: String, layers: &[Layer]) -> Wired {
        let (mut thetas, mut taps) = (Vec::new(), Vec::new());
        for layer in layers {
            let input = x.clone();
            let (output, tap) = match layer {
                Layer::Dense { weight, bias, inputs, outputs } => {
                    let w = self.constant("dense_w", &[*inputs, *outputs], weight);
                    let b = self.constant("dense_b", &[*outputs], bias);
                    let product = self.node("MatMul", &[&x, &w], Vec::new());
                    let output = self.node("Add", &[&product, &b], Vec::new());
                    (output, Some(Tap { input, output: product }))
                }
                Layer::Conv { weight, bias, channels, kernel, stride, padding } => {
                    let w =
                        self.constant("conv_w", &[channels[1], channels[0], kernel[0], kernel[1]], weight);
                    let b = self.constant("conv_b", &[channels[1]], bias);
                    let output =
                        self.node("Conv", &[&x, &w, &b], conv_attributes(*kernel, *stride, *padding));
                    (output.clone(), Some(Tap { input, output }))
                }
                Layer::SpatialTransformer { localization, height, width } => {
                    let (output, theta) = self.spatial_transformer(&x, localization, *height, *width);
                    thetas.push(theta);
                    (output, None)
                }
                other => (self.float_op(&x, other), None),
            };
            x = output;
            taps.push(tap);
        }
        Wired { output: x, thetas, taps }
    }

    /// A layer without weights to quantize, in float.
    pub fn float_op(&mut self, x: &str, layer: &Layer) -> String {
        match layer {
            Layer::Flatten => self.node("Flatten", &[x], vec![int("axis", 1)]),
            Layer::Relu => self.node("Relu", &[x], Vec::new()),
            Layer::Tanh => self.node("Tanh", &[x], Vec::new()),
            Layer::MaxPool { size } => {
                let s = *size as i64;
                self.node("MaxPool", &[x], vec![ints("kernel_shape", &[s, s]), ints("strides", &[s, s])])
            }
            Layer::ChannelAffine { scale, shift } => {
                let c = scale.len();
                let a = self.constant("affine_scale", &[1, c, 1, 1], scale);
                let b = self.constant("affine_shift", &[1, c, 1, 1], shift);
                let scaled = self.node("Mul", &[x, &a], Vec::new());
                self.node("Add", &[&scaled, &b], Vec::new())
            }
            Layer::Constraint => {
                let max = self.node("ReduceMax", &[x], vec![ints("axes", &[1]), int("keepdims", 1)]);
                let shifted = self.node("Sub", &[x, &max], Vec::new());
                let e = self.node("Exp", &[&shifted], Vec::new());
                let norm = self.node("ReduceL2", &[&e], vec![ints("axes", &[1]), int("keepdims", 1)]);
                self.node("Div", &[&e, &norm], Vec::new())
            }
            Layer::Dense { .. } | Layer::Conv { .. } | Layer::SpatialTransformer { .. } => {
                self.layers(x.to_string(), std::slice::from_ref(layer))
            }
        }
    }

    /// The resampled map and θ of a spatial transformer on `x`.
    fn spatial_transformer(
        &mut self,
        x: &str,
        localization: &[Layer],
        h: usize,
        w: usize,
    ) -> (String, String) {
        let delta = self.layers(x.to_string(), localization); // [N, 6]
        let identity = self.constant("stn_identity", &[6], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        let flat_theta = self.node("Add", &[&delta, &identity], Vec::new());
        let theta_shape = self.constant_i64("theta_shape", &[-1, 2, 3]);
        let theta = self.node("Reshape", &[&flat_theta, &theta_shape], Vec::new());
        // Each output pixel's (x, y, 1), times θᵀ: where it samples from, [N, h·w, 2].
        let base = self.constant("stn_base_grid", &[h * w, 3], &base_grid(h, w));
        let theta_t = self.node("Transpose", &[&theta], vec![ints("perm", &[0, 2, 1])]);
        let points = self.node("MatMul", &[&base, &theta_t], Vec::new());
        let grid_shape = self.constant_i64("grid_shape", &[-1, h as i64, w as i64, 2]);
        let grid = self.node("Reshape", &[&points, &grid_shape], Vec::new());
        let attributes =
            vec![string("mode", "bilinear"), string("padding_mode", "zeros"), int("align_corners", 1)];
        (self.node("GridSample", &[x, &grid], attributes), theta)
    }

    /// The model: `input` (float, batch first), and each `(value, name, dims after the batch)` as a
    /// float output called `name` (dims `None`: left for the runtime to infer).
    pub fn finish(
        mut self,
        input: &Input,
        outputs: &[(&str, &str, Option<Vec<usize>>)],
        doc: &str,
    ) -> ModelProto {
        for (value, name, _) in outputs {
            self.rename(value, name);
        }
        let graph = GraphProto {
            name: "stdac".into(),
            node: self.nodes,
            initializer: self.initializers,
            input: vec![value_info(&input.name, Some(&input.dims))],
            output: outputs.iter().map(|(_, name, dims)| value_info(name, dims.as_deref())).collect(),
            ..Default::default()
        };
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            producer_name: "stdac".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: Some(graph),
            ..Default::default()
        }
    }
}

pub fn conv_attributes(kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> Vec<AttributeProto> {
    let [ph, pw] = padding.map(|p| p as i64);
    vec![
        ints("kernel_shape", &kernel.map(|k| k as i64)),
        ints("strides", &stride.map(|s| s as i64)),
        ints("pads", &[ph, pw, ph, pw]),
    ]
}

/// Rows (x, y, 1) of every pixel of an h × w map, row-major, with −1 and 1 at the corner pixels'
/// centres (align_corners = 1, as the trainer samples).
fn base_grid(h: usize, w: usize) -> Vec<f32> {
    let coordinate = |i: usize, n: usize| if n > 1 { -1.0 + 2.0 * i as f32 / (n - 1) as f32 } else { 0.0 };
    (0..h).flat_map(|i| (0..w).flat_map(move |j| [coordinate(j, w), coordinate(i, h), 1.0])).collect()
}

/// A float tensor of shape [N, dims…], N free, or of unknown shape.
fn value_info(name: &str, dims: Option<&[usize]>) -> ValueInfoProto {
    let batch = tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimParam("N".into())),
        ..Default::default()
    };
    let shape = dims.map(|dims| {
        let rest = dims.iter().map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
            ..Default::default()
        });
        TensorShapeProto { dim: std::iter::once(batch).chain(rest).collect() }
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: value, ..Default::default() }
}

pub fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// The model's protobuf bytes.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    prost::Message::encode_to_vec(model)
}

/// An ONNX graph loaded by tract and run over many inputs, a chunk at a time (one optimised plan per
/// chunk size, so any number of inputs runs with at most two plans).
pub struct TractRunner {
    model: tract_onnx::prelude::InferenceModel,
    input_dims: Vec<usize>,
    plans: std::collections::HashMap<usize, std::sync::Arc<tract_onnx::prelude::TypedSimplePlan>>,
}

/// Inputs per tract run.
const CHUNK: usize = 250;

impl TractRunner {
    /// `input_dims`: one input's dimensions, after the batch.
    pub fn new(graph: &[u8], input_dims: &[usize]) -> anyhow::Result<TractRunner> {
        use tract_onnx::prelude::Framework;
        let model = tract_onnx::onnx().model_for_read(&mut &graph[..])?;
        Ok(TractRunner { model, input_dims: input_dims.to_vec(), plans: Default::default() })
    }

    /// Runs the `n` inputs held in `values` and returns each output, flattened and concatenated over
    /// the inputs.
    pub fn run(&mut self, values: &[f32], n: usize) -> anyhow::Result<Vec<Vec<f32>>> {
        use tract_onnx::prelude::*;
        let per_input: usize = self.input_dims.iter().product();
        anyhow::ensure!(
            values.len() == n * per_input,
            "{} values for {n} inputs of {per_input}",
            values.len()
        );
        let mut outputs: Vec<Vec<f32>> = Vec::new();
        for (i, chunk) in values.chunks(CHUNK * per_input).enumerate() {
            let batch = chunk.len() / per_input;
            let mut shape = vec![batch];
            shape.extend(&self.input_dims);
            let plan = match self.plans.get(&batch) {
                Some(plan) => plan.clone(),
                None => {
                    let plan = self
                        .model
                        .clone()
                        .with_input_fact(0, f32::fact(&shape).into())?
                        .into_optimized()?
                        .into_runnable()?;
                    self.plans.insert(batch, plan.clone());
                    plan
                }
            };
            let input = Tensor::from_shape(&shape, chunk)?;
            let results = plan.run(tvec!(input.into()))?;
            if i == 0 {
                outputs = vec![Vec::new(); results.len()];
            }
            for (all, result) in outputs.iter_mut().zip(&results) {
                all.extend(result.cast_to::<f32>()?.to_plain_array_view::<f32>()?.iter().copied());
            }
        }
        Ok(outputs)
    }
}

/// Runs an ONNX model with tract on `batch` inputs of `input_dims` each (`values` holds them all) and
/// returns each output, flattened.
pub fn run_with_tract(
    graph: &[u8],
    input_dims: &[usize],
    batch: usize,
    values: Vec<f32>,
) -> anyhow::Result<Vec<Vec<f32>>> {
    TractRunner::new(graph, input_dims)?.run(&values, batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dense_and_convolutional_stack_runs_in_tract_as_computed_by_hand() {
        // 1 × 3 × 3 image → conv 1→2, 2×2 kernel, stride 1, no padding → relu → flatten (8) → dense 8→2.
        let conv_w = vec![1.0, 0.0, 0.0, 1.0, /* second filter */ 0.0, -1.0, 1.0, 0.0];
        let dense_w: Vec<f32> = (0..16).map(|i| (i % 3) as f32 - 1.0).collect();
        let layers = vec![
            Layer::Conv {
                weight: conv_w,
                bias: vec![0.5, -0.5],
                channels: [1, 2],
                kernel: [2, 2],
                stride: [1, 1],
                padding: [0, 0],
            },
            Layer::Relu,
            Layer::Flatten,
            Layer::Dense { weight: dense_w.clone(), bias: vec![0.0, 1.0], inputs: 8, outputs: 2 },
        ];
        let mut g = GraphBuilder::default();
        let out = g.layers("image".into(), &layers);
        let input = Input { name: "image".into(), dims: vec![1, 3, 3] };
        let model = g.finish(&input, &[(&out, "embedding", Some(vec![2]))], "test");
        let image: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let got = run_with_tract(&encode(&model), &[1, 3, 3], 1, image.clone()).unwrap();

        // By hand: filter 0 = x[i][j] + x[i+1][j+1] + 0.5; filter 1 = −x[i][j+1] + x[i+1][j] − 0.5.
        let x = |i: usize, j: usize| image[i * 3 + j];
        let mut features = Vec::new();
        for f in 0..2 {
            for i in 0..2 {
                for j in 0..2 {
                    let v = if f == 0 {
                        x(i, j) + x(i + 1, j + 1) + 0.5
                    } else {
                        -x(i, j + 1) + x(i + 1, j) - 0.5
                    };
                    features.push(v.max(0.0));
                }
            }
        }
        let expected: Vec<f32> = (0..2)
            .map(|o| (0..8).map(|i| features[i] * dense_w[i * 2 + o]).sum::<f32>() + [0.0, 1.0][o])
            .collect();
        assert_eq!(got.len(), 1);
        for (a, b) in got[0].iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "{:?} vs {expected:?}", got[0]);
        }
    }
}

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

/// One step of a network, as the exporter sees it.
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
}

/// The graph's input.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub name: String,
    /// Dimensions after the batch, which is left free (`N`).
    pub dims: Vec<usize>,
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

    /// A float constant of shape `dims`.
    pub fn constant(&mut self, hint: &str, dims: &[usize], values: &[f32]) -> String {
        assert_eq!(dims.iter().product::<usize>(), values.len(), "{hint}: shape and values disagree");
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
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

    /// Wires `layers` after the value `x` and returns the last value's name.
    pub fn layers(&mut self, mut x: String, layers: &[Layer]) -> String {
        for layer in layers {
            x = match layer {
                Layer::Flatten => self.node("Flatten", &[&x], vec![int("axis", 1)]),
                Layer::Dense { weight, bias, inputs, outputs } => {
                    let w = self.constant("dense_w", &[*inputs, *outputs], weight);
                    let b = self.constant("dense_b", &[*outputs], bias);
                    self.node("Gemm", &[&x, &w, &b], Vec::new())
                }
                Layer::Conv { weight, bias, channels, kernel, stride, padding } => {
                    let w =
                        self.constant("conv_w", &[channels[1], channels[0], kernel[0], kernel[1]], weight);
                    let b = self.constant("conv_b", &[channels[1]], bias);
                    let [ph, pw] = padding.map(|p| p as i64);
                    let attributes = vec![
                        ints("kernel_shape", &kernel.map(|k| k as i64)),
                        ints("strides", &stride.map(|s| s as i64)),
                        ints("pads", &[ph, pw, ph, pw]),
                    ];
                    self.node("Conv", &[&x, &w, &b], attributes)
                }
                Layer::Relu => self.node("Relu", &[&x], Vec::new()),
            };
        }
        x
    }

    /// The model: `input` (float, batch first), and each `(value, name, dims after the batch)` as a
    /// float output called `name`.
    pub fn finish(mut self, input: &Input, outputs: &[(&str, &str, Vec<usize>)], doc: &str) -> ModelProto {
        for (value, name, _) in outputs {
            self.rename(value, name);
        }
        let graph = GraphProto {
            name: "stdac".into(),
            node: self.nodes,
            initializer: self.initializers,
            input: vec![value_info(&input.name, &input.dims)],
            output: outputs.iter().map(|(_, name, dims)| value_info(name, dims)).collect(),
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

/// A float tensor of shape [N, dims…], N free.
fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    let batch = tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimParam("N".into())),
        ..Default::default()
    };
    let rest = dims.iter().map(|&d| tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
        ..Default::default()
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim: std::iter::once(batch).chain(rest).collect() }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: value, ..Default::default() }
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

/// Runs an ONNX model with tract on `batch` inputs of `input_dims` each (`values` holds them all) and
/// returns each output, flattened.
pub fn run_with_tract(
    graph: &[u8],
    input_dims: &[usize],
    batch: usize,
    values: Vec<f32>,
) -> anyhow::Result<Vec<Vec<f32>>> {
    use tract_onnx::prelude::*;
    let mut shape = vec![batch];
    shape.extend(input_dims);
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &graph[..])?
        .with_input_fact(0, f32::fact(&shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let input = tract_ndarray::ArrayD::from_shape_vec(shape, values)?;
    let outputs = plan.run(tvec!(Tensor::from(input).into()))?;
    outputs.iter().map(|o| Ok(o.to_plain_array_view::<f32>()?.iter().copied().collect())).collect()
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
        let model = g.finish(&input, &[(&out, "embedding", vec![2])], "test");
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

//! Tiny ONNX graphs for tests, written with tract-onnx's protobuf types. Shared by the unit tests
//! (through a `#[path]` module) and the integration tests, so both describe graphs the same way.

#![allow(dead_code)] // each test binary uses its own part

use tract_onnx::pb::{self, attribute_proto::AttributeType, tensor_proto::DataType};

/// A float value of shape `dims`; a negative dimension is the free batch `N`.
pub fn value(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(if d < 0 { Value::DimParam("N".into()) } else { Value::DimValue(d) }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A node of `op` from `inputs` to one `output`.
pub fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        name: output.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

/// A float constant.
pub fn floats(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
    assert_eq!(dims.iter().product::<i64>() as usize, values.len(), "{name}: shape and values disagree");
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: values.to_vec(),
        ..Default::default()
    }
}

/// An int64 constant (a Reshape's target shape).
pub fn int64s(name: &str, values: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: DataType::Int64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

pub fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

pub fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

pub fn string(name: &str, value: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// The encoded model (opset 17, IR version 8).
pub fn model(
    nodes: Vec<pb::NodeProto>,
    initializer: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
) -> Vec<u8> {
    let graph = pb::GraphProto {
        name: "test".into(),
        node: nodes,
        initializer,
        input: inputs,
        output: outputs,
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(graph),
        ..Default::default()
    };
    prost::Message::encode_to_vec(&model)
}

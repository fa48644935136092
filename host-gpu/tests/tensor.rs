//! Tensor models (ONNX, run with tract) made by scripts/make-tensor-models:
//! outputs against numpy's on the same inputs, the digits classifier's
//! held-out accuracy, what the model describes of its tensors, and calls
//! whose tensors do not fit the model refused before anything runs.

mod support;

use serde_json::Value;
use sovra_gpu::engine::{LoadError, MAX_TENSOR_ELEMENTS, TensorEngine};
use sovra_gpu::{InferenceError, ModelService, NamedTensor, TensorSpec, TensorType};
use support::{context, model_file};

fn load(name: &str) -> Option<(TensorEngine, Value)> {
    let path = model_file(&format!("{name}.onnx"))?;
    let reference = std::fs::read_to_string(path.with_extension("reference.json")).unwrap();
    Some((
        TensorEngine::load(name, &path).unwrap(),
        serde_json::from_str(&reference).unwrap(),
    ))
}

fn f32_tensor(name: &str, shape: &[u32], values: &[f32]) -> NamedTensor {
    NamedTensor {
        name: name.into(),
        shape: shape.to_vec(),
        element_type: TensorType::F32,
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn floats(tensor: &NamedTensor) -> Vec<f32> {
    assert_eq!(tensor.element_type, TensorType::F32);
    tensor
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The reference's tensor `name` under `side` ("inputs" or "outputs").
fn reference_tensor(reference: &Value, side: &str, name: &str) -> (Vec<u32>, Vec<f32>) {
    let tensor = &reference[side][name];
    let shape = tensor["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as u32);
    let data = tensor["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32);
    (shape.collect(), data.collect())
}

/// Runs `engine` on the reference's inputs and compares every output.
fn matches_reference(engine: &TensorEngine, reference: &Value) {
    let inputs: Vec<NamedTensor> = engine
        .descriptor()
        .inputs
        .iter()
        .map(|spec| {
            let (shape, data) = reference_tensor(reference, "inputs", &spec.name);
            f32_tensor(&spec.name, &shape, &data)
        })
        .collect();
    let outputs = engine.run_tensor(&context(), inputs).unwrap();
    assert_eq!(outputs.len(), engine.descriptor().outputs.len());
    for output in &outputs {
        let (shape, expected) = reference_tensor(reference, "outputs", &output.name);
        assert_eq!(output.shape, shape, "{}", output.name);
        let got = floats(output);
        let worst = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{}: off by {worst}", output.name);
    }
}

#[test]
fn the_digits_classifier_matches_numpy_and_its_held_out_accuracy() {
    let Some((engine, reference)) = load("digits") else {
        return;
    };
    let descriptor = engine.descriptor();
    assert_eq!(
        descriptor.inputs,
        [TensorSpec {
            name: "pixels".into(),
            element_type: TensorType::F32,
            shape: vec![None, Some(64)],
        }]
    );
    assert_eq!(descriptor.outputs[0].name, "probabilities");
    assert_eq!(descriptor.outputs[0].shape, [None, Some(10)]);
    matches_reference(&engine, &reference);

    // The whole held-out set in one batch: the accuracy numpy measured.
    let pixels: Vec<f32> = reference["test_pixels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_f64().unwrap() as f32)
        })
        .collect();
    let labels: Vec<u64> = reference["test_labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap())
        .collect();
    let batch = labels.len() as u32;
    let outputs = engine
        .run_tensor(
            &context(),
            vec![f32_tensor("pixels", &[batch, 64], &pixels)],
        )
        .unwrap();
    let probabilities = floats(&outputs[0]);
    let correct = probabilities
        .chunks_exact(10)
        .zip(&labels)
        .filter(|(row, label)| {
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            best as u64 == **label
        })
        .count();
    let accuracy = correct as f64 / labels.len() as f64;
    let expected = reference["accuracy"].as_f64().unwrap();
    assert!(
        (accuracy - expected).abs() < 1e-9,
        "{accuracy} against numpy's {expected}"
    );
}

#[test]
fn the_cartpole_policy_matches_numpy() {
    let Some((engine, reference)) = load("cartpole-policy") else {
        return;
    };
    assert_eq!(engine.descriptor().inputs[0].name, "observation");
    assert_eq!(engine.descriptor().outputs[0].name, "force");
    matches_reference(&engine, &reference);
}

#[test]
fn tensors_that_do_not_fit_the_model_are_invalid_input_naming_them() {
    let Some((engine, _)) = load("digits") else {
        return;
    };
    let pixels = |shape: &[u32]| {
        let n: u32 = shape.iter().product();
        f32_tensor("pixels", shape, &vec![1.0; n as usize])
    };
    let mut wrong_type = pixels(&[1, 64]);
    wrong_type.element_type = TensorType::I32;
    let mut short = pixels(&[2, 64]);
    short.data.truncate(100);
    let huge_batch = (MAX_TENSOR_ELEMENTS / 64 + 1) as u32;
    let mut renamed = pixels(&[1, 64]);
    renamed.name = "image".into();
    let cases: Vec<(Vec<NamedTensor>, &str)> = vec![
        (vec![], "takes 1 input"),
        (vec![pixels(&[1, 64]), pixels(&[1, 64])], "takes 1 input"),
        (vec![renamed], "`pixels`, which was not given"),
        (vec![wrong_type], "must be F32"),
        (
            vec![pixels(&[64])],
            "has shape [64]; the model takes [?, 64]",
        ),
        (vec![pixels(&[1, 63])], "the model takes [?, 64]"),
        (vec![pixels(&[0, 64])], "the model takes [?, 64]"),
        (vec![short], "is 512 bytes; 100 were given"),
        (
            vec![NamedTensor {
                data: Vec::new(),
                ..pixels(&[1, 64])
            }],
            "is 256 bytes; 0 were given",
        ),
        (
            vec![NamedTensor {
                name: "pixels".into(),
                shape: vec![huge_batch, 64],
                element_type: TensorType::F32,
                data: Vec::new(),
            }],
            "elements",
        ),
    ];
    for (inputs, expected) in cases {
        match engine.run_tensor(&context(), inputs) {
            Err(InferenceError::InvalidInput(why)) => {
                assert!(why.contains(expected), "{why:?} does not say {expected:?}")
            }
            other => panic!("expected invalid-input saying {expected:?}, got {other:?}"),
        }
    }
}

#[test]
fn a_file_that_is_not_onnx_is_refused_at_load_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.onnx");
    std::fs::write(&path, b"\x08\x07 not a protobuf of a model").unwrap();
    let error = TensorEngine::load("broken", &path).unwrap_err();
    assert!(matches!(error, LoadError::Onnx { .. }), "{error:?}");
    assert!(error.to_string().contains("broken.onnx"), "{error}");
}

#[test]
fn a_models_file_serves_tensor_models_to_the_tenants_it_names() {
    let Some(digits) = model_file("digits.onnx") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models.toml");
    std::fs::write(
        &models,
        format!(
            "[[model]]\nname = \"digits\"\npath = {digits:?}\nkind = \"tensor\"\ntenants = [\"acme\"]\n"
        ),
    )
    .unwrap();
    let registry = sovra_gpu::config::load_registry(&models).unwrap();
    let listed = registry.models_for_tenant("acme");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].inputs[0].name, "pixels");
    assert!(registry.models_for_tenant("globex").is_empty());

    std::fs::write(dir.path().join("junk.onnx"), b"junk").unwrap();
    std::fs::write(
        &models,
        "[[model]]\nname = \"junk\"\npath = \"junk.onnx\"\nkind = \"tensor\"\ntenants = \"all\"\n",
    )
    .unwrap();
    let error = sovra_gpu::config::load_registry(&models)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("junk") && error.contains("junk.onnx"),
        "{error}"
    );
}

#[test]
fn only_calls_expected_to_be_quick_run_on_the_callers_thread() {
    let Some((engine, _)) = load("digits") else {
        return;
    };
    let rows = |n: u32| vec![f32_tensor("pixels", &[n, 64], &vec![0.0; n as usize * 64])];
    // A batch of 60,000 images takes far past the budget on any machine.
    assert!(!engine.runs_quickly(&rows(60_000)));
    // One image is as quick as the run timed at load, or it is not; a
    // bigger batch is never quicker.
    if !engine.runs_quickly(&rows(1)) {
        assert!(!engine.runs_quickly(&rows(64)));
    }
}

//! A digit classifier written for wasi-nn the way its examples are (a WASI
//! command with a named model), knowing nothing of sovra.
//!
//! stdin: `MODEL PIXELS` (64 comma-separated values of an 8x8 image) runs
//! the model named MODEL and prints the most likely class; `load-bytes`
//! tries to hand the host model bytes instead; `hoard` (hostile) makes the
//! host hold ever more tensors. A failure prints the wasi-nn error code and
//! message to stderr and exits non-zero.

use std::io::Read;

wit_bindgen::generate!({
    path: "../../../runtime/wit-nn",
    world: "ml",
});

use wasi::nn::errors::Error;
use wasi::nn::graph::{ExecutionTarget, GraphEncoding, load, load_by_name};
use wasi::nn::tensor::{Tensor, TensorType};

fn fail(step: &str, error: Error, status: i32) -> ! {
    eprintln!("{step} failed: {:?}: {}", error.code(), error.data());
    std::process::exit(status)
}

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("stdin");
    let (model, pixels) = input.trim().split_once(' ').unwrap_or((input.trim(), ""));
    if model == "hoard" {
        let megabyte = vec![0u8; 1 << 20];
        let held: Vec<Tensor> = (0..1024)
            .map(|_| Tensor::new(&[1 << 18], TensorType::Fp32, &megabyte))
            .collect();
        println!("the host holds {} MiB of tensors", held.len());
        return;
    }
    if model == "load-bytes" {
        let weights = vec![0u8; 1024];
        match load(&[weights], GraphEncoding::Onnx, ExecutionTarget::Cpu) {
            Ok(_) => println!("loaded"),
            Err(error) => fail("load", error, 3),
        }
        return;
    }
    let graph = load_by_name(model).unwrap_or_else(|e| fail("load-by-name", e, 2));
    let context = graph
        .init_execution_context()
        .unwrap_or_else(|e| fail("init-execution-context", e, 2));
    let values: Vec<f32> = pixels
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim().parse().expect("pixel values are numbers"))
        .collect();
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensor = Tensor::new(&[1, values.len() as u32], TensorType::Fp32, &data);
    let outputs = context
        .compute(vec![("pixels".to_string(), tensor)])
        .unwrap_or_else(|e| fail("compute", e, 4));
    let (_, probabilities) = outputs
        .iter()
        .find(|(name, _)| name == "probabilities")
        .expect("the model gives probabilities");
    let probabilities: Vec<f32> = probabilities
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let class = (0..probabilities.len())
        .max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]))
        .expect("ten classes");
    println!("{class}");
}

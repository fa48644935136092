//! The block decoders against llama.cpp's Python `gguf` package
//! (vectors made by `scripts/reference/quant_vectors.py`).

use sovra_gpu::gguf::GgmlType;
use sovra_gpu::quant::dequantize;

#[test]
fn dequantization_matches_the_gguf_reference() {
    let text = include_str!("reference/quant_vectors.json");
    let vectors: serde_json::Value = serde_json::from_str(text).unwrap();
    let types = [
        ("F16", GgmlType::F16),
        ("BF16", GgmlType::Bf16),
        ("Q4_0", GgmlType::Q4_0),
        ("Q4_1", GgmlType::Q4_1),
        ("Q8_0", GgmlType::Q8_0),
        ("Q4_K", GgmlType::Q4K),
        ("Q6_K", GgmlType::Q6K),
    ];
    for (name, ty) in types {
        let case = &vectors[name];
        let hex = case["bytes"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let expected: Vec<f32> = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let mut out = vec![0.0f32; expected.len()];
        dequantize(ty, &bytes, &mut out);
        for (i, (got, want)) in out.iter().zip(&expected).enumerate() {
            let tolerance = 1e-6 * want.abs().max(1.0);
            assert!(
                (got - want).abs() <= tolerance,
                "{name}[{i}]: got {got}, reference {want}"
            );
        }
    }
}

//! Valid demo/test adapters with deterministic pseudo-random weights.

use std::io::Write;

use crate::rng::SplitMix64;
use crate::safetensors::serialize;

/// Hidden size of the test adapters' target modules.
const TEST_HIDDEN: u64 = 64;
const TEST_MODULES: [&str; 2] = ["q_proj", "v_proj"];

/// A valid `adapter_model.safetensors` for a rank-`r` LoRA adapter: F32 `lora_A`
/// (`[r, 64]`) and `lora_B` (`[64, r]`) for the `q_proj` and `v_proj` modules of layer 0,
/// with weights drawn deterministically from `seed` (`lora_B` non-zero, as after training).
pub fn make_test_safetensors(r: u32, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let mut uniform_bytes = |count: u64, scale: f64| -> Vec<u8> {
        (0..count).flat_map(|_| (((rng.next_f64() * 2.0 - 1.0) * scale) as f32).to_le_bytes()).collect()
    };
    let r = u64::from(r);
    let mut tensors = Vec::new();
    for module in TEST_MODULES {
        let prefix = format!("base_model.model.model.layers.0.self_attn.{module}");
        // PEFT's Kaiming-uniform bound for lora_A; a "trained" scale for lora_B.
        let a = uniform_bytes(r * TEST_HIDDEN, 1.0 / (TEST_HIDDEN as f64).sqrt());
        let b = uniform_bytes(TEST_HIDDEN * r, 0.05);
        tensors.push((format!("{prefix}.lora_A.weight"), "F32", vec![r, TEST_HIDDEN], a));
        tensors.push((format!("{prefix}.lora_B.weight"), "F32", vec![TEST_HIDDEN, r], b));
    }
    serialize(&tensors, &[("format", "pt")])
}

/// A PEFT `adapter_config.json` matching [`make_test_safetensors`].
pub fn make_test_adapter_config(r: u32, base_model: &str) -> String {
    serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": 2 * r,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": TEST_MODULES,
        "base_model_name_or_path": base_model,
    })
    .to_string()
}

/// A tar (or, with `gzip`, tar.gz) archive holding `adapter_model.safetensors` from
/// [`make_test_safetensors`] and `adapter_config.json` from [`make_test_adapter_config`].
/// Byte-for-byte deterministic.
pub fn make_test_archive(r: u32, seed: u64, base_model: &str, gzip: bool) -> Vec<u8> {
    let files = [
        ("adapter_config.json", make_test_adapter_config(r, base_model).into_bytes()),
        ("adapter_model.safetensors", make_test_safetensors(r, seed)),
    ];
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in &files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        builder.append_data(&mut header, name, data.as_slice()).expect("writing to a Vec cannot fail");
    }
    let tar_bytes = builder.into_inner().expect("writing to a Vec cannot fail");
    if !gzip {
        return tar_bytes;
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&tar_bytes).expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

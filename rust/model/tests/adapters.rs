//! Adapter loading (tar and tar.gz), every rejection path, and the adapter's real effect
//! on sampling.

use std::io::Write;

use sail_model::{
    decode_text, encode_text, make_test_adapter_config, make_test_archive, make_test_safetensors, parse_adapter_config, Adapter,
    AdapterError, NgramModel, SamplingParams,
};

const BASE: &str = "sail-ngram";

fn config_json(r: u32) -> String {
    make_test_adapter_config(r, BASE)
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A safetensors file with a hand-written header and `data_len` zero bytes of data.
fn safetensors_with_header(header: &str, data_len: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.resize(out.len() + data_len, 0);
    out
}

fn load(safetensors: &[u8], r: u32) -> Result<Adapter, AdapterError> {
    Adapter::from_archive(&tar_of(&[("adapter_model.safetensors", safetensors)]), &config_json(r), BASE)
}

#[test]
fn valid_tar_and_tar_gz_archives_load() {
    for gzip in [false, true] {
        let archive = make_test_archive(16, 7, BASE, gzip);
        assert_eq!(archive.starts_with(&[0x1f, 0x8b]), gzip);
        let adapter = Adapter::from_archive(&archive, &config_json(16), BASE).unwrap();
        assert_eq!(adapter.rank(), 16);
        assert_eq!(adapter.config().lora_alpha, Some(32.0));
        assert_eq!(adapter.logit_bias().len(), sail_model::VOCAB_SIZE);
    }
    let from_tar = Adapter::from_archive(&make_test_archive(16, 7, BASE, false), &config_json(16), BASE).unwrap();
    let from_gz = Adapter::from_archive(&make_test_archive(16, 7, BASE, true), &config_json(16), BASE).unwrap();
    let config = parse_adapter_config(&config_json(16)).unwrap();
    let direct = Adapter::from_safetensors(&make_test_safetensors(16, 7), &config, BASE).unwrap();
    assert_eq!(from_tar.fingerprint(), from_gz.fingerprint());
    assert_eq!(from_tar.fingerprint(), direct.fingerprint());
    assert_eq!(from_tar.logit_bias(), direct.logit_bias());
    assert_eq!(make_test_archive(16, 7, BASE, true), make_test_archive(16, 7, BASE, true));
}

#[test]
fn safetensors_in_a_subdirectory_is_found() {
    let archive = tar_of(&[
        ("run/README.md", b"notes"),
        ("run/adapter_config.json", config_json(8).as_bytes()),
        ("run/adapter_model.safetensors", &make_test_safetensors(8, 1)),
    ]);
    assert!(Adapter::from_archive(&gzip(&archive), &config_json(8), BASE).is_ok());
}

#[test]
fn every_rank_from_1_to_32_is_accepted() {
    for r in [1, 2, 31, 32] {
        assert!(Adapter::from_archive(&make_test_archive(r, 1, BASE, true), &config_json(r), BASE).is_ok());
    }
}

#[test]
fn config_problems_are_reported() {
    let archive = make_test_archive(8, 1, BASE, true);
    let with = |json: &str| Adapter::from_archive(&archive, json, BASE).unwrap_err();

    let bad_type = config_json(8).replace("\"LORA\"", "\"IA3\"");
    assert_eq!(with(&bad_type), AdapterError::PeftType("IA3".into()));
    let lowercase = config_json(8).replace("\"LORA\"", "\"lora\"");
    assert!(Adapter::from_archive(&archive, &lowercase, BASE).is_ok());

    assert!(matches!(with(&config_json(64)), AdapterError::Rank { r: 64, max: 32 }));
    assert!(matches!(with(&config_json(0)), AdapterError::Rank { r: 0, .. }));
    assert!(matches!(with("not json"), AdapterError::ConfigJson(_)));
    assert!(matches!(with(&config_json(8).replace("CAUSAL_LM", "TOKEN_CLS")), AdapterError::TaskType(_)));

    let other_base = make_test_adapter_config(8, "some/other-model");
    assert_eq!(with(&other_base), AdapterError::BaseModel { expected: BASE.into(), found: "some/other-model".into() });
    let err = with(&other_base);
    assert!(err.to_string().contains("some/other-model"), "{err}");
    let _: &dyn std::error::Error = &err;
}

#[test]
fn rank_mismatch_between_config_and_tensors() {
    let archive = make_test_archive(8, 1, BASE, false);
    match Adapter::from_archive(&archive, &config_json(16), BASE).unwrap_err() {
        AdapterError::RankMismatch { expected: 16, found: 8, tensor } => assert!(tensor.contains("lora_")),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn archive_problems_are_reported() {
    let only_config = tar_of(&[("adapter_config.json", config_json(8).as_bytes())]);
    assert_eq!(Adapter::from_archive(&only_config, &config_json(8), BASE).unwrap_err(), AdapterError::MissingSafetensors);
    assert_eq!(Adapter::from_archive(&gzip(&only_config), &config_json(8), BASE).unwrap_err(), AdapterError::MissingSafetensors);

    let good = make_test_archive(8, 1, BASE, true);
    let truncated = &good[..good.len() / 2];
    assert!(matches!(Adapter::from_archive(truncated, &config_json(8), BASE), Err(AdapterError::Archive(_))));
    assert!(matches!(Adapter::from_archive(b"PK\x03\x04 a zip file", &config_json(8), BASE), Err(AdapterError::Archive(_))));
    let tar = make_test_archive(8, 1, BASE, false);
    let mut corrupted = tar.clone();
    corrupted[100..140].fill(b'x'); // inside the first header: checksum no longer matches
    assert!(matches!(Adapter::from_archive(&corrupted, &config_json(8), BASE), Err(AdapterError::Archive(_))));
}

#[test]
fn malformed_safetensors_are_reported() {
    let good = make_test_safetensors(8, 1);
    assert!(load(&good, 8).is_ok());

    let bad = |bytes: &[u8]| match load(bytes, 8) {
        Err(AdapterError::BadSafetensors(why)) => why,
        other => panic!("expected BadSafetensors, got {other:?}"),
    };
    assert!(bad(&good[..4]).contains("shorter than the 8-byte"));
    assert!(bad(&good[..64]).contains("exceeds"));
    let mut garbled = good.clone();
    garbled[8..16].copy_from_slice(b"{{{{{{{{");
    assert!(bad(&garbled).contains("JSON"));
    assert!(bad(&good[..good.len() - 3]).contains("out of bounds"));

    let header = r#"{"m.lora_A.weight": {"dtype": "F32", "shape": [8, 2], "data_offsets": [0, 64]},
                     "m.lora_B.weight": {"dtype": "F32", "shape": [2, 8], "data_offsets": [64, 1000]}}"#;
    assert!(bad(&safetensors_with_header(header, 128)).contains("out of bounds"));
    let header = r#"{"m.lora_A.weight": {"dtype": "F32", "shape": [8, 2], "data_offsets": [64, 0]}}"#;
    assert!(bad(&safetensors_with_header(header, 128)).contains("out of bounds"));
    let header = r#"{"m.lora_A.weight": {"dtype": "F32", "shape": [8, 2]}}"#;
    assert!(bad(&safetensors_with_header(header, 64)).contains("data_offsets"));
    let header = r#"{"__metadata__": {"format": 3}}"#;
    assert!(bad(&safetensors_with_header(header, 0)).contains("__metadata__"));
    let mut huge_length = good.clone();
    huge_length[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(bad(&huge_length).contains("exceeds"));

    let header = r#"{"__metadata__": {"format": "pt"}, "embed.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#;
    assert_eq!(load(&safetensors_with_header(header, 8), 8).unwrap_err(), AdapterError::NoLoraTensors);
}

#[test]
fn half_precision_adapters_load_and_match_f32() {
    // Re-encode the F32 test adapter as BF16 (truncation) and F16 (values are small): the
    // bias is nearly the same as the F32 adapter's.
    let f32_file = make_test_safetensors(4, 9);
    let header_len = u64::from_le_bytes(f32_file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&f32_file[8..8 + header_len]).unwrap();
    let data = &f32_file[8 + header_len..];
    for dtype in ["BF16", "F16"] {
        let mut new_header = serde_json::Map::new();
        let mut new_data = Vec::new();
        let mut tensors: Vec<(&String, &serde_json::Value)> =
            header.as_object().unwrap().iter().filter(|(k, _)| *k != "__metadata__").collect();
        tensors.sort_by_key(|(_, v)| v["data_offsets"][0].as_u64().unwrap());
        for (name, info) in tensors {
            let (start, end) = (info["data_offsets"][0].as_u64().unwrap() as usize, info["data_offsets"][1].as_u64().unwrap() as usize);
            let begin = new_data.len();
            for chunk in data[start..end].chunks_exact(4) {
                let v = f32::from_le_bytes(chunk.try_into().unwrap());
                let half: u16 = if dtype == "BF16" { (v.to_bits() >> 16) as u16 } else { f32_to_f16(v) };
                new_data.extend_from_slice(&half.to_le_bytes());
            }
            new_header
                .insert(name.clone(), serde_json::json!({"dtype": dtype, "shape": info["shape"], "data_offsets": [begin, new_data.len()]}));
        }
        let header_text = serde_json::to_string(&new_header).unwrap();
        let mut file = (header_text.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header_text.as_bytes());
        file.extend_from_slice(&new_data);
        let half = load(&file, 4).unwrap();
        let full = load(&f32_file, 4).unwrap();
        let max_diff = half.logit_bias().iter().zip(full.logit_bias()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(max_diff < 0.1, "{dtype}: bias differs by {max_diff}");
        assert_ne!(half.fingerprint(), full.fingerprint());
    }
}

/// Round-to-nearest f32 -> f16 for normal values in range (enough for small weights).
fn f32_to_f16(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xFF) as i32 - 127 + 15;
    if exponent <= 0 {
        return sign;
    }
    let mantissa = bits & 0x7F_FFFF;
    let rounded = (((exponent as u32) << 10) | (mantissa >> 13)) + ((mantissa >> 12) & 1);
    sign | rounded as u16
}

#[test]
fn adapters_change_samples_and_the_base_model_is_unaffected() {
    let model = NgramModel::default_model();
    let prompt = encode_text("The morning was ");
    let params = |seed| SamplingParams { max_tokens: 48, seed, ..Default::default() };
    let base_before: Vec<_> = (0..10).map(|seed| model.sample(&prompt, None, &params(seed))).collect();

    let one = Adapter::from_archive(&make_test_archive(8, 1, BASE, true), &config_json(8), BASE).unwrap();
    let two = Adapter::from_archive(&make_test_archive(8, 2, BASE, true), &config_json(8), BASE).unwrap();
    let with_one: Vec<_> = (0..10).map(|seed| model.sample(&prompt, Some(&one), &params(seed))).collect();
    let with_two: Vec<_> = (0..10).map(|seed| model.sample(&prompt, Some(&two), &params(seed))).collect();
    let differing = |a: &[sail_model::Sample], b: &[sail_model::Sample]| a.iter().zip(b).filter(|(x, y)| x.tokens != y.tokens).count();
    assert!(differing(&with_one, &with_two) >= 8, "different adapters should give different samples");
    assert!(differing(&with_one, &base_before) >= 8, "an adapter should change samples");

    // Deterministic with the adapter too, and the base model is untouched by adapter use.
    let again: Vec<_> = (0..10).map(|seed| model.sample(&prompt, Some(&one), &params(seed))).collect();
    assert_eq!(again, with_one);
    let base_after: Vec<_> = (0..10).map(|seed| model.sample(&prompt, None, &params(seed))).collect();
    assert_eq!(base_after, base_before);
}

#[test]
fn adapter_shift_is_noticeable_but_text_stays_text() {
    let model = NgramModel::default_model();
    let adapter = Adapter::from_archive(&make_test_archive(16, 5, BASE, true), &config_json(16), BASE).unwrap();
    // Total variation distance between base and adapted next-token distributions.
    let mut tv_sum = 0.0;
    let contexts = ["The ", "In the morning ", "She walked to the ", "Q: What is 2 + 5?\nA: ", "bread and "];
    for context in contexts {
        let context = encode_text(context);
        let base = model.next_token_distribution(&context, None, 1.0, 1.0);
        let adapted = model.next_token_distribution(&context, Some(&adapter), 1.0, 1.0);
        tv_sum += base.iter().zip(&adapted).map(|(a, b)| (a - b).abs()).sum::<f64>() / 2.0;
    }
    let tv = tv_sum / contexts.len() as f64;
    assert!(tv > 0.05 && tv < 0.6, "mean total variation {tv}");

    // Mostly printable ASCII: the adapter reweights the model's choices, it does not
    // replace them with noise.
    let text: String = (0..20)
        .map(|seed| {
            let params = SamplingParams { max_tokens: 64, seed, ..Default::default() };
            decode_text(&model.sample(&encode_text("The "), Some(&adapter), &params).tokens)
        })
        .collect();
    let letters = text.chars().filter(|c| c.is_ascii_alphabetic() || *c == ' ').count();
    assert!(letters as f64 > 0.85 * text.chars().count() as f64, "{text}");
}

#[test]
fn wide_and_narrow_real_sized_adapters_load_quickly() {
    // Rank 32 on 4096-wide modules (a 7B-class shape) and many 1-output modules (which
    // would need 257 probes each without the work budget).
    for (modules, inputs, outputs) in [(4usize, 4096usize, 4096usize), (50, 4096, 1)] {
        let r = 32usize;
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        for m in 0..modules {
            for (part, shape) in [("lora_A", [r, inputs]), ("lora_B", [outputs, r])] {
                let len = shape[0] * shape[1] * 4;
                header.insert(
                    format!("layers.{m}.proj.{part}.weight"),
                    serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len]}),
                );
                offset += len;
            }
        }
        let mut file = safetensors_with_header(&serde_json::to_string(&header).unwrap(), 0);
        file.extend((0..offset / 4).flat_map(|i| (((i * 2_654_435_761) % 1000) as f32 * 1e-4 - 0.05).to_le_bytes()));
        let config = parse_adapter_config(&config_json(32)).unwrap();
        let start = std::time::Instant::now();
        let adapter = Adapter::from_safetensors(&file, &config, BASE).unwrap();
        assert!(adapter.logit_bias().iter().any(|&b| b != 0.0));
        eprintln!("{modules} x [{r}, {inputs}] / [{outputs}, {r}]: loaded in {:?}", start.elapsed());
    }
}

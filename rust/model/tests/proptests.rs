//! Property tests: parsing untrusted bytes never panics, and sampling never panics (and
//! keeps its invariants) for any prompt and any in-range parameters.

use proptest::prelude::*;
use sail_model::{
    make_test_adapter_config, make_test_archive, make_test_safetensors, parse_adapter_config, Adapter, NgramModel, SamplingParams,
    StopReason, EOT_TOKEN, VOCAB_SIZE,
};

const BASE: &str = "sail-ngram";

fn config() -> sail_model::AdapterConfig {
    parse_adapter_config(&make_test_adapter_config(4, BASE)).unwrap()
}

/// Overwrite bytes of `bytes` at the given (wrapped) positions.
fn corrupt(mut bytes: Vec<u8>, edits: &[(usize, u8)]) -> Vec<u8> {
    for &(at, value) in edits {
        let len = bytes.len();
        bytes[at % len] = value;
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), json in ".{0,200}") {
        let _ = Adapter::from_archive(&bytes, &make_test_adapter_config(4, BASE), BASE);
        let _ = Adapter::from_safetensors(&bytes, &config(), BASE);
        let _ = parse_adapter_config(&json);
        let _ = parse_adapter_config(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn corrupted_safetensors_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let file = make_test_safetensors(4, 1);
        let corrupted = corrupt(file.clone(), &edits);
        let _ = Adapter::from_safetensors(&corrupted, &config(), BASE);
        let _ = Adapter::from_safetensors(&file[..cut % file.len()], &config(), BASE);
        // Corrupting only the header region exercises the JSON and offset checks.
        let header_edits: Vec<(usize, u8)> = edits.iter().map(|&(at, v)| (at % 300, v)).collect();
        let _ = Adapter::from_safetensors(&corrupt(file, &header_edits), &config(), BASE);
    }

    #[test]
    fn corrupted_archives_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
        gzip in any::<bool>(),
    ) {
        let archive = make_test_archive(4, 1, BASE, gzip);
        let json = make_test_adapter_config(4, BASE);
        let _ = Adapter::from_archive(&corrupt(archive.clone(), &edits), &json, BASE);
        let _ = Adapter::from_archive(&archive[..cut % archive.len()], &json, BASE);
    }

    #[test]
    fn json_configs_never_panic(
        peft in prop_oneof![Just("\"LORA\"".to_string()), ".{0,10}".prop_map(|s| format!("{s:?}")), Just("null".to_string()), Just("7".to_string())],
        r in prop_oneof![any::<i64>().prop_map(|r| r.to_string()), any::<f64>().prop_map(|r| format!("{r:?}")), Just("\"8\"".to_string()), Just("null".to_string())],
        alpha in prop_oneof![Just("16".to_string()), Just("\"x\"".to_string()), Just("null".to_string())],
    ) {
        let json = format!(r#"{{"peft_type": {peft}, "r": {r}, "lora_alpha": {alpha}, "base_model_name_or_path": "{BASE}"}}"#);
        let _ = parse_adapter_config(&json);
    }

    #[test]
    fn sampling_never_panics(
        prompt in proptest::collection::vec(prop_oneof![0u32..256, Just(EOT_TOKEN), any::<u32>()], 0..40),
        max_tokens in 0u32..80,
        temperature in prop_oneof![Just(0.0), 0.0f64..=2.0],
        top_p in prop_oneof![Just(1.0), 1e-6f64..=1.0],
        stop_token_ids in proptest::collection::vec(prop_oneof![0u32..300, any::<u32>()], 0..4),
        stop_strings in proptest::collection::vec(".{0,4}", 0..3),
        seed in any::<u64>(),
        with_adapter in any::<bool>(),
    ) {
        let adapter = Adapter::from_safetensors(&make_test_safetensors(4, seed % 3), &config(), BASE).unwrap();
        let adapter = with_adapter.then_some(&adapter);
        let model = NgramModel::default_model();
        let params = SamplingParams { max_tokens, temperature, top_p, stop_token_ids: stop_token_ids.clone(), stop_strings, seed };
        let sample = model.sample(&prompt, adapter, &params);
        prop_assert_eq!(sample.tokens.len(), sample.logprobs.len());
        prop_assert!(sample.tokens.len() <= max_tokens as usize);
        prop_assert!(sample.tokens.iter().all(|&t| (t as usize) < VOCAB_SIZE));
        prop_assert!(sample.logprobs.iter().all(|lp| lp.is_finite() && *lp <= 0.0));
        if sample.stop_reason == StopReason::Length {
            prop_assert_eq!(sample.tokens.len(), max_tokens as usize);
        }
        if let Some(&last) = sample.tokens.last() {
            if sample.stop_reason == StopReason::Stop && stop_token_ids.contains(&last) {
                // A stop token only ever appears as the last token.
                prop_assert!(!sample.tokens[..sample.tokens.len() - 1].iter().any(|t| stop_token_ids.contains(t)));
            }
        }
        let dist = model.next_token_distribution(&prompt, adapter, temperature, top_p);
        prop_assert!((dist.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }
}

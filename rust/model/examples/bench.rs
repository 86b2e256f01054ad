//! Prints demo samples and measures sampling speed (64-token samples) in a release build:
//! `cargo run -p sail-model --release --example bench`.

use std::time::Instant;

use sail_model::{decode_text, encode_text, make_test_safetensors, parse_adapter_config, Adapter, NgramModel, SamplingParams};

const BASE: &str = "sail-ngram";

fn main() {
    let start = Instant::now();
    let model = NgramModel::default_model();
    println!("model: {} tables, built in {:?}", model.table_count(), start.elapsed());

    let config = parse_adapter_config(&sail_model::make_test_adapter_config(16, BASE)).unwrap();
    let adapter = Adapter::from_safetensors(&make_test_safetensors(16, 7), &config, BASE).unwrap();

    let prompt = encode_text("The weather ");
    for (label, adapter, temperature, top_p) in
        [("T=1", None, 1.0, 1.0), ("T=0.7 top_p=0.9", None, 0.7, 0.9), ("adapter T=1", Some(&adapter), 1.0, 1.0), ("T=0", None, 0.0, 1.0)]
    {
        for seed in 0..3 {
            let params = SamplingParams { max_tokens: 64, temperature, top_p, seed, ..Default::default() };
            let sample = model.sample(&prompt, adapter, &params);
            println!("[{label} seed {seed}] {:?} ({:?})", decode_text(&sample.tokens), sample.stop_reason);
        }
    }
    let arithmetic = encode_text("Q: What is 3 + 4?\nA:");
    for seed in 0..5 {
        let params = SamplingParams { max_tokens: 16, seed, ..Default::default() };
        println!("[sum seed {seed}] {:?}", decode_text(&model.sample(&arithmetic, None, &params).tokens));
    }

    for (label, adapter, temperature, top_p) in [
        ("T=1 top_p=1 (fast path)", None, 1.0, 1.0),
        ("T=0.7", None, 0.7, 1.0),
        ("T=1 top_p=0.9", None, 1.0, 0.9),
        ("adapter T=1", Some(&adapter), 1.0, 1.0),
        ("adapter T=0.8 top_p=0.95", Some(&adapter), 0.8, 0.95),
        ("greedy", None, 0.0, 1.0),
    ] {
        let n = 20_000u64;
        // Warm up: reshaped tables for this setting are computed on first use.
        for seed in n..n + 2_000 {
            let params = SamplingParams { max_tokens: 64, temperature, top_p, seed, ..Default::default() };
            model.sample(&prompt, adapter, &params);
        }
        let mut tokens = 0usize;
        let start = Instant::now();
        let cpu_start = thread_cpu_seconds();
        for seed in 0..n {
            // No stops: always 64 tokens unless EOT comes first.
            let params = SamplingParams { max_tokens: 64, temperature, top_p, seed, ..Default::default() };
            tokens += model.sample(&prompt, adapter, &params).tokens.len();
        }
        let wall = start.elapsed().as_secs_f64();
        // CPU time of this thread, so a busy machine does not distort the figure (Linux).
        let secs = thread_cpu_seconds().map_or(wall, |end| end - cpu_start.unwrap_or(0.0));
        println!(
            "{label:>26}: {:>9.0} samples/s, {:>10.0} tokens/s per core (mean {:.1} tokens/sample; wall {:.2}s)",
            n as f64 / secs,
            tokens as f64 / secs,
            tokens as f64 / n as f64,
            wall
        );
    }
}

/// Seconds this thread has spent on a CPU, from `/proc/thread-self/schedstat` (Linux only).
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: f64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(nanos / 1e9)
}

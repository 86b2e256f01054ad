//! The simulated prefix cache over real loopback HTTP: `prompt_cache_key` on the create,
//! `usage.input_tokens_details.cached_tokens` on the completed response, totals in `/_stats`.
mod common;
use common::*;
use serde_json::{json, Value};

async fn cached_tokens(api: &Api, tokens: &[u32], key: Option<&str>) -> Value {
    let mut b = body(tokens);
    if let Some(k) = key {
        b["prompt_cache_key"] = json!(k);
    }
    let r = api.post("/v1/responses", &b).await;
    assert_eq!(r.status, 202, "{}", r.json);
    let done = api.wait(r.json["id"].as_str().unwrap(), 30.0).await;
    assert_eq!(done["status"], "completed", "{done}");
    done["usage"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_prompts_hit_the_cache() {
    let h = start(json!({}));
    let api = Api::new(&h);
    let prompt: Vec<u32> = (0..300).map(|i| i % 200).collect();

    // A GRPO group: one key, eight identical prompts.
    let mut hits = vec![];
    for _ in 0..8 {
        let usage = cached_tokens(&api, &prompt, Some("group-1")).await;
        assert_eq!(usage["input_tokens"], 300);
        hits.push(usage["input_tokens_details"]["cached_tokens"].as_u64().unwrap());
    }
    assert_eq!(hits, [0, 299, 299, 299, 299, 299, 299, 299]);

    // A second turn extends the first under the same key.
    let mut turn2 = prompt.clone();
    turn2.extend([5, 6, 7]);
    assert_eq!(cached_tokens(&api, &turn2, Some("group-1")).await["input_tokens_details"]["cached_tokens"], 300);

    // No key: never a hit, even for a prompt seen before.
    for _ in 0..2 {
        assert_eq!(cached_tokens(&api, &prompt, None).await["input_tokens_details"]["cached_tokens"], 0);
    }

    let s = h.stats();
    assert_eq!(s["prompt_cache_hits"], 8);
    assert_eq!(s["cached_tokens"], 299 * 7 + 300);
    assert_eq!(s["input_tokens"], 300 * 10 + 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_is_a_named_400() {
    let h = start(json!({}));
    let api = Api::new(&h);
    let mut b = body(&[1, 2, 3]);
    b["prompt_cache_key"] = json!(17);
    let r = api.post("/v1/responses", &b).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"]["param"], "prompt_cache_key");
    b["prompt_cache_key"] = json!("k".repeat(1025));
    let r = api.post("/v1/responses", &b).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"]["param"], "prompt_cache_key");
}

//! OpenAI `/v1/completions` and LoRA adapters (registered and by signed URL).
mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_shapes() {
    let h = start(json!({"loras": {"mini": {"rank": 4, "seed": 1}}}));
    let api = Api::new(&h);
    let r = api
        .post(
            "/v1/completions",
            &json!({"model": "moonshotai/Kimi-K2.6", "prompt": [72, 105], "max_tokens": 8,
            "logprobs": 2, "return_token_ids": true, "return_tokens_as_token_ids": true, "seed": 5}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let c = &r.json["choices"][0];
    let ids = c["token_ids"].as_array().unwrap();
    assert_eq!(c["prompt_token_ids"], json!([72, 105]));
    let lp = &c["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), ids.len());
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), ids.len());
    for (t, id) in lp["tokens"].as_array().unwrap().iter().zip(ids) {
        assert_eq!(t.as_str().unwrap(), format!("token_id:{id}"));
    }
    assert!(lp["top_logprobs"][0].as_object().unwrap().len() >= 2);
    assert!(["stop", "length"].contains(&c["finish_reason"].as_str().unwrap()));
    assert_eq!(r.json["usage"]["prompt_tokens"], 2);
    assert_eq!(r.json["object"], "text_completion");

    let r = api
        .post(
            "/v1/completions",
            &json!({"model": "sail-lite/byte-ngram", "prompt": "Hello", "max_tokens": 3, "stop": ["\n"], "stop_token_ids": [256]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json["choices"][0]["logprobs"].is_null());
    assert!(r.json["choices"][0].get("token_ids").is_none());
    assert_eq!(r.json["usage"]["prompt_tokens"], 5);

    let r = api.post("/v1/completions", &json!({"model": "tinker://run-1/sampler_weights/000080", "prompt": [1], "max_tokens": 2})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["model"], "tinker://run-1/sampler_weights/000080");
    let r = api.post("/v1/completions", &json!({"model": "tinker://run-1/weights/000080", "prompt": [1]})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"]["param"], "model");
    assert!(r.json["error"]["message"].as_str().unwrap().contains("sampler_weights"));
    let r = api.post("/v1/completions", &json!({"model": "mini", "prompt": [1], "max_tokens": 2})).await;
    assert_eq!(r.status, 200);
    for (b, param) in [
        (json!({"model": "nope", "prompt": [1]}), "model"),
        (json!({"model": "sail-lite/byte-ngram"}), "prompt"),
        (json!({"model": "sail-lite/byte-ngram", "prompt": [1], "max_tokens": 0}), "max_tokens"),
        (json!({"model": "sail-lite/byte-ngram", "prompt": [1], "logprobs": 99}), "logprobs"),
        (json!({"model": "sail-lite/byte-ngram", "prompt": [1], "n": 2}), "n"),
        (json!({"model": "sail-lite/byte-ngram", "prompt": ["a", "b"]}), "prompt"),
        (json!({"model": "sail-lite/byte-ngram", "prompt": [1], "temperature": 3}), "temperature"),
    ] {
        let r = api.post("/v1/completions", &b).await;
        assert_eq!(r.status, 400, "{b}");
        assert_eq!(r.json["error"]["param"], param, "{b}");
    }
    assert_eq!(h.stats()["openai_completions"], 4);
}

fn lora_body(url: &str, cfg: &str) -> serde_json::Value {
    let mut b = body(&[1, 2, 3]);
    b["metadata"]["lora"] = json!(url);
    b["metadata"]["tinker_adapter_config"] = json!(cfg);
    b["metadata"]["seed"] = json!("9");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_by_signed_url() {
    let h = start(json!({"loras": {"named": {"rank": 8, "seed": 3}}}));
    let api = Api::new(&h);
    let base = "moonshotai/Kimi-K2.6";
    let cfg = sail_model::make_test_adapter_config(8, base);
    let url = h.add_archive("run1-ckpt", sail_model::make_test_archive(8, 3, base, true), Duration::from_secs(60));
    assert!(url.contains("/_tinker/archives/run1-ckpt.tar?expires="));

    let r = api.post("/v1/responses", &lora_body(&url, &cfg)).await;
    assert_eq!(r.status, 202, "{}", r.json);
    let done = api.wait(r.json["id"].as_str().unwrap(), 5.0).await;
    assert_eq!(done["status"], "completed", "{done}");
    // Cached per URL: a second use downloads nothing.
    let r = api.post("/v1/responses", &lora_body(&url, &cfg)).await;
    let again = api.wait(r.json["id"].as_str().unwrap(), 5.0).await;
    assert_eq!(again["output"][0]["content"], done["output"][0]["content"]);
    let s = h.stats();
    assert_eq!(s["lora_downloads"], 1);
    assert_eq!(s["archive_downloads"], 1);
    assert_eq!(s["lora_cache_hits"], 1);
    // Same adapter registered by name samples the same tokens as by URL.
    let mut b = body(&[1, 2, 3]);
    b["metadata"]["lora"] = json!("named");
    b["metadata"]["seed"] = json!("9");
    let r = api.post("/v1/responses", &b).await;
    let named = api.wait(r.json["id"].as_str().unwrap(), 5.0).await;
    assert_eq!(named["output"][0]["content"][0]["token_ids"], done["output"][0]["content"][0]["token_ids"]);

    // Expired: by the query's expiry, and by the host's 403.
    let expired = h.add_archive("old", sail_model::make_test_archive(8, 3, base, false), Duration::ZERO);
    let r = api.post("/v1/responses", &lora_body(&expired, &cfg)).await;
    let f = api.wait(r.json["id"].as_str().unwrap(), 5.0).await;
    assert_eq!(f["status"], "failed");
    assert_eq!(f["error"]["code"], "lora_url_expired");
    let forged = url.replace("signature=", "signature=00");
    let r = api.post("/v1/responses", &lora_body(&forged, &cfg)).await;
    let f = api.wait(r.json["id"].as_str().unwrap(), 5.0).await;
    assert_eq!(f["error"]["code"], "lora_url_expired", "{f}");
    assert!(!f.to_string().contains("signature=00"));

    // Unreachable.
    let r = api.post("/v1/responses", &lora_body("http://127.0.0.1:9/x.tar?expires=99999999999&signature=ab", &cfg)).await;
    let f = api.wait(r.json["id"].as_str().unwrap(), 10.0).await;
    assert_eq!(f["error"]["code"], "lora_url_unreachable");
    assert!(!f["error"]["message"].as_str().unwrap().contains("signature"));
    let missing = format!("{}/_tinker/archives/missing.tar?expires=99999999999&signature=ab", h.base_url());
    let r = api.post("/v1/responses", &lora_body(&missing, &cfg)).await;
    let f = api.wait(r.json["id"].as_str().unwrap(), 5.0).await;
    assert_eq!(f["error"]["code"], "lora_url_unreachable");

    // Bad adapter: garbage archive, and a rank above the maximum.
    let junk = h.add_archive("junk", b"not a tar at all".to_vec(), Duration::from_secs(60));
    let r = api.post("/v1/responses", &lora_body(&junk, &cfg)).await;
    let f = api.wait(r.json["id"].as_str().unwrap(), 5.0).await;
    assert_eq!(f["error"]["code"], "invalid_lora_adapter");
    let big = sail_model::make_test_adapter_config(64, base);
    let r = api.post("/v1/responses", &lora_body(&url, &big)).await;
    let f = api.wait(r.json["id"].as_str().unwrap(), 5.0).await;
    assert_eq!(f["error"]["code"], "invalid_lora_adapter");
    assert!(f["error"]["message"].as_str().unwrap().contains("rank"));

    // Archive hosting itself.
    assert_eq!(api.send(api.c.get(&url)).await.status, 200);
    assert_eq!(api.send(api.c.get(&expired)).await.status, 403);
    assert_eq!(api.send(api.c.get(&forged)).await.status, 403);
    let unsigned = url.split('?').next().unwrap().to_string();
    assert_eq!(api.send(api.c.get(&unsigned)).await.status, 403);
    let unknown = format!("{}/_tinker/archives/nope.tar?expires=1&signature=00", h.base_url());
    assert_eq!(api.send(api.c.get(&unknown)).await.status, 404);
    let e = api.send(api.c.get(&expired)).await;
    assert!(e.json["error"]["message"].as_str().unwrap().contains("expired"));
}

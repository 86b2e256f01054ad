//! Core protocol paths over real loopback HTTP.
mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_auth() {
    let h = start(json!({}));
    let api = Api::new(&h);
    let r = api.get("/v1/models").await;
    assert_eq!(r.status, 200);
    let ids: Vec<&str> = r.json["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["moonshotai/Kimi-K2.6", "sail-lite/byte-ngram"]);

    let r = api.send(api.c.get(format!("{}/v1/models", api.base))).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json["error"]["code"], "invalid_api_key");
    let r = api.send(api.c.get(format!("{}/v1/models", api.base)).bearer_auth("sk-wrong")).await;
    assert_eq!(r.status, 401);
    assert!(!r.json.to_string().contains("sk-wrong"));
    // /_stats needs no key.
    let r = api.send(api.c.get(format!("{}/_stats", api.base))).await;
    assert_eq!(r.status, 200);
    assert!(r.json["requests_total"].as_u64().unwrap() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_create_poll_complete() {
    let h = start(json!({}));
    let api = Api::new(&h);
    let mut b = body(&[1, 2, 3]);
    b["include"] = json!(["message.output_text.logprobs"]);
    let r = api.post("/v1/responses", &b).await;
    assert_eq!(r.status, 202, "{}", r.json);
    assert_eq!(r.json["status"], "queued");
    assert_eq!(r.json["object"], "response");
    let id = r.json["id"].as_str().unwrap().to_string();
    let done = api.wait(&id, 5.0).await;
    assert_eq!(done["status"], "completed");
    let block = &done["output"][0]["content"][0];
    assert_eq!(done["output"][0]["type"], "message");
    assert_eq!(block["type"], "output_text");
    let toks = block["token_ids"].as_array().unwrap();
    let lps = block["logprobs"].as_array().unwrap();
    assert_eq!(toks.len(), lps.len());
    for (t, l) in toks.iter().zip(lps) {
        assert_eq!(t, &l["token_id"]);
        assert!(l["logprob"].as_f64().unwrap() <= 0.0);
    }
    assert!(["stop", "length"].contains(&block["stop_reason"].as_str().unwrap()));
    assert_eq!(done["usage"]["input_tokens"], 3);
    assert_eq!(done["usage"]["output_tokens"].as_u64().unwrap() as usize, toks.len());
    assert_eq!(done["usage"]["total_tokens"].as_u64().unwrap() as usize, 3 + toks.len());
    assert!(done["error"].is_null());

    // Without include: no logprobs.
    let r = api.post("/v1/responses", &body(&[1, 2, 3])).await;
    let done = api.wait(r.json["id"].as_str().unwrap(), 5.0).await;
    assert!(done["output"][0]["content"][0].get("logprobs").is_none());
    let s = h.stats();
    assert_eq!(s["creates"], 2);
    assert_eq!(s["completions"], 2);
    assert_eq!(s["in_flight"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_and_length_stop() {
    let h = start(json!({}));
    let api = Api::new(&h);
    let mut b = body(&[65, 66]);
    b["background"] = json!(false);
    b["max_output_tokens"] = json!(1);
    let r = api.post("/v1/responses", &b).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["status"], "completed");
    let block = &r.json["output"][0]["content"][0];
    let n = block["token_ids"].as_array().unwrap().len();
    assert!(n <= 1);
    if n == 1 && block["token_ids"][0] != 256 {
        assert_eq!(block["stop_reason"], "length");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_samples_are_reproducible() {
    let h = start(json!({}));
    let api = Api::new(&h);
    let mut b = body(&[10, 20, 30]);
    b["metadata"]["seed"] = json!("42");
    b["background"] = json!(false);
    let a = api.post("/v1/responses", &b).await;
    let c = api.post("/v1/responses", &b).await;
    assert_eq!(a.json["output"][0]["content"][0]["token_ids"], c.json["output"][0]["content"][0]["token_ids"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_move_with_latency_and_cancel() {
    let h = start(json!({"latency": {"scale": 1.0, "jitter": 0.0, "in_progress_fraction": 0.5,
                                     "windows": {"priority": 0.6, "standard": 30.0}}}));
    let api = Api::new(&h);
    let r = api.post("/v1/responses", &body(&[1])).await;
    let id = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(api.get(&format!("/v1/responses/{id}")).await.json["status"], "queued");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(api.get(&format!("/v1/responses/{id}")).await.json["status"], "in_progress");
    let done = api.wait(&id, 5.0).await;
    assert_eq!(done["status"], "completed");
    // Cancel of a finished response returns it unchanged.
    let r = api.post(&format!("/v1/responses/{id}/cancel"), &json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json, done);

    let mut b = body(&[1]);
    b["metadata"]["completion_window"] = json!("standard");
    let r = api.post("/v1/responses", &b).await;
    let id = r.json["id"].as_str().unwrap().to_string();
    let r = api.post(&format!("/v1/responses/{id}/cancel"), &json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["status"], "cancelled");
    assert_eq!(api.get(&format!("/v1/responses/{id}")).await.json["status"], "cancelled");
    let r = api.post("/v1/responses/resp_00000000000000ff/cancel", &json!({})).await;
    assert_eq!(r.status, 404);
    assert_eq!(api.get("/v1/responses/nope").await.status, 404);
    let s = h.stats();
    assert_eq!(s["cancels_received"], 3);
    assert_eq!(s["cancels_effective"], 1);
    assert_eq!(s["in_flight"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_names_fields() {
    let h = start(json!({}));
    let api = Api::new(&h);
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (json!({"model": "nope"}), "model"),
        (json!({"model": null}), "model"),
        (json!({"raw_prompt_tokens": []}), "raw_prompt_tokens"),
        (json!({"raw_prompt_tokens": [-1]}), "raw_prompt_tokens"),
        (json!({"raw_prompt_tokens": [2147483648u64]}), "raw_prompt_tokens"),
        (json!({"raw_prompt_tokens": [1.5]}), "raw_prompt_tokens"),
        (json!({"raw_prompt_tokens": "abc"}), "raw_prompt_tokens"),
        (json!({"max_output_tokens": 0}), "max_output_tokens"),
        (json!({"temperature": 2.5}), "temperature"),
        (json!({"temperature": -0.1}), "temperature"),
        (json!({"top_p": 1.5}), "top_p"),
        (json!({"stop": 5}), "stop"),
        (json!({"stop": ["a", 1]}), "stop"),
        (json!({"input": ""}), "input"),
        (json!({"input": []}), "input"),
        (json!({"input": null}), "input"),
        (json!({"metadata": {"completion_window": "weekly"}}), "metadata.completion_window"),
        (json!({"metadata": {"x": 1}}), "metadata.x"),
        (json!({"metadata": {"lora": "x", "completion_window": "asap"}}), "metadata.lora"),
        (json!({"metadata": {"lora": "unknown-lora"}}), "metadata.lora"),
        (json!({"metadata": {"lora": "http://127.0.0.1:1/a.tar"}}), "metadata.tinker_adapter_config"),
        (json!({"metadata": {"seed": "abc"}}), "metadata.seed"),
    ];
    for (patch, param) in cases {
        let mut b = body(&[1, 2]);
        sail_emulator::config::merge_patch(&mut b, &patch);
        if patch.get("model").is_some_and(|m| m.is_null()) {
            b.as_object_mut().unwrap().remove("model");
        }
        if patch.get("input").is_some_and(|m| m.is_null()) {
            b.as_object_mut().unwrap().remove("input");
        }
        let r = api.post("/v1/responses", &b).await;
        assert_eq!(r.status, 400, "{patch} -> {}", r.json);
        assert_eq!(r.json["error"]["param"], param, "{patch} -> {}", r.json);
        assert!(r.json["error"]["message"].as_str().unwrap().len() > 5);
        assert_eq!(r.json["error"]["type"], "invalid_request_error");
    }
    assert_eq!(h.stats()["creates"], 0);
    // stop: token ids and strings are both fine.
    for stop in [json!("\n"), json!(["a", "b"]), json!([10, 256])] {
        let mut b = body(&[1]);
        b["stop"] = stop;
        assert_eq!(api.post("/v1/responses", &b).await.status, 202);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency() {
    let h = start(json!({}));
    let api = Api::new(&h);
    let b = body(&[1, 2, 3]);
    let a = api.post_key("/v1/responses", &b, "k1").await;
    assert_eq!(a.status, 202);
    let id = a.json["id"].as_str().unwrap().to_string();
    api.wait(&id, 5.0).await;
    let again = api.post_key("/v1/responses", &b, "k1").await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json["id"], id.as_str());
    assert_eq!(again.json["status"], "completed");
    let mut other = b.clone();
    other["max_output_tokens"] = json!(3);
    let c = api.post_key("/v1/responses", &other, "k1").await;
    assert_eq!(c.status, 400);
    assert_eq!(c.json["error"]["code"], "idempotency_error");
    // A request failing validation does not consume its key.
    let mut bad = b.clone();
    bad["temperature"] = json!(9);
    assert_eq!(api.post_key("/v1/responses", &bad, "k2").await.status, 400);
    assert_eq!(api.post_key("/v1/responses", &b, "k2").await.status, 202);
    let long = "x".repeat(256);
    let r = api.post_key("/v1/responses", &b, &long).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"]["param"], "Idempotency-Key");
    assert_eq!(api.post_key("/v1/responses", &b, &"y".repeat(255)).await.status, 202);
    let s = h.stats();
    assert_eq!(s["creates"], 3);
    assert_eq!(s["idempotent_replays"], 1);
    assert_eq!(s["duplicate_samples"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_same_key_starts_one_sample() {
    let h = start(json!({"latency": {"scale": 1.0, "windows": {"priority": 0.3}}}));
    let api = std::sync::Arc::new(Api::new(&h));
    let b = body(&[7, 8, 9]);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (api, b) = (api.clone(), b.clone());
        tasks.push(tokio::spawn(async move { api.post_key("/v1/responses", &b, "same").await.json["id"].clone() }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().to_string());
    }
    assert_eq!(ids.len(), 1);
    let s = h.stats();
    assert_eq!(s["creates"], 1);
    assert_eq!(s["idempotent_replays"], 31);
    assert_eq!(s["duplicate_samples"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_after_retention() {
    let h = start(json!({"retention_seconds": 0.3}));
    let api = Api::new(&h);
    let r = api.post_key("/v1/responses", &body(&[1]), "exp").await;
    let id = r.json["id"].as_str().unwrap().to_string();
    api.wait(&id, 5.0).await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(api.get(&format!("/v1/responses/{id}")).await.status, 404);
    // Its key is free again.
    let r = api.post_key("/v1/responses", &body(&[1]), "exp").await;
    assert_eq!(r.status, 202);
    assert_ne!(r.json["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_input_and_delete() {
    let h = start(json!({}));
    let api = Api::new(&h);
    let b = json!({"model": "sail-lite/byte-ngram", "input": [{"role": "user", "content": "hello"}], "max_output_tokens": 4});
    let r = api.post("/v1/responses", &b).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["status"], "completed");
    assert_eq!(r.json["usage"]["input_tokens"], 5);
    let id = r.json["id"].as_str().unwrap();
    let d = api.send(api.c.delete(format!("{}/v1/responses/{id}", api.base)).bearer_auth(KEY)).await;
    assert_eq!(d.status, 200);
    assert_eq!(api.get(&format!("/v1/responses/{id}")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_frees_the_port() {
    let h = start(json!({}));
    let port = h.local_addr().port();
    let api = Api::new(&h);
    assert_eq!(api.get("/v1/models").await.status, 200);
    h.shutdown();
    h.shutdown();
    let h2 = start(json!({"port": port}));
    assert_eq!(h2.local_addr().port(), port);
    let api2 = Api::new(&h2);
    assert_eq!(api2.get("/v1/models").await.status, 200);
    // A taken port is a bind error.
    let e = sail_emulator::EmulatorHandle::start_detailed(sail_emulator::EmulatorConfig::from_value(json!({"port": port})).unwrap());
    assert!(matches!(e, Err(sail_emulator::StartError::Bind(_))));
}

//! Fault injection, body limits, malformed input and the request log.
mod common;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_faults_each_kind() {
    let h = start(json!({}));
    let api = Api::new(&h);
    for (rate, code) in [("rate_500", 500), ("rate_502", 502), ("rate_503", 503)] {
        h.update(json!({"faults": {rate: 1.0, "after_create_fraction": 0.0}})).unwrap();
        let r = api.post("/v1/responses", &body(&[1])).await;
        assert_eq!(r.status, code);
        assert_eq!(r.json["error"]["type"], "server_error");
        h.update(json!({"faults": {rate: 0.0}})).unwrap();
    }
    assert_eq!(h.stats()["creates"], 0, "faults before creation start nothing");

    h.update(json!({"faults": {"rate_429": 1.0, "retry_after_seconds": 0.25}})).unwrap();
    let r = api.post("/v1/responses", &body(&[1])).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(r.headers["retry-after-ms"], "250");
    assert_eq!(r.json["error"]["code"], "rate_limit_exceeded");
    h.update(json!({"faults": {"rate_429": 0.0}})).unwrap();

    // Polls are faulted too (apply_to defaults to create + poll), models are not.
    let ok = api.post("/v1/responses", &body(&[1])).await;
    let id = ok.json["id"].as_str().unwrap().to_string();
    h.update(json!({"faults": {"rate_503": 1.0}})).unwrap();
    assert_eq!(api.get(&format!("/v1/responses/{id}")).await.status, 503);
    assert_eq!(api.get("/v1/models").await.status, 200);
    h.update(json!({"faults": {"apply_to": ["models"]}})).unwrap();
    assert_eq!(api.get("/v1/models").await.status, 503);
    assert_eq!(api.get(&format!("/v1/responses/{id}")).await.status, 200);
    h.update(json!({"faults": null})).unwrap();
    let s = h.stats();
    assert_eq!(s["faults"]["500"], 1);
    assert_eq!(s["faults"]["429"], 1);
    assert_eq!(s["faults"]["503"], 3);
    assert_eq!(s["by_status"]["503"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_after_creation_then_idempotent_retry() {
    let h = start(json!({"faults": {"rate_500": 1.0, "after_create_fraction": 1.0}}));
    let api = Api::new(&h);
    let b = body(&[5, 6]);
    let r = api.post_key("/v1/responses", &b, "retry-me").await;
    assert_eq!(r.status, 500);
    assert_eq!(h.stats()["creates"], 1, "the response was created before the 500");
    h.update(json!({"faults": {"rate_500": 0.0}})).unwrap();
    let r = api.post_key("/v1/responses", &b, "retry-me").await;
    assert!(r.status == 200 || r.status == 202);
    let s = h.stats();
    assert_eq!(s["creates"], 1);
    assert_eq!(s["idempotent_replays"], 1);
    assert_eq!(s["duplicate_samples"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_has_no_response() {
    let h = start(json!({"faults": {"rate_drop": 1.0, "after_create_fraction": 0.0}}));
    let api = Api::new(&h);
    let r = api.c.post(format!("{}/v1/responses", api.base)).bearer_auth(KEY).json(&body(&[1])).send().await;
    let e = r.expect_err("a dropped connection must not answer");
    assert!(!e.is_status());
    assert_eq!(h.stats()["faults"]["drop"], 1);
    // The server is fine afterwards.
    h.update(json!({"faults": {"rate_drop": 0.0}})).unwrap();
    assert_eq!(api.post("/v1/responses", &body(&[1])).await.status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_failed_responses() {
    let h = start(json!({"faults": {"rate_slow": 1.0, "slow_seconds": 0.3}}));
    let api = Api::new(&h);
    assert_eq!(api.get("/v1/models").await.status, 200);
    assert_eq!(h.stats()["faults"]["slow"], 0, "models are not in apply_to");
    let t0 = Instant::now();
    let r = api.post("/v1/responses", &body(&[1])).await;
    assert_eq!(r.status, 202);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    h.update(json!({"faults": {"rate_slow": 0.0, "rate_fail": 1.0}})).unwrap();
    let r = api.post("/v1/responses", &body(&[1])).await;
    let done = api.wait(r.json["id"].as_str().unwrap(), 5.0).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error"]["code"], "server_error");
    assert!(done["error"]["message"].as_str().unwrap().len() > 10);
    let s = h.stats();
    assert_eq!(s["failures"], 1);
    assert_eq!(s["faults"]["fail"], 1);
    assert_eq!(s["faults"]["slow"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_decisions_are_seeded() {
    let run = |seed: u64| async move {
        let h = start(json!({"seed": seed, "faults": {"rate_500": 0.5, "after_create_fraction": 0.0}}));
        let api = Api::new(&h);
        let mut codes = Vec::new();
        for _ in 0..40 {
            codes.push(api.get("/v1/responses/resp_0000000000000001").await.status);
        }
        codes
    };
    let a = run(3).await;
    assert_eq!(a, run(3).await);
    assert_ne!(a, run(4).await);
    assert!(a.contains(&500) && a.contains(&404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limits_and_malformed_json() {
    let h = start(json!({"max_body_bytes": 4096}));
    let api = Api::new(&h);
    let big = body(&vec![7u32; 5000]);
    let r = api.post("/v1/responses", &big).await;
    assert_eq!(r.status, 413, "{}", r.json);
    assert_eq!(r.json["error"]["code"], "request_too_large");
    for raw in [&b"{"[..], b"", b"[1,2]", b"null", b"{\"model\": }", b"\xff\xfe", b"{\"model\": \"moonshotai/Kimi-K2.6\"} trailing"] {
        let r = api.post_raw("/v1/responses", raw.to_vec()).await;
        assert_eq!(r.status, 400, "{:?} -> {}", String::from_utf8_lossy(raw), r.json);
        assert!(r.json["error"]["message"].is_string());
    }
    // Same for /v1/completions.
    let r = api.post_raw("/v1/completions", b"{oops".to_vec()).await;
    assert_eq!(r.status, 400);
    // Deterministic garbage never panics the server: every request gets a 4xx.
    let mut x: u64 = 1;
    for i in 0..300 {
        let len = (i * 7) % 200;
        let mut buf = Vec::with_capacity(len);
        for _ in 0..len {
            x = sail_emulator::rng::mix(x);
            buf.push(b"{}[]\":,0123456789.-eE tfnrul\\abcx"[(x % 33) as usize]);
        }
        let path = if i % 2 == 0 { "/v1/responses" } else { "/v1/completions" };
        let r = api.post_raw(path, buf).await;
        assert!((400..500).contains(&r.status), "status {}", r.status);
    }
    assert_eq!(api.get("/v1/models").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_million_tokens_fit_the_default_limit() {
    let h = start(json!({}));
    let api = Api::new(&h);
    let toks: Vec<u32> = (0..2_000_000u32).map(|i| 1_000_000_000 + i).collect();
    let mut b = body(&toks);
    b["max_output_tokens"] = json!(2);
    let r = api.post("/v1/responses", &b).await;
    assert_eq!(r.status, 202, "{}", r.json);
    let done = api.wait(r.json["id"].as_str().unwrap(), 10.0).await;
    assert_eq!(done["usage"]["input_tokens"], 2_000_000);
    let toks: Vec<u32> = vec![1; 2_000_001];
    let r = api.post("/v1/responses", &body(&toks)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"]["param"], "raw_prompt_tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_log_has_no_secrets() {
    let dir = std::env::temp_dir().join(format!("sail-emu-log-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("req.jsonl");
    let _ = std::fs::remove_file(&path);
    let h = start(json!({"request_log": path.to_str().unwrap()}));
    let api = Api::new(&h);
    let url = h.add_archive("ckpt", vec![0u8; 10], Duration::from_secs(60));
    let sig = url.split("signature=").nth(1).unwrap().to_string();
    let r = api.send(api.c.get(&url)).await;
    assert_eq!(r.status, 200);
    let mut b = body(&[1]);
    b["metadata"]["lora"] = json!(url);
    b["metadata"]["tinker_adapter_config"] = json!("{\"r\": 4}");
    let r = api.post("/v1/responses", &b).await;
    let id = r.json["id"].as_str().unwrap().to_string();
    let done = api.wait(&id, 5.0).await;
    assert!(!done.to_string().contains(&sig), "signed URL leaked into the response");
    h.shutdown();
    let log = std::fs::read_to_string(&path).unwrap();
    assert!(log.lines().count() >= 3);
    assert!(!log.contains(KEY));
    assert!(!log.contains(&sig));
    assert!(!log.contains("signature"));
    assert!(log.contains(&id));
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["method"].is_string() && v["path"].is_string() && v["latency_ms"].is_number());
    }
}

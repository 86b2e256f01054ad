//! 50,000 responses queued at once: creates stay fast, counters agree, shutdown does not hang.
mod common;
use common::*;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_queued() {
    let h = start(json!({"latency": {"scale": 1.0, "windows": {"standard": 600.0}}}));
    let api = Arc::new(Api::new(&h));
    let mut b = body(&[1, 2, 3, 4]);
    b["metadata"]["completion_window"] = json!("standard");
    let b = Arc::new(serde_json::to_vec(&b).unwrap());
    let t0 = Instant::now();
    let workers: Vec<_> = (0..32)
        .map(|w| {
            let (api, b) = (api.clone(), b.clone());
            tokio::spawn(async move {
                let mut last = String::new();
                for _ in 0..(50_000 / 32 + usize::from(w < 50_000 % 32)) {
                    let r = api.post_raw("/v1/responses", (*b).clone()).await;
                    assert_eq!(r.status, 202);
                    last = r.json["id"].as_str().unwrap().to_string();
                }
                last
            })
        })
        .collect();
    let mut ids = Vec::new();
    for w in workers {
        ids.push(w.await.unwrap());
    }
    let elapsed = t0.elapsed();
    let s = h.stats();
    assert_eq!(s["creates"], 50_000);
    assert_eq!(s["in_flight"], 50_000);
    assert_eq!(s["queued"], 50_000);
    assert_eq!(s["stored_responses"], 50_000);
    assert_eq!(api.get(&format!("/v1/responses/{}", ids[0])).await.json["status"], "queued");
    let r = api.post(&format!("/v1/responses/{}/cancel", ids[1]), &json!({})).await;
    assert_eq!(r.json["status"], "cancelled");
    assert_eq!(h.stats()["in_flight"], 49_999);
    eprintln!("50k creates in {elapsed:?}");
    let t1 = Instant::now();
    h.shutdown();
    assert!(t1.elapsed() < Duration::from_secs(5), "shutdown took {:?}", t1.elapsed());
}

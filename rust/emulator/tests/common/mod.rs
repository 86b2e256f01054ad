#![allow(dead_code)]
use sail_emulator::{config::merge_patch, EmulatorConfig, EmulatorHandle};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub const KEY: &str = "sk-sail-lite-local";

/// An emulator with zero latency, patched with `patch`.
pub fn start(patch: Value) -> EmulatorHandle {
    let mut v = json!({"latency": {"scale": 0.0}});
    merge_patch(&mut v, &patch);
    EmulatorHandle::start(EmulatorConfig::from_value(v).expect("config")).expect("start")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub struct Api {
    pub base: String,
    pub c: reqwest::Client,
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

impl Api {
    pub fn new(h: &EmulatorHandle) -> Api {
        Api { base: h.base_url().to_string(), c: client() }
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let r = rb.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp { status, headers, json }
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(self.c.post(format!("{}{}", self.base, path)).bearer_auth(KEY).json(body)).await
    }

    pub async fn post_key(&self, path: &str, body: &Value, key: &str) -> Resp {
        self.send(self.c.post(format!("{}{}", self.base, path)).bearer_auth(KEY).header("Idempotency-Key", key).json(body)).await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> Resp {
        self.send(self.c.post(format!("{}{}", self.base, path)).bearer_auth(KEY).header("content-type", "application/json").body(body))
            .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.c.get(format!("{}{}", self.base, path)).bearer_auth(KEY)).await
    }

    /// Poll until a final status (or panic after `secs`).
    pub async fn wait(&self, id: &str, secs: f64) -> Value {
        let t0 = Instant::now();
        loop {
            let r = self.get(&format!("/v1/responses/{id}")).await;
            assert_eq!(r.status, 200, "{}", r.json);
            let s = r.json["status"].as_str().unwrap_or("").to_string();
            if ["completed", "failed", "cancelled"].contains(&s.as_str()) {
                return r.json;
            }
            assert!(t0.elapsed().as_secs_f64() < secs, "response {id} not finished: {}", r.json);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn body(tokens: &[u32]) -> Value {
    json!({"model": "moonshotai/Kimi-K2.6", "input": "x", "raw_prompt_tokens": tokens,
           "max_output_tokens": 16, "temperature": 0.7, "top_p": 1.0, "background": true,
           "metadata": {"completion_window": "priority"}})
}

//! sail-loadgen: measure how many requests/s a Sail endpoint on loopback sustains.
//!
//! C workers, each with its own keep-alive HTTP/1.1 connection, run a create (background) + poll
//! until finished loop, until N requests were sent or the duration ran out. Prints one JSON object:
//! requests/s, samples/s and latency percentiles. Without `--url` it starts an in-process emulator
//! (latency 0) and measures that. Loopback targets only.
//!
//! ```text
//! sail-loadgen [--url http://127.0.0.1:PORT] [--api-key KEY] [--requests 20000] [--concurrency 64]
//!              [--duration 30] [--mode create-poll|poll|models] [--max-tokens 16] [--threads 2]
//! ```
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    url: Option<String>,
    api_key: String,
    requests: u64,
    concurrency: usize,
    duration: f64,
    mode: String,
    max_tokens: u32,
    threads: usize,
    server_threads: usize,
}

const USAGE: &str = "usage: sail-loadgen [--url http://127.0.0.1:PORT] [--api-key KEY] [--requests N<=10000000] [--concurrency C<=4096] [--duration SECS<=600] [--mode create-poll|poll|models] [--max-tokens N] [--threads N] [--server-threads N]";

fn usage(msg: &str) -> ! {
    eprintln!("sail-loadgen: {msg}");
    eprintln!("{USAGE}");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        url: None,
        api_key: "sk-sail-lite-local".into(),
        requests: 20_000,
        concurrency: 64,
        duration: 30.0,
        mode: "create-poll".into(),
        max_tokens: 16,
        threads: 2,
        server_threads: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let num = |v: &str| v.parse::<f64>().unwrap_or_else(|_| usage(&format!("{flag}: not a number: {v}")));
        match flag.as_str() {
            "--url" => a.url = Some(v.trim_end_matches('/').to_string()),
            "--api-key" => a.api_key = v,
            "--requests" => a.requests = num(&v) as u64,
            "--concurrency" => a.concurrency = num(&v) as usize,
            "--duration" => a.duration = num(&v),
            "--mode" => a.mode = v,
            "--max-tokens" => a.max_tokens = num(&v) as u32,
            "--threads" => a.threads = num(&v) as usize,
            "--server-threads" => a.server_threads = num(&v) as usize,
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if !(1..=10_000_000).contains(&a.requests) {
        usage("--requests must be in 1..=10000000");
    }
    if !(1..=4096).contains(&a.concurrency) {
        usage("--concurrency must be in 1..=4096");
    }
    if !(a.duration > 0.0 && a.duration <= 600.0) {
        usage("--duration must be in (0, 600]");
    }
    if !["create-poll", "poll", "models"].contains(&a.mode.as_str()) {
        usage("--mode must be create-poll, poll or models");
    }
    a.threads = a.threads.clamp(1, 64);
    a
}

/// Only loopback addresses: this is a local capacity probe, not a load tester for remote hosts.
fn loopback_addr(url: &str) -> SocketAddr {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| usage("--url must be http://127.0.0.1:PORT (plain HTTP, loopback)"));
    let hostport = rest.split('/').next().unwrap_or("");
    let hostport = hostport.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = hostport.parse().unwrap_or_else(|_| usage("--url must name an IP literal and port, e.g. http://127.0.0.1:8080"));
    if !addr.ip().is_loopback() {
        usage("only loopback targets are allowed");
    }
    addr
}

#[derive(Deserialize)]
struct Created {
    id: Option<String>,
    status: Option<String>,
}

#[derive(Default)]
struct Tally {
    lat_us: Vec<u32>,
    creates: u64,
    polls: u64,
    errors: u64,
    non_2xx: u64,
    samples: u64,
}

struct Shared {
    addr: SocketAddr,
    host: String,
    auth: String,
    budget: u64,
    sent: AtomicU64,
    deadline: Instant,
    stop: AtomicBool,
    mode: String,
    create_body: Bytes,
}

impl Shared {
    fn take(&self) -> bool {
        if self.stop.load(Relaxed) || Instant::now() >= self.deadline {
            return false;
        }
        self.sent.fetch_add(1, Relaxed) < self.budget
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(sh: &Shared) -> Option<Sender> {
    let stream = tokio::net::TcpStream::connect(sh.addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

async fn call(sender: &mut Sender, sh: &Shared, method: Method, path: &str, body: Bytes, t: &mut Tally) -> Option<(u16, Bytes)> {
    sender.ready().await.ok()?;
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", &sh.host)
        .header("authorization", &sh.auth)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .ok()?;
    let t0 = Instant::now();
    let resp = sender.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    t.lat_us.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
    if !(200..300).contains(&status) {
        t.non_2xx += 1;
    }
    Some((status, bytes))
}

async fn worker(sh: Arc<Shared>, seed_id: Option<String>) -> Tally {
    let mut t = Tally::default();
    let mut sender: Option<Sender> = None;
    'outer: loop {
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            sender = connect(&sh).await;
            if sender.is_none() {
                t.errors += 1;
                if !sh.take() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        }
        let s = sender.as_mut().expect("connected above");
        match sh.mode.as_str() {
            "models" => {
                if !sh.take() {
                    break;
                }
                if call(s, &sh, Method::GET, "/v1/models", Bytes::new(), &mut t).await.is_none() {
                    t.errors += 1;
                    sender = None;
                }
            }
            "poll" => {
                if !sh.take() {
                    break;
                }
                let path = format!("/v1/responses/{}", seed_id.as_deref().unwrap_or("resp_0000000000000000"));
                t.polls += 1;
                if call(s, &sh, Method::GET, &path, Bytes::new(), &mut t).await.is_none() {
                    t.errors += 1;
                    sender = None;
                }
            }
            _ => {
                if !sh.take() {
                    break;
                }
                t.creates += 1;
                let Some((status, body)) = call(s, &sh, Method::POST, "/v1/responses", sh.create_body.clone(), &mut t).await else {
                    t.errors += 1;
                    sender = None;
                    continue;
                };
                let Some(id) = (status == 202).then(|| serde_json::from_slice::<Created>(&body).ok().and_then(|c| c.id)).flatten() else {
                    continue;
                };
                let path = format!("/v1/responses/{id}");
                loop {
                    if !sh.take() {
                        break 'outer;
                    }
                    t.polls += 1;
                    let Some((status, body)) = call(s, &sh, Method::GET, &path, Bytes::new(), &mut t).await else {
                        t.errors += 1;
                        sender = None;
                        continue 'outer;
                    };
                    let st = serde_json::from_slice::<Created>(&body).ok().and_then(|c| c.status).unwrap_or_default();
                    if status != 200 || matches!(st.as_str(), "completed" | "failed" | "cancelled") {
                        t.samples += (st == "completed") as u64;
                        break;
                    }
                }
            }
        }
    }
    t
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() {
    let args = parse_args();
    // Without --url: measure an in-process emulator with no latency and no faults.
    let local = if args.url.is_none() {
        let cfg = sail_emulator::EmulatorConfig::from_value(serde_json::json!({
            "latency": {"scale": 0.0}, "worker_threads": args.server_threads.clamp(1, 64)
        }))
        .unwrap_or_else(|e| usage(&e));
        Some(sail_emulator::EmulatorHandle::start(cfg).unwrap_or_else(|e| usage(&e)))
    } else {
        None
    };
    let url = args.url.clone().unwrap_or_else(|| local.as_ref().map(|h| h.base_url().to_string()).unwrap_or_default());
    let addr = loopback_addr(&url);
    let create_body = serde_json::to_vec(&serde_json::json!({
        "model": "moonshotai/Kimi-K2.6", "input": "-", "raw_prompt_tokens": [84, 104, 101, 32],
        "max_output_tokens": args.max_tokens, "temperature": 1.0, "top_p": 1.0, "background": true,
        "metadata": {"completion_window": "priority"}
    }))
    .unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .unwrap_or_else(|e| usage(&e.to_string()));
    let out = rt.block_on(async {
        let sh = Arc::new(Shared {
            addr,
            host: addr.to_string(),
            auth: format!("Bearer {}", args.api_key),
            budget: args.requests,
            sent: AtomicU64::new(0),
            deadline: Instant::now() + Duration::from_secs_f64(args.duration),
            stop: AtomicBool::new(false),
            mode: args.mode.clone(),
            create_body: Bytes::from(create_body),
        });
        // For --mode poll: one finished response everybody polls.
        let mut seed_id = None;
        if args.mode == "poll" {
            let mut t = Tally::default();
            if let Some(mut s) = connect(&sh).await {
                let mut body = serde_json::from_slice::<serde_json::Value>(&sh.create_body).unwrap_or_default();
                body["background"] = serde_json::json!(false);
                let b = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
                if let Some((_, r)) = call(&mut s, &sh, Method::POST, "/v1/responses", b, &mut t).await {
                    seed_id = serde_json::from_slice::<Created>(&r).ok().and_then(|c| c.id);
                }
            }
        }
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..args.concurrency).map(|_| tokio::spawn(worker(sh.clone(), seed_id.clone()))).collect();
        let mut all = Tally::default();
        for task in tasks {
            if let Ok(t) = task.await {
                all.lat_us.extend(t.lat_us);
                all.creates += t.creates;
                all.polls += t.polls;
                all.errors += t.errors;
                all.non_2xx += t.non_2xx;
                all.samples += t.samples;
            }
        }
        let elapsed = t0.elapsed().as_secs_f64();
        all.lat_us.sort_unstable();
        let n = all.lat_us.len();
        let mean = if n > 0 { all.lat_us.iter().map(|&x| x as f64).sum::<f64>() / n as f64 / 1000.0 } else { 0.0 };
        serde_json::json!({
            "target": if local.is_some() { "in-process emulator" } else { "url" },
            "mode": args.mode,
            "concurrency": args.concurrency,
            "client_threads": args.threads,
            "requests": n,
            "creates": all.creates,
            "polls": all.polls,
            "samples_completed": all.samples,
            "errors": all.errors,
            "non_2xx": all.non_2xx,
            "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
            "requests_per_s": (n as f64 / elapsed).round(),
            "samples_per_s": (all.samples as f64 / elapsed).round(),
            "latency_ms": {"mean": mean, "p50": pct(&all.lat_us, 0.5), "p90": pct(&all.lat_us, 0.9),
                           "p99": pct(&all.lat_us, 0.99), "max": pct(&all.lat_us, 1.0)},
        })
    });
    let server_stats = local.as_ref().map(|h| h.stats());
    let mut out = out;
    if let Some(s) = server_stats {
        out["server"] =
            serde_json::json!({"creates": s["creates"], "polls": s["polls"], "connections_accepted": s["connections_accepted"]});
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    if let Some(h) = local {
        h.shutdown();
    }
}

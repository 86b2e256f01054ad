//! Connection handling. Connections are served with hyper-util directly (not `axum::serve`) so the
//! server can count them, reset one on an injected "dropped connection" fault, and close them all on
//! shutdown. Every request passes through `handle`: stats, auth, fault injection, request log.
use crate::error::ApiError;
use crate::faults::{self, Class};
use crate::reqlog::Line;
use crate::routes::responses::RespId;
use crate::state::{unix_now_f64, AppState};
use crate::stats::{inc, FaultKind};
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

/// Per-connection control: a handler asks for the socket to be reset.
struct ConnCtl {
    drop_now: Notify,
}

pub async fn serve(listener: TcpListener, st: Arc<AppState>, router: Router, mut shutdown: watch::Receiver<bool>) {
    let sweeper = tokio::spawn(sweep_loop(st.clone(), shutdown.clone()));
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    inc(&st.stats.connections_accepted);
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_conn(stream, st.clone(), router.clone(), shutdown.clone()));
                }
                // Out of fds or similar: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            _ = shutdown.changed() => break,
        }
    }
    sweeper.abort();
}

async fn sweep_loop(st: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let every = st.retention().div_f64(4.0).clamp(Duration::from_millis(20), Duration::from_secs(5));
        tokio::select! {
            _ = tokio::time::sleep(every) => { st.store.sweep(st.retention()); }
            _ = shutdown.changed() => return,
        }
    }
}

async fn serve_conn(stream: TcpStream, st: Arc<AppState>, router: Router, mut shutdown: watch::Receiver<bool>) {
    let fd = stream.as_raw_fd();
    let ctl = Arc::new(ConnCtl { drop_now: Notify::new() });
    let ctl2 = ctl.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| handle(st.clone(), router.clone(), ctl2.clone(), req));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = ctl.drop_now.notified() => {
            // SO_LINGER 0 makes the close below send an RST: the client sees a reset connection
            // with no HTTP response, like a crashed proxy. The fd is still owned by `conn` here.
            let lg = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: fd belongs to the stream inside `conn`, which is alive until the end of this scope.
            unsafe {
                libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, &lg as *const _ as *const libc::c_void, std::mem::size_of::<libc::linger>() as libc::socklen_t);
            }
        }
        _ = shutdown.changed() => {}
    }
}

async fn handle(st: Arc<AppState>, router: Router, ctl: Arc<ConnCtl>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let t0 = Instant::now();
    inc(&st.stats.requests_total);
    let class = Class::of(req.method(), req.uri().path());
    // Only kept when logging; never the query string (signed URLs carry their signature there).
    let logged = st.reqlog.as_ref().map(|_| (req.method().to_string(), req.uri().path().to_string()));
    let mut fault: Option<FaultKind> = None;
    let mut rid: Option<Box<str>> = None;

    let path = req.uri().path();
    let needs_key = path.starts_with("/v1/") || path.starts_with("/oai/");
    let resp = if needs_key && !authorized(&st, &req) {
        unauthorized(&req)
    } else {
        let plan = if class == Class::Other {
            faults::Plan::default()
        } else {
            faults::decide(&st.live().faults, class, st.seed, st.next_fault_seq())
        };
        if let Some(d) = plan.slow {
            st.stats.fault(FaultKind::Slow);
            tokio::time::sleep(d).await;
        }
        match plan.fault {
            None => {
                let Ok(r) = router.oneshot(req).await;
                r
            }
            Some(k) => {
                if plan.after {
                    // The request takes effect (the response is created), then its answer is lost.
                    let Ok(r) = router.oneshot(req).await;
                    rid = r.extensions().get::<RespId>().map(|r| r.0.clone());
                }
                fault = Some(k);
                st.stats.fault(k);
                if k == FaultKind::Drop {
                    write_log(&st, &logged, 0, rid.as_deref(), t0, fault);
                    ctl.drop_now.notify_one();
                    // Never answers: the connection task resets the socket and drops this future.
                    std::future::pending::<()>().await;
                }
                faults::response(k, &st.live().faults)
            }
        }
    };
    let status = resp.status().as_u16();
    st.stats.status(status);
    if logged.is_some() {
        let r = resp.extensions().get::<RespId>().map(|r| &*r.0).or(rid.as_deref());
        write_log(&st, &logged, status, r, t0, fault);
    }
    Ok(resp)
}

fn write_log(st: &AppState, logged: &Option<(String, String)>, status: u16, rid: Option<&str>, t0: Instant, fault: Option<FaultKind>) {
    if let (Some(log), Some((method, path))) = (&st.reqlog, logged) {
        log.write(&Line {
            ts: unix_now_f64(),
            method,
            path,
            status,
            response_id: rid,
            latency_ms: t0.elapsed().as_secs_f64() * 1e3,
            fault: fault.map(|k| k.name()),
        });
    }
}

fn authorized(st: &AppState, req: &Request<Incoming>) -> bool {
    match req.headers().get("authorization") {
        Some(v) => {
            let v = v.as_bytes();
            v.len() == st.auth_header.len() && v.iter().zip(st.auth_header.iter()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
        }
        None => false,
    }
}

fn unauthorized(req: &Request<Incoming>) -> Response<Body> {
    // Never echo the key that was sent.
    let msg = if req.headers().contains_key("authorization") {
        "Incorrect API key provided"
    } else {
        "Missing API key: send 'Authorization: Bearer <key>'"
    };
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", Some("invalid_api_key"), msg).into_response();
    r.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
    r
}

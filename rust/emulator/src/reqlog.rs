//! Optional JSON-lines request log, written by a background thread so handlers never touch the file.
//! Lines hold method, path (never the query string, which may carry a URL signature), status,
//! response id, latency and the injected fault; never headers.
use parking_lot::Mutex;
use serde::Serialize;
use std::io::{BufWriter, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Serialize)]
pub struct Line<'a> {
    pub ts: f64,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub response_id: Option<&'a str>,
    pub latency_ms: f64,
    pub fault: Option<&'a str>,
}

pub struct RequestLog {
    tx: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl RequestLog {
    pub fn open(path: &str) -> Result<RequestLog, String> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("request_log: cannot open {path}: {e}"))?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("sail-emu-log".into())
            .spawn(move || {
                let mut w = BufWriter::new(f);
                loop {
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(line) => {
                            let _ = w.write_all(&line);
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            let _ = w.flush();
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                let _ = w.flush();
            })
            .map_err(|e| format!("request_log: cannot start writer: {e}"))?;
        Ok(RequestLog { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) })
    }

    pub fn write(&self, line: &Line) {
        let Ok(mut buf) = serde_json::to_vec(line) else { return };
        buf.push(b'\n');
        if let Some(tx) = self.tx.lock().as_ref() {
            let _ = tx.send(buf);
        }
    }

    /// Flush and stop the writer (idempotent).
    pub fn close(&self) {
        self.tx.lock().take();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

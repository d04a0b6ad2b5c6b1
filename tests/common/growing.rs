//! A loopback HTTP/1.1 origin for a directory that a live packager is still writing.
//!
//! ffmpeg 5.1's dash muxer, writing to files with `-streaming 1`, appends each media
//! segment to `<name>.tmp` while it is being produced (one `moof`+`mdat` per frame, or per
//! `-frag_duration` with `-ldash 1`) and renames it to `<name>` once complete; the MPD is
//! written to `manifest.mpd.tmp` and renamed (atomic); init segments are written in place
//! before the first MPD. This origin serves such a directory "as it is written":
//!
//! - a file that exists is served whole (single byte ranges honoured), as by `Origin`;
//! - a request for `<name>` while only `<name>.tmp` exists is answered at once with status
//!   200 and a chunked body that streams the bytes already written and then follows the
//!   file as it grows, until the file is complete: renamed to `<name>`, the writer marked
//!   done (`writer_done`), or no growth for [`STALL`];
//! - anything else is 404. HEAD is answered like GET, without a body.
//!
//! hyper 1.x on a tokio runtime owned by a background thread, like `origin.rs`; the
//! server stops (and the thread is joined) when the [`GrowingOrigin`] is dropped.

#![allow(dead_code)]

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

/// A growing response ends when the file has not grown for this long.
pub const STALL: Duration = Duration::from_secs(10);

/// How often a growing file is polled for new bytes.
const POLL: Duration = Duration::from_millis(10);

/// One request as the origin saw it.
#[derive(Clone, Debug)]
pub struct GrowingHit {
    pub method: String,
    /// URL path without the query.
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
    /// The file was still being written (`<name>.tmp`) when the request arrived, and the
    /// body followed it.
    pub growing: bool,
    /// Body bytes sent (for a growing response: all bytes streamed until it ended).
    pub bytes: u64,
    /// When the request arrived.
    pub at: Instant,
    /// When the last body byte was handed to the connection (growing responses only).
    pub finished: Option<Instant>,
}

struct State {
    root: PathBuf,
    writer_done: Arc<AtomicBool>,
    log: Mutex<Vec<GrowingHit>>,
}

/// The origin. Dropping it stops the server and joins its thread.
pub struct GrowingOrigin {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GrowingOrigin {
    /// Serves `root` on 127.0.0.1 (ephemeral port). `writer_done` is set by whoever
    /// watches the writer (e.g. `LiveDash`) once it has exited: growing responses then end
    /// as soon as they have sent every byte of the file.
    pub fn start(root: impl AsRef<Path>, writer_done: Arc<AtomicBool>) -> GrowingOrigin {
        let root = root.as_ref().to_path_buf();
        let std_listener =
            std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            root,
            writer_done,
            log: Mutex::new(Vec::new()),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("growing-origin".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("growing-origin-rt")
                    .enable_all()
                    .build()
                    .expect("growing origin runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
                    serve(listener, st, rx).await;
                });
                rt.shutdown_timeout(Duration::from_millis(500));
            })
            .expect("spawn growing origin thread");
        GrowingOrigin {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/<rel>`
    pub fn url(&self, rel: &str) -> String {
        format!("http://{}/{}", self.addr, rel.trim_start_matches('/'))
    }

    /// URL path (leading slash) of a file below the root.
    pub fn rel_path(&self, file: &Path) -> String {
        let rel = file
            .strip_prefix(&self.state.root)
            .unwrap_or_else(|_| panic!("{} is not below the origin root", file.display()));
        let mut s = String::new();
        for c in rel.components() {
            s.push('/');
            s.push_str(&c.as_os_str().to_string_lossy());
        }
        s
    }

    /// `http://` URL of a file below the root.
    pub fn url_of(&self, file: &Path) -> String {
        self.url(&self.rel_path(file))
    }

    /// `mesh+http://` URL of a file below the root.
    pub fn mesh_url_of(&self, file: &Path) -> String {
        format!("mesh+{}", self.url_of(file))
    }

    /// The request log, ordered by arrival.
    pub fn log(&self) -> Vec<GrowingHit> {
        let mut log = lock(&self.state.log).clone();
        log.sort_by_key(|h| h.at);
        log
    }
}

impl Drop for GrowingOrigin {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            res = listener.accept() => {
                let Ok((stream, _)) = res else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let st = state.clone();
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(io, svc)
                        .await;
                });
            }
        }
    }
}

type RespBody = BoxBody<Bytes, Infallible>;

/// A body fed chunk by chunk from a thread following a growing file.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "mpd" => "application/dash+xml",
        "m3u8" => "application/vnd.apple.mpegurl",
        "mp4" | "m4s" | "m4v" | "m4a" => "video/mp4",
        "ts" => "video/mp2t",
        "vtt" => "text/vtt",
        _ => "application/octet-stream",
    }
}

fn safe_join(root: &Path, url_path: &str) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    for c in Path::new(url_path.trim_start_matches('/')).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn text_response(status: u16, text: &str) -> (Response<RespBody>, u64) {
    let body = Bytes::from(format!("{text}\n"));
    let n = body.len() as u64;
    let mut resp = Response::new(Full::new(body).boxed());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    (resp, n)
}

/// A complete file: 200, or 206 for one satisfiable `bytes=a-b` / `bytes=a-` range.
fn file_response(data: Vec<u8>, path: &str, range: Option<&str>) -> (Response<RespBody>, u64) {
    let len = data.len();
    let spec = range
        .and_then(|r| r.trim().strip_prefix("bytes="))
        .filter(|s| !s.contains(','))
        .and_then(|s| s.split_once('-'))
        .and_then(|(a, b)| {
            let start: usize = a.trim().parse().ok()?;
            let end: usize = if b.trim().is_empty() {
                len.checked_sub(1)?
            } else {
                b.trim().parse::<usize>().ok()?.min(len.checked_sub(1)?)
            };
            (start <= end).then_some((start, end))
        });
    let (status, body, content_range) = match spec {
        Some((s, e)) => (
            StatusCode::PARTIAL_CONTENT,
            Bytes::from(data).slice(s..=e),
            Some(format!("bytes {s}-{e}/{len}")),
        ),
        None => (StatusCode::OK, Bytes::from(data), None),
    };
    let n = body.len() as u64;
    let mut resp = Response::new(Full::new(body).boxed());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(cr) = content_range
        && let Ok(v) = HeaderValue::from_str(&cr)
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    (resp, n)
}

fn handle(state: &Arc<State>, req: &Request<Incoming>) -> Response<RespBody> {
    let at = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let record = |status: u16, bytes: u64| GrowingHit {
        method: method.to_string(),
        path: path.clone(),
        range: range.clone(),
        status,
        growing: false,
        bytes,
        at,
        finished: None,
    };
    let head = method == Method::HEAD;
    let (resp, bytes) = 'resp: {
        if method != Method::GET && !head {
            break 'resp text_response(405, "only GET and HEAD");
        }
        let Some(file) = safe_join(&state.root, &path) else {
            break 'resp text_response(400, "bad path");
        };
        // Complete file? (Checked again after a failed open of the temp file: ffmpeg may
        // rename it in between.)
        if let Ok(data) = std::fs::read(&file) {
            break 'resp file_response(data, &path, range.as_deref());
        }
        let mut tmp_name = file.clone().into_os_string();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        match std::fs::File::open(&tmp) {
            Ok(_) if head => {
                // The length is not known yet.
                let mut r = Response::new(Full::new(Bytes::new()).boxed());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(content_type(&path)),
                );
                break 'resp (r, 0);
            }
            Ok(f) if range.is_none() => {
                return growing_response(state.clone(), f, file, record(200, 0));
            }
            Ok(_) => break 'resp text_response(416, "ranges of a growing file are not served"),
            Err(_) => {}
        }
        match std::fs::read(&file) {
            Ok(data) => file_response(data, &path, range.as_deref()),
            Err(_) => text_response(404, "not found"),
        }
    };
    let (resp, bytes) = if head {
        // Keep the headers (Content-Length included), never a body.
        let (parts, _) = resp.into_parts();
        (
            Response::from_parts(parts, Full::new(Bytes::new()).boxed()),
            0,
        )
    } else {
        (resp, bytes)
    };
    lock(&state.log).push(record(resp.status().as_u16(), bytes));
    resp
}

/// 200 with a chunked body following `tmp` (the open temp file) until `final_path` exists,
/// the writer is done, or the file stalls. The request is logged when the body ends.
fn growing_response(
    state: Arc<State>,
    mut tmp: std::fs::File,
    final_path: PathBuf,
    mut hit: GrowingHit,
) -> Response<RespBody> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    hit.growing = true;
    let path = hit.path.clone();
    let spawned = std::thread::Builder::new()
        .name("growing-body".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut last_growth = Instant::now();
            loop {
                // Decide whether the file is complete *before* reading: if it is, a read
                // that returns nothing means every byte has been sent.
                let complete = final_path.is_file() || state.writer_done.load(Ordering::SeqCst);
                let n = match tmp.read(&mut buf) {
                    Ok(n) => n,
                    Err(_) => break,
                };
                if n > 0 {
                    last_growth = Instant::now();
                    hit.bytes += n as u64;
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        break; // the client went away
                    }
                    continue;
                }
                if complete || last_growth.elapsed() > STALL {
                    break;
                }
                std::thread::sleep(POLL);
            }
            hit.finished = Some(Instant::now());
            lock(&state.log).push(hit);
            // Dropping `tx` ends the body.
        });
    if spawned.is_err() {
        let (resp, _) = text_response(500, "cannot spawn a body thread");
        return resp;
    }
    let mut resp = Response::new(ChannelBody { rx }.boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    resp
}

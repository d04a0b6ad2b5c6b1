//! A small, self-contained HTTP/1.1 origin server for tests and examples.
//!
//! Serves files from a root directory on `127.0.0.1:<ephemeral>` using hyper 1.x on
//! a tokio runtime owned by a background thread. The server is shut down (and the
//! thread joined) when the [`Origin`] is dropped.
//!
//! Features: GET/HEAD, single byte ranges (`bytes=a-b`, `bytes=a-`, `bytes=-n`),
//! content types by extension, keep-alive, a request log and a byte counter, fault
//! injection (status overrides, "fail the next N requests", fixed bodies, per-path
//! delays, `/redirect/<rest>` → 302 `/<rest>`), and sliding-window live playlists
//! built from a VOD media playlist.
//!
//! This file is also compiled into `examples/play-local.rs` through `#[path]`, so it
//! must only depend on std, tokio, hyper, hyper-util, http-body-util, bytes and m3u8-rs.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

/// One request as seen by the origin.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: String,
    /// Path including the query string, e.g. `/ts/seg00001.ts?token=abc`.
    pub path: String,
    /// The raw `Range` request header, if any.
    pub range: Option<String>,
    pub status: u16,
    /// Number of body bytes sent in the response.
    pub body_bytes: u64,
    /// When the request was received.
    pub at: Instant,
    /// For live playlist requests: `(media_sequence, end_exclusive)` of the window served.
    pub live_window: Option<(u64, u64)>,
}

impl RequestRecord {
    /// The path without the query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
    pub fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, q)| q)
    }
}

/// Configuration of a sliding-window live playlist.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// Number of segments listed in each playlist response.
    pub window: usize,
    /// Number of segments available when the live stream starts.
    pub start_segments: u64,
    /// Wall-clock time between two new segments.
    pub segment_duration: Duration,
    /// Wrap around the VOD segments forever (with EXT-X-DISCONTINUITY at each wrap).
    pub looped: bool,
    /// Stop producing segments after this many and append EXT-X-ENDLIST.
    pub end_after: Option<u64>,
    /// If set, an `EXT-X-SERVER-CONTROL:HOLD-BACK=<secs>` tag is emitted.
    pub hold_back: Option<f64>,
    /// Serve every segment with one byte flipped (a polluting origin); its
    /// `segments-sha256.json` matches the flipped bytes.
    pub corrupt: bool,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            window: 6,
            start_segments: 10,
            segment_duration: Duration::from_secs(2),
            looped: true,
            end_after: None,
            hold_back: None,
            corrupt: false,
        }
    }
}

/// Window of a live playlist at one request.
#[derive(Clone, Copy, Debug)]
pub struct LiveSnapshot {
    pub at: Instant,
    /// EXT-X-MEDIA-SEQUENCE of the response (first listed segment).
    pub media_sequence: u64,
    /// One past the last listed sequence number (the live edge).
    pub end: u64,
    pub end_list: bool,
}

#[derive(Clone, Debug)]
struct LiveSegment {
    /// Absolute URL path of the source file, e.g. `/ts/seg00003.ts`.
    source: String,
    ext: String,
    duration: f32,
    /// (length, offset)
    byte_range: Option<(u64, u64)>,
    /// Fully formatted `#EXT-X-KEY:...` line (absolute URI, explicit IV), if any.
    key_line: Option<String>,
    /// Fully formatted `#EXT-X-MAP:...` line (absolute URI), if any.
    map_line: Option<String>,
}

#[derive(Debug)]
struct LiveStream {
    /// URL path of the playlist, e.g. `/live.m3u8`.
    path: String,
    stem: String,
    segments: Vec<LiveSegment>,
    cfg: LiveConfig,
    target_duration: u64,
    version: usize,
    started: Instant,
    /// If set, the stream is frozen at this many segments and ENDLIST is appended.
    ended_at: Option<u64>,
    snapshots: Vec<LiveSnapshot>,
    /// Hex SHA-256 of the segments listed in `segments-sha256.json`, by sequence number.
    digests: HashMap<u64, String>,
}

impl LiveStream {
    fn cap(&self) -> u64 {
        let total = self.segments.len() as u64;
        match (self.cfg.looped, self.cfg.end_after) {
            (true, Some(e)) => e,
            (true, None) => u64::MAX,
            (false, Some(e)) => e.min(total),
            (false, None) => total,
        }
    }

    /// Number of segments available now, and whether the stream has ended.
    fn available(&self, now: Instant) -> (u64, bool) {
        if let Some(k) = self.ended_at {
            return (k, true);
        }
        let elapsed = now.saturating_duration_since(self.started);
        let step = self.cfg.segment_duration.as_nanos().max(1);
        let produced = (elapsed.as_nanos() / step) as u64;
        let k = self.cfg.start_segments.saturating_add(produced);
        let cap = self.cap();
        if k >= cap {
            (cap, self.cfg.end_after.is_some())
        } else {
            (k, false)
        }
    }

    fn segment_path(&self, seq: u64) -> String {
        let src = &self.segments[(seq % self.segments.len() as u64) as usize];
        format!("/live-{}/seg_{}.{}", self.stem, seq, src.ext)
    }

    fn render(&self, now: Instant) -> (String, LiveSnapshot) {
        let (k, end_list) = self.available(now);
        let total = self.segments.len() as u64;
        let first = k.saturating_sub(self.cfg.window as u64);
        let disc_seq = if self.cfg.looped && first > 0 {
            (first - 1) / total
        } else {
            0
        };
        let mut s = String::new();
        s.push_str("#EXTM3U\n");
        let _ = writeln!(s, "#EXT-X-VERSION:{}", self.version);
        let _ = writeln!(s, "#EXT-X-TARGETDURATION:{}", self.target_duration);
        if let Some(hb) = self.cfg.hold_back {
            let _ = writeln!(s, "#EXT-X-SERVER-CONTROL:HOLD-BACK={hb:.3}");
        }
        let _ = writeln!(s, "#EXT-X-MEDIA-SEQUENCE:{first}");
        if disc_seq > 0 {
            let _ = writeln!(s, "#EXT-X-DISCONTINUITY-SEQUENCE:{disc_seq}");
        }
        let mut last_key: Option<&str> = None;
        let mut last_map: Option<&str> = None;
        for seq in first..k {
            let seg = &self.segments[(seq % total) as usize];
            if self.cfg.looped && seq > 0 && seq % total == 0 && seq != first {
                s.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if seg.key_line.as_deref() != last_key {
                match &seg.key_line {
                    Some(l) => {
                        s.push_str(l);
                        s.push('\n');
                    }
                    None => s.push_str("#EXT-X-KEY:METHOD=NONE\n"),
                }
                last_key = seg.key_line.as_deref();
            }
            if seg.map_line.as_deref() != last_map {
                if let Some(l) = &seg.map_line {
                    s.push_str(l);
                    s.push('\n');
                }
                last_map = seg.map_line.as_deref();
            }
            let _ = writeln!(s, "#EXTINF:{:.6},", seg.duration);
            if let Some((len, off)) = seg.byte_range {
                let _ = writeln!(s, "#EXT-X-BYTERANGE:{len}@{off}");
            }
            s.push_str(&self.segment_path(seq));
            s.push('\n');
        }
        if end_list {
            s.push_str("#EXT-X-ENDLIST\n");
        }
        (
            s,
            LiveSnapshot {
                at: now,
                media_sequence: first,
                end: k,
                end_list,
            },
        )
    }
}

#[derive(Default, Debug)]
struct Faults {
    status: HashMap<String, u16>,
    fail_next: HashMap<String, (u32, u16)>,
    bodies: HashMap<String, (Bytes, String)>,
    delays: HashMap<String, Duration>,
}

#[derive(Debug)]
struct State {
    root: PathBuf,
    bytes_sent: AtomicU64,
    requests: AtomicU64,
    log: Mutex<Vec<RequestRecord>>,
    faults: Mutex<Faults>,
    lives: Mutex<HashMap<String, LiveStream>>,
}

/// The HTTP origin. Dropping it stops the server and joins its thread.
pub struct Origin {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Normalizes a path key: leading slash, no query.
fn key(path: &str) -> String {
    let p = path.split('?').next().unwrap_or("");
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

impl Origin {
    /// Starts serving `root` on 127.0.0.1 with an ephemeral port.
    pub fn start(root: impl AsRef<Path>) -> Origin {
        Origin::start_on(root, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// An origin listening on `ip` (e.g. a bridge address that network namespaces reach).
    pub fn start_on(root: impl AsRef<Path>, ip: std::net::IpAddr) -> Origin {
        let root = root.as_ref().to_path_buf();
        let std_listener = std::net::TcpListener::bind((ip, 0)).expect("bind origin listener");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            root,
            bytes_sent: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults::default()),
            lives: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("test-origin".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("test-origin-rt")
                    .enable_all()
                    .build()
                    .expect("origin runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
                    serve(listener, st, rx).await;
                });
                rt.shutdown_timeout(Duration::from_millis(500));
            })
            .expect("spawn origin thread");
        Origin {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    pub fn root(&self) -> &Path {
        &self.state.root
    }

    /// `http://127.0.0.1:PORT/<rel>`
    pub fn url(&self, rel: &str) -> String {
        format!("http://{}/{}", self.addr, rel.trim_start_matches('/'))
    }

    /// `mesh+http://127.0.0.1:PORT/<rel>`
    pub fn mesh_url(&self, rel: &str) -> String {
        format!("mesh+http://{}/{}", self.addr, rel.trim_start_matches('/'))
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
        self.mesh_url(&self.rel_path(file))
    }

    /// Total number of body bytes sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.state.bytes_sent.load(Ordering::SeqCst)
    }

    pub fn request_count(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// A copy of the request log.
    pub fn log(&self) -> Vec<RequestRecord> {
        lock(&self.state.log).clone()
    }

    /// Requests whose path (without query) equals `path`.
    pub fn requests_for(&self, path: &str) -> Vec<RequestRecord> {
        let k = key(path);
        self.log()
            .into_iter()
            .filter(|r| r.path_only() == k)
            .collect()
    }

    pub fn clear_log(&self) {
        lock(&self.state.log).clear();
    }

    /// Always answer `path` with `status` (and a short text body).
    pub fn set_status(&self, path: &str, status: u16) {
        lock(&self.state.faults).status.insert(key(path), status);
    }

    pub fn clear_status(&self, path: &str) {
        lock(&self.state.faults).status.remove(&key(path));
    }

    /// Answer the next `n` requests to `path` with `status`.
    pub fn fail_next(&self, path: &str, n: u32, status: u16) {
        lock(&self.state.faults)
            .fail_next
            .insert(key(path), (n, status));
    }

    /// Answer `path` with a fixed body (status 200).
    pub fn set_body(&self, path: &str, body: impl Into<Bytes>, content_type: &str) {
        lock(&self.state.faults)
            .bodies
            .insert(key(path), (body.into(), content_type.to_string()));
    }

    /// Delay every response to `path` by `delay`.
    pub fn set_delay(&self, path: &str, delay: Duration) {
        lock(&self.state.faults).delays.insert(key(path), delay);
    }

    /// Serves `name` (e.g. `live.m3u8`) as a sliding-window live playlist built
    /// from the VOD media playlist at `vod_playlist` (a file below the root).
    /// The live clock starts now.
    pub fn add_live_playlist(&self, name: &str, vod_playlist: &Path, cfg: LiveConfig) {
        let text = std::fs::read(vod_playlist)
            .unwrap_or_else(|e| panic!("read {}: {e}", vod_playlist.display()));
        let pl = match m3u8_rs::parse_playlist_res(&text) {
            Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
            _ => panic!("{} is not a media playlist", vod_playlist.display()),
        };
        assert!(!pl.segments.is_empty(), "empty VOD playlist");
        assert!(cfg.window > 0, "window must be > 0");
        let base_path = self.rel_path(vod_playlist);
        let base_dir = match base_path.rfind('/') {
            Some(i) => base_path[..=i].to_string(),
            None => "/".to_string(),
        };
        let resolve = |uri: &str| -> String {
            if uri.starts_with('/') {
                uri.to_string()
            } else if uri.contains("://") {
                panic!("absolute URIs are not supported in live source playlists: {uri}")
            } else {
                format!("{base_dir}{uri}")
            }
        };
        let mut segments = Vec::new();
        let mut cur_key: Option<m3u8_rs::Key> = None;
        let mut cur_map: Option<String> = None;
        let mut next_off: HashMap<String, u64> = HashMap::new();
        for (i, seg) in pl.segments.iter().enumerate() {
            let vod_seq = pl.media_sequence + i as u64;
            if let Some(k) = &seg.key {
                cur_key = match k.method {
                    m3u8_rs::KeyMethod::None => None,
                    _ => Some(k.clone()),
                };
            }
            if let Some(m) = &seg.map {
                let mut l = format!("#EXT-X-MAP:URI=\"{}\"", resolve(&m.uri));
                if let Some(br) = &m.byte_range {
                    let _ = write!(l, ",BYTERANGE=\"{}@{}\"", br.length, br.offset.unwrap_or(0));
                }
                cur_map = Some(l);
            }
            let source = resolve(&seg.uri);
            let byte_range = seg.byte_range.as_ref().map(|br| {
                let off = br
                    .offset
                    .unwrap_or_else(|| *next_off.get(&source).unwrap_or(&0));
                next_off.insert(source.clone(), off + br.length);
                (br.length, off)
            });
            let key_line = cur_key.as_ref().map(|k| {
                let method = match &k.method {
                    m3u8_rs::KeyMethod::AES128 => "AES-128".to_string(),
                    m3u8_rs::KeyMethod::SampleAES => "SAMPLE-AES".to_string(),
                    m3u8_rs::KeyMethod::None => "NONE".to_string(),
                    m3u8_rs::KeyMethod::Other(o) => o.clone(),
                };
                let iv = k.iv.clone().unwrap_or_else(|| format!("0x{vod_seq:032x}"));
                let uri = k.uri.as_deref().map(resolve).unwrap_or_default();
                format!("#EXT-X-KEY:METHOD={method},URI=\"{uri}\",IV={iv}")
            });
            let file = source.rsplit('/').next().unwrap_or("");
            let ext = file
                .rsplit_once('.')
                .map(|(_, e)| e)
                .unwrap_or("ts")
                .to_string();
            segments.push(LiveSegment {
                source,
                ext,
                duration: seg.duration,
                byte_range,
                key_line,
                map_line: cur_map.clone(),
            });
        }
        let max_dur = segments
            .iter()
            .map(|s| s.duration as f64)
            .fold(0.0f64, f64::max);
        let target_duration = (pl.target_duration).max(max_dur.round() as u64).max(1);
        let has_map = segments.iter().any(|s| s.map_line.is_some());
        let has_br = segments.iter().any(|s| s.byte_range.is_some());
        let version = if has_map {
            6
        } else if has_br {
            4
        } else {
            3
        };
        let path = key(name);
        let stem: String = path
            .trim_start_matches('/')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let live = LiveStream {
            path: path.clone(),
            stem,
            segments,
            cfg,
            target_duration,
            version,
            started: Instant::now(),
            ended_at: None,
            snapshots: Vec::new(),
            digests: HashMap::new(),
        };
        lock(&self.state.lives).insert(path, live);
    }

    /// URL of the `segments-sha256.json` of live playlist `name`.
    pub fn live_hashes_url(&self, name: &str) -> String {
        let stem = lock(&self.state.lives)
            .get(&key(name))
            .expect("unknown live playlist")
            .stem
            .clone();
        self.url(&format!("live-{stem}/segments-sha256.json"))
    }

    /// URL path of live segment `seq` of live playlist `name` (for fault injection).
    pub fn live_segment_path(&self, name: &str, seq: u64) -> String {
        let lives = lock(&self.state.lives);
        let l = lives.get(&key(name)).expect("unknown live playlist");
        l.segment_path(seq)
    }

    /// Parses a live segment path back into its sequence number.
    pub fn live_segment_seq(&self, name: &str, path: &str) -> Option<u64> {
        let lives = lock(&self.state.lives);
        let l = lives.get(&key(name))?;
        let prefix = format!("/live-{}/seg_", l.stem);
        let rest = key(path).strip_prefix(&prefix)?.to_string();
        rest.split('.').next()?.parse().ok()
    }

    /// Bytes the origin serves for live segment `seq` (range applied).
    pub fn live_segment_bytes(&self, name: &str, seq: u64) -> Vec<u8> {
        let (source, range) = {
            let lives = lock(&self.state.lives);
            let l = lives.get(&key(name)).expect("unknown live playlist");
            let s = &l.segments[(seq % l.segments.len() as u64) as usize];
            (s.source.clone(), s.byte_range)
        };
        let file = self.state.root.join(source.trim_start_matches('/'));
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        match range {
            Some((len, off)) => data[off as usize..(off + len) as usize].to_vec(),
            None => data,
        }
    }

    /// Number of distinct VOD segments the live stream loops over.
    pub fn live_source_len(&self, name: &str) -> u64 {
        let lives = lock(&self.state.lives);
        lives
            .get(&key(name))
            .expect("unknown live playlist")
            .segments
            .len() as u64
    }

    /// Currently available segment count (live edge) and whether it has ended.
    pub fn live_available(&self, name: &str) -> (u64, bool) {
        let lives = lock(&self.state.lives);
        lives
            .get(&key(name))
            .expect("unknown live playlist")
            .available(Instant::now())
    }

    /// Freezes the live stream at its current edge and appends EXT-X-ENDLIST.
    /// Returns the final number of segments.
    pub fn end_live(&self, name: &str) -> u64 {
        let mut lives = lock(&self.state.lives);
        let l = lives.get_mut(&key(name)).expect("unknown live playlist");
        let (k, _) = l.available(Instant::now());
        l.ended_at = Some(k);
        k
    }

    /// Windows served for each request of live playlist `name`, in order.
    pub fn live_snapshots(&self, name: &str) -> Vec<LiveSnapshot> {
        let lives = lock(&self.state.lives);
        lives
            .get(&key(name))
            .expect("unknown live playlist")
            .snapshots
            .clone()
    }

    /// Sequence numbers of live segments requested successfully (status 200/206), in
    /// request order.
    pub fn live_segments_requested(&self, name: &str) -> Vec<u64> {
        self.log()
            .iter()
            .filter(|r| r.method == "GET" && (r.status == 200 || r.status == 206))
            .filter_map(|r| self.live_segment_seq(name, &r.path))
            .collect()
    }
}

impl Drop for Origin {
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
                        async move { Ok::<_, Infallible>(handle(st, req).await) }
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

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "m3u8" => "application/vnd.apple.mpegurl",
        "ts" => "video/mp2t",
        "mp4" | "m4s" | "m4v" | "m4a" => "video/mp4",
        "key" => "application/octet-stream",
        "mpd" => "application/dash+xml",
        "aac" => "audio/aac",
        "vtt" => "text/vtt",
        "html" => "text/html",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

enum RangeSpec {
    None,
    Satisfiable(u64, u64), // inclusive start..=end
    Unsatisfiable,
}

fn parse_range(h: Option<&str>, len: u64) -> RangeSpec {
    let Some(h) = h else {
        return RangeSpec::None;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeSpec::None;
    };
    if spec.contains(',') {
        // Multiple ranges are not supported; serve the whole body.
        return RangeSpec::None;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::None;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // suffix range
        let Ok(n) = b.parse::<u64>() else {
            return RangeSpec::None;
        };
        if n == 0 || len == 0 {
            return RangeSpec::Unsatisfiable;
        }
        let n = n.min(len);
        return RangeSpec::Satisfiable(len - n, len - 1);
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeSpec::None;
    };
    if start >= len {
        return RangeSpec::Unsatisfiable;
    }
    let end = if b.is_empty() {
        len - 1
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e.min(len - 1),
            _ => return RangeSpec::None,
        }
    };
    RangeSpec::Satisfiable(start, end)
}

fn simple(status: u16, text: &str) -> (Response<Full<Bytes>>, u64) {
    let body = Bytes::from(format!("{text}\n"));
    let n = body.len() as u64;
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    (resp, n)
}

/// Builds a 200/206/416 response for `data`, honouring Range and HEAD.
fn body_response(
    data: Bytes,
    ctype: &str,
    range: Option<&str>,
    head: bool,
) -> (Response<Full<Bytes>>, u64) {
    let len = data.len() as u64;
    let (status, slice, content_range) = match parse_range(range, len) {
        RangeSpec::None => (StatusCode::OK, data, None),
        RangeSpec::Satisfiable(s, e) => (
            StatusCode::PARTIAL_CONTENT,
            data.slice(s as usize..=e as usize),
            Some(format!("bytes {s}-{e}/{len}")),
        ),
        RangeSpec::Unsatisfiable => {
            let (mut r, n) = simple(416, "range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return (r, if head { 0 } else { n });
        }
    };
    let body_len = slice.len() as u64;
    let mut resp = Response::new(Full::new(if head { Bytes::new() } else { slice }));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(ctype)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(cr) = content_range
        && let Ok(v) = HeaderValue::from_str(&cr)
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    (resp, if head { 0 } else { body_len })
}

fn safe_join(root: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = Path::new(url_path.trim_start_matches('/'));
    let mut out = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// The bytes served for live segment `seq` (whole source file, corrupted if configured).
fn live_bytes(root: &Path, l: &LiveStream, seq: u64) -> Vec<u8> {
    let src = &l.segments[(seq % l.segments.len() as u64) as usize];
    let mut data = std::fs::read(root.join(src.source.trim_start_matches('/'))).unwrap_or_default();
    if l.cfg.corrupt && !data.is_empty() {
        let middle = data.len() / 2;
        data[middle] ^= 0xff;
    }
    data
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let at = Instant::now();
    state.requests.fetch_add(1, Ordering::SeqCst);
    let method = req.method().clone();
    let full_path = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let path = req.uri().path().to_string();
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_string());
    let head = method == Method::HEAD;
    let mut live_window = None;

    let (resp, body_bytes) = 'resp: {
        if method != Method::GET && method != Method::HEAD {
            break 'resp simple(405, "method not allowed");
        }
        if let Some(rest) = path.strip_prefix("/redirect/") {
            let mut loc = format!("/{rest}");
            if let Some(q) = req.uri().query() {
                loc.push('?');
                loc.push_str(q);
            }
            let (mut r, n) = simple(302, "found");
            if let Ok(v) = HeaderValue::from_str(&loc) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            break 'resp (r, if head { 0 } else { n });
        }
        let (delay, fail, status, body) = {
            let mut f = lock(&state.faults);
            let delay = f.delays.get(&path).copied();
            let mut fail = None;
            if let Some((n, st)) = f.fail_next.get_mut(&path)
                && *n > 0
            {
                *n -= 1;
                fail = Some(*st);
            }
            let status = f.status.get(&path).copied();
            let body = f.bodies.get(&path).cloned();
            (delay, fail, status, body)
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if let Some(st) = fail.or(status) {
            let (r, n) = simple(st, "injected fault");
            break 'resp (r, if head { 0 } else { n });
        }
        if let Some((data, ctype)) = body {
            break 'resp body_response(data, &ctype, range.as_deref(), head);
        }
        // Live playlists and their virtual segments.
        let mut live_file: Option<String> = None;
        {
            let mut lives = lock(&state.lives);
            if let Some(l) = lives.get_mut(&path) {
                let (text, snap) = l.render(at);
                l.snapshots.push(snap);
                live_window = Some((snap.media_sequence, snap.end));
                break 'resp body_response(
                    Bytes::from(text),
                    "application/vnd.apple.mpegurl",
                    range.as_deref(),
                    head,
                );
            }
            if let Some(rest) = path.strip_prefix("/live-")
                && let Some(stem) = rest.strip_suffix("/segments-sha256.json")
                && let Some(l) = lives.values_mut().find(|l| l.stem == stem)
            {
                // PeerTube's format, {file name: hex SHA-256}, for the segments a player may
                // still fetch: three playlist windows back from the live edge.
                let (k, _) = l.available(at);
                let first = k.saturating_sub(3 * l.cfg.window as u64);
                l.digests.retain(|seq, _| *seq >= first);
                let mut json = String::from("{");
                for seq in first..k {
                    if !l.digests.contains_key(&seq) {
                        let data = live_bytes(&state.root, l, seq);
                        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
                        l.digests.insert(seq, digest);
                    }
                    let name = l.segment_path(seq);
                    let name = name.rsplit('/').next().unwrap_or_default();
                    let sep = if seq == first { "" } else { "," };
                    let _ = write!(json, "{sep}\"{name}\":\"{}\"", l.digests[&seq]);
                }
                json.push('}');
                break 'resp body_response(
                    Bytes::from(json),
                    "application/json",
                    range.as_deref(),
                    head,
                );
            }
            if let Some(rest) = path.strip_prefix("/live-")
                && let Some((stem, file)) = rest.split_once("/seg_")
                && let Some(l) = lives.values().find(|l| l.stem == stem)
            {
                let seq = file.split('.').next().and_then(|s| s.parse::<u64>().ok());
                let (k, _) = l.available(at);
                match seq {
                    Some(seq) if seq < k && l.cfg.corrupt => {
                        let data = live_bytes(&state.root, l, seq);
                        break 'resp body_response(
                            Bytes::from(data),
                            "video/mp2t",
                            range.as_deref(),
                            head,
                        );
                    }
                    Some(seq) if seq < k => {
                        let src = &l.segments[(seq % l.segments.len() as u64) as usize];
                        live_file = Some(src.source.clone());
                    }
                    _ => {
                        let (r, n) = simple(404, "not available");
                        break 'resp (r, if head { 0 } else { n });
                    }
                }
            }
        }
        let file_path = live_file.unwrap_or_else(|| path.clone());
        let Some(fs_path) = safe_join(&state.root, &file_path) else {
            break 'resp simple(400, "bad path");
        };
        match std::fs::read(&fs_path) {
            Ok(data) if fs_path.is_file() => body_response(
                Bytes::from(data),
                content_type(&file_path),
                range.as_deref(),
                head,
            ),
            _ => {
                let (r, n) = simple(404, "not found");
                (r, if head { 0 } else { n })
            }
        }
    };
    let resp = if head {
        // Keep headers (incl. Content-Length) but never send a body.
        let (parts, _) = resp.into_parts();
        Response::from_parts(parts, Full::new(Bytes::new()))
    } else {
        resp
    };
    state.bytes_sent.fetch_add(body_bytes, Ordering::SeqCst);
    lock(&state.log).push(RequestRecord {
        method: method.to_string(),
        path: full_path,
        range,
        status: resp.status().as_u16(),
        body_bytes,
        at,
        live_window,
    });
    resp
}

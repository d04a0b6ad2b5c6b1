//! A live DASH origin: a dynamic MPD whose segments are published on a wall-clock schedule.
//!
//! The segments are the files of an ffmpeg `Mode::Number` stream (2 s each). Segment `n`
//! (1-based) becomes available at availabilityStartTime + n × 2 s of *server* time; before
//! that it answers 404. The server clock is the local clock plus a skew, published through
//! UTCTiming (http-xsdate at `/time`), so a client that ignores UTCTiming asks for segments
//! too early. Every request is logged with the server time it arrived at.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

/// How the MPD addresses the segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveAddressing {
    /// SegmentTemplate @duration with `$Number%05d$`, startNumber 1, never changing.
    Number,
    /// SegmentTemplate + SegmentTimeline listing the available segments of the time-shift
    /// window, `$Time$` URLs and a startNumber that moves with the window.
    Timeline,
}

#[derive(Clone, Debug)]
pub struct LiveConfig {
    pub addressing: LiveAddressing,
    /// Server clock minus local clock.
    pub skew: chrono::Duration,
    /// Media already available when the origin starts.
    pub preroll: Duration,
    pub minimum_update_period: u64,
    pub time_shift_buffer: u64,
}

/// One request as the origin saw it.
#[derive(Clone, Debug)]
pub struct Hit {
    pub path: String,
    pub status: u16,
    pub server_time: DateTime<Utc>,
    /// (stream, segment number) for media segment requests.
    pub segment: Option<(u32, u64)>,
}

struct State {
    root: PathBuf,
    cfg: LiveConfig,
    ast: DateTime<Utc>,
    /// Number of segment files per stream.
    files: u64,
    log: Mutex<Vec<Hit>>,
}

pub struct LiveOrigin {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const SEGMENT_MS: i64 = 2000;

fn local_now() -> DateTime<Utc> {
    DateTime::<Utc>::from(SystemTime::now())
}

fn xs_datetime(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl State {
    fn server_now(&self) -> DateTime<Utc> {
        local_now() + self.cfg.skew
    }

    /// Server time at which segment `n` (1-based) is complete.
    fn available_at(&self, n: u64) -> DateTime<Utc> {
        self.ast + chrono::Duration::milliseconds(n as i64 * SEGMENT_MS)
    }

    /// Segments available at `now`.
    fn available(&self, now: DateTime<Utc>) -> u64 {
        let elapsed = (now - self.ast).num_milliseconds().max(0);
        ((elapsed / SEGMENT_MS) as u64).min(self.files)
    }

    fn template(&self, now: DateTime<Utc>) -> String {
        match self.cfg.addressing {
            LiveAddressing::Number => "<SegmentTemplate timescale=\"1000\" duration=\"2000\" \
                 startNumber=\"1\" initialization=\"init-stream$RepresentationID$.m4s\" \
                 media=\"chunk-stream$RepresentationID$-$Number%05d$.m4s\"/>"
                .to_string(),
            LiveAddressing::Timeline => {
                let last = self.available(now);
                let window = self.cfg.time_shift_buffer * 1000 / SEGMENT_MS as u64;
                let first = last.saturating_sub(window).max(1);
                let count = (last + 1).saturating_sub(first);
                let timeline = if count == 0 {
                    String::new()
                } else {
                    format!(
                        "<S t=\"{}\" d=\"2000\" r=\"{}\"/>",
                        (first - 1) * SEGMENT_MS as u64,
                        count - 1
                    )
                };
                format!(
                    "<SegmentTemplate timescale=\"1000\" startNumber=\"{first}\" \
                     initialization=\"init-stream$RepresentationID$.m4s\" \
                     media=\"live-$RepresentationID$-$Time$.m4s\">\
                     <SegmentTimeline>{timeline}</SegmentTimeline></SegmentTemplate>"
                )
            }
        }
    }

    fn mpd(&self) -> String {
        let now = self.server_now();
        let template = self.template(now);
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011"
     type="dynamic" availabilityStartTime="{ast}" publishTime="{now}"
     minimumUpdatePeriod="PT{mup}S" timeShiftBufferDepth="PT{tsb}S"
     maxSegmentDuration="PT2S" minBufferTime="PT2S">
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-xsdate:2014" value="/time"/>
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1">
      <Representation id="0" codecs="avc1.42c00d" bandwidth="750000" width="320" height="240" frameRate="25/1">
        {template}
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio" mimeType="audio/mp4" lang="en" segmentAlignment="true">
      <Representation id="1" codecs="mp4a.40.2" bandwidth="64000" audioSamplingRate="48000">
        {template}
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"#,
            ast = xs_datetime(self.ast),
            now = xs_datetime(now),
            mup = self.cfg.minimum_update_period,
            tsb = self.cfg.time_shift_buffer,
        )
    }

    /// (stream, number) of a media segment path.
    fn segment_of(&self, path: &str) -> Option<(u32, u64)> {
        if let Some(rest) = path.strip_prefix("/chunk-stream") {
            let (stream, number) = rest.strip_suffix(".m4s")?.split_once('-')?;
            return Some((stream.parse().ok()?, number.parse().ok()?));
        }
        if let Some(rest) = path.strip_prefix("/live-") {
            let (stream, time) = rest.strip_suffix(".m4s")?.split_once('-')?;
            let time: u64 = time.parse().ok()?;
            if !time.is_multiple_of(SEGMENT_MS as u64) {
                return None;
            }
            return Some((stream.parse().ok()?, time / SEGMENT_MS as u64 + 1));
        }
        None
    }

    fn respond(&self, path: &str) -> (u16, Bytes, &'static str, Option<(u32, u64)>) {
        let now = self.server_now();
        if path == "/manifest.mpd" {
            return (200, Bytes::from(self.mpd()), "application/dash+xml", None);
        }
        if path == "/time" {
            return (200, Bytes::from(xs_datetime(now)), "text/plain", None);
        }
        if let Some(stream) = path
            .strip_prefix("/init-stream")
            .and_then(|r| r.strip_suffix(".m4s"))
        {
            let file = self.root.join(format!("init-stream{stream}.m4s"));
            return match std::fs::read(file) {
                Ok(data) => (200, Bytes::from(data), "video/mp4", None),
                Err(_) => (
                    404,
                    Bytes::from_static(b"no such init\n"),
                    "text/plain",
                    None,
                ),
            };
        }
        if let Some((stream, number)) = self.segment_of(path) {
            let segment = Some((stream, number));
            if number == 0 || number > self.files || now < self.available_at(number) {
                return (
                    404,
                    Bytes::from_static(b"not available\n"),
                    "text/plain",
                    segment,
                );
            }
            let file = self
                .root
                .join(format!("chunk-stream{stream}-{number:05}.m4s"));
            return match std::fs::read(file) {
                Ok(data) => (200, Bytes::from(data), "video/mp4", segment),
                Err(_) => (
                    404,
                    Bytes::from_static(b"no such file\n"),
                    "text/plain",
                    segment,
                ),
            };
        }
        (404, Bytes::from_static(b"not found\n"), "text/plain", None)
    }
}

impl LiveOrigin {
    /// Serves the segment files of `root` (ffmpeg `Mode::Number` output) as a live stream
    /// whose first `preroll` of media is available at once.
    pub fn start(root: PathBuf, cfg: LiveConfig) -> LiveOrigin {
        let files = super::files_with_prefix(&root, "chunk-stream0-").len() as u64;
        assert!(files > 0, "no segments in {}", root.display());
        let ast =
            local_now() + cfg.skew - chrono::Duration::from_std(cfg.preroll).expect("preroll");
        let state = Arc::new(State {
            root,
            cfg,
            ast,
            files,
            log: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let st = st.clone();
                            tokio::spawn(async move {
                                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                                    let st = st.clone();
                                    async move { Ok::<_, Infallible>(handle(&st, &req)) }
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        LiveOrigin {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    pub fn log(&self) -> Vec<Hit> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn available_at(&self, number: u64) -> DateTime<Utc> {
        self.state.available_at(number)
    }

    pub fn segment_file(&self, stream: u32, number: u64) -> PathBuf {
        self.state
            .root
            .join(format!("chunk-stream{stream}-{number:05}.m4s"))
    }

    pub fn init_file(&self, stream: u32) -> PathBuf {
        self.state.root.join(format!("init-stream{stream}.m4s"))
    }

    /// Number of segment files, the most the stream can publish.
    pub fn files(&self) -> u64 {
        self.state.files
    }
}

fn handle(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let server_time = state.server_now();
    let (status, body, content_type, segment) = state.respond(&path);
    state.log.lock().unwrap().push(Hit {
        path,
        status,
        server_time,
        segment,
    });
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

impl Drop for LiveOrigin {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

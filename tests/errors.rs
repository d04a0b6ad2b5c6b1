//! Error reporting: each failure must end in a GStreamer ERROR from meshsrc (or an
//! element inside it) with the documented domain/code, within a bounded time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;

const ERROR_TIMEOUT: Duration = Duration::from_secs(45);

/// Runs meshsrc on `url` (with optional configuration) and returns the first error.
fn first_error(
    url: &str,
    configure: impl FnOnce(&gst::Element),
) -> (MsgRecord, RunState, Duration) {
    let run = MeshRun::with(url, configure);
    let t = Instant::now();
    let s = run.run_to_error(ERROR_TIMEOUT);
    let elapsed = t.elapsed();
    let e = s.errors[0].clone();
    assert!(
        e.from_meshsrc,
        "error not posted by meshsrc: {}",
        e.describe()
    );
    assert!(
        !e.debug.as_deref().unwrap_or("").contains("panicked"),
        "element panicked: {}",
        e.describe()
    );
    (e, s, elapsed)
}

fn assert_invalid_playlist(body: &'static [u8], ctype: &str) {
    let env = Env::new();
    env.origin.set_body("/bad.m3u8", body, ctype);
    let (e, s, _) = first_error(&env.origin.url("bad.m3u8"), |_| {});
    assert_eq!(
        e.stream(),
        Some(gst::StreamError::Decode),
        "expected StreamError::Decode, got {}",
        e.describe()
    );
    assert!(
        e.error
            .message()
            .to_lowercase()
            .contains("invalid playlist"),
        "message should mention 'invalid playlist': {}",
        e.describe()
    );
    assert!(
        s.pad_order.is_empty(),
        "pads added for an invalid playlist: {:?}",
        s.pad_order
    );
    assert_eq!(
        env.origin.requests_for("/bad.m3u8").len(),
        1,
        "invalid playlist re-fetched"
    );
}

#[test]
fn errors_garbage_playlist() {
    assert_invalid_playlist(
        b"\x00\x01\x02garbage\xff\xfe not a playlist \n#EXTINF:2,\nx.ts\n",
        "application/vnd.apple.mpegurl",
    );
}

#[test]
fn errors_empty_playlist() {
    assert_invalid_playlist(b"", "application/vnd.apple.mpegurl");
}

#[test]
fn errors_html_playlist() {
    assert_invalid_playlist(
        b"<!DOCTYPE html>\n<html><head><title>Login</title></head><body><p>Please sign in</p></body></html>\n",
        "text/html",
    );
}

#[test]
fn errors_manifest_404() {
    let env = Env::new();
    let (e, _, _) = first_error(&env.origin.url("missing/playlist.m3u8"), |_| {});
    assert_eq!(
        e.resource(),
        Some(gst::ResourceError::NotFound),
        "expected ResourceError::NotFound, got {}",
        e.describe()
    );
    let details = e
        .details
        .as_ref()
        .unwrap_or_else(|| panic!("no details: {}", e.describe()));
    assert_eq!(
        details.get::<u32>("http-status-code").ok(),
        Some(404),
        "details: {details}"
    );
}

#[test]
fn errors_connection_refused() {
    init();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/playlist.m3u8");
    let (e, _, elapsed) = first_error(&url, |_| {});
    assert_eq!(
        e.resource(),
        Some(gst::ResourceError::OpenRead),
        "expected ResourceError::OpenRead, got {}",
        e.describe()
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}

#[test]
fn errors_vod_segment_404() {
    let env = Env::new();
    let st = hls_ts_vod(&env.path("ts"));
    let ex = expected_media(&st.playlist);
    let seg = format!("/ts/{}", ex.uris[2]);
    env.origin.set_status(&seg, 404);
    let (e, s, _) = first_error(&env.origin.url_of(&st.playlist), |el| {
        el.set_property("max-retries", 2i32)
    });
    assert_eq!(
        e.resource(),
        Some(gst::ResourceError::NotFound),
        "expected ResourceError::NotFound, got {}",
        e.describe()
    );
    assert!(!s.eos, "EOS despite a missing VOD segment");
    // Everything before the missing segment was delivered, nothing after it.
    let got = s
        .pads
        .get("video_00")
        .map(|p| p.data.clone())
        .unwrap_or_default();
    let before: Vec<u8> = ex.segments[..2].concat();
    assert!(
        got.len() <= before.len() && before.starts_with(&got),
        "output is not a prefix of the segments before the missing one ({} bytes)",
        got.len()
    );
    let attempts = env.origin.requests_for(&seg).len();
    assert!(
        (1..=3).contains(&attempts),
        "{attempts} attempts for {seg} with max-retries=2"
    );
}

#[test]
fn errors_aes_key_404() {
    let env = Env::new();
    let st = hls_aes_vod(&env.path("aes"), AesIv::Explicit);
    env.origin.set_status("/aes/enc.key", 404);
    let (e, s, _) = first_error(&env.origin.url_of(&st.playlist), |_| {});
    assert_eq!(
        e.stream(),
        Some(gst::StreamError::Decrypt),
        "expected StreamError::Decrypt, got {}",
        e.describe()
    );
    // No ciphertext may leak downstream.
    let got = s.pads.get("video_00").map(|p| p.data.len()).unwrap_or(0);
    assert_eq!(got, 0, "bytes output without a key");
}

//! Live HLS through meshsrc against the origin's sliding-window live playlist
//! (a VOD stream looped under virtual segment names `live-live_m3u8/seg_<seq>.ts`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;

const LIVE: &str = "live.m3u8";

fn cfg() -> LiveConfig {
    // A looping 6-segment window of 2 s segments, 10 available at the start.
    LiveConfig::default()
}

/// Env with a `secs`-long TS VOD (hlssink2) served as live playlist `/live.m3u8`.
fn live_env(secs: u64) -> Env {
    let env = Env::new();
    let st = hls_ts_vod_secs(&env.path("vod"), secs, true);
    env.origin.add_live_playlist(LIVE, &st.playlist, cfg());
    env
}

fn expected_live(o: &Origin, seqs: &[u64]) -> (Vec<u8>, Vec<usize>) {
    let mut data = Vec::new();
    let mut sizes = Vec::new();
    for &n in seqs {
        let b = o.live_segment_bytes(LIVE, n);
        sizes.push(b.len());
        data.extend_from_slice(&b);
    }
    (data, sizes)
}

fn describe_requests(o: &Origin) -> String {
    o.log()
        .iter()
        .map(|r| format!("{:?} {} {} {:?}", r.at, r.status, r.path, r.live_window))
        .collect::<Vec<_>>()
        .join("\n")
}

/// First live segment requested, checked against the live edge at the first
/// playlist request: hold-back 3 x target duration -> 3 segments from the end.
fn start_sequence(o: &Origin) -> u64 {
    let snaps = o.live_snapshots(LIVE);
    assert!(!snaps.is_empty(), "live playlist never requested");
    let edge = snaps[0].end;
    let req = o.live_segments_requested(LIVE);
    assert!(
        !req.is_empty(),
        "no live segment requested:\n{}",
        describe_requests(o)
    );
    let s = *req.iter().min().unwrap();
    assert_eq!(
        s, req[0],
        "first request is not the lowest sequence: {req:?}"
    );
    eprintln!(
        "live: first playlist window {}..{} at request 0, first segment requested {s}",
        snaps[0].media_sequence, edge
    );
    assert!(
        s + 4 >= edge && s + 2 <= edge,
        "start sequence {s} not within [edge-4, edge-2] for edge {edge}"
    );
    s
}

fn no_errors(s: &RunState) {
    assert!(s.errors.is_empty(), "errors:\n{}", s.errors_text());
}

/// Acceptance: 40 s of wall clock on a sliding window, then ENDLIST -> EOS; the
/// output is exactly the segments from the start sequence to the end, in order.
#[test]
fn live_sliding_window_40s() {
    let env = live_env(20);
    let o = &env.origin;
    let run = MeshRun::new(&o.url(LIVE));
    let _ = run.play();
    let t0 = Instant::now();
    let stopped_early = run.wait_until(Duration::from_secs(40), |s| s.eos || !s.errors.is_empty());
    let s = run.snapshot();
    assert!(
        !stopped_early,
        "live stopped before ENDLIST after {:?}: eos={} {}",
        t0.elapsed(),
        s.eos,
        s.errors_text()
    );
    // Seeking is not possible in live.
    let mut q = gst::query::Seeking::new(gst::Format::Time);
    if run.pipeline.query(&mut q) {
        assert!(!q.result().0, "live must report not seekable");
    }
    let k_end = o.end_live(LIVE);
    let done = run.wait_done(Duration::from_secs(20));
    let s = run.snapshot();
    assert_eq!(
        done,
        Done::Eos,
        "no EOS after EXT-X-ENDLIST: {}",
        s.errors_text()
    );
    no_errors(&s);
    assert_eq!(s.pad_order, vec!["video_00".to_string()]);

    let start = start_sequence(o);
    let mut req = o.live_segments_requested(LIVE);
    req.sort();
    let want: Vec<u64> = (start..k_end).collect();
    assert_eq!(req, want, "segments fetched (sorted) vs {start}..{k_end}");
    assert!(
        k_end - start >= 20,
        "only {} segments in 40 s",
        k_end - start
    );
    let (exp, sizes) = expected_live(o, &want);
    let pad = &s.pads["video_00"];
    assert_eq!(pad.caps_name().as_deref(), Some("video/mpegts"));
    assert_bytes_eq("live video_00", &pad.data, &exp, Some(&sizes));
}

/// A live segment that 404s permanently is skipped with a WARNING; the next buffer
/// is flagged DISCONT and playback continues.
#[test]
fn live_segment_404_warns_and_discont() {
    let env = live_env(8);
    let o = &env.origin;
    // Last segment of the initial window (edge 10): after any valid start point.
    let missing = cfg().start_segments - 1;
    o.set_status(&o.live_segment_path(LIVE, missing), 404);
    let run = MeshRun::with(&o.url(LIVE), |e| e.set_property("max-retries", 1i32));
    let _ = run.play();
    let target = missing + 3;
    let ok = run.wait_until(Duration::from_secs(30), |s| {
        !s.errors.is_empty() || s.eos || o.live_segments_requested(LIVE).contains(&target)
    });
    let s = run.snapshot();
    assert!(
        ok,
        "segment {target} never requested:\n{}",
        describe_requests(o)
    );
    no_errors(&s);
    assert!(!s.eos, "EOS on a live stream");
    let k_end = o.end_live(LIVE);
    let done = run.wait_done(Duration::from_secs(20));
    let s = run.snapshot();
    assert_eq!(done, Done::Eos, "{}", s.errors_text());
    no_errors(&s);

    let start = start_sequence(o);
    assert!(start < missing);
    let warnings: Vec<&MsgRecord> = s.warnings.iter().filter(|w| w.from_meshsrc).collect();
    assert!(
        !warnings.is_empty(),
        "no WARNING from meshsrc for the missing segment"
    );

    let want: Vec<u64> = (start..k_end).filter(|&n| n != missing).collect();
    let (exp, sizes) = expected_live(o, &want);
    let pad = &s.pads["video_00"];
    assert_bytes_eq("live video_00 with a gap", &pad.data, &exp, Some(&sizes));
    let gap_offset: usize = want
        .iter()
        .take_while(|&&n| n < missing)
        .map(|&n| o.live_segment_bytes(LIVE, n).len())
        .sum();
    let b = pad.buffer_starting_at(gap_offset).unwrap_or_else(|| {
        panic!("no buffer starts at the segment after the gap (offset {gap_offset})")
    });
    assert!(
        b.flags.contains(gst::BufferFlags::DISCONT),
        "buffer after the missing segment lacks DISCONT: {:?}",
        b.flags
    );
}

/// One failed playlist reload (503) does not cause a gap or an error.
#[test]
fn live_playlist_reload_503_no_gap() {
    let env = live_env(8);
    let o = &env.origin;
    let run = MeshRun::new(&o.url(LIVE));
    let _ = run.play();
    assert!(
        run.wait_until(Duration::from_secs(20), |s| {
            s.pads.get("video_00").is_some_and(|p| !p.data.is_empty()) || !s.errors.is_empty()
        }),
        "no data"
    );
    o.fail_next(&format!("/{LIVE}"), 1, 503);
    let ok = run.wait_until(Duration::from_secs(30), |s| {
        !s.errors.is_empty()
            || s.eos
            || (o.requests_for(LIVE).iter().any(|r| r.status == 503)
                && o.live_segments_requested(LIVE)
                    .iter()
                    .max()
                    .copied()
                    .unwrap_or(0)
                    >= 14)
    });
    let s = run.snapshot();
    no_errors(&s);
    assert!(
        ok,
        "no progress after the failed reload:\n{}",
        describe_requests(o)
    );
    let k_end = o.end_live(LIVE);
    let done = run.wait_done(Duration::from_secs(20));
    let s = run.snapshot();
    assert_eq!(done, Done::Eos, "{}", s.errors_text());
    no_errors(&s);
    let start = start_sequence(o);
    let want: Vec<u64> = (start..k_end).collect();
    let (exp, sizes) = expected_live(o, &want);
    assert_bytes_eq(
        "live video_00",
        &s.pads["video_00"].data,
        &exp,
        Some(&sizes),
    );
}

/// An EOS event sent to the pipeline during live playback yields an EOS message
/// within 1 s.
#[test]
fn live_eos_event_stops_quickly() {
    let env = live_env(8);
    let o = &env.origin;
    let run = MeshRun::new(&o.url(LIVE));
    let _ = run.play();
    assert!(
        run.wait_until(Duration::from_secs(20), |s| {
            s.pads.get("video_00").is_some_and(|p| !p.data.is_empty()) || !s.errors.is_empty()
        }),
        "no data"
    );
    no_errors(&run.snapshot());
    assert!(!run.state().eos);
    let t = Instant::now();
    assert!(
        run.pipeline.send_event(gst::event::Eos::new()),
        "EOS event not handled"
    );
    let got = run.wait_until(Duration::from_secs(5), |s| s.eos);
    let elapsed = t.elapsed();
    assert!(got, "no EOS message within 5 s");
    assert!(elapsed <= Duration::from_secs(1), "EOS took {elapsed:?}");
    no_errors(&run.snapshot());
}

/// Seeking query on live reports not seekable.
#[test]
fn live_seeking_query_not_seekable() {
    let env = live_env(8);
    let o = &env.origin;
    let run = MeshRun::new(&o.url(LIVE));
    let _ = run.play();
    assert!(
        run.wait_until(Duration::from_secs(20), |s| {
            s.pads.get("video_00").is_some_and(|p| !p.data.is_empty()) || !s.errors.is_empty()
        }),
        "no data"
    );
    no_errors(&run.snapshot());
    let mut q = gst::query::Seeking::new(gst::Format::Time);
    assert!(run.pipeline.query(&mut q), "seeking query not answered");
    assert!(!q.result().0, "live reported seekable");
}

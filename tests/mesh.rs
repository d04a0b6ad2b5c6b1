//! The mesh end to end: meshsrc viewers, each a `gst-launch-1.0 meshsrc ! queue ! filesink
//! sync=true` process playing in real time, on one live origin on loopback, finding each other
//! through real trackers (bittorrent-tracker installed with npm, aquatic_ws with cargo install, the bundled
//! mesh-tracker). The origin counts its own bytes.

mod common;

use common::trackers::{TrackerKind, TrackerProcess};
use common::viewer::{Viewer, assert_live_exact};
use common::*;
use std::time::{Duration, Instant};

const LIVE: &str = "live.m3u8";
const SWARM_ID: &str = "gst-mesh-test-channel";

/// A live stream of `segments` 2 s segments after the initial 10, then ENDLIST.
fn live_env(segments: u64) -> Env {
    let env = Env::new();
    // Enough distinct media that no segment repeats during the run.
    let vod = hls_ts_vod_secs(&env.path("vod"), (10 + segments + 4) * SEGMENT_SECS, true);
    env.origin
        .add_live_playlist(LIVE, &vod.playlist, live_config(segments, false));
    env
}

fn live_config(segments: u64, corrupt: bool) -> LiveConfig {
    LiveConfig {
        window: 6,
        start_segments: 10,
        segment_duration: Duration::from_secs(SEGMENT_SECS),
        looped: false,
        end_after: Some(10 + segments),
        corrupt,
        ..Default::default()
    }
}

fn mesh_properties(env: &Env, tracker: &str) -> Vec<String> {
    vec![
        format!("tracker={tracker}"),
        format!("segment-hashes={}", env.origin.live_hashes_url(LIVE)),
        format!("swarm-id={SWARM_ID}"),
    ]
}

/// Runs `count` viewers started `stagger` apart until the stream ends.
fn run_viewers(
    env: &Env,
    tracker: &TrackerProcess,
    count: usize,
    stagger: Duration,
) -> Vec<Viewer> {
    let location = env.origin.url(LIVE);
    (0..count)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(stagger);
            }
            Viewer::spawn(
                env,
                &format!("viewer{i}"),
                &location,
                &mesh_properties(env, &tracker.url),
            )
        })
        .collect()
}

fn played_bytes(viewers: &[Viewer]) -> u64 {
    viewers.iter().map(|v| v.output().len() as u64).sum()
}

/// Six viewers, one minute of live 2 s segments, bittorrent-tracker: every output exact, the
/// origin sends at most a third of what they play.
#[test]
fn six_viewers_offload_through_bittorrent_tracker() {
    let segments = 30;
    let env = live_env(segments);
    let tracker = TrackerProcess::start(TrackerKind::BittorrentTracker);
    env.origin.clear_log();
    let before = env.origin.bytes_sent();
    let mut viewers = run_viewers(&env, &tracker, 6, Duration::from_millis(500));
    for v in &mut viewers {
        v.wait(Duration::from_secs(150));
    }
    let last = 10 + segments - 1;
    let (mut p2p, mut cdn, mut segments_p2p) = (0, 0, 0);
    for v in &viewers {
        let first = assert_live_exact(&env.origin, &v.name, &v.output(), last);
        let s = v.stats();
        eprintln!("{}: segments {first}..={last}, {s:?}", v.name);
        assert_eq!(
            s.segments_rejected, 0,
            "{}: honest peers sent bad data",
            v.name
        );
        p2p += s.bytes_p2p;
        cdn += s.bytes_cdn;
        segments_p2p += s.segments_p2p;
        assert!(
            s.bytes_uploaded > 0 || s.bytes_p2p > 0,
            "{} took no part in the mesh",
            v.name
        );
    }
    let origin_bytes = env.origin.bytes_sent() - before;
    // The viewers' own count of CDN bytes agrees with the origin's.
    let gap = (cdn as f64 - origin_bytes as f64).abs() / origin_bytes as f64;
    assert!(
        gap <= 0.02,
        "viewers counted {cdn} B from the CDN, the origin sent {origin_bytes} B"
    );
    assert!(segments_p2p > 0);
    let played = played_bytes(&viewers);
    let offload = 1.0 - origin_bytes as f64 / played as f64;
    eprintln!("origin sent {origin_bytes} B, viewers played {played} B: offload {offload:.3}");
    assert!(p2p > 0, "no byte came from peers");
    assert!(
        offload >= 0.67,
        "offload {offload:.3} < 0.67 (origin {origin_bytes} of {played} B)"
    );
}

/// A polluting peer (its origin corrupts every segment and publishes matching hashes) joins
/// first with the same swarm-id; the five honest viewers reject its data and stay exact.
#[test]
fn polluting_peer_is_rejected_and_outputs_stay_exact() {
    let segments = 12;
    let env = live_env(segments);
    let vod = env.path("vod/playlist.m3u8");
    env.origin
        .add_live_playlist("evil/live.m3u8", &vod, live_config(segments, true));
    let tracker = TrackerProcess::start(TrackerKind::Bundled);
    let mut polluter = Viewer::spawn(
        &env,
        "polluter",
        &env.origin.url("evil/live.m3u8"),
        // No hashes: it takes nothing from peers and serves its own origin's bytes.
        &[
            format!("tracker={}", tracker.url),
            format!("swarm-id={SWARM_ID}"),
        ],
    );
    std::thread::sleep(Duration::from_secs(4));
    let mut honest = run_viewers(&env, &tracker, 5, Duration::from_millis(300));
    for v in &mut honest {
        v.wait(Duration::from_secs(120));
    }
    eprintln!("polluter: {:?}", polluter.stats());
    polluter.kill();
    let last = 10 + segments - 1;
    let mut rejected = 0;
    let mut banned = 0;
    for v in &honest {
        assert_live_exact(&env.origin, &v.name, &v.output(), last);
        let s = v.stats();
        eprintln!("{}: {s:?}", v.name);
        rejected += s.segments_rejected;
        banned += s.peers_banned;
    }
    assert!(
        rejected >= 1,
        "no honest viewer refused the polluter's data"
    );
    assert!(banned >= 1, "the polluter was never banned");
}

/// Two of five viewers are SIGKILLed mid-stream on aquatic_ws; the others go on with no gap.
#[test]
fn churn_two_of_five_killed_on_aquatic_ws() {
    let segments = 20;
    let env = live_env(segments);
    let tracker = TrackerProcess::start(TrackerKind::AquaticWs);
    let mut viewers = run_viewers(&env, &tracker, 5, Duration::from_millis(300));
    std::thread::sleep(Duration::from_secs(16));
    for v in viewers.iter_mut().take(2) {
        v.kill();
    }
    let last = 10 + segments - 1;
    let mut p2p = 0;
    for v in viewers.iter_mut().skip(2) {
        v.wait(Duration::from_secs(120));
        assert_live_exact(&env.origin, &v.name, &v.output(), last);
        let s = v.stats();
        eprintln!("{}: {s:?}", v.name);
        p2p += s.bytes_p2p;
    }
    assert!(p2p > 0, "no byte came from peers on aquatic_ws");
}

/// A tracker that is down gives a WARNING; playback goes on from the CDN, byte-exact.
#[test]
fn tracker_down_warns_and_plays_from_the_cdn() {
    let segments = 4;
    let env = live_env(segments);
    let mut tracker = TrackerProcess::start(TrackerKind::Bundled);
    tracker.stop();
    let mut viewer = Viewer::spawn(
        &env,
        "alone",
        &env.origin.url(LIVE),
        &mesh_properties(&env, &tracker.url),
    );
    viewer.wait(Duration::from_secs(60));
    assert_live_exact(&env.origin, "alone", &viewer.output(), 10 + segments - 1);
    let warnings = viewer.warnings();
    assert!(
        warnings.iter().any(|w| w.contains("tracker")),
        "no tracker warning:\n{}",
        viewer.log()
    );
    let s = viewer.stats();
    assert_eq!(s.bytes_p2p, 0);
    assert!(s.segments_cdn > 0);
}

/// With the mesh, a live viewer asks for the segments the playlist lists while an earlier one
/// is still loading, so each has its whole slack to come from peers. The origin holds the
/// second segment played for 6 s. Within that time the third (listed at the start) and the
/// fourth (published 2 s later, so seen by a reload made while the second loads) are
/// requested; one segment at a time, both would wait for the second. The output stays exact.
#[test]
fn live_segments_are_requested_ahead_while_one_loads() {
    let segments = 4;
    let env = live_env(segments);
    let tracker = TrackerProcess::start(TrackerKind::Bundled);
    // 10 segments published at the start, 3 target durations of hold-back: playback starts
    // at segment 7.
    let start = 7;
    let held = start + 1;
    let hold = Duration::from_secs(6);
    env.origin
        .set_delay(&env.origin.live_segment_path(LIVE, held), hold);
    env.origin.clear_log();
    let mut viewer = Viewer::spawn(
        &env,
        "ahead",
        &env.origin.url(LIVE),
        &mesh_properties(&env, &tracker.url),
    );
    viewer.wait(Duration::from_secs(60));
    let first = assert_live_exact(&env.origin, "ahead", &viewer.output(), 10 + segments - 1);
    assert_eq!(first, start, "playback started at segment {first}");
    let first_request = |sequence: u64| {
        let path = env.origin.live_segment_path(LIVE, sequence);
        let requests = env.origin.requests_for(&path);
        assert!(!requests.is_empty(), "segment {sequence} never requested");
        requests[0].at
    };
    let held_at = first_request(held);
    for later in [held + 1, held + 2] {
        let later_at = first_request(later);
        assert!(
            later_at < held_at + hold,
            "segment {later} was requested {:?} after segment {held}, not while it loaded",
            later_at.saturating_duration_since(held_at)
        );
    }
}

/// A seeder capped at 24 kB/s serves a later viewer, which holds playback 20 s behind the edge
/// so the slow transfers fit its deadlines. While the seeder is uploading it is frozen
/// (SIGSTOP): the later viewer's transfer stalls, and the scheduler completes it over HTTP with
/// a Range request from the first missing byte. Then the seeder is killed. A transfer caught
/// before its first byte is completed by a plain GET instead, so the freeze is retried (at most
/// five times) until one is caught mid-way. The later viewer's output stays exact.
#[test]
fn killed_peer_transfer_is_completed_by_http_range() {
    let segments = 16;
    let env = live_env(segments);
    let tracker = TrackerProcess::start(TrackerKind::Bundled);
    let location = env.origin.url(LIVE);
    let mut seeder_props = mesh_properties(&env, &tracker.url);
    seeder_props.push("max-upload-rate=24000".into());
    let mut seeder = Viewer::spawn(&env, "seeder", &location, &seeder_props);
    std::thread::sleep(Duration::from_secs(5));
    let mut late_props = mesh_properties(&env, &tracker.url);
    late_props.push("live-delay=20000000000".into());
    let mut late = Viewer::spawn(&env, "late", &location, &late_props);

    let mut resumed = Vec::new();
    for attempt in 1..=5 {
        seeder.wait_until_uploading(Duration::from_secs(30));
        let frozen_at = Instant::now();
        seeder.signal("STOP");
        // Past the 1.5 s stall timeout, plus the HTTP request.
        std::thread::sleep(Duration::from_secs(4));
        resumed = resumed_requests(&env.origin, frozen_at);
        eprintln!("freeze {attempt}: requests resumed from a byte offset: {resumed:?}");
        if !resumed.is_empty() {
            break;
        }
        seeder.signal("CONT");
    }
    seeder.kill();
    late.wait(Duration::from_secs(90));
    assert_live_exact(&env.origin, "late", &late.output(), 10 + segments - 1);
    assert!(
        !resumed.is_empty(),
        "no frozen transfer was completed with an HTTP Range request"
    );
    assert!(late.stats().bytes_p2p > 0, "the seeder served nothing");
}

/// Segment requests received after `since` that start past the first byte:
/// `(path, Range header)`.
fn resumed_requests(origin: &Origin, since: Instant) -> Vec<(String, String)> {
    origin
        .log()
        .into_iter()
        .filter(|r| r.at >= since && r.path.contains("/seg_") && r.status == 206)
        .filter_map(|r| {
            let range = r.range?;
            let from = range.strip_prefix("bytes=")?.split('-').next()?;
            (from.parse::<u64>().ok()? > 0).then_some((r.path, range))
        })
        .collect()
}

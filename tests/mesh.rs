//! The mesh end to end: meshsrc viewers, each a `gst-launch-1.0 meshsrc ! queue ! filesink
//! sync=true` process playing in real time, on one live origin on loopback, finding each other
//! through real trackers (bittorrent-tracker installed with npm, aquatic_ws with cargo install, the bundled
//! mesh-tracker). The origin counts its own bytes.

mod common;

use common::trackers::{TrackerKind, TrackerProcess};
use common::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

/// A directory holding only libgstmesh.so, for GST_PLUGIN_PATH of child processes.
fn plugin_dir(env: &Env) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let deps = exe.parent().expect("deps dir");
    let candidates = [
        deps.join("libgstmesh.so"),
        deps.parent().unwrap().join("libgstmesh.so"),
    ];
    let lib = candidates
        .iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("libgstmesh.so not built next to {}", exe.display()));
    let dir = env.path("plugin");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("libgstmesh.so");
    if !link.exists() {
        std::os::unix::fs::symlink(lib, &link).unwrap();
    }
    dir
}

struct Viewer {
    name: String,
    child: Child,
    out: PathBuf,
    messages: PathBuf,
}

impl Viewer {
    fn spawn(env: &Env, name: &str, location: &str, properties: &[String]) -> Viewer {
        let out = env.path(&format!("{name}.ts"));
        let messages = env.path(&format!("{name}.log"));
        let log = std::fs::File::create(&messages).unwrap();
        let mut args: Vec<String> = vec![
            "-m".into(),
            "-e".into(),
            "meshsrc".into(),
            "name=m".into(),
            format!("location={location}"),
            "ice-address=127.0.0.1".into(),
        ];
        args.extend(properties.iter().cloned());
        args.extend(
            ["!", "queue", "!", "filesink", "sync=true"]
                .iter()
                .map(|s| s.to_string()),
        );
        args.push(format!("location={}", out.display()));
        let child = Command::new("gst-launch-1.0")
            .args(&args)
            .env("GST_PLUGIN_PATH", plugin_dir(env))
            .env("GST_REGISTRY_1_0", env.path("registry.bin"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start gst-launch-1.0");
        Viewer {
            name: name.into(),
            child,
            out,
            messages,
        }
    }

    /// Waits for the pipeline to end by itself (EOS after ENDLIST).
    fn wait(&mut self, timeout: Duration) {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "{} exited with {status}:\n{}",
                    self.name,
                    self.log()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{} still running after {timeout:?}:\n{}",
            self.name,
            self.log()
        );
    }

    /// Sends a signal (`STOP`, `CONT`) to the viewer's process.
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {}", self.name);
    }

    /// Waits until two successive `mesh-statistics` messages show `bytes-uploaded` growing.
    fn wait_until_uploading(&self, timeout: Duration) {
        let started = Instant::now();
        let mut last: Option<(usize, u64)> = None;
        while started.elapsed() < timeout {
            let text = std::fs::read_to_string(&self.messages).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("mesh-statistics,"))
                .collect();
            if let Some(line) = lines.last() {
                let uploaded = Stats::parse(line).bytes_uploaded;
                match last {
                    Some((count, before)) if lines.len() > count && uploaded > before => return,
                    Some((count, _)) if lines.len() == count => {}
                    _ => last = Some((lines.len(), uploaded)),
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} uploaded nothing for {timeout:?}:\n{}",
            self.name,
            self.log()
        );
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.messages).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn output(&self) -> Vec<u8> {
        std::fs::read(&self.out).unwrap_or_default()
    }

    /// The last `mesh-statistics` message the viewer printed.
    fn stats(&self) -> Stats {
        let text = std::fs::read_to_string(&self.messages).unwrap_or_default();
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains("mesh-statistics,"))
            .unwrap_or_else(|| {
                panic!("{}: no mesh-statistics message:\n{}", self.name, self.log())
            });
        Stats::parse(line)
    }

    /// Text of the WARNING messages from meshsrc.
    fn warnings(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.messages).unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("WARNING: from element") && l.contains("GstMeshSrc:m"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    bytes_cdn: u64,
    bytes_p2p: u64,
    bytes_uploaded: u64,
    segments_cdn: u64,
    segments_p2p: u64,
    segments_rejected: u64,
    peers_banned: u64,
}

impl Stats {
    /// Parses gst-launch's print of the structure: `field=(guint64)123`.
    fn parse(line: &str) -> Stats {
        let field = |name: &str| -> u64 {
            let key = format!("{name}=(guint64)");
            let at = line
                .find(&key)
                .unwrap_or_else(|| panic!("{name} missing in {line}"));
            line[at + key.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .unwrap()
        };
        Stats {
            bytes_cdn: field("bytes-cdn"),
            bytes_p2p: field("bytes-p2p"),
            bytes_uploaded: field("bytes-uploaded"),
            segments_cdn: field("segments-cdn"),
            segments_p2p: field("segments-p2p"),
            segments_rejected: field("segments-rejected"),
            peers_banned: field("peers-banned"),
        }
    }
}

/// Asserts `got` is exactly live segments `first..=last` for some `first`, ending with the last
/// segment: the origin's bytes, in order, with no gap. Returns `first`.
fn assert_live_exact(origin: &Origin, what: &str, got: &[u8], last: u64) -> u64 {
    assert!(!got.is_empty(), "{what}: no output");
    let mut tail = Vec::new();
    for first in (0..=last).rev() {
        let mut segment = origin.live_segment_bytes(LIVE, first);
        segment.extend_from_slice(&tail);
        tail = segment;
        if tail.len() == got.len() {
            if tail == got {
                return first;
            }
            break;
        }
        if tail.len() > got.len() {
            break;
        }
    }
    // Say where it first differs from the best alignment, for the failure message.
    let first_diff = got.iter().zip(tail.iter()).position(|(a, b)| a != b);
    panic!(
        "{what}: {} bytes are not segments n..={last} of the origin (first difference at {first_diff:?})",
        got.len()
    );
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

//! Real browsers in the swarm (issue 16): headless Chromium running hls.js 1.7.4 with
//! p2p-media-loader 2.3.1 (`tests/browser/page.mjs`) and meshsrc viewers
//! (`gst-launch-1.0 meshsrc ! queue ! filesink sync=true`) play the same stream and exchange
//! segments over WebRTC data channels, through the bundled mesh-tracker or bittorrent-tracker.
//!
//! Each test runs `tests/browser/driver.mjs` inside
//! `unshare --net --pid --fork --mount-proc --kill-child`: a network namespace with only `lo`
//! (so Chromium offers loopback candidates only, and nothing leaves the machine) and a PID
//! namespace (so every process of the run dies with it). The driver serves the page, the stream
//! and its `segments-sha256.json` on 127.0.0.1, starts the tracker behind a logging WebSocket
//! proxy, the browser and meshsrc, and prints one JSON result. This file generates the media,
//! writes the driver's spec, and checks the result against the media it generated: meshsrc's
//! output must be an exact run of the origin's segments, every segment the browser took over
//! P2P must hash to the origin's SHA-256, the browser and meshsrc must have announced the same
//! info_hash, and meshsrc must never have had two requests outstanding on one link with the
//! browser (decoded from the browser's data-channel log with p2p-media-loader's deserializer).
//!
//! A "lane" is one scenario: one stream, one tracker, one browser, one meshsrc. Lanes of one
//! test run side by side (own stream path, own tracker: they never meet).
//!
//! The only skip: without Chromium (`/usr/bin/chromium`, installed by scripts/setup-deps.sh)
//! each test says so loudly and returns.

mod common;

use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Live stream of every live lane: 2 s segments, 14 listed, 14 out when the lane starts, one
/// more every 2 s, EXT-X-ENDLIST after 26 (24 s after the start).
const LIVE_WINDOW: u64 = 14;
const LIVE_START: u64 = 14;
const LIVE_END: u64 = 26;

/// p2p-media-loader: `highDemandTimeWindow` 4 s.
///
/// p2p-media-loader downloads a segment from peers only when it starts more than
/// `highDemandTimeWindow` (default 15 s) after the play position; nearer segments come over
/// HTTP. A live hls.js player sits `liveSyncDurationCount` segments behind the edge (below:
/// 12 s), so with the default every listed segment is "high demand" and a live browser takes
/// nothing from peers (measured: 0 bytes). With 4 s, the segments from 4 s to 12 s ahead of
/// the play position (the last 4 of the playlist) are left to peers. It also keeps what the
/// page holds for others: live segments more than this far behind the play position are
/// dropped from its memory.
fn p2pml_core() -> Value {
    json!({ "highDemandTimeWindow": 4 })
}

/// hls.js: 6 segments (12 s) behind the live edge. Stated, not left to p2p-media-loader-hlsjs,
/// which would set it to the window length minus one (13 here) after the first playlist, once
/// hls.js has already picked its start 3 segments behind the edge.
fn hls_config() -> Value {
    json!({ "liveSyncDurationCount": 6 })
}

/// meshsrc: start 24 s behind the edge (`live-delay`, nanoseconds).
///
/// meshsrc requests every listed segment as soon as it is listed, whatever its play position,
/// so it holds the newest segments early: the browser, which waits for them until they are 4 s
/// to 12 s ahead of its play position, takes them from it. A new segment is due 24 s after it
/// appears, which is the time the mesh has to bring it to meshsrc. When meshsrc joins a swarm
/// of browsers, they hold the segments from 4 s behind their play position on (12 s to 16 s
/// behind the edge): meshsrc fetches the first segments it plays from the CDN (the pages have
/// dropped them) and can take the next ones from the pages before they are due. With 12 s,
/// level with the browsers, it found nothing at the browser it did not need at once (measured:
/// 0 bytes from the browser).
const MESHSRC_LIVE_DELAY: &str = "live-delay=24000000000";

/// meshsrc writes VOD segments out as fast as they come (its TS buffers carry no timestamps
/// to pace a sink), and would leave the swarm at once: the driver paces its output at one
/// segment (one buffer) per 2 s, as a viewer plays.
const VOD_PACE_MICROS: u64 = 2_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum First {
    Browser,
    Meshsrc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tracker {
    Bundled,
    BittorrentTracker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamKind {
    Live,
    /// A VOD playlist whose `EXT-X-MEDIA-SEQUENCE` is this: p2p-media-loader numbers its
    /// segments 0, 1, … by position, and so must meshsrc.
    Vod {
        media_sequence: u64,
    },
}

#[derive(Clone, Debug)]
struct Lane {
    name: &'static str,
    tracker: Tracker,
    stream: StreamKind,
    first: First,
    join_after: Duration,
    /// Set as `swarm-id` on meshsrc and `swarmId` in the page.
    swarm_id: Option<&'static str>,
    /// meshsrc plays the stream from a mirror URL (same playlist and segments, other path).
    meshsrc_from_mirror: bool,
    /// The lane ends when meshsrc ends (EOS after ENDLIST), at the latest after this long.
    seconds: u64,
}

impl Lane {
    fn live(name: &'static str, tracker: Tracker, first: First) -> Lane {
        Lane {
            name,
            tracker,
            stream: StreamKind::Live,
            first,
            // A browser that starts first has loaded a few segments and is in the swarm when
            // meshsrc comes; a meshsrc that starts first holds the segments the browser needs.
            join_after: Duration::from_secs(match first {
                First::Browser => 8,
                First::Meshsrc => 6,
            }),
            swarm_id: None,
            meshsrc_from_mirror: false,
            seconds: 75,
        }
    }

    fn vod(name: &'static str, tracker: Tracker, first: First, media_sequence: u64) -> Lane {
        Lane {
            name,
            tracker,
            stream: StreamKind::Vod { media_sequence },
            first,
            join_after: Duration::from_secs(5),
            swarm_id: None,
            meshsrc_from_mirror: false,
            seconds: 70,
        }
    }

    fn spec(&self) -> Value {
        let (stream, meshsrc, pace) = match self.stream {
            StreamKind::Live => (
                json!({
                    "type": "live", "window": LIVE_WINDOW, "startSegments": LIVE_START,
                    "endAfter": LIVE_END, "segmentSeconds": SEGMENT_SECS,
                }),
                vec![MESHSRC_LIVE_DELAY],
                None,
            ),
            StreamKind::Vod { media_sequence } => (
                json!({ "type": "vod", "mediaSequence": media_sequence }),
                vec![],
                Some(VOD_PACE_MICROS),
            ),
        };
        json!({
            "name": self.name,
            "tracker": match self.tracker {
                Tracker::Bundled => "bundled",
                Tracker::BittorrentTracker => "bittorrent-tracker",
            },
            "stream": stream,
            "first": match self.first { First::Browser => "browser", First::Meshsrc => "meshsrc" },
            "joinAfterSeconds": self.join_after.as_secs_f64(),
            "swarmId": self.swarm_id,
            "core": p2pml_core(),
            "hls": hls_config(),
            "meshsrcProperties": meshsrc,
            "meshsrcPaceMicros": pace,
            "meshsrcFromMirror": self.meshsrc_from_mirror,
            "laneSeconds": self.seconds,
        })
    }
}

/// The segments of the generated VOD source, in playlist order.
struct Media {
    dir: PathBuf,
    segments: Vec<Vec<u8>>,
}

impl Media {
    fn generate(dir: &Path, secs: u64) -> Media {
        let stream = hls_ts_vod_secs(dir, secs, true);
        let text = std::fs::read_to_string(&stream.playlist).unwrap();
        let segments = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| std::fs::read(dir.join(l.trim())).unwrap())
            .collect::<Vec<_>>();
        assert_eq!(segments.len() as u64, secs / SEGMENT_SECS);
        Media {
            dir: dir.to_path_buf(),
            segments,
        }
    }

    fn sha256(&self, index: usize) -> String {
        hex::encode(Sha256::digest(&self.segments[index]))
    }
}

/// p2p-media-loader 2.3's tracker info_hash of a lone media playlist's swarm (preimage
/// `0--------`, docs/swarm-identity.md), computed here independently of the driver.
fn p2pml_info_hash(base: &str) -> String {
    use base64::Engine;
    let b64 = &base64::engine::general_purpose::STANDARD;
    let short_id = b64.encode(<sha1::Sha1 as Digest>::digest(b"0--------"));
    let swarm = format!("v2-{base}-main-{short_id}");
    b64.encode(&<sha1::Sha1 as Digest>::digest(swarm.as_bytes())[..15])
}

/// Whether Chromium is there; if not, says so loudly (the only reason these tests skip).
fn chromium_or_skip(test: &str) -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    let bar = "!".repeat(78);
    eprintln!(
        "\n{bar}\n!! SKIPPED {test}: {CHROMIUM} not found.\n!! The browser interop test \
         needs Debian's chromium: run scripts/setup-deps.sh (it installs it with apt-get).\n\
         !! Nothing was checked.\n{bar}\n"
    );
    false
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A directory holding only libgstmesh.so, for GST_PLUGIN_PATH of the meshsrc processes.
fn plugin_dir(dir: &Path) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let deps = exe.parent().expect("deps dir");
    let lib = [
        deps.join("libgstmesh.so"),
        deps.parent().unwrap().join("libgstmesh.so"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .unwrap_or_else(|| panic!("libgstmesh.so not built next to {}", exe.display()));
    let plugin = dir.join("plugin");
    std::fs::create_dir_all(&plugin).unwrap();
    std::os::unix::fs::symlink(&lib, plugin.join("libgstmesh.so")).unwrap();
    plugin
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A driver run: its result's lanes by name, and its directory (meshsrc's outputs), removed on
/// drop.
struct Run {
    lanes: BTreeMap<String, Value>,
    _dir: tempfile::TempDir,
}

impl std::ops::Index<&str> for Run {
    type Output = Value;
    fn index(&self, name: &str) -> &Value {
        &self.lanes[name]
    }
}

/// Runs the driver on `lanes` in a fresh network + PID namespace.
fn run_driver(test: &str, media: &Media, lanes: &[Lane]) -> Run {
    let modules = root().join(".tools/browser/node_modules");
    for pkg in [
        "hls.js",
        "p2p-media-loader-core",
        "p2p-media-loader-hlsjs",
        "playwright-core",
        "ws",
    ] {
        assert!(
            modules.join(pkg).join("package.json").exists(),
            "{} is missing: run scripts/setup-deps.sh",
            modules.join(pkg).display()
        );
    }
    let work = tempfile::Builder::new()
        .prefix("gst-mesh-browser-")
        .tempdir()
        .unwrap();
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let hard_limit = lanes.iter().map(|l| l.seconds).max().unwrap() + 60;
    let spec = json!({
        "root": root(),
        "media": media.dir,
        "out": out,
        "pluginDir": plugin_dir(work.path()),
        "meshTracker": common::trackers::mesh_tracker_binary(),
        "chromium": CHROMIUM,
        "timeoutSeconds": hard_limit,
        "lanes": lanes.iter().map(Lane::spec).collect::<Vec<_>>(),
    });
    let spec_file = out.join("spec.json");
    std::fs::write(&spec_file, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

    let mut unshare = Command::new("unshare");
    if !is_root() {
        unshare.arg("--map-root-user");
    }
    unshare
        .args([
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
            r#"ip link set lo up && exec timeout -k 5 "$1" node "$2" "$3""#,
            "sh",
        ])
        .arg((hard_limit + 10).to_string())
        .arg(root().join("tests/browser/driver.mjs"))
        .arg(&spec_file)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(out.join("driver.log")).unwrap(),
        ));
    let started = Instant::now();
    let child = unshare
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run unshare: {e}"));
    // The driver bounds itself; `timeout` in the namespace and killing unshare (whose
    // --kill-child takes the namespace down) are the backstops.
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(hard_limit + 30);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    let output = child.wait_with_output().expect("wait for the driver");
    let _ = watchdog.join();
    let log = std::fs::read_to_string(out.join("driver.log")).unwrap_or_default();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let result: Value = match line.map(serde_json::from_str) {
        Some(Ok(v)) => v,
        _ => panic!(
            "{test}: the driver printed no result ({}):\nstdout:\n{stdout}\nstderr:\n{log}",
            output.status
        ),
    };
    eprintln!(
        "{test}: driver ran {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        output.status
    );
    assert!(
        result["ok"] == true,
        "{test}: driver failed: {}\n{}\nstderr:\n{log}",
        result["error"],
        serde_json::to_string_pretty(&result["partial"]).unwrap_or_default()
    );
    // Keep the evidence of a failing run: copy the outputs next to the target directory.
    let keep = root().join("target/browser-test").join(test);
    let _ = std::fs::remove_dir_all(&keep);
    std::fs::create_dir_all(&keep).unwrap();
    for e in std::fs::read_dir(&out).unwrap().flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().ends_with(".bin") {
            let _ = std::fs::copy(e.path(), keep.join(&name));
        }
    }
    eprintln!("{test}: driver outputs kept in {}", keep.display());
    let lanes = result["lanes"]
        .as_array()
        .expect("lanes")
        .iter()
        .map(|l| (l["name"].as_str().unwrap().to_string(), l.clone()))
        .collect();
    Run { lanes, _dir: work }
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_f64().map(|f| f as u64))
        .unwrap_or(0)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What one lane measured, and the facts it failed. Every check of a lane runs, so a failing
/// lane reports everything that went wrong at once.
struct Checked {
    name: String,
    failures: Vec<String>,
    mesh_peers: Vec<String>,
    /// meshsrc's last `mesh-statistics`.
    mesh: HashMap<String, u64>,
    /// Bytes the page uploaded to meshsrc's peer ids (onChunkUploaded), and downloaded from them.
    browser_up_to_mesh: u64,
    browser_down_from_mesh: u64,
    /// Segments the page loaded over P2P from meshsrc (onSegmentLoaded, downloadSource p2p).
    browser_p2p_segments_from_mesh: usize,
    /// Requests meshsrc sent the page (decoded from the page's data-channel log).
    requests_from_mesh: u64,
}

impl Checked {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(what());
        }
    }
    fn stat(&self, name: &str) -> u64 {
        self.mesh.get(name).copied().unwrap_or(0)
    }

    /// meshsrc took segments from the browser.
    fn mesh_took_from_browser(&mut self) {
        let (p2p, segments) = (self.stat("bytes-p2p"), self.stat("segments-p2p"));
        self.check(p2p > 0 && segments > 0, || {
            format!(
                "meshsrc took nothing from the browser: bytes-p2p {p2p}, segments-p2p {segments}"
            )
        });
        let (up, requests) = (self.browser_up_to_mesh, self.requests_from_mesh);
        self.check(up > 0 && requests > 0, || {
            format!("the browser uploaded {up} B to meshsrc, for {requests} requests")
        });
    }

    /// The browser took segments from meshsrc.
    fn browser_took_from_mesh(&mut self) {
        let (segments, down) = (
            self.browser_p2p_segments_from_mesh,
            self.browser_down_from_mesh,
        );
        self.check(segments > 0 && down > 0, || {
            format!("the browser took {segments} segments ({down} B) from meshsrc")
        });
        let up = self.stat("bytes-uploaded");
        self.check(up > 0, || format!("meshsrc counts {up} bytes uploaded"));
    }
}

/// Asserts that no lane failed a check, listing every failure.
fn assert_all(checked: &[Checked]) {
    let failed: Vec<String> = checked
        .iter()
        .filter(|c| !c.failures.is_empty())
        .map(|c| format!("lane {}:\n  - {}", c.name, c.failures.join("\n  - ")))
        .collect();
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
}

/// The facts every lane must show, whichever way segments went.
fn check_lane(lane: &Lane, r: &Value, media: &Media) -> Checked {
    let mut c = Checked {
        name: lane.name.to_string(),
        failures: vec![],
        mesh_peers: strings(&r["meshsrc"]["peerIds"]),
        mesh: HashMap::new(),
        browser_up_to_mesh: 0,
        browser_down_from_mesh: 0,
        browser_p2p_segments_from_mesh: 0,
        requests_from_mesh: 0,
    };
    let browser_peers = strings(&r["browser"]["peerIds"]);
    let count = r["stream"]["segments"].as_u64().unwrap() as usize;

    // meshsrc played the stream to its end by itself.
    let exit = &r["meshsrc"]["exit"];
    c.check(exit["code"] == 0, || {
        format!(
            "meshsrc did not end by itself with success: exit {exit}, log {}",
            r["meshsrc"]["log"]
        )
    });

    // Its output is an exact run of the origin's segments: all of them for VOD; for live, the
    // ones from where it started to the last.
    let out = std::fs::read(r["meshsrc"]["output"].as_str().unwrap()).unwrap_or_default();
    match lane.stream {
        StreamKind::Vod { .. } => {
            let all = media.segments[..count].concat();
            c.check(out == all, || {
                let at = out.iter().zip(&all).position(|(a, b)| a != b);
                format!(
                    "meshsrc's output ({} B) is not the {count} segments ({} B): first difference at {at:?}",
                    out.len(),
                    all.len()
                )
            });
        }
        StreamKind::Live => match exact_run_ending_with_last(&media.segments[..count], &out) {
            Some(first) => eprintln!(
                "{}: meshsrc output = segments {first}..={} exactly",
                c.name,
                count - 1
            ),
            None => c.failures.push(format!(
                "meshsrc's output ({} B) is not segments n..={} of the origin",
                out.len(),
                count - 1
            )),
        },
    }

    // meshsrc rejected nothing and banned nobody: the browser is honest.
    let last = &r["meshsrc"]["statistics"]["last"];
    c.mesh = last
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), u64_of(v))).collect())
        .unwrap_or_default();
    c.check(last.is_object(), || {
        "meshsrc posted no mesh-statistics".into()
    });
    let (rejected, banned) = (c.stat("segments-rejected"), c.stat("peers-banned"));
    c.check(rejected == 0 && banned == 0, || {
        format!(
            "meshsrc rejected {rejected} segment(s) from the browser and banned {banned} peer(s)"
        )
    });

    // One swarm: p2p-media-loader (in the page) and meshsrc announced the same info_hash, the
    // one of the manifest URL (or of the swarm id), and no other.
    let base = match lane.swarm_id {
        Some(id) => id.to_string(),
        None => r["manifestUrl"].as_str().unwrap().to_string(),
    };
    let expected = r["expected"]["infoHash"].as_str().unwrap();
    let ours = p2pml_info_hash(&base);
    c.check(expected == ours, || {
        format!("the driver expects info_hash {expected}, this test computes {ours} for {base}")
    });
    let by_hash = r["tracker"]["byInfoHash"].as_object().unwrap();
    let hashes: Vec<&String> = by_hash.keys().collect();
    c.check(hashes == [expected], || {
        format!(
            "info_hashes announced {hashes:?}, expected only {expected} (swarm {})",
            r["expected"]["swarm"]
        )
    });
    let announcers = by_hash
        .get(expected)
        .and_then(|h| h["announcers"].as_object())
        .cloned()
        .unwrap_or_default();
    let mesh_peers = c.mesh_peers.clone();
    c.check(
        !mesh_peers.is_empty() && mesh_peers.iter().all(|p| announcers.contains_key(p)),
        || format!("meshsrc {mesh_peers:?} did not announce {expected}; announcers {announcers:?}"),
    );
    c.check(
        !browser_peers.is_empty() && browser_peers.iter().all(|p| announcers.contains_key(p)),
        || format!("the browser {browser_peers:?} did not announce {expected}; announcers {announcers:?}"),
    );

    // The page connected to meshsrc, and to nobody else: it is the only other peer.
    let connected: Vec<String> = r["browser"]["peerEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "connect")
        .filter_map(|e| e["peerId"].as_str().map(str::to_owned))
        .collect();
    c.check(connected.iter().any(|p| mesh_peers.contains(p)), || {
        format!(
            "the browser never connected to meshsrc {mesh_peers:?} (connections: {connected:?})"
        )
    });
    c.check(connected.iter().all(|p| mesh_peers.contains(p)), || {
        format!("the browser connected to peers other than meshsrc: {connected:?}")
    });
    let fatal = &r["browser"]["hlsFatalErrors"];
    c.check(fatal.as_array().is_some_and(|a| a.is_empty()), || {
        format!("hls.js fatal errors: {fatal}")
    });

    // Every segment the page took over P2P is the origin's segment, whole.
    let first_seq = r["stream"]["firstSequence"].as_u64().unwrap();
    let prefix = r["stream"]["segmentUrlPrefix"].as_str().unwrap();
    let index_of = |url: &str| -> Option<usize> {
        let n: u64 = url
            .strip_prefix(prefix)?
            .strip_suffix(".ts")?
            .parse()
            .ok()?;
        n.checked_sub(first_seq)
            .map(|i| i as usize)
            .filter(|&i| i < media.segments.len())
    };
    let hashes: Vec<String> = (0..media.segments.len()).map(|i| media.sha256(i)).collect();
    let validated = r["browser"]["validated"].as_array().unwrap();
    for v in validated {
        let url = v["url"].as_str().unwrap_or("?");
        let Some(i) = index_of(url) else {
            c.failures.push(format!(
                "the browser validated an unknown segment URL {url}"
            ));
            continue;
        };
        let got = v["sha256"].as_str().unwrap_or("");
        c.check(got == hashes[i], || {
            let is = hashes.iter().position(|h| h == got);
            format!(
                "{url} as the browser got it over P2P ({} B) does not hash to the origin's SHA-256 \
                 of segment {i} ({} B); its bytes are {}",
                u64_of(&v["bytes"]),
                media.segments[i].len(),
                match is {
                    Some(j) => format!(
                        "those of segment {j} (URL …seg_{}.ts)",
                        j as u64 + first_seq
                    ),
                    None => "no segment of the origin".into(),
                }
            )
        });
    }
    let p2p_loaded = r["browser"]["p2pLoaded"].as_array().unwrap();
    for s in p2p_loaded {
        let url = s["url"].as_str().unwrap_or("?");
        c.check(validated.iter().any(|v| v["url"] == url), || {
            format!("{url} was loaded over P2P without going through validateP2PSegment")
        });
    }
    c.browser_p2p_segments_from_mesh = p2p_loaded
        .iter()
        .filter(|s| {
            s["peerId"]
                .as_str()
                .is_some_and(|p| mesh_peers.iter().any(|m| m == p))
        })
        .count();
    let by_peer = r["browser"]["byPeer"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let bytes_with_mesh = |dir: &str| -> u64 {
        mesh_peers
            .iter()
            .filter_map(|m| by_peer.get(m))
            .map(|p| u64_of(&p[dir]))
            .sum()
    };
    c.browser_up_to_mesh = bytes_with_mesh("up");
    c.browser_down_from_mesh = bytes_with_mesh("down");

    // The data-channel log, decoded with p2p-media-loader's deserializer.
    let wire = &r["wire"];
    c.check(wire.is_object(), || "no data-channel log".into());
    c.check(
        wire["decodeErrors"]
            .as_array()
            .is_some_and(|a| a.is_empty())
            && wire["tapError"].is_null(),
        || {
            format!(
                "undecodable data-channel commands: {} {}",
                wire["decodeErrors"], wire["tapError"]
            )
        },
    );
    c.check(u64_of(&wire["dropped"]) == 0, || {
        "the data-channel log overflowed".into()
    });
    c.requests_from_mesh = u64_of(&wire["requestsReceived"]);

    // The segment ids meshsrc announced to the page are p2p-media-loader's: live, media sequence
    // numbers (this live playlist starts at 0); VOD, positions 0.. whatever
    // EXT-X-MEDIA-SEQUENCE says (with 100, sequence numbers would be 100..).
    let ids = &wire["announcedIdsReceived"];
    let (lo, hi) = (u64_of(&ids["min"]), u64_of(&ids["max"]));
    c.check(u64_of(&ids["count"]) > 0, || {
        "meshsrc announced no segment to the browser".into()
    });
    c.check(hi < count as u64, || {
        format!("meshsrc announced segment ids {lo}..={hi}, outside 0..{count}")
    });

    // One request at a time on every link: no request from meshsrc arrived while an earlier
    // one on the same link was still outstanding (neither answered, completed or absent, nor
    // cancelled). p2p-media-loader serves one request per link: a second one silently stops
    // the upload of the first.
    let pipelined = u64_of(&wire["pipelined"]);
    let requests = c.requests_from_mesh;
    c.check(pipelined == 0, || {
        let cases: Vec<&Value> = wire["channels"]
            .as_array()
            .map(|chs| {
                chs.iter()
                    .flat_map(|ch| ch["violations"].as_array().into_iter().flatten())
                    .take(3)
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "meshsrc sent {pipelined} of its {} requests on a link while an earlier one was \
             outstanding ({} while the browser was uploading the earlier one); first cases: {}",
            requests,
            wire["pipelinedWhileUploading"],
            serde_json::to_string(&cases).unwrap()
        )
    });

    eprintln!(
        "{}: meshsrc {mesh_peers:?} bytes-cdn={} bytes-p2p={} bytes-uploaded={} segments-cdn={} \
         segments-p2p={} segments-rejected={rejected}; browser {browser_peers:?} bytes {} \
         (uploaded {} B to meshsrc, took {} B in {} P2P segments from it), segments {}; \
         requests meshsrc->browser {}, pipelined {pipelined} ({} while uploading); origin served {}",
        c.name,
        c.stat("bytes-cdn"),
        c.stat("bytes-p2p"),
        c.stat("bytes-uploaded"),
        c.stat("segments-cdn"),
        c.stat("segments-p2p"),
        r["browser"]["bytes"],
        c.browser_up_to_mesh,
        c.browser_down_from_mesh,
        c.browser_p2p_segments_from_mesh,
        r["browser"]["segmentsLoaded"],
        c.requests_from_mesh,
        wire["pipelinedWhileUploading"],
        r["origin"]
    );
    c
}

/// `Some(first)` when `got` is exactly segments `first..` of `segments`, ending with the last.
fn exact_run_ending_with_last(segments: &[Vec<u8>], got: &[u8]) -> Option<usize> {
    if got.is_empty() {
        return None;
    }
    let mut len = 0;
    for first in (0..segments.len()).rev() {
        len += segments[first].len();
        if len == got.len() {
            return (segments[first..].concat() == got).then_some(first);
        }
        if len > got.len() {
            return None;
        }
    }
    None
}

fn live_media(dir: &Path) -> Media {
    // LIVE_END distinct 2 s segments (and a spare one): no segment repeats.
    Media::generate(&dir.join("vod"), (LIVE_END + 1) * SEGMENT_SECS)
}

/// The browser plays first; meshsrc joins 8 s later and takes segments from it. On the bundled
/// mesh-tracker and on bittorrent-tracker, side by side. Neither sets a swarm id: both derive
/// it from the manifest URL.
#[test]
fn browser_first_meshsrc_takes_segments_from_the_browser() {
    let test = "browser_first_meshsrc_takes_segments_from_the_browser";
    if !chromium_or_skip(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let media = live_media(dir.path());
    let lanes = [
        Lane::live("browser-first-bundled", Tracker::Bundled, First::Browser),
        Lane::live(
            "browser-first-bittorrent",
            Tracker::BittorrentTracker,
            First::Browser,
        ),
    ];
    let results = run_driver(test, &media, &lanes);
    let checked: Vec<Checked> = lanes
        .iter()
        .map(|lane| {
            let mut c = check_lane(lane, &results[lane.name], &media);
            c.mesh_took_from_browser();
            c
        })
        .collect();
    assert_all(&checked);
}

/// meshsrc plays first; the browser joins 6 s later and takes segments from it over P2P, each
/// hashing to the origin's SHA-256. On both trackers, no swarm id.
#[test]
fn meshsrc_first_browser_takes_segments_from_meshsrc() {
    let test = "meshsrc_first_browser_takes_segments_from_meshsrc";
    if !chromium_or_skip(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let media = live_media(dir.path());
    let lanes = [
        Lane::live("meshsrc-first-bundled", Tracker::Bundled, First::Meshsrc),
        Lane::live(
            "meshsrc-first-bittorrent",
            Tracker::BittorrentTracker,
            First::Meshsrc,
        ),
    ];
    let results = run_driver(test, &media, &lanes);
    let checked: Vec<Checked> = lanes
        .iter()
        .map(|lane| {
            let mut c = check_lane(lane, &results[lane.name], &media);
            c.browser_took_from_mesh();
            c
        })
        .collect();
    assert_all(&checked);
}

/// A VOD playlist with `EXT-X-MEDIA-SEQUENCE:100`: p2p-media-loader calls its segments 0, 1, …
/// by position, and meshsrc must too, or the browser never finds them at meshsrc. meshsrc plays
/// first and soon holds the segments it fetches ahead; the browser joins 5 s later and takes
/// from meshsrc the segments beyond its high-demand window. Bundled tracker.
#[test]
fn vod_media_sequence_100_browser_takes_segments_from_meshsrc() {
    let test = "vod_media_sequence_100_browser_takes_segments_from_meshsrc";
    if !chromium_or_skip(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let media = Media::generate(&dir.path().join("vod"), 30);
    let lanes = [Lane::vod(
        "vod-sequence-100",
        Tracker::Bundled,
        First::Meshsrc,
        100,
    )];
    let results = run_driver(test, &media, &lanes);
    let mut c = check_lane(&lanes[0], &results[lanes[0].name], &media);
    c.browser_took_from_mesh();
    assert_all(&[c]);
}

/// meshsrc plays the stream from a mirror URL, the browser from the origin's: their URLs name
/// different swarms, and they meet only because both set the same swarm id (`swarm-id`,
/// `swarmId`). The browser plays first (VOD); meshsrc joins 5 s later and takes segments from
/// it. bittorrent-tracker.
#[test]
fn explicit_swarm_id_on_both_sides() {
    let test = "explicit_swarm_id_on_both_sides";
    if !chromium_or_skip(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let media = Media::generate(&dir.path().join("vod"), 30);
    let mut lane = Lane::vod("swarm-id", Tracker::BittorrentTracker, First::Browser, 0);
    lane.swarm_id = Some("gst-mesh-browser-test-channel");
    lane.meshsrc_from_mirror = true;
    let lanes = [lane];
    let results = run_driver(test, &media, &lanes);
    let r = &results[lanes[0].name];
    let expected = &r["expected"];
    let mut c = check_lane(&lanes[0], r, &media);
    c.check(
        expected["swarm"]
            .as_str()
            .is_some_and(|s| s.starts_with("v2-gst-mesh-browser-test-channel-main-")),
        || format!("swarm {}", expected["swarm"]),
    );
    // Without the swarm id the two would not have met.
    c.check(
        expected["ofBrowserUrl"] != expected["ofMeshsrcUrl"]
            && expected["infoHash"] != expected["ofBrowserUrl"]
            && expected["infoHash"] != expected["ofMeshsrcUrl"],
        || format!("swarm id and URLs do not name three swarms: {expected}"),
    );
    c.mesh_took_from_browser();
    assert_all(&[c]);
}

//! swarm-bench: N real viewers of one live HLS stream, with the mesh and CDN-only, measured
//! side by side in the same run.
//!
//! ```text
//! cargo run --release --example swarm-bench -- --peers N --seconds S --out DIR [--netns] [--churn]
//! ```
//!
//! It generates an H.264/AAC MPEG-TS stream with hlssink2, serves it from a local origin as a
//! live playlist of 2 s segments with its `segments-sha256.json`, and starts the bundled
//! tracker. Then, one pass after the other:
//! * baseline: N viewers, each `souphttpsrc ! hlsdemux ! queue ! fakesink sync=true` in its
//!   own process (CDN only);
//! * mesh: N viewers, each `meshsrc ! queue ! fakesink sync=true` in its own process.
//!
//! Every viewer reports its start-up time, stalls, bytes by source, CPU time and peak RSS;
//! the origin counts the bytes it sends. Results go to DIR/report.json and DIR/report.svg, a
//! progress line every 5 s and a summary table at the end.

mod netns;
mod report;
mod viewer;

#[path = "../../tests/common/fixtures.rs"]
mod fixtures;
#[path = "../../tests/common/origin.rs"]
mod origin;

use report::{PassResult, Tick, ViewerResult};
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use viewer::{Kind, Sample, ViewerArgs};

const USAGE: &str = "\
usage: swarm-bench [options]

  --peers N          viewers per pass (1-50, default 10)
  --seconds S        length of the live stream in each pass (20-3600, default 120)
  --out DIR          where report.json, report.svg and the viewers' logs go
                     (default target/swarm-bench)
  --bitrate KBPS     video bitrate of the generated 640x360 stream (100-20000, default 2000)
  --stagger MS       delay between two viewers joining (default 1000)
  --live-delay S     meshsrc live-delay, seconds behind the live edge (default 0)
  --cache-mb MB      meshsrc cache-size in MiB (default: the element's, 32)
  --no-baseline      skip the CDN-only pass
  --churn            every --churn-every seconds a random viewer is SIGKILLed and a new one
                     joins in its place
  --churn-every S    (default 30)
  --seed N           seed of the churn and RTT draws (default 1)
  --netns            each viewer in its own network namespace (needs root), shaped with tc:
    --up MBIT          viewer uplink (default 10)
    --down MBIT        viewer downlink (default 50)
    --rtt MIN-MAX      RTT to the origin in ms, drawn per viewer (default 20-80)
    --loss PCT         packet loss on each direction of a viewer's link (default 0.5)
    --origin-mbit MBIT the origin's link (default 100)
";

#[derive(Debug, Clone, Serialize)]
struct Args {
    peers: usize,
    seconds: u64,
    out: PathBuf,
    bitrate_kbps: u32,
    stagger_ms: u64,
    live_delay_s: f64,
    cache_mb: Option<u64>,
    baseline: bool,
    churn: bool,
    churn_every_s: u64,
    seed: u64,
    netns: Option<netns::Shaping>,
}

fn parse_args(raw: &[String]) -> Result<Args, String> {
    let mut args = Args {
        peers: 10,
        seconds: 120,
        out: PathBuf::from("target/swarm-bench"),
        bitrate_kbps: 2000,
        stagger_ms: 1000,
        live_delay_s: 0.0,
        cache_mb: None,
        baseline: true,
        churn: false,
        churn_every_s: 30,
        seed: 1,
        netns: None,
    };
    let mut shaping = netns::Shaping {
        up_mbit: 10.0,
        down_mbit: 50.0,
        rtt_min_ms: 20,
        rtt_max_ms: 80,
        loss_pct: 0.5,
        origin_mbit: 100.0,
    };
    let mut use_netns = false;
    let mut it = raw.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{flag}: bad value {v:?}"))
        }
        match flag.as_str() {
            "--peers" => args.peers = num(flag, value()?)?,
            "--seconds" => args.seconds = num(flag, value()?)?,
            "--out" => args.out = PathBuf::from(value()?),
            "--bitrate" => args.bitrate_kbps = num(flag, value()?)?,
            "--stagger" => args.stagger_ms = num(flag, value()?)?,
            "--live-delay" => args.live_delay_s = num(flag, value()?)?,
            "--cache-mb" => args.cache_mb = Some(num(flag, value()?)?),
            "--no-baseline" => args.baseline = false,
            "--churn" => args.churn = true,
            "--churn-every" => args.churn_every_s = num(flag, value()?)?,
            "--seed" => args.seed = num(flag, value()?)?,
            "--netns" => use_netns = true,
            "--up" => shaping.up_mbit = num(flag, value()?)?,
            "--down" => shaping.down_mbit = num(flag, value()?)?,
            "--loss" => shaping.loss_pct = num(flag, value()?)?,
            "--origin-mbit" => shaping.origin_mbit = num(flag, value()?)?,
            "--rtt" => {
                let v = value()?;
                let (lo, hi) = v
                    .split_once('-')
                    .ok_or_else(|| format!("--rtt: expected MIN-MAX, got {v:?}"))?;
                shaping.rtt_min_ms = num(flag, lo.to_owned())?;
                shaping.rtt_max_ms = num(flag, hi.to_owned())?;
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (see --help)")),
        }
    }
    let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_owned()) };
    check((1..=50).contains(&args.peers), "--peers must be 1-50")?;
    check(
        (20..=3600).contains(&args.seconds),
        "--seconds must be 20-3600",
    )?;
    check(
        (100..=20_000).contains(&args.bitrate_kbps),
        "--bitrate must be 100-20000",
    )?;
    check(args.stagger_ms <= 60_000, "--stagger must be at most 60000")?;
    check(
        (0.0..=60.0).contains(&args.live_delay_s),
        "--live-delay must be 0-60",
    )?;
    check(args.churn_every_s >= 5, "--churn-every must be at least 5")?;
    check(
        args.cache_mb.is_none_or(|mb| (1..=1024).contains(&mb)),
        "--cache-mb must be 1-1024",
    )?;
    if use_netns {
        check(
            shaping.up_mbit > 0.0 && shaping.down_mbit > 0.0 && shaping.origin_mbit > 0.0,
            "rates must be positive",
        )?;
        check(
            shaping.rtt_min_ms <= shaping.rtt_max_ms && shaping.rtt_max_ms <= 2000,
            "--rtt must be MIN-MAX with MIN <= MAX <= 2000",
        )?;
        check(
            (0.0..=20.0).contains(&shaping.loss_pct),
            "--loss must be 0-20",
        )?;
        args.netns = Some(shaping);
    }
    Ok(args)
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().map(String::as_str) == Some("viewer") {
        std::process::exit(viewer::run(&raw[1..]));
    }
    let args = match parse_args(&raw) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("swarm-bench: {e}");
            std::process::exit(2);
        }
    };
    std::process::exit(match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("swarm-bench: error: {e}");
            1
        }
    });
}

/// A small deterministic generator for the churn and RTT draws (SplitMix64).
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Set on Ctrl-C: the bench stops its viewers and cleans up instead of dying mid-way.
fn interrupted_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("signal runtime");
        if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
            eprintln!("swarm-bench: interrupted, stopping");
            set.store(true, Ordering::SeqCst);
        }
    });
    flag
}

/// The bundled tracker as a child process, killed on drop.
struct Tracker {
    child: Child,
    url: String,
}

impl Tracker {
    fn start(ip: IpAddr) -> Result<Tracker, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let dir = exe
            .parent()
            .and_then(|examples| examples.parent())
            .ok_or("no target directory")?;
        let bin = dir.join("mesh-tracker");
        if !bin.exists() {
            // `cargo run --example` builds the library, not the binaries.
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            println!("building mesh-tracker (cargo build --release --bin mesh-tracker)");
            let status = Command::new(cargo)
                .args(["build", "--release", "--bin", "mesh-tracker"])
                .status()
                .map_err(|e| format!("cargo: {e}"))?;
            if !status.success() || !bin.exists() {
                return Err("could not build mesh-tracker".into());
            }
        }
        let mut child = Command::new(&bin)
            .args(["--listen", &format!("{ip}:0")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("mesh-tracker: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("ws://"))
            .ok_or_else(|| format!("unexpected tracker output {line:?}"))?
            .to_owned();
        Ok(Tracker { child, url })
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A viewer process and the last sample it reported.
struct ViewerProcess {
    name: String,
    kind: Kind,
    slot: usize,
    child: Child,
    joined: Duration,
    killed: bool,
    exited: bool,
    last: Arc<Mutex<Sample>>,
}

impl ViewerProcess {
    fn spawn(
        env: &Bench,
        name: String,
        slot: usize,
        viewer: &ViewerArgs,
        joined: Duration,
    ) -> Result<ViewerProcess, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut argv: Vec<String> = match &env.network {
            Some(net) => net.exec_prefix(slot),
            None => Vec::new(),
        };
        argv.push(exe.display().to_string());
        argv.extend(viewer.to_args());
        let log = std::fs::File::create(env.logs.join(format!("{name}.log")))
            .map_err(|e| e.to_string())?;
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("GST_REGISTRY_1_0", env.logs.join("registry.bin"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("start viewer: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let last = Arc::new(Mutex::new(Sample::default()));
        let sink = last.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(sample) = serde_json::from_str::<Sample>(&line) {
                    *sink.lock().unwrap() = sample;
                }
            }
        });
        Ok(ViewerProcess {
            name,
            kind: viewer.kind,
            slot,
            child,
            joined,
            killed: false,
            exited: false,
            last,
        })
    }

    fn sample(&self) -> Sample {
        self.last.lock().unwrap().clone()
    }

    fn running(&mut self) -> bool {
        if !self.exited && matches!(self.child.try_wait(), Ok(Some(_))) {
            self.exited = true;
        }
        !self.exited
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.exited = true;
    }
}

impl Drop for ViewerProcess {
    fn drop(&mut self) {
        if !self.exited {
            self.kill();
        }
    }
}

struct Bench {
    args: Args,
    origin: origin::Origin,
    vod_playlist: PathBuf,
    tracker: Tracker,
    network: Option<netns::Network>,
    logs: PathBuf,
    interrupted: Arc<AtomicBool>,
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Runs one pass: its own live playlist, N viewers (with churn), until every viewer still
/// running reached EOS.
fn run_pass(bench: &Bench, kind: Kind, draw: &mut Draw) -> Result<PassResult, String> {
    let args = &bench.args;
    let playlist = format!("live-{}.m3u8", kind.name());
    let segments = args.seconds.div_ceil(fixtures::SEGMENT_SECS);
    let origin_at_start = bench.origin.bytes_sent();
    let log_at_start = bench.origin.log().len();
    bench.origin.add_live_playlist(
        &playlist,
        &bench.vod_playlist,
        origin::LiveConfig {
            window: 6,
            start_segments: 6,
            looped: false,
            end_after: Some(6 + segments),
            ..Default::default()
        },
    );
    let viewer_args = |slot: usize| ViewerArgs {
        kind,
        uri: bench.origin.url(&playlist),
        tracker: (kind == Kind::Mesh).then(|| bench.tracker.url.clone()),
        hashes: (kind == Kind::Mesh).then(|| bench.origin.live_hashes_url(&playlist)),
        ice_address: Some(match &bench.network {
            Some(net) => net.slots[slot].ip.to_string(),
            None => "127.0.0.1".into(),
        })
        .filter(|_| kind == Kind::Mesh),
        live_delay: Duration::from_secs_f64(args.live_delay_s),
        cache_size: args.cache_mb.map(|mb| mb << 20),
    };
    println!(
        "== {} pass: {} viewers, {} s of live stream",
        kind.name(),
        args.peers,
        args.seconds
    );
    let started = Instant::now();
    let limit = Duration::from_secs(args.seconds + 120)
        + Duration::from_millis(args.stagger_ms) * args.peers as u32;
    let mut viewers: Vec<ViewerProcess> = Vec::new();
    let mut next_join = started;
    let mut next_churn = started + Duration::from_secs(args.churn_every_s);
    let churn_until =
        started + Duration::from_secs(args.seconds.saturating_sub(args.churn_every_s));
    let mut next_tick = started;
    let mut next_progress = started + Duration::from_secs(5);
    let mut ticks = Vec::new();
    let mut joined = 0;
    loop {
        if bench.interrupted.load(Ordering::SeqCst) {
            return Err("interrupted".into());
        }
        let now = Instant::now();
        if joined < args.peers && now >= next_join {
            let name = format!("{}-{}", kind.name(), joined + 1);
            viewers.push(ViewerProcess::spawn(
                bench,
                name,
                joined,
                &viewer_args(joined),
                now - started,
            )?);
            joined += 1;
            next_join = now + Duration::from_millis(args.stagger_ms);
        }
        if args.churn && joined == args.peers && now >= next_churn && now < churn_until {
            next_churn = now + Duration::from_secs(args.churn_every_s);
            let alive: Vec<usize> = (0..viewers.len())
                .filter(|&i| !viewers[i].killed && !viewers[i].exited)
                .collect();
            if !alive.is_empty() {
                let victim = alive[draw.below(alive.len() as u64) as usize];
                viewers[victim].kill();
                viewers[victim].killed = true;
                let slot = viewers[victim].slot;
                let name = format!("{}-{}", kind.name(), viewers.len() + 1);
                println!("   churn: {} killed, {name} joins", viewers[victim].name);
                viewers.push(ViewerProcess::spawn(
                    bench,
                    name,
                    slot,
                    &viewer_args(slot),
                    now - started,
                )?);
            }
        }
        let mut running = 0;
        for v in viewers.iter_mut() {
            if v.running() {
                running += 1;
            } else if !v.killed {
                let s = v.sample();
                if let Some(e) = s.error {
                    return Err(format!("{}: {e}", v.name));
                }
                if !s.eos {
                    return Err(format!(
                        "{} exited without EOS; see {}",
                        v.name,
                        bench.logs.join(format!("{}.log", v.name)).display()
                    ));
                }
            }
        }
        if now >= next_tick {
            let samples: Vec<Sample> = viewers.iter().map(ViewerProcess::sample).collect();
            let tick = Tick {
                t_s: (now - started).as_secs_f64(),
                origin_bytes: bench.origin.bytes_sent() - origin_at_start,
                viewer_bytes: samples.iter().map(|s| s.bytes_played).sum(),
                viewers: running,
            };
            ticks.push(tick);
            next_tick += Duration::from_secs(1);
            if now >= next_progress {
                next_progress += Duration::from_secs(5);
                let offload = 1.0 - tick.origin_bytes as f64 / tick.viewer_bytes.max(1) as f64;
                let stalls: u64 = samples.iter().map(|s| s.stalls).sum();
                let from_peers: u64 = samples.iter().map(|s| s.bytes_p2p).sum();
                println!(
                    "[{} {:>4.0}s] viewers {running:>2} running | origin {} | played {} ({} from peers) | offload {:>5.1}% | stalls {stalls}",
                    kind.name(),
                    tick.t_s,
                    mb(tick.origin_bytes),
                    mb(tick.viewer_bytes),
                    mb(from_peers),
                    offload.max(0.0) * 100.0
                );
            }
        }
        if joined == args.peers && running == 0 {
            break;
        }
        if now - started > limit {
            return Err(format!(
                "{} pass: viewers still running after {limit:?}",
                kind.name()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Segment bytes only: what the viewers' own `bytes-cdn` counts.
    let stem = format!("/live-live_{}_m3u8/", kind.name());
    let segment_requests: Vec<origin::RequestRecord> = bench.origin.log()[log_at_start..]
        .iter()
        .filter(|r| r.path.starts_with(&stem) && r.path.contains("/seg_"))
        .cloned()
        .collect();
    let origin_segment_bytes = segment_requests.iter().map(|r| r.body_bytes).sum();
    // Peer transfers the scheduler handed to the CDN part-way, from the first missing byte.
    let resumed_requests = segment_requests
        .iter()
        .filter(|r| {
            r.range
                .as_deref()
                .and_then(|h| h.strip_prefix("bytes="))
                .and_then(|h| h.split('-').next())
                .and_then(|from| from.parse::<u64>().ok())
                .is_some_and(|from| from > 0)
        })
        .count();
    let distinct_segments = segment_requests
        .iter()
        .map(|r| r.path_only().to_owned())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let rtt = |slot: usize| bench.network.as_ref().map(|n| n.slots[slot].rtt_ms);
    Ok(PassResult {
        kind,
        seconds: started.elapsed().as_secs_f64(),
        origin_bytes: bench.origin.bytes_sent() - origin_at_start,
        origin_segment_bytes,
        segment_requests: segment_requests.len(),
        resumed_requests,
        distinct_segments,
        viewers: viewers
            .iter()
            .map(|v| {
                let last = v.sample();
                ViewerResult {
                    name: v.name.clone(),
                    kind: v.kind,
                    joined_s: v.joined.as_secs_f64(),
                    killed: v.killed,
                    reached_eos: last.eos,
                    rtt_ms: rtt(v.slot),
                    last,
                }
            })
            .collect(),
        ticks,
    })
}

#[derive(Serialize)]
struct Footprint {
    libgstmesh_so_bytes: Option<u64>,
    libgstmesh_so_stripped_bytes: Option<u64>,
    /// Medians of the viewers that played to the end: mesh minus baseline.
    extra_peak_rss_mb: Option<f64>,
    cpu_ratio: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    args: Args,
    applied_shaping: Option<netns::Applied>,
    stream_bitrate_kbps: f64,
    baseline: Option<(report::Summary, PassResult)>,
    mesh: (report::Summary, PassResult),
    /// |sum of the viewers' bytes-cdn − the bytes the origin sent| / the origin's.
    cdn_count_gap: f64,
    footprint: Footprint,
}

/// Size of libgstmesh.so as built, and of a stripped copy.
fn library_size(out: &Path) -> (Option<u64>, Option<u64>) {
    let Some(lib) = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe.parent()?.parent()?.to_path_buf();
        Some(dir.join("libgstmesh.so")).filter(|p| p.exists())
    }) else {
        return (None, None);
    };
    let size = std::fs::metadata(&lib).ok().map(|m| m.len());
    let copy = out.join("libgstmesh.stripped.so");
    let stripped = std::fs::copy(&lib, &copy)
        .ok()
        .and_then(|_| Command::new("strip").arg(&copy).status().ok())
        .filter(|s| s.success())
        .and_then(|_| std::fs::metadata(&copy).ok())
        .map(|m| m.len());
    let _ = std::fs::remove_file(&copy);
    (size, stripped)
}

fn run(args: &Args) -> Result<(), String> {
    if args.netns.is_some() && !Path::new("/proc/self/ns/net").exists() {
        return Err("--netns needs network namespaces".into());
    }
    let interrupted = interrupted_flag();
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let logs = args.out.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;

    // Enough media for the window, the start-up segments and a late joiner.
    let media_secs = (args.seconds.div_ceil(fixtures::SEGMENT_SECS) + 16) * fixtures::SEGMENT_SECS;
    println!(
        "generating {media_secs} s of 640x360 H.264 at {} kbit/s + AAC with hlssink2",
        args.bitrate_kbps
    );
    let generated = Instant::now();
    let stream = fixtures::hls_ts_vod_with(
        &work.path().join("vod"),
        media_secs,
        true,
        &fixtures::TsVideo {
            width: 640,
            height: 360,
            pattern: "snow",
            bitrate_kbps: Some(args.bitrate_kbps),
        },
    );
    let media_bytes: u64 = std::fs::read_dir(&stream.dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "ts"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let stream_bitrate_kbps = media_bytes as f64 * 8.0 / 1000.0 / media_secs as f64;
    println!(
        "generated in {:.0} s: {stream_bitrate_kbps:.0} kbit/s on average",
        generated.elapsed().as_secs_f64()
    );

    let mut draw = Draw(args.seed);
    let network = match &args.netns {
        Some(shaping) => {
            let (lo, hi) = (shaping.rtt_min_ms, shaping.rtt_max_ms);
            let mut rtt_draw = Draw(args.seed ^ 0x5eed);
            let net = netns::Network::create(args.peers, shaping, || {
                lo + rtt_draw.below(u64::from(hi - lo) + 1) as u32
            })?;
            for note in &net.applied.notes {
                println!("note: {note}");
            }
            Some(net)
        }
        None => None,
    };
    let host_ip: IpAddr = match &network {
        Some(net) => net.host_ip.into(),
        None => Ipv4Addr::LOCALHOST.into(),
    };
    let origin = origin::Origin::start_on(work.path(), host_ip);
    let tracker = Tracker::start(host_ip)?;
    println!("origin {} | tracker {}", origin.url(""), tracker.url);
    // Build the GStreamer registry once, not in every viewer at the same time.
    let _ = Command::new("gst-inspect-1.0")
        .arg("hlsdemux")
        .env("GST_REGISTRY_1_0", logs.join("registry.bin"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();

    let bench = Bench {
        args: args.clone(),
        origin,
        vod_playlist: stream.playlist.clone(),
        tracker,
        network,
        logs,
        interrupted,
    };
    let baseline = if args.baseline {
        Some(run_pass(&bench, Kind::Baseline, &mut draw)?)
    } else {
        None
    };
    let mesh = run_pass(&bench, Kind::Mesh, &mut draw)?;

    let mesh_summary = mesh.summary();
    // meshsrc counts every byte it takes over HTTP (playlists and hash files too), as the
    // origin does.
    let cdn_count_gap = (mesh_summary.bytes_cdn_reported as f64 - mesh.origin_bytes as f64).abs()
        / mesh.origin_bytes.max(1) as f64;
    let (so, so_stripped) = library_size(&args.out);
    let base_summary = baseline.as_ref().map(PassResult::summary);
    let footprint = Footprint {
        libgstmesh_so_bytes: so,
        libgstmesh_so_stripped_bytes: so_stripped,
        extra_peak_rss_mb: base_summary
            .map(|b| mesh_summary.peak_rss_mb_median - b.peak_rss_mb_median),
        cpu_ratio: base_summary
            .filter(|b| b.cpu_s_median > 0.0)
            .map(|b| mesh_summary.cpu_s_median / b.cpu_s_median),
    };

    for pass in baseline.iter().chain([&mesh]) {
        println!("\n---- {} pass ----", pass.kind.name());
        print!("{}", report::table(pass));
    }
    println!("\n---- summary ----");
    println!(
        "{:<9} {:>8} {:>9} {:>7} {:>10} {:>8} {:>8} {:>12}",
        "pass", "offload", "start ms", "stalls", "starved s", "CPU s", "RSS MB", "origin MB"
    );
    for (pass, s) in baseline
        .iter()
        .zip(base_summary.iter())
        .chain([(&mesh, &mesh_summary)])
    {
        println!(
            "{:<9} {:>8.3} {:>9.0} {:>7} {:>10.2} {:>8.1} {:>8.1} {:>12.1}",
            pass.kind.name(),
            s.offload,
            s.startup_ms_median,
            s.stalls_total,
            s.starved_s_total,
            s.cpu_s_median,
            s.peak_rss_mb_median,
            pass.origin_bytes as f64 / 1e6
        );
    }
    println!(
        "ceiling 1 - 1/N = {:.3}; the viewers' summed bytes-cdn and the origin's own count differ by {:.4}%",
        1.0 - 1.0 / args.peers as f64,
        cdn_count_gap * 100.0
    );
    for pass in baseline.iter().chain([&mesh]) {
        println!(
            "{}: {} segment requests at the origin for {} segments ({:.2} per segment), {} resumed part-way",
            pass.kind.name(),
            pass.segment_requests,
            pass.distinct_segments,
            pass.segment_requests as f64 / pass.distinct_segments.max(1) as f64,
            pass.resumed_requests
        );
    }
    if let Some(b) = base_summary {
        println!(
            "mesh vs baseline (medians): start-up x{:.2}, CPU x{:.2}, peak RSS {:+.1} MB",
            mesh_summary.startup_ms_median / b.startup_ms_median.max(1.0),
            footprint.cpu_ratio.unwrap_or(f64::NAN),
            footprint.extra_peak_rss_mb.unwrap_or(f64::NAN)
        );
    }
    if let (Some(so), Some(stripped)) = (so, so_stripped) {
        println!(
            "libgstmesh.so: {:.1} MB, {:.1} MB stripped",
            so as f64 / 1e6,
            stripped as f64 / 1e6
        );
    }

    let title = format!(
        "gst-mesh swarm-bench: {} viewers, {} s live, {:.0} kbit/s{}{}",
        args.peers,
        args.seconds,
        stream_bitrate_kbps,
        if args.netns.is_some() {
            ", shaped netns"
        } else {
            ", loopback"
        },
        if args.churn { ", churn" } else { "" }
    );
    report::chart(&args.out.join("report.svg"), &mesh, &title)?;
    let report = Report {
        args: args.clone(),
        applied_shaping: bench.network.as_ref().map(|n| n.applied.clone()),
        stream_bitrate_kbps,
        baseline: base_summary.zip(baseline),
        mesh: (mesh_summary, mesh),
        cdn_count_gap,
        footprint,
    };
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("report.json"), json).map_err(|e| e.to_string())?;
    println!(
        "wrote {} and {}",
        args.out.join("report.json").display(),
        args.out.join("report.svg").display()
    );
    Ok(())
}

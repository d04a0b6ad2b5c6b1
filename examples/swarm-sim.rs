//! swarm-sim: meshsrc's real delivery engine against a simulated swarm, much faster than real
//! time.
//!
//! ```text
//! cargo run --release --example swarm-sim -- --peers 10000 --seconds 600 [--out DIR]
//! ```
//!
//! Every simulated viewer runs one real [`mesh_core::delivery::engine::Engine`] (scheduler,
//! receive and upload state per link, cache, announcements, stats), driven the way the
//! plugin's hub drives it: inputs in with the time, outputs carried out. Its track driver
//! decides with the real [`mesh_core::playback`] policy (reload timing, deadlines,
//! fetch-ahead, hash refetch) and starts where the real HLS parser says. Around them the
//! simulator models only the world: links with a rate and a delay, the CDN, a tracker, churn
//! and a player. Segment payloads are scaled down ([`BYTE_SCALE`]) so 10,000 viewers fit in
//! memory. It is a deterministic discrete-event simulation: the same `--seed` gives the same
//! numbers, whatever `--threads`.
//!
//! For each swarm size N (10, 100, 1000, 10000 up to `--peers`, and `--peers` itself) and each
//! scenario (plain, churn, upload caps), it runs the mesh and a CDN-only baseline with the
//! same viewers, joins, departures and links to the CDN, and reports offload
//! (1 − origin bytes / bytes played), origin requests per segment, stalls and start-up.

use bytes::Bytes;
use gstmesh::mesh::SegmentId;
use gstmesh::mesh::guard::Bans;
use gstmesh::mesh::protocol::{Command, Incoming, encode};
use gstmesh::mesh::swarm::{InfoHash, PeerId};
use gstmesh::model::Resource;
use gstmesh::scheduler::{RequestId, SchedulerConfig, SegmentRequest, Share, ShareKey};
use gstmesh::session::LIVE_FETCH_AHEAD;
use mesh_core::delivery::engine::{Engine, EngineConfig, Fetched, Input, Output};
use mesh_core::delivery::uploads::Upload;
use mesh_core::playback::{self, Deadlines, HashRefetch, Reloads};
use serde::Serialize;
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: swarm-sim [options]

Runs meshsrc's real delivery engine, one per simulated viewer, against simulated peer
links, uploads, a WebTorrent tracker, a CDN, churn and a live playlist of 2 s segments, in
simulated time. For each N in 10, 100, 1000, 10000 up to --peers (and --peers itself) and
each scenario, the mesh and a CDN-only baseline (same viewers, no mesh) are run.

  --peers N            largest swarm size (2-100000, default 1000)
  --seconds S          simulated seconds per run (60-7200, default 300)
  --seed N             seed of every random draw (default 1)
  --out DIR            also write DIR/sim.json and DIR/sim.svg (offload against N)
  --scenarios LIST     comma-separated, from plain, churn, caps (default: all three)
                         plain  no churn, no upload cap
                         churn  --churn percent of viewers per minute leave, as many join
                         caps   every viewer sets max-upload-rate to --upload-cap
  --threads N          runs in parallel (1-64, default: the available cores)
  --live-delay S       the element's live-delay, in seconds (0-30, default 0: the
                       playlist's hold-back, three target durations = 6 s)
  --bitrate KBPS       stream bitrate (100-50000, default 3000; segments vary by ±15 %)
  --max-peers N        the element's max-peers (1-200, default 10)
  --cache-mb MB        the element's cache-size in MiB (1-4096, default 8)
  --fetch-ahead K      live segments a viewer requests ahead of the one it waits for
                       (0-10, default: the element's, 3)
  --uplink MIN-MAX     viewers' uplink in Mbit/s, drawn per viewer (default 10-50)
  --downlink MIN-MAX   viewers' downlink in Mbit/s, drawn per viewer (default 25-100)
  --upload-cap MBIT    max-upload-rate of the caps scenario, in Mbit/s (default 10)
  --churn PCT          churn scenario: percent of viewers replaced per minute (default 10)
  --rtt MIN-MAX        round-trip time of a peer link in ms, drawn per link (default 20-80)
  --cdn-rtt MIN-MAX    round-trip time to the CDN in ms, drawn per viewer (default 20-60)
  --cdn-mbit MIN-MAX   CDN throughput of one request in Mbit/s, drawn per request
                       (default 20-80; a viewer's downlink caps it too)
  --ramp S             the first N viewers join over S seconds (0-600, default 30)
  --stagger MS         instead, viewer i joins at i times MS (1-60000), as swarm-bench's
                       viewers do
  -h, --help           this text

Exit status: 0 on success, 2 on invalid arguments.
";

type Micros = u64;
const MS: Micros = 1_000;
const SEC: Micros = 1_000_000;
/// Segment duration of the live stream, as in the mesh tests.
const SEGMENT: Micros = 2 * SEC;
/// HLS hold-back without HOLD-BACK: three target durations (the simulated playlist has
/// none); only sizes the playlist window, the parser decides where viewers start.
const HOLD_BACK: Micros = 3 * SEGMENT;
/// Segments published before the simulation starts, so the first playlist is full.
const HISTORY_SEGMENTS: i64 = 30;
/// What a link writer hands the data channel at a time (real bytes; the hub's writer hands
/// 16 KiB, the engine only needs the progress).
const HAND_OFF: u64 = 64 * 1024;
/// Bytes a viewer's uplink holds queued at most: the data channel's send buffer (1 MiB, the
/// transport's default) in front of a router queue of about that size.
const UPLINK_QUEUE: f64 = 1024.0 * 1024.0;
/// Wire bytes per data-channel byte: IP, UDP, DTLS and SCTP headers on ~1,200-byte packets.
const WIRE_OVERHEAD: f64 = 1.08;
/// Wire bytes of a command besides its encoding (the same headers on its own packet).
const COMMAND_OVERHEAD: u64 = 90;
/// One payload byte stands for this many bytes of a segment: the engines hold, count and
/// verify sizes in payload bytes, so 10,000 viewers' caches fit in memory. Transfer times
/// and the reported figures are in real bytes.
const BYTE_SCALE: u64 = 1000;
/// meshsrc's default `max-buffering-time`: how far ahead of the pad segments are fetched.
const MAX_BUFFERING: Micros = 30 * SEC;
/// The tracker model: offers per announce, the announce interval and how long an unanswered
/// offer holds its slot (`src/mesh/signalling.rs`, `mesh_core::mesh::tracker`).
const OFFERS_PER_ANNOUNCE: usize = 5;
const ANNOUNCE_INTERVAL: Micros = 120 * SEC;
const OFFER_EXPIRY: Micros = 50 * SEC;
/// A killed peer's links go down when ICE gives up on it (webrtc's disconnected timeout).
const ABRUPT_LEAVE_DETECTION: Micros = 5 * SEC;
const SWARM_ID: &str = "5157a2d0c0ffee5157a2";

// ---- arguments ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
enum Scenario {
    #[default]
    Plain,
    Churn,
    Caps,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Plain => "plain",
            Scenario::Churn => "churn",
            Scenario::Caps => "caps",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Args {
    peers: usize,
    seconds: u64,
    seed: u64,
    out: Option<PathBuf>,
    scenarios: Vec<Scenario>,
    threads: usize,
    live_delay_s: f64,
    bitrate_kbps: u64,
    max_peers: usize,
    cache_mb: u64,
    fetch_ahead: u64,
    uplink_mbit: (f64, f64),
    downlink_mbit: (f64, f64),
    upload_cap_mbit: f64,
    churn_pct_per_min: f64,
    rtt_ms: (f64, f64),
    cdn_rtt_ms: (f64, f64),
    cdn_mbit: (f64, f64),
    ramp_s: f64,
    /// Joins exactly this far apart, in ms, instead of drawn over the ramp.
    stagger_ms: Option<u64>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            peers: 1000,
            seconds: 300,
            seed: 1,
            out: None,
            scenarios: vec![Scenario::Plain, Scenario::Churn, Scenario::Caps],
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            live_delay_s: 0.0,
            bitrate_kbps: 3000,
            max_peers: 10,
            cache_mb: 8,
            fetch_ahead: LIVE_FETCH_AHEAD,
            uplink_mbit: (10.0, 50.0),
            downlink_mbit: (25.0, 100.0),
            upload_cap_mbit: 10.0,
            churn_pct_per_min: 10.0,
            rtt_ms: (20.0, 80.0),
            cdn_rtt_ms: (20.0, 60.0),
            cdn_mbit: (20.0, 80.0),
            ramp_s: 30.0,
            stagger_ms: None,
        }
    }
}

enum Parsed {
    Run(Box<Args>),
    Help,
}

fn parse_number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    option: &str,
    value: &str,
    min: T,
    max: T,
) -> Result<T, String> {
    match value.parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(format!(
            "{option}: expected a number from {min} to {max}, got {value:?}"
        )),
    }
}

fn parse_range(option: &str, value: &str, min: f64, max: f64) -> Result<(f64, f64), String> {
    let bad =
        || format!("{option}: expected MIN-MAX with {min} <= MIN <= MAX <= {max}, got {value:?}");
    let (lo, hi) = value.split_once('-').ok_or_else(bad)?;
    let (lo, hi): (f64, f64) = (
        lo.trim().parse().map_err(|_| bad())?,
        hi.trim().parse().map_err(|_| bad())?,
    );
    if !(lo.is_finite() && hi.is_finite() && min <= lo && lo <= hi && hi <= max) {
        return Err(bad());
    }
    Ok((lo, hi))
}

fn parse_args(raw: &[String]) -> Result<Parsed, String> {
    let mut args = Args::default();
    let mut it = raw.iter();
    while let Some(option) = it.next() {
        if option == "-h" || option == "--help" {
            return Ok(Parsed::Help);
        }
        let (name, inline) = match option.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
            _ => (option.as_str(), None),
        };
        let known = [
            "--peers",
            "--seconds",
            "--seed",
            "--out",
            "--scenarios",
            "--threads",
            "--live-delay",
            "--bitrate",
            "--max-peers",
            "--cache-mb",
            "--fetch-ahead",
            "--uplink",
            "--downlink",
            "--upload-cap",
            "--churn",
            "--rtt",
            "--cdn-rtt",
            "--cdn-mbit",
            "--ramp",
            "--stagger",
        ];
        if !known.contains(&name) {
            return Err(format!("unknown option {option:?}"));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))?,
        };
        let v = value.as_str();
        match name {
            "--peers" => args.peers = parse_number(name, v, 2, 100_000)?,
            "--seconds" => args.seconds = parse_number(name, v, 60, 7200)?,
            "--seed" => args.seed = parse_number(name, v, 0, u64::MAX)?,
            "--out" => {
                if v.is_empty() {
                    return Err("--out: expected a folder".into());
                }
                args.out = Some(PathBuf::from(v));
            }
            "--scenarios" => {
                let mut list = Vec::new();
                for part in v.split(',').map(str::trim) {
                    let scenario = match part {
                        "plain" => Scenario::Plain,
                        "churn" => Scenario::Churn,
                        "caps" => Scenario::Caps,
                        other => {
                            return Err(format!(
                                "--scenarios: unknown scenario {other:?} (plain, churn, caps)"
                            ));
                        }
                    };
                    if !list.contains(&scenario) {
                        list.push(scenario);
                    }
                }
                args.scenarios = list;
            }
            "--threads" => args.threads = parse_number(name, v, 1, 64)?,
            "--live-delay" => args.live_delay_s = parse_number(name, v, 0.0, 30.0)?,
            "--bitrate" => args.bitrate_kbps = parse_number(name, v, 100, 50_000)?,
            "--max-peers" => args.max_peers = parse_number(name, v, 1, 200)?,
            "--cache-mb" => args.cache_mb = parse_number(name, v, 1, 4096)?,
            "--fetch-ahead" => args.fetch_ahead = parse_number(name, v, 0, 10)?,
            "--uplink" => args.uplink_mbit = parse_range(name, v, 0.1, 10_000.0)?,
            "--downlink" => args.downlink_mbit = parse_range(name, v, 0.1, 10_000.0)?,
            "--upload-cap" => args.upload_cap_mbit = parse_number(name, v, 0.1, 10_000.0)?,
            "--churn" => args.churn_pct_per_min = parse_number(name, v, 0.0, 100.0)?,
            "--rtt" => args.rtt_ms = parse_range(name, v, 0.0, 2000.0)?,
            "--cdn-rtt" => args.cdn_rtt_ms = parse_range(name, v, 0.0, 2000.0)?,
            "--cdn-mbit" => args.cdn_mbit = parse_range(name, v, 0.1, 100_000.0)?,
            "--ramp" => args.ramp_s = parse_number(name, v, 0.0, 600.0)?,
            "--stagger" => args.stagger_ms = Some(parse_number(name, v, 1, 60_000)?),
            _ => unreachable!("checked against the known options"),
        }
    }
    if args.ramp_s >= args.seconds as f64 {
        return Err(format!(
            "--ramp ({} s) must be shorter than --seconds ({} s)",
            args.ramp_s, args.seconds
        ));
    }
    Ok(Parsed::Run(Box::new(args)))
}

/// N = 10, 100, 1000, 10000 up to `max`, plus `max` itself.
fn swarm_sizes(max: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = [10, 100, 1000, 10_000]
        .into_iter()
        .filter(|n| *n <= max)
        .collect();
    if !sizes.contains(&max) {
        sizes.push(max);
    }
    sizes.sort_unstable();
    sizes
}

// ---- randomness ----------------------------------------------------------------------------

fn mix64(mut x: u64) -> u64 {
    // splitmix64 finaliser
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// An independent stream for (seed, purpose, index): runs with and without the mesh draw
/// the same viewers, joins and departures.
fn stream_seed(seed: u64, purpose: u64, index: u64) -> u64 {
    mix64(seed ^ mix64(purpose.wrapping_mul(0x1000_0000_01b3) ^ mix64(index)))
}

const PURPOSE_POPULATION: u64 = 1;
const PURPOSE_VIEWER: u64 = 2;
const PURPOSE_MESH: u64 = 3;
const PURPOSE_SEGMENTS: u64 = 4;

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(mix64(seed))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, (lo, hi): (f64, f64)) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    fn micros(&mut self, lo: Micros, hi: Micros) -> Micros {
        lo + self.below((hi - lo + 1) as usize) as Micros
    }
}

// ---- the population: who is there when ---------------------------------------------------

#[derive(Debug, Clone)]
struct ViewerPlan {
    join_at: Micros,
    leave_at: Option<Micros>,
    /// Closed its tab (links close at once) rather than crashed (links time out).
    graceful: bool,
}

/// Joins and departures, drawn before the run so the mesh and the baseline share them.
fn plan_population(args: &Args, n: usize, scenario: Scenario) -> Vec<ViewerPlan> {
    let mut rng = Rng::new(stream_seed(args.seed, PURPOSE_POPULATION, n as u64));
    let end = args.seconds * SEC;
    let ramp = match args.stagger_ms {
        Some(stagger) => (n as u64 - 1) * stagger * MS,
        None => (args.ramp_s * SEC as f64) as Micros,
    };
    let mut plans: Vec<ViewerPlan> = (0..n as u64)
        .map(|i| ViewerPlan {
            join_at: match args.stagger_ms {
                Some(stagger) => i * stagger * MS,
                None => (rng.unit() * ramp as f64) as Micros,
            },
            leave_at: None,
            graceful: true,
        })
        .collect();
    if scenario == Scenario::Churn && args.churn_pct_per_min > 0.0 {
        // Poisson departures after the ramp; each leaver is replaced at once by a newcomer.
        let per_second = n as f64 * args.churn_pct_per_min / 100.0 / 60.0;
        let mut present: Vec<usize> = (0..n).collect();
        let mut t = ramp as f64 / SEC as f64;
        loop {
            t += -(1.0 - rng.unit()).ln() / per_second;
            let at = (t * SEC as f64) as Micros;
            if at >= end {
                break;
            }
            let slot = rng.below(present.len());
            let leaver = present[slot];
            plans[leaver].leave_at = Some(at);
            plans[leaver].graceful = rng.unit() < 0.5;
            present[slot] = plans.len();
            plans.push(ViewerPlan {
                join_at: at,
                leave_at: None,
                graceful: true,
            });
        }
    }
    plans
}

// ---- events ----------------------------------------------------------------------------------

type PeerIdx = u32;
type LinkId = u64;

#[derive(Debug)]
enum Event {
    Join(PeerIdx),
    Leave(PeerIdx),
    Wake(PeerIdx, u64),
    ReloadDue(PeerIdx),
    HttpDone(PeerIdx, RequestId, u64),
    TrackerAnnounce(PeerIdx),
    OfferRelay {
        from: PeerIdx,
        to: PeerIdx,
    },
    OfferExpire(PeerIdx),
    LinkOpen {
        offerer: PeerIdx,
        answerer: PeerIdx,
    },
    LinkDown {
        at: PeerIdx,
        link: LinkId,
    },
    /// A data-channel message reaches `to`'s end of `link`.
    Msg {
        to: PeerIdx,
        link: LinkId,
        msg: Incoming,
    },
    UploaderWake(PeerIdx, u64),
    Sample,
}

struct Scheduled {
    at: Micros,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Earliest first out of the max-heap; ties in the order they were scheduled.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

// ---- viewers --------------------------------------------------------------------------------

/// What the track driver asked its engine for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Playlist,
    Hashes,
    Media {
        sequence: SegmentId,
        /// Real bytes.
        size: u64,
        /// Absolute simulated time.
        deadline: Micros,
        first: bool,
        from_peers: bool,
    },
}

/// A request the driver has open with its engine.
#[derive(Debug)]
struct Asked {
    id: RequestId,
    kind: Kind,
    /// The newest segment the origin had when it answered (playlist and hash file).
    origin_last: SegmentId,
}

/// A CDN transfer the engine started.
#[derive(Debug, Clone, Copy)]
struct HttpTransfer {
    id: RequestId,
    generation: u64,
    first_byte_at: Micros,
    /// Real bytes of the answer, and where it starts in the payload.
    bytes: u64,
    from: u64,
    bytes_per_us: f64,
}

impl HttpTransfer {
    /// Real bytes the origin has sent by `now`.
    fn sent_by(&self, now: Micros) -> u64 {
        (now.saturating_sub(self.first_byte_at) as f64 * self.bytes_per_us).min(self.bytes as f64)
            as u64
    }
}

#[derive(Debug, Clone, Copy)]
struct LinkEnd {
    id: LinkId,
    remote: PeerIdx,
    one_way: Micros,
}

/// An upload the engine ordered on a link, as the link's writer hands it to the data channel.
#[derive(Debug)]
struct Sending {
    link: LinkId,
    request_id: RequestId,
    segment: SegmentId,
    /// Payload bytes to send, and those handed to the channel so far.
    payload: u64,
    handed: u64,
}

/// A viewer's uplink: one queue for everything it sends (commands and data on every link, its
/// HTTP requests), drained at the uplink's rate, as a home router's queue and the data
/// channels' send buffers hold them. Writers hand data while less than [`UPLINK_QUEUE`] waits.
#[derive(Debug, Default)]
struct Uploader {
    sending: Vec<Sending>,
    /// When the uplink will have sent everything queued so far.
    free_at: Micros,
    /// The max-upload-rate token bucket, in real bytes, as of `last`.
    tokens: f64,
    last: Micros,
    generation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Manifest,
    Reload,
    Sleeping,
    Hashes,
    Segment,
}

/// The session's stream driver for the one live track, deciding with `mesh_core::playback`.
#[derive(Debug)]
struct Driver {
    stage: Stage,
    /// Newest segment of the playlist held.
    playlist_last: SegmentId,
    next_sequence: SegmentId,
    next_pts: Micros,
    deadlines: Deadlines,
    reloads: Reloads,
    hashes_last: Option<SegmentId>,
    hashes: HashRefetch,
    first_media_done: bool,
    /// Segments done before their turn (fetched ahead), by sequence.
    ready: Vec<Ready>,
    /// When the pending `ReloadDue` event is due; others are stale.
    reload_due_at: Option<Micros>,
}

/// A media segment done and waiting to be played in order.
#[derive(Debug, Clone, Copy)]
struct Ready {
    sequence: SegmentId,
    size: u64,
    /// Out of retries: skipped when its turn comes, as session.rs skips it.
    failed: bool,
}

#[derive(Debug, Default)]
struct Player {
    started_at: Option<Micros>,
    resumed_at: Micros,
    resumed_pts: Micros,
    buffered_end: Micros,
    stalls: u64,
    stalled: Micros,
}

impl Player {
    fn run_out_at(&self) -> Micros {
        self.resumed_at + (self.buffered_end - self.resumed_pts)
    }

    fn push(&mut self, now: Micros, duration: Micros) {
        if self.started_at.is_none() {
            self.started_at = Some(now);
            self.resumed_at = now;
            self.buffered_end = duration;
            return;
        }
        let run_out = self.run_out_at();
        if now > run_out {
            self.stalls += 1;
            self.stalled += now - run_out;
            self.resumed_at = now;
            self.resumed_pts = self.buffered_end;
        }
        self.buffered_end += duration;
    }

    /// Counts a stall still going on at `end`.
    fn finish(&mut self, end: Micros) {
        if self.started_at.is_some() && end > self.run_out_at() {
            self.stalls += 1;
            self.stalled += end - self.run_out_at();
        }
    }
}

struct Viewer {
    joined: Micros,
    /// The real delivery engine of this viewer's session.
    engine: Engine,
    wake_at: Option<Micros>,
    wake_generation: u64,
    last_poll: Option<Micros>,
    downlink_bytes_per_us: f64,
    uplink_bytes_per_us: f64,
    cdn_rtt: Micros,
    rng: Rng,
    next_request: RequestId,
    asked: Vec<Asked>,
    http: Vec<HttpTransfer>,
    driver: Driver,
    player: Player,
    /// Peer bytes of the segments delivered so far, to tell mixed ones.
    peer_bytes_seen: u64,
    // mesh
    in_swarm: bool,
    links: Vec<LinkEnd>,
    handshakes: usize,
    uploader: Uploader,
}

impl Viewer {
    /// A request of this kind is open (playlist or hash file).
    fn requested(&self, kind: Kind) -> bool {
        self.asked.iter().any(|x| x.kind == kind)
    }

    fn requested_media(&self, sequence: SegmentId) -> bool {
        self.asked
            .iter()
            .any(|x| matches!(x.kind, Kind::Media { sequence: s, .. } if s == sequence))
    }

    fn asked_mut(&mut self, id: RequestId) -> Option<&mut Asked> {
        self.asked.iter_mut().find(|a| a.id == id)
    }

    fn link(&self, id: LinkId) -> Option<LinkEnd> {
        self.links.iter().find(|l| l.id == id).copied()
    }

    fn session_time(&self, now: Micros) -> Duration {
        Duration::from_micros(now - self.joined)
    }
}

// ---- results ---------------------------------------------------------------------------------

/// Why a media segment went to the CDN, as seen from outside the scheduler.
#[derive(Debug, Clone, Default, Serialize)]
struct CdnReasons {
    /// The viewer's first segment: its deadline is "now" (session.rs).
    first: u64,
    /// No published hash yet (hash file refetched less than 1 s ago): peers may not serve.
    unverifiable: u64,
    /// Completing a stalled, late or broken peer transfer from the first missing byte.
    resume: u64,
    /// Within the urgent window of the deadline.
    urgent: u64,
    /// No peer link at all.
    alone: u64,
    /// Peers are linked and there is time to spare: the seeding draw (or a peer left).
    seed: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
struct RunResult {
    n: usize,
    scenario: Scenario,
    mesh: bool,
    viewers_joined: usize,
    viewer_hours: f64,
    segments_played: u64,
    segments_from_peers: u64,
    segments_mixed: u64,
    distinct_segments: u64,
    bytes_played: u64,
    origin_bytes: u64,
    origin_media_bytes: u64,
    origin_media_requests: u64,
    origin_other_requests: u64,
    bytes_uploaded: u64,
    offload: f64,
    media_offload: f64,
    cdn_requests_per_segment: f64,
    cdn_reasons: CdnReasons,
    stalls: u64,
    stall_seconds: f64,
    startup_ms_median: f64,
    startup_ms_p95: f64,
    mean_links: f64,
    peer_requests: u64,
    absent_answers: u64,
    timer_spins: u64,
    /// Most media requests one viewer had open at once.
    max_media_in_flight: u64,
    wall_seconds: f64,
}

#[derive(Default)]
struct Totals {
    result: RunResult,
    startups: Vec<Micros>,
    played: Vec<bool>,
    link_samples: (u64, u64),
    viewer_time: Micros,
}

// ---- the simulation ------------------------------------------------------------------------

struct RunConfig {
    n: usize,
    scenario: Scenario,
    mesh: bool,
    end: Micros,
    live_delay: Micros,
    bytes_per_segment: f64,
    upload_cap_bytes_per_us: Option<f64>,
    cache_bytes: u64,
    fetch_ahead: u64,
    max_peers: usize,
    rtt: (f64, f64),
    cdn_mbit: (f64, f64),
    seed: u64,
    playlist_window: i64,
}

struct Sim<'a> {
    cfg: RunConfig,
    args: &'a Args,
    plans: Vec<ViewerPlan>,
    now: Micros,
    queue: BinaryHeap<Scheduled>,
    next_seq: u64,
    viewers: Vec<Option<Viewer>>,
    /// The tracker's swarm, for its random picks.
    members: Vec<PeerIdx>,
    member_slot: Vec<usize>,
    rng: Rng,
    next_link: LinkId,
    next_generation: u64,
    swarm: InfoHash,
    url: url::Url,
    totals: Totals,
    progress: &'a AtomicU64,
}

fn to_micros(d: Duration) -> Micros {
    // Round up: a timer must not fire before the time asked for.
    d.as_nanos().div_ceil(1000) as Micros
}

fn mbit_to_bytes_per_us(mbit: f64) -> f64 {
    mbit * 1e6 / 8.0 / 1e6
}

/// `len` payload bytes, shared by every message and segment: the engine only counts them.
fn payload(len: u64) -> Bytes {
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    Bytes::from_static(&ZEROS[..(len as usize).min(ZEROS.len())])
}

/// A viewer's tracker peer id and its address.
fn identity(p: PeerIdx) -> (PeerId, Option<IpAddr>) {
    let id = PeerId::parse(&format!("-GM0001-{p:012}")).expect("20 ASCII characters");
    let [_, b, c, d] = (p + 1).to_be_bytes();
    (id, Some(IpAddr::V4(Ipv4Addr::new(10, b, c, d))))
}

impl<'a> Sim<'a> {
    fn new(
        args: &'a Args,
        n: usize,
        scenario: Scenario,
        mesh: bool,
        progress: &'a AtomicU64,
    ) -> Self {
        let live_delay = (args.live_delay_s * SEC as f64) as Micros;
        let behind = live_delay.max(HOLD_BACK);
        let cfg = RunConfig {
            n,
            scenario,
            mesh,
            end: args.seconds * SEC,
            live_delay,
            bytes_per_segment: args.bitrate_kbps as f64 * 1000.0 / 8.0 * (SEGMENT / SEC) as f64,
            upload_cap_bytes_per_us: (scenario == Scenario::Caps)
                .then(|| mbit_to_bytes_per_us(args.upload_cap_mbit)),
            cache_bytes: args.cache_mb * 1024 * 1024,
            fetch_ahead: args.fetch_ahead,
            max_peers: args.max_peers,
            rtt: args.rtt_ms,
            cdn_mbit: args.cdn_mbit,
            seed: args.seed,
            playlist_window: (behind / SEGMENT) as i64 + 4,
        };
        let plans = plan_population(args, n, scenario);
        let total_segments = (cfg.end / SEGMENT) as usize + HISTORY_SEGMENTS as usize + 2;
        let mut sim = Sim {
            rng: Rng::new(stream_seed(args.seed, PURPOSE_MESH, n as u64)),
            member_slot: vec![usize::MAX; plans.len()],
            viewers: (0..plans.len()).map(|_| None).collect(),
            plans,
            cfg,
            args,
            now: 0,
            queue: BinaryHeap::new(),
            next_seq: 0,
            members: Vec::new(),
            next_link: 1,
            next_generation: 1,
            swarm: InfoHash::parse(SWARM_ID).expect("valid info_hash"),
            url: url::Url::parse("http://cdn.invalid/live/segment.ts").expect("valid URL"),
            totals: Totals {
                played: vec![false; total_segments],
                ..Default::default()
            },
            progress,
        };
        for (i, plan) in sim.plans.clone().iter().enumerate() {
            sim.schedule(plan.join_at, Event::Join(i as PeerIdx));
            if let Some(at) = plan.leave_at {
                sim.schedule(at, Event::Leave(i as PeerIdx));
            }
        }
        sim.schedule(10 * SEC, Event::Sample);
        sim
    }

    fn schedule(&mut self, at: Micros, event: Event) {
        self.next_seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.next_seq,
            event,
        });
    }

    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// The newest segment the origin has published at `t`.
    fn origin_last(&self, t: Micros) -> SegmentId {
        (t / SEGMENT) as SegmentId + HISTORY_SEGMENTS - 1
    }

    /// A segment's real size: a whole number of payload bytes.
    fn segment_size(&self, sequence: SegmentId) -> u64 {
        let draw = mix64(stream_seed(
            self.cfg.seed,
            PURPOSE_SEGMENTS,
            sequence as u64,
        ));
        let unit = (draw >> 11) as f64 / (1u64 << 53) as f64;
        let size = (self.cfg.bytes_per_segment * (0.85 + 0.3 * unit)) as u64;
        (size / BYTE_SCALE).max(1) * BYTE_SCALE
    }

    fn playlist_bytes(&self) -> u64 {
        120 + 60 * self.cfg.playlist_window as u64
    }

    fn hashes_bytes(&self) -> u64 {
        2 + 85 * self.cfg.playlist_window as u64
    }

    /// The real bytes an answer to `kind` carries.
    fn answer_bytes(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Playlist => self.playlist_bytes(),
            Kind::Hashes => self.hashes_bytes(),
            Kind::Media { size, .. } => size,
        }
    }

    /// The first playlist a viewer loads, as the real parser reads it, for where the session
    /// starts: the live edge less the hold-back (three target durations) or `live-delay`.
    fn live_start(&self, last: SegmentId) -> SegmentId {
        let first = last - self.cfg.playlist_window + 1;
        let seconds = SEGMENT / SEC;
        let mut text = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{seconds}\n\
             #EXT-X-MEDIA-SEQUENCE:{first}\n"
        );
        for sequence in first..=last {
            text.push_str(&format!("#EXTINF:{seconds}.0,\nsegment{sequence}.ts\n"));
        }
        let timeline = gstmesh::hls::parse_media_playlist(&self.url, text.as_bytes())
            .expect("the simulated playlist parses");
        let delay = Duration::from_micros(self.cfg.live_delay);
        timeline
            .live_start_sequence_behind(delay)
            .map_or(first, |s| s as SegmentId)
    }

    fn viewer(&mut self, p: PeerIdx) -> Option<&mut Viewer> {
        self.viewers[p as usize].as_mut()
    }

    fn v(&mut self, p: PeerIdx) -> &mut Viewer {
        self.viewers[p as usize].as_mut().expect("live viewer")
    }

    fn run(mut self) -> RunResult {
        let started = Instant::now();
        let mut next_report = 0;
        while let Some(Scheduled { at, event, .. }) = self.queue.pop() {
            if at > self.cfg.end {
                break;
            }
            self.now = at;
            if at >= next_report {
                self.progress.store(at / SEC, Ordering::Relaxed);
                next_report = at + SEC;
            }
            self.dispatch(event);
        }
        self.now = self.cfg.end;
        for p in 0..self.viewers.len() {
            if self.viewers[p].is_some() {
                self.retire(p as PeerIdx);
            }
        }
        self.progress.store(self.cfg.end / SEC, Ordering::Relaxed);
        self.finish(started.elapsed())
    }

    fn finish(self, wall: Duration) -> RunResult {
        let Totals {
            mut result,
            mut startups,
            played,
            link_samples,
            viewer_time,
        } = self.totals;
        result.n = self.cfg.n;
        result.scenario = self.cfg.scenario;
        result.mesh = self.cfg.mesh;
        result.viewers_joined = self.plans.len();
        result.viewer_hours = viewer_time as f64 / 3600.0 / SEC as f64;
        result.distinct_segments = played.iter().filter(|p| **p).count() as u64;
        let played_bytes = result.bytes_played.max(1) as f64;
        result.offload = 1.0 - result.origin_bytes as f64 / played_bytes;
        result.media_offload = 1.0 - result.origin_media_bytes as f64 / played_bytes;
        result.cdn_requests_per_segment =
            result.origin_media_requests as f64 / result.distinct_segments.max(1) as f64;
        startups.sort_unstable();
        let quantile = |q: f64| {
            if startups.is_empty() {
                return 0.0;
            }
            let i = ((startups.len() - 1) as f64 * q).round() as usize;
            startups[i] as f64 / MS as f64
        };
        result.startup_ms_median = quantile(0.5);
        result.startup_ms_p95 = quantile(0.95);
        result.mean_links = link_samples.0 as f64 / link_samples.1.max(1) as f64;
        result.wall_seconds = wall.as_secs_f64();
        result
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Join(p) => self.join(p),
            Event::Leave(p) => {
                if self.viewers[p as usize].is_some() {
                    self.retire(p);
                }
            }
            Event::Wake(p, generation) => {
                let sim_now = self.now;
                let Some(v) = self.viewer(p) else { return };
                if v.wake_generation != generation {
                    return;
                }
                v.wake_at = None;
                v.last_poll = Some(sim_now);
                let now = v.session_time(sim_now);
                v.engine.handle_timeout(now);
                self.pump(p);
            }
            Event::ReloadDue(p) => {
                let now = self.now;
                let Some(v) = self.viewer(p) else { return };
                if v.driver.reload_due_at != Some(now) {
                    return;
                }
                v.driver.reload_due_at = None;
                if v.requested(Kind::Playlist) {
                    // Its answer drives.
                    return;
                }
                match v.driver.stage {
                    Stage::Sleeping => self.start_reload(p),
                    // A segment is loading: reload beside it (session.rs `fetch_ahead_and_wait`).
                    Stage::Segment => {
                        let session_now = v.session_time(now);
                        v.driver.reloads.started(session_now);
                        self.submit(p, Kind::Playlist, None, None);
                    }
                    _ => {}
                }
                self.pump(p);
            }
            Event::HttpDone(p, id, generation) => self.http_done(p, id, generation),
            Event::TrackerAnnounce(p) => self.tracker_announce(p),
            Event::OfferRelay { from, to } => self.offer_relay(from, to),
            Event::OfferExpire(p) => {
                if let Some(v) = self.viewer(p) {
                    v.handshakes -= 1;
                }
            }
            Event::LinkOpen { offerer, answerer } => self.link_open(offerer, answerer),
            Event::LinkDown { at, link } => {
                if self.viewers[at as usize].is_some() {
                    self.link_down(at, link);
                    self.pump(at);
                }
            }
            Event::Msg { to, link, msg } => {
                let linked = self
                    .viewers
                    .get(to as usize)
                    .and_then(|v| v.as_ref())
                    .is_some_and(|v| v.link(link).is_some());
                if linked {
                    self.feed(to, Input::Message { link, message: msg });
                    self.pump(to);
                }
            }
            Event::UploaderWake(p, generation) => {
                let Some(v) = self.viewer(p) else { return };
                if v.uploader.generation != generation {
                    return;
                }
                self.hand_off(p);
                self.pump(p);
            }
            Event::Sample => {
                let (mut links, mut viewers) = (0, 0);
                for v in self.viewers.iter().flatten() {
                    links += v.links.len() as u64;
                    viewers += 1;
                }
                self.totals.link_samples.0 += links;
                self.totals.link_samples.1 += viewers;
                self.schedule(self.now + 10 * SEC, Event::Sample);
            }
        }
    }

    // ---- viewers come and go ----

    fn join(&mut self, p: PeerIdx) {
        let mut rng = Rng::new(stream_seed(self.cfg.seed, PURPOSE_VIEWER, p as u64));
        let downlink = mbit_to_bytes_per_us(rng.range(self.args.downlink_mbit));
        let uplink = mbit_to_bytes_per_us(rng.range(self.args.uplink_mbit));
        let cdn_rtt = (rng.range(self.args.cdn_rtt_ms) * MS as f64) as Micros;
        let mesh = self.cfg.mesh;
        let cap = self.cfg.upload_cap_bytes_per_us.unwrap_or(0.0);
        let config = EngineConfig {
            scheduler: SchedulerConfig {
                seed: rng.next_u64(),
                ..Default::default()
            },
            discovery: mesh,
            upload: mesh,
            max_upload_rate: (cap * SEC as f64 / BYTE_SCALE as f64) as u64,
            cache_size: if mesh {
                (self.cfg.cache_bytes / BYTE_SCALE) as usize
            } else {
                0
            },
        };
        self.viewers[p as usize] = Some(Viewer {
            joined: self.now,
            engine: Engine::new(config, Arc::new(Bans::new())),
            wake_at: None,
            wake_generation: 0,
            last_poll: None,
            downlink_bytes_per_us: downlink,
            uplink_bytes_per_us: uplink,
            cdn_rtt,
            rng,
            next_request: 1,
            asked: Vec::new(),
            http: Vec::new(),
            driver: Driver {
                stage: Stage::Manifest,
                playlist_last: 0,
                next_sequence: 0,
                next_pts: 0,
                deadlines: Deadlines::default(),
                reloads: Reloads::new(Duration::ZERO),
                hashes_last: None,
                hashes: HashRefetch::default(),
                first_media_done: false,
                ready: Vec::new(),
                reload_due_at: None,
            },
            player: Player::default(),
            peer_bytes_seen: 0,
            in_swarm: false,
            links: Vec::new(),
            handshakes: 0,
            uploader: Uploader {
                tokens: cap * SEC as f64,
                last: self.now,
                ..Default::default()
            },
        });
        self.submit(p, Kind::Playlist, None, None);
        self.pump(p);
    }

    /// The viewer leaves (churn) or the run ends: its counts go into the totals.
    fn retire(&mut self, p: PeerIdx) {
        let now = self.now;
        let graceful = self.plans[p as usize].graceful || now >= self.cfg.end;
        let mut v = self.viewers[p as usize].take().expect("live viewer");
        v.player.finish(now);
        let t = &mut self.totals;
        t.result.stalls += v.player.stalls;
        t.result.stall_seconds += v.player.stalled as f64 / SEC as f64;
        if let Some(started) = v.player.started_at {
            t.startups.push(started - v.joined);
        }
        t.viewer_time += now - v.joined;
        // Bytes the origin had sent of transfers cut short.
        for http in &v.http {
            let sent = http.sent_by(now);
            t.result.origin_bytes += sent;
            let media = v
                .asked
                .iter()
                .any(|a| a.id == http.id && matches!(a.kind, Kind::Media { .. }));
            if media {
                t.result.origin_media_bytes += sent;
            }
        }
        if now >= self.cfg.end {
            return;
        }
        if v.in_swarm {
            self.leave_swarm(p);
        }
        for link in v.links {
            let delay = if graceful {
                link.one_way
            } else {
                ABRUPT_LEAVE_DETECTION
            };
            self.schedule(
                now + delay,
                Event::LinkDown {
                    at: link.remote,
                    link: link.id,
                },
            );
        }
    }

    // ---- the engine, as the plugin's hub drives it ----

    fn feed(&mut self, p: PeerIdx, input: Input) {
        let now = self.now;
        let v = self.v(p);
        let t = v.session_time(now);
        v.engine.handle_input(t, input);
    }

    /// Carries out the engine's outputs until it has none, then sets its timer.
    fn pump(&mut self, p: PeerIdx) {
        loop {
            let Some(v) = self.viewers[p as usize].as_mut() else {
                return;
            };
            match v.engine.poll_output() {
                Output::Timeout(wake) => return self.set_timer(p, wake),
                Output::StartHttp { id, from, .. } => self.start_http(p, id, from),
                Output::AbortHttp { id } => self.abort_http(p, id),
                Output::Send { link, command } => self.send_command(p, link, command),
                Output::Upload { link, upload } => self.upload_order(p, link, upload),
                Output::CloseLink { link } => self.close_link(p, link),
                Output::Join { .. } => {
                    if !self.v(p).in_swarm {
                        self.join_swarm(p);
                    }
                }
                // One swarm: nobody leaves it while watching.
                Output::Leave { .. } | Output::Warning(_) => {}
                Output::Delivered { id, .. } => self.deliver(p, id),
                Output::Failed { id, .. } => self.failed(p, id),
            }
        }
    }

    fn set_timer(&mut self, p: PeerIdx, wake: Option<Duration>) {
        let now = self.now;
        let v = self.v(p);
        let wake = match wake.map(|t| v.joined + to_micros(t)) {
            // Polled at this very instant and still due: the hub would spin; step past it.
            Some(t) if t <= now && v.last_poll == Some(now) => {
                self.totals.result.timer_spins += 1;
                Some(now + MS)
            }
            Some(t) => Some(t.max(now)),
            None => None,
        };
        let v = self.v(p);
        if wake != v.wake_at {
            v.wake_at = wake;
            v.wake_generation += 1;
            let generation = v.wake_generation;
            if let Some(t) = wake {
                self.schedule(t, Event::Wake(p, generation));
            }
        }
    }

    fn submit(&mut self, p: PeerIdx, kind: Kind, deadline: Option<Micros>, share: Option<Share>) {
        let v = self.v(p);
        let id = v.next_request;
        v.next_request += 1;
        let joined = v.joined;
        v.asked.push(Asked {
            id,
            kind,
            origin_last: 0,
        });
        let in_flight = v
            .asked
            .iter()
            .filter(|x| matches!(x.kind, Kind::Media { .. }))
            .count() as u64;
        let most = &mut self.totals.result.max_media_in_flight;
        *most = (*most).max(in_flight);
        let request = SegmentRequest {
            resource: Resource {
                url: self.url.clone(),
                range: None,
            },
            deadline: deadline.map(|d| Duration::from_micros(d - joined)),
            retry_not_found: deadline.is_some(),
            share,
        };
        self.feed(p, Input::Submit { id, request });
    }

    fn start_http(&mut self, p: PeerIdx, id: RequestId, from: u64) {
        let now = self.now;
        let (cdn_lo, cdn_hi) = self.cfg.cdn_mbit;
        let mesh = self.cfg.mesh;
        let generation = self.generation();
        let Some(kind) = self.v(p).asked_mut(id).map(|a| a.kind) else {
            return;
        };
        let total = self.answer_bytes(kind);
        let v = self.v(p);
        let per_request = mbit_to_bytes_per_us(v.rng.range((cdn_lo, cdn_hi)));
        let bytes_per_us = per_request.min(v.downlink_bytes_per_us);
        // The request leaves behind what the uplink already queued.
        let sent_at = now.max(v.uploader.free_at);
        let rtt = v.cdn_rtt;
        let has_links = !v.links.is_empty();
        let bytes = total - (from * BYTE_SCALE).min(total);
        v.http.retain(|h| h.id != id);
        v.http.push(HttpTransfer {
            id,
            generation,
            first_byte_at: sent_at + rtt,
            bytes,
            from,
            bytes_per_us,
        });
        let done = sent_at + rtt + (bytes as f64 / bytes_per_us) as Micros;
        self.schedule(done, Event::HttpDone(p, id, generation));
        let r = &mut self.totals.result;
        match kind {
            Kind::Media {
                deadline,
                first,
                from_peers,
                ..
            } => {
                r.origin_media_requests += 1;
                if mesh {
                    let reasons = &mut r.cdn_reasons;
                    let urgent = to_micros(SchedulerConfig::default().urgent_window);
                    if from > 0 {
                        reasons.resume += 1;
                    } else if first {
                        reasons.first += 1;
                    } else if !from_peers {
                        reasons.unverifiable += 1;
                    } else if deadline <= now + urgent {
                        reasons.urgent += 1;
                    } else if !has_links {
                        reasons.alone += 1;
                    } else {
                        reasons.seed += 1;
                    }
                }
            }
            _ => r.origin_other_requests += 1,
        }
    }

    fn abort_http(&mut self, p: PeerIdx, id: RequestId) {
        let now = self.now;
        let v = self.v(p);
        if let Some(pos) = v.http.iter().position(|h| h.id == id) {
            let http = v.http.remove(pos);
            self.totals.result.origin_bytes += http.sent_by(now);
        }
    }

    fn http_done(&mut self, p: PeerIdx, id: RequestId, generation: u64) {
        let now = self.now;
        let Some(v) = self.viewer(p) else { return };
        let Some(pos) = v
            .http
            .iter()
            .position(|h| h.id == id && h.generation == generation)
        else {
            return;
        };
        let http = v.http.remove(pos);
        let rtt = v.cdn_rtt;
        let elapsed = now.saturating_sub(http.first_byte_at - rtt);
        // The origin answered half a round trip after the request left.
        let answered =
            now.saturating_sub(rtt / 2 + (http.bytes as f64 / http.bytes_per_us) as Micros);
        let origin_last = self.origin_last(answered);
        let v = self.v(p);
        let media = match v.asked_mut(id) {
            Some(asked) => {
                asked.origin_last = origin_last;
                matches!(asked.kind, Kind::Media { .. })
            }
            None => false,
        };
        let r = &mut self.totals.result;
        r.origin_bytes += http.bytes;
        if media {
            r.origin_media_bytes += http.bytes;
        }
        let fetched = Fetched {
            bytes: payload(http.bytes.div_ceil(BYTE_SCALE)),
            final_url: self.url.clone(),
            elapsed: Duration::from_micros(elapsed),
        };
        self.feed(
            p,
            Input::HttpFinished {
                id,
                from: http.from,
                result: Ok(fetched),
            },
        );
        self.pump(p);
    }

    fn deliver(&mut self, p: PeerIdx, id: RequestId) {
        let now = self.now;
        let v = self.v(p);
        let Some(pos) = v.asked.iter().position(|x| x.id == id) else {
            return;
        };
        let asked = v.asked.remove(pos);
        let session_now = v.session_time(now);
        match asked.kind {
            Kind::Playlist => {
                let live_start =
                    (v.driver.stage == Stage::Manifest).then(|| self.live_start(asked.origin_last));
                let d = &mut self.v(p).driver;
                match live_start {
                    Some(start) => {
                        d.reloads = Reloads::new(session_now);
                        d.next_sequence = start;
                    }
                    None => d.reloads.succeeded(asked.origin_last != d.playlist_last),
                }
                d.playlist_last = asked.origin_last;
                // A reload made while a segment loads (session.rs `fetch_ahead_and_wait`) drives too,
                // unless the driver waits for the hash file.
                if d.stage != Stage::Hashes {
                    self.drive(p);
                }
            }
            Kind::Hashes => {
                v.driver.hashes_last = Some(asked.origin_last);
                if v.driver.stage != Stage::Hashes {
                    // Looked up for a segment fetched ahead.
                    return self.submit_ahead(p);
                }
                let sequence = v.driver.next_sequence;
                self.submit_media(p, asked.origin_last >= sequence);
            }
            Kind::Media { sequence, size, .. } => {
                // The engine counted this segment's peer bytes as it delivered it.
                let peer_bytes = v.engine.stats().bytes_p2p;
                let from_peers = (peer_bytes - v.peer_bytes_seen) * BYTE_SCALE;
                v.peer_bytes_seen = peer_bytes;
                if from_peers >= size {
                    self.totals.result.segments_from_peers += 1;
                } else if from_peers > 0 {
                    self.totals.result.segments_mixed += 1;
                }
                self.v(p).driver.ready.push(Ready {
                    sequence,
                    size,
                    failed: false,
                });
                self.play_ready(p);
            }
        }
    }

    /// A request ran out of retries: live segments are skipped (session.rs); the sim's CDN
    /// never fails, so this only matters if peers and retries both give out.
    fn failed(&mut self, p: PeerIdx, id: RequestId) {
        let v = self.v(p);
        let Some(pos) = v.asked.iter().position(|x| x.id == id) else {
            return;
        };
        let asked = v.asked.remove(pos);
        let Kind::Media { sequence, .. } = asked.kind else {
            return self.drive(p);
        };
        self.v(p).driver.ready.push(Ready {
            sequence,
            size: 0,
            failed: true,
        });
        self.play_ready(p);
    }

    /// Plays the segments done whose turn has come, in order; the driver moves on if it was
    /// waiting for one of them.
    fn play_ready(&mut self, p: PeerIdx) {
        let now = self.now;
        let mut played_any = false;
        loop {
            let v = self.v(p);
            let d = &mut v.driver;
            let Some(pos) = d.ready.iter().position(|r| r.sequence == d.next_sequence) else {
                break;
            };
            let ready = d.ready.swap_remove(pos);
            d.next_sequence += 1;
            d.next_pts += SEGMENT;
            played_any = true;
            if ready.failed {
                continue;
            }
            d.first_media_done = true;
            v.player.push(now, SEGMENT);
            let r = &mut self.totals.result;
            r.segments_played += 1;
            r.bytes_played += ready.size;
            if let Some(slot) = self.totals.played.get_mut(ready.sequence as usize) {
                *slot = true;
            }
        }
        if played_any && self.v(p).driver.stage == Stage::Segment {
            self.drive(p);
        }
    }

    /// Cancels the requests and drops the done segments the driver has passed (a jump to
    /// the playlist's start), as session.rs drops the fetches ahead it passes.
    fn drop_passed(&mut self, p: PeerIdx) {
        let v = self.v(p);
        let next = v.driver.next_sequence;
        v.driver.ready.retain(|r| r.sequence >= next);
        let passed: Vec<RequestId> = v
            .asked
            .iter()
            .filter(|x| matches!(x.kind, Kind::Media { sequence, .. } if sequence < next))
            .map(|x| x.id)
            .collect();
        for id in passed {
            self.feed(p, Input::Cancel { id });
            self.v(p).asked.retain(|x| x.id != id);
        }
    }

    /// session.rs `fetch_ahead`: the live segments after the current one that the playlist
    /// lists, each with its own deadline, so they wait for peers while it loads (the plan is
    /// `mesh_core::playback::fetch_ahead`). Not for the first segment, which fixes the
    /// deadlines' origin, and not without the mesh.
    fn submit_ahead(&mut self, p: PeerIdx) {
        if !self.cfg.mesh {
            return;
        }
        let now = self.now;
        let count = self.cfg.fetch_ahead;
        let v = self.v(p);
        let session_now = v.session_time(now);
        let d = &v.driver;
        let (Some(origin), true) = (d.deadlines.live_origin(), d.first_media_done) else {
            return;
        };
        let last = d.playlist_last;
        let duration_of = |sequence: u64| {
            (sequence as SegmentId <= last).then_some(Duration::from_micros(SEGMENT))
        };
        let pts = Duration::from_micros(d.next_pts);
        let room = pts + Duration::from_micros(MAX_BUFFERING);
        let plan = playback::fetch_ahead(
            d.next_sequence as u64,
            count,
            pts,
            origin,
            room,
            duration_of,
        );
        for ahead in plan.into_iter().skip(1) {
            let sequence = ahead.sequence as SegmentId;
            let v = self.v(p);
            let d = &v.driver;
            if v.requested_media(sequence) || d.ready.iter().any(|r| r.sequence == sequence) {
                continue;
            }
            // The hash lookup of session.rs `share`, as for the current segment in `drive`.
            let from_peers = d.hashes_last.is_some_and(|last| last >= sequence);
            if !from_peers {
                if v.requested(Kind::Hashes) {
                    break;
                }
                let held = d.hashes_last.is_some();
                let d = &mut self.v(p).driver;
                if d.hashes.due(session_now, held, true) {
                    d.hashes.started(session_now);
                    self.submit(p, Kind::Hashes, None, None);
                    break;
                }
            }
            let deadline = self.v(p).joined + to_micros(ahead.deadline);
            self.submit_segment(p, sequence, deadline, false, from_peers);
        }
    }

    // ---- the session's live driver ----

    /// When the playlist is next due for a reload, in simulated time.
    fn reload_due(&mut self, p: PeerIdx) -> Micros {
        let v = self.v(p);
        let due = v.driver.reloads.due(
            Some(Duration::from_micros(SEGMENT)),
            Duration::from_micros(SEGMENT),
        );
        v.joined + to_micros(due)
    }

    /// The driver moves on after its last request: the next segment, or a playlist reload.
    fn drive(&mut self, p: PeerIdx) {
        let now = self.now;
        let window = self.cfg.playlist_window;
        let mesh = self.cfg.mesh;
        let v = self.v(p);
        let d = &mut v.driver;
        let first = d.playlist_last - window + 1;
        if d.next_sequence < first {
            // Fell behind the live window: jump to its start.
            d.next_sequence = first;
            self.drop_passed(p);
        }
        let due = self.reload_due(p);
        let v = self.v(p);
        let d = &mut v.driver;
        if d.next_sequence > d.playlist_last {
            let reloading = v.requested(Kind::Playlist);
            if due <= now && !reloading {
                return self.start_reload(p);
            }
            v.driver.stage = Stage::Sleeping;
            if !reloading {
                self.schedule_reload(p, due);
            }
            return;
        }
        let next = d.next_sequence;
        if v.requested_media(next) {
            // Requested ahead: wait for it, and look further ahead.
            v.driver.stage = Stage::Segment;
            self.keep_reloading(p);
            return self.submit_ahead(p);
        }
        // The deadline's origin is fixed before the hash lookup (session.rs fetch_segment).
        let session_now = v.session_time(now);
        let d = &mut v.driver;
        d.deadlines
            .live(session_now, Duration::from_micros(d.next_pts));
        if !mesh {
            return self.submit_media(p, false);
        }
        // The hash lookup (session.rs segment_hash): known, refetched, or unverifiable.
        if d.hashes_last.is_some_and(|last| last >= d.next_sequence) {
            return self.submit_media(p, true);
        }
        if d.hashes.due(session_now, d.hashes_last.is_some(), true) {
            d.hashes.started(session_now);
            d.stage = Stage::Hashes;
            return self.submit(p, Kind::Hashes, None, None);
        }
        self.submit_media(p, false)
    }

    fn schedule_reload(&mut self, p: PeerIdx, due: Micros) {
        let d = &mut self.v(p).driver;
        if d.reload_due_at != Some(due) {
            d.reload_due_at = Some(due);
            self.schedule(due, Event::ReloadDue(p));
        }
    }

    /// While a segment loads, the playlist is still reloaded on schedule, so segments it
    /// newly lists are fetched ahead (session.rs `fetch_ahead_and_wait`). Not with `--fetch-ahead 0`,
    /// which models the session that followed the playlist only between segments.
    fn keep_reloading(&mut self, p: PeerIdx) {
        if !self.cfg.mesh || self.cfg.fetch_ahead == 0 {
            return;
        }
        let now = self.now;
        let d = &self.v(p).driver;
        if !d.first_media_done || d.reload_due_at.is_some() {
            return;
        }
        let due = self.reload_due(p);
        self.schedule_reload(p, due.max(now));
    }

    fn start_reload(&mut self, p: PeerIdx) {
        let now = self.now;
        let v = self.v(p);
        let session_now = v.session_time(now);
        v.driver.reloads.started(session_now);
        v.driver.stage = Stage::Reload;
        self.submit(p, Kind::Playlist, None, None);
    }

    fn submit_media(&mut self, p: PeerIdx, from_peers: bool) {
        let now = self.now;
        let v = self.v(p);
        let session_now = v.session_time(now);
        let d = &mut v.driver;
        let sequence = d.next_sequence;
        // Real-time playback from the live starting point (session.rs fetch_segment).
        let deadline = d
            .deadlines
            .live(session_now, Duration::from_micros(d.next_pts));
        let deadline = v.joined + to_micros(deadline);
        let first = !v.driver.first_media_done;
        v.driver.stage = Stage::Segment;
        self.submit_segment(p, sequence, deadline, first, from_peers);
        self.keep_reloading(p);
        self.submit_ahead(p);
    }

    /// Requests media segment `sequence`, shared through the mesh when there is one.
    fn submit_segment(
        &mut self,
        p: PeerIdx,
        sequence: SegmentId,
        deadline: Micros,
        first: bool,
        from_peers: bool,
    ) {
        let share = self.cfg.mesh.then(|| Share {
            key: ShareKey {
                swarm: self.swarm.clone(),
                segment: sequence,
            },
            from_peers,
            id_ambiguous: false,
            hash: None,
        });
        let kind = Kind::Media {
            sequence,
            size: self.segment_size(sequence),
            deadline,
            first,
            from_peers,
        };
        self.submit(p, kind, Some(deadline), share);
    }

    // ---- tracker and links ----

    fn join_swarm(&mut self, p: PeerIdx) {
        self.v(p).in_swarm = true;
        self.member_slot[p as usize] = self.members.len();
        self.members.push(p);
        // WebSocket to the tracker, then offers (ICE gathering) before the first announce.
        let delay = self.rng.micros(150 * MS, 600 * MS);
        self.schedule(self.now + delay, Event::TrackerAnnounce(p));
    }

    fn leave_swarm(&mut self, p: PeerIdx) {
        let slot = self.member_slot[p as usize];
        self.members.swap_remove(slot);
        if let Some(&moved) = self.members.get(slot) {
            self.member_slot[moved as usize] = slot;
        }
        self.member_slot[p as usize] = usize::MAX;
    }

    fn free_budget(&self, p: PeerIdx) -> usize {
        let v = self.viewers[p as usize].as_ref().expect("live viewer");
        self.cfg
            .max_peers
            .saturating_sub(v.links.len() + v.handshakes)
    }

    fn tracker_announce(&mut self, p: PeerIdx) {
        if self.viewers[p as usize].is_none() {
            return;
        }
        // The announce response carries the swarm's counts (complete + incomplete).
        let swarm = self.swarm.clone();
        let peers = self.members.len() as u64;
        self.feed(p, Input::SwarmSize { swarm, peers });
        self.pump(p);
        let others = self.members.len().saturating_sub(1);
        let offers = OFFERS_PER_ANNOUNCE.min(self.free_budget(p)).min(others);
        self.v(p).handshakes += offers;
        // Each offer goes to a distinct random other member of the swarm.
        let mut picked: Vec<PeerIdx> = Vec::with_capacity(offers);
        while picked.len() < offers {
            let q = self.members[self.rng.below(self.members.len())];
            if q != p && !picked.contains(&q) {
                picked.push(q);
            }
        }
        for q in picked {
            let relay = self.rng.micros(50 * MS, 200 * MS);
            self.schedule(self.now + relay, Event::OfferRelay { from: p, to: q });
        }
        self.schedule(self.now + ANNOUNCE_INTERVAL, Event::TrackerAnnounce(p));
    }

    fn offer_relay(&mut self, from: PeerIdx, to: PeerIdx) {
        if self.viewers[from as usize].is_none() {
            return;
        }
        let answers = self.viewers[to as usize].is_some() && self.free_budget(to) > 0;
        if !answers {
            // Unanswered: the offer holds its slot until it expires.
            self.schedule(self.now + OFFER_EXPIRY, Event::OfferExpire(from));
            return;
        }
        self.v(to).handshakes += 1;
        // Answer (ICE gathering), relay back, then ICE, DTLS and SCTP on the link.
        let connect = self.rng.micros(300 * MS, 1500 * MS);
        self.schedule(
            self.now + connect,
            Event::LinkOpen {
                offerer: from,
                answerer: to,
            },
        );
    }

    fn link_open(&mut self, offerer: PeerIdx, answerer: PeerIdx) {
        for p in [offerer, answerer] {
            if let Some(v) = self.viewer(p) {
                v.handshakes -= 1;
            }
        }
        if self.viewers[offerer as usize].is_none() || self.viewers[answerer as usize].is_none() {
            return;
        }
        let id = self.next_link;
        self.next_link += 1;
        let one_way = (self.rng.range(self.cfg.rtt) * MS as f64 / 2.0) as Micros;
        for (p, remote) in [(offerer, answerer), (answerer, offerer)] {
            self.v(p).links.push(LinkEnd {
                id,
                remote,
                one_way,
            });
        }
        for (p, remote) in [(offerer, answerer), (answerer, offerer)] {
            // Either end may be gone already: the engine refused the link and closed it.
            if self.viewers[p as usize].is_none() || self.v(p).link(id).is_none() {
                continue;
            }
            let (remote_id, address) = identity(remote);
            let swarm = self.swarm.clone();
            self.feed(
                p,
                Input::LinkUp {
                    link: id,
                    swarm,
                    remote: remote_id,
                    address,
                },
            );
            self.pump(p);
        }
    }

    /// The link's far end closed it, or its peer is gone.
    fn link_down(&mut self, p: PeerIdx, link: LinkId) {
        if !self.forget_link(p, link) {
            return;
        }
        self.feed(p, Input::LinkDown { link });
    }

    /// The engine closes the link: its far end learns it a one-way trip later.
    fn close_link(&mut self, p: PeerIdx, link: LinkId) {
        let Some(end) = self.v(p).link(link) else {
            return;
        };
        self.forget_link(p, link);
        self.schedule(
            self.now + end.one_way,
            Event::LinkDown {
                at: end.remote,
                link,
            },
        );
    }

    /// Drops this end of `link` and what its writer had still to hand; whether it was open.
    /// What is queued on the uplink goes out anyway and is dropped at the far end.
    fn forget_link(&mut self, p: PeerIdx, link: LinkId) -> bool {
        let v = self.v(p);
        let Some(pos) = v.links.iter().position(|l| l.id == link) else {
            return false;
        };
        v.links.remove(pos);
        v.uploader.sending.retain(|u| u.link != link);
        true
    }

    /// Queues `msg` of `bytes` wire bytes on `p`'s uplink towards `end`: it arrives once the
    /// uplink has sent it, at the slower of the uplink and the far end's downlink, a one-way
    /// trip later.
    fn transmit(&mut self, p: PeerIdx, end: LinkEnd, msg: Incoming, bytes: u64) {
        let now = self.now;
        let down = self.viewers[end.remote as usize]
            .as_ref()
            .map_or(f64::INFINITY, |r| r.downlink_bytes_per_us);
        let v = self.v(p);
        let rate = v.uplink_bytes_per_us.min(down);
        let sent = now.max(v.uploader.free_at) + (bytes as f64 / rate).ceil() as Micros;
        v.uploader.free_at = sent;
        self.schedule(
            sent + end.one_way,
            Event::Msg {
                to: end.remote,
                link: end.id,
                msg,
            },
        );
    }

    fn send_command(&mut self, p: PeerIdx, link: LinkId, command: Command) {
        let Some(end) = self.v(p).link(link) else {
            return;
        };
        match command {
            Command::SegmentRequest { .. } => self.totals.result.peer_requests += 1,
            Command::SegmentAbsent { .. } => self.totals.result.absent_answers += 1,
            _ => {}
        }
        let bytes = encode(&command)
            .iter()
            .map(|part| part.len() as u64)
            .sum::<u64>();
        self.transmit(p, end, Incoming::Command(command), bytes + COMMAND_OVERHEAD);
    }

    // ---- uploads: the link writers, handing what the engine's upload turns order ----

    /// The engine orders `upload` on `link` (replacing what its writer was handing), or stops
    /// it. What was handed already is on its way.
    fn upload_order(&mut self, p: PeerIdx, link: LinkId, upload: Option<Upload>) {
        let v = self.v(p);
        v.uploader.sending.retain(|u| u.link != link);
        if let (Some(upload), Some(end)) = (upload, v.link(link)) {
            let size = upload.data.len() as u64;
            v.uploader.sending.push(Sending {
                link,
                request_id: upload.request_id,
                segment: upload.segment,
                payload: size,
                handed: 0,
            });
            let header = Command::SegmentData {
                id: upload.segment,
                request_id: upload.request_id,
                size,
            };
            let bytes = encode(&header)
                .iter()
                .map(|part| part.len() as u64)
                .sum::<u64>();
            self.transmit(p, end, Incoming::Command(header), bytes + COMMAND_OVERHEAD);
        }
        self.hand_off(p);
    }

    /// The writers hand data while the uplink has room and the upload cap allows, reporting
    /// each hand-off to the engine; an upload all handed ends with `sending completed`. Sets
    /// the timer for when there will be room again.
    fn hand_off(&mut self, p: PeerIdx) {
        let now = self.now;
        let cap = self.cfg.upload_cap_bytes_per_us;
        loop {
            let v = self.v(p);
            let Some(u) = v.uploader.sending.first() else {
                return;
            };
            let (link, request_id, segment) = (u.link, u.request_id, u.segment);
            let n = (HAND_OFF / BYTE_SCALE).min(u.payload - u.handed);
            let wire = (n * BYTE_SCALE) as f64 * WIRE_OVERHEAD;
            let queued = v.uploader.free_at.saturating_sub(now) as f64 * v.uplink_bytes_per_us;
            let mut wait: Option<Micros> = (queued + wire > UPLINK_QUEUE).then(|| {
                let excess = queued + wire - UPLINK_QUEUE;
                now + (excess / v.uplink_bytes_per_us).ceil() as Micros
            });
            if let Some(cap) = cap {
                let up = &mut v.uploader;
                up.tokens =
                    (up.tokens + now.saturating_sub(up.last) as f64 * cap).min(cap * SEC as f64);
                up.last = now;
                if up.tokens < 0.0 {
                    let refill = now + (-up.tokens / cap).ceil() as Micros;
                    wait = Some(wait.map_or(refill, |w| w.max(refill)));
                }
            }
            if let Some(at) = wait {
                v.uploader.generation += 1;
                let generation = v.uploader.generation;
                self.schedule(at.max(now + 1), Event::UploaderWake(p, generation));
                return;
            }
            if cap.is_some() {
                v.uploader.tokens -= (n * BYTE_SCALE) as f64;
            }
            let Some(end) = v.link(link) else {
                v.uploader.sending.remove(0);
                continue;
            };
            let u = &mut v.uploader.sending[0];
            u.handed += n;
            let done = u.handed == u.payload;
            self.transmit(p, end, Incoming::Data(payload(n)), wire as u64);
            self.totals.result.bytes_uploaded += n * BYTE_SCALE;
            self.feed(p, Input::UploadProgress { link, request_id });
            self.feed(p, Input::Uploaded { bytes: n });
            if done {
                self.v(p).uploader.sending.remove(0);
                let completed = Command::SendingCompleted {
                    id: segment,
                    request_id,
                };
                let bytes = encode(&completed)
                    .iter()
                    .map(|part| part.len() as u64)
                    .sum::<u64>();
                self.transmit(
                    p,
                    end,
                    Incoming::Command(completed),
                    bytes + COMMAND_OVERHEAD,
                );
                self.feed(p, Input::UploadDone { link, request_id });
            }
        }
    }
}

// ---- running the sweep -----------------------------------------------------------------------

struct Job {
    n: usize,
    scenario: Scenario,
    mesh: bool,
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&raw) {
        Ok(Parsed::Run(args)) => *args,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return;
        }
        Err(message) => {
            eprintln!("swarm-sim: {message}");
            eprintln!("run with --help for the options");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let sizes = swarm_sizes(args.peers);
    let mut jobs = Vec::new();
    for &n in &sizes {
        for &scenario in &args.scenarios {
            for mesh in [true, false] {
                jobs.push(Job { n, scenario, mesh });
            }
        }
    }
    // Biggest first, so the long runs overlap.
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((jobs[i].n, jobs[i].mesh)));
    println!(
        "swarm-sim: N = {:?}, scenarios {}, {} s simulated each, live-delay {} s, {} kbit/s, \
         seed {}, {} thread(s)",
        sizes,
        args.scenarios
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", "),
        args.seconds,
        args.live_delay_s,
        args.bitrate_kbps,
        args.seed,
        args.threads
    );
    let progress: Vec<AtomicU64> = jobs.iter().map(|_| AtomicU64::new(0)).collect();
    let state: Vec<AtomicUsize> = jobs.iter().map(|_| AtomicUsize::new(0)).collect();
    let results: Mutex<Vec<Option<RunResult>>> = Mutex::new(jobs.iter().map(|_| None).collect());
    let next_job = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    const RUNNING: usize = 1;
    const DONE: usize = 2;
    std::thread::scope(|scope| {
        for _ in 0..args.threads.min(jobs.len()) {
            scope.spawn(|| {
                loop {
                    let k = next_job.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = order.get(k) else { break };
                    state[i].store(RUNNING, Ordering::Relaxed);
                    let job = &jobs[i];
                    let result = Sim::new(&args, job.n, job.scenario, job.mesh, &progress[i]).run();
                    results.lock().expect("results lock")[i] = Some(result);
                    state[i].store(DONE, Ordering::Relaxed);
                    finished.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let mut last_line = Instant::now();
        while finished.load(Ordering::Relaxed) < jobs.len() {
            std::thread::sleep(Duration::from_millis(100));
            if last_line.elapsed() < Duration::from_secs(5) {
                continue;
            }
            last_line = Instant::now();
            let running: Vec<String> = (0..jobs.len())
                .filter(|&i| state[i].load(Ordering::Relaxed) == RUNNING)
                .map(|i| {
                    format!(
                        "{} N={} {} t={}/{} s",
                        jobs[i].scenario.name(),
                        jobs[i].n,
                        if jobs[i].mesh { "mesh" } else { "CDN-only" },
                        progress[i].load(Ordering::Relaxed),
                        args.seconds
                    )
                })
                .collect();
            println!(
                "[{:>5.0} s] {}/{} runs done; {}",
                started.elapsed().as_secs_f64(),
                finished.load(Ordering::Relaxed),
                jobs.len(),
                running.join(", ")
            );
        }
    });
    let results: Vec<RunResult> = results
        .into_inner()
        .expect("results lock")
        .into_iter()
        .map(|r| r.expect("every run finished"))
        .collect();
    let wall = started.elapsed();
    let rows = pair_up(&results);
    print!("{}", table(&rows));
    println!("wall time {:.1} s", wall.as_secs_f64());
    if let Some(dir) = &args.out
        && let Err(e) = write_outputs(dir, &args, &rows, &results, wall)
    {
        eprintln!("swarm-sim: {e}");
        std::process::exit(1);
    }
}

/// One line of the summary: the mesh run and its CDN-only baseline.
struct Row<'a> {
    mesh: &'a RunResult,
    cdn: &'a RunResult,
}

fn pair_up(results: &[RunResult]) -> Vec<Row<'_>> {
    let mut rows: Vec<Row> = results
        .iter()
        .filter(|r| r.mesh)
        .filter_map(|mesh| {
            let cdn = results
                .iter()
                .find(|r| !r.mesh && r.n == mesh.n && r.scenario == mesh.scenario)?;
            Some(Row { mesh, cdn })
        })
        .collect();
    rows.sort_by_key(|r| (r.mesh.n, r.mesh.scenario as u8));
    rows
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "\n     N  scenario  offload  CDN req/seg        stalls       stall s    start-up p50 ms  \
         links  CDN fetches by reason (first/unverif/resume/urgent/alone/seed)\n",
    );
    out.push_str(
        "                           mesh     CDN    mesh    CDN   mesh    CDN      mesh     CDN\n",
    );
    for Row { mesh, cdn } in rows {
        let r = &mesh.cdn_reasons;
        out.push_str(&format!(
            "{:>6}  {:<8} {:>7.4} {:>6.2} {:>7.1} {:>7} {:>6} {:>6.1} {:>6.1} {:>9.0} {:>7.0} {:>6.1}  \
             {}/{}/{}/{}/{}/{}\n",
            mesh.n,
            mesh.scenario.name(),
            mesh.offload,
            mesh.cdn_requests_per_segment,
            cdn.cdn_requests_per_segment,
            mesh.stalls,
            cdn.stalls,
            mesh.stall_seconds,
            cdn.stall_seconds,
            mesh.startup_ms_median,
            cdn.startup_ms_median,
            mesh.mean_links,
            r.first,
            r.unverifiable,
            r.resume,
            r.urgent,
            r.alone,
            r.seed,
        ));
    }
    out
}

#[derive(Serialize)]
struct Report<'a> {
    args: &'a Args,
    wall_seconds: f64,
    runs: &'a [RunResult],
}

fn write_outputs(
    dir: &std::path::Path,
    args: &Args,
    rows: &[Row],
    results: &[RunResult],
    wall: Duration,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let json = dir.join("sim.json");
    let report = Report {
        args,
        wall_seconds: wall.as_secs_f64(),
        runs: results,
    };
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&json, text).map_err(|e| format!("{}: {e}", json.display()))?;
    let svg = dir.join("sim.svg");
    chart(&svg, args, rows).map_err(|e| format!("{}: {e}", svg.display()))?;
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}

/// sim.svg: offload against N (log scale), one line per scenario.
fn chart(path: &std::path::Path, args: &Args, rows: &[Row]) -> Result<(), String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let n_max = rows.iter().map(|r| r.mesh.n).max().unwrap_or(10) as f64;
    let low = rows
        .iter()
        .map(|r| r.mesh.offload)
        .fold(0.9_f64, f64::min)
        .max(0.0);
    let y_min = ((low - 0.02) * 50.0).floor() / 50.0;
    let caption = format!(
        "offload against swarm size ({} s, {} kbit/s, live-delay {} s, max-peers {})",
        args.seconds, args.bitrate_kbps, args.live_delay_s, args.max_peers
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 17))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((5.0..n_max * 2.0).log_scale(), y_min.max(-1.0)..1.0)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("viewers in the swarm (N)")
        .y_desc("offload = 1 - origin bytes / bytes played")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(|e| err(&e))?;
    let colors = [BLUE, RED, GREEN];
    for (k, scenario) in args.scenarios.iter().enumerate() {
        let color = colors[k % colors.len()];
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.mesh.scenario == *scenario)
            .map(|r| (r.mesh.n as f64, r.mesh.offload))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(scenario.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(|e| err(&e))?;
    }
    for (target, n) in [(0.97, 100.0), (0.99, 10_000.0)] {
        if n <= n_max {
            chart
                .draw_series(std::iter::once(Circle::new((n, target), 6, BLACK)))
                .map_err(|e| err(&e))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: usize, scenario: Scenario, mesh: bool) -> RunResult {
        run_ahead(n, scenario, mesh, LIVE_FETCH_AHEAD, 120)
    }

    fn run_ahead(
        n: usize,
        scenario: Scenario,
        mesh: bool,
        fetch_ahead: u64,
        seconds: u64,
    ) -> RunResult {
        let args = Args {
            seconds,
            threads: 1,
            fetch_ahead,
            ..Default::default()
        };
        let progress = AtomicU64::new(0);
        let mut result = Sim::new(&args, n, scenario, mesh, &progress).run();
        result.wall_seconds = 0.0;
        result
    }

    fn json(result: &RunResult) -> String {
        serde_json::to_string(result).expect("serialisable")
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let first = run(30, Scenario::Churn, true);
        assert_eq!(json(&first), json(&run(30, Scenario::Churn, true)));
        assert!(first.segments_played > 0);
    }

    #[test]
    fn cdn_only_viewers_take_every_byte_from_the_origin() {
        let baseline = run(20, Scenario::Plain, false);
        // Plus what was in flight when the run ended: under one segment per viewer.
        let largest_segment = (Args::default().bitrate_kbps * 1000 / 8 * 2) as f64 * 1.15;
        let in_flight = baseline.origin_media_bytes - baseline.bytes_played;
        assert!(in_flight as f64 <= 20.0 * largest_segment, "{in_flight}");
        assert_eq!(baseline.segments_from_peers, 0);
        assert_eq!(baseline.bytes_uploaded, 0);
        assert_eq!(
            baseline.offload,
            1.0 - baseline.origin_bytes as f64 / baseline.bytes_played as f64
        );
    }

    #[test]
    fn a_small_swarm_plays_the_same_segments_mostly_from_peers() {
        let mesh = run(20, Scenario::Plain, true);
        let baseline = run(20, Scenario::Plain, false);
        assert_eq!(mesh.viewers_joined, 20);
        // The same viewers play the same stretch, give or take the segment each was on
        // when the run ended.
        assert!(mesh.segments_played.abs_diff(baseline.segments_played) <= 20);
        assert_eq!(mesh.stalls, 0);
        // Each new segment reaches the swarm from the CDN a few times at most.
        assert!(
            mesh.segments_from_peers * 2 > mesh.segments_played,
            "{}",
            json(&mesh)
        );
        assert!(
            mesh.origin_media_bytes * 3 < baseline.origin_media_bytes,
            "{}",
            json(&mesh)
        );
    }

    #[test]
    fn at_the_live_edge_a_viewer_fetches_the_newly_listed_segment_while_one_loads() {
        let most_in_flight =
            |mesh, fetch_ahead| run_ahead(10, Scenario::Plain, mesh, fetch_ahead, 120);
        assert_eq!(most_in_flight(true, 0).max_media_in_flight, 1);
        // Each reload lists one new segment, so one is requested beside the one loading.
        assert_eq!(most_in_flight(true, 3).max_media_in_flight, 2);
        // The CDN alone gains nothing from it, so the session does not do it.
        assert_eq!(most_in_flight(false, 3).max_media_in_flight, 1);
    }

    #[test]
    fn fetching_ahead_gives_the_wave_time_and_the_cdn_fewer_urgent_fetches() {
        let one_at_a_time = run_ahead(100, Scenario::Plain, true, 0, 300);
        let ahead = run_ahead(100, Scenario::Plain, true, 3, 300);
        assert_eq!(ahead.stalls, 0);
        assert_eq!(ahead.distinct_segments, one_at_a_time.distinct_segments);
        assert!(
            ahead
                .segments_played
                .abs_diff(one_at_a_time.segments_played)
                <= 100
        );
        assert!(
            ahead.cdn_reasons.urgent * 4 < one_at_a_time.cdn_reasons.urgent,
            "{} {}",
            json(&ahead),
            json(&one_at_a_time)
        );
        assert!(ahead.segments_from_peers > one_at_a_time.segments_from_peers);
        assert!(ahead.offload > one_at_a_time.offload);
    }
}

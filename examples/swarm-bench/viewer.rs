//! The viewer side of the bench: one GStreamer pipeline in its own process, reporting what
//! it played once a second as a JSON line on stdout.
//!
//! * mesh: `meshsrc ! queue ! fakesink sync=true`;
//! * baseline: `souphttpsrc ! hlsdemux ! queue ! fakesink sync=true` (CDN only).
//!
//! Both sources timestamp the first buffer of each segment, so the sink waits for each
//! segment's running time. A segment that reaches the sink after its running time starved
//! the sink for that long; the pipeline then plays on late, so only growth of the lateness
//! is a new stall.

use gst::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lateness growth below this is jitter, not a stall a viewer would see.
const STALL_THRESHOLD: Duration = Duration::from_millis(100);
const REPORT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Mesh,
    Baseline,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mesh => "mesh",
            Kind::Baseline => "baseline",
        }
    }
}

/// What the viewer process is told on its command line.
#[derive(Debug, Clone)]
pub struct ViewerArgs {
    pub kind: Kind,
    pub uri: String,
    pub tracker: Option<String>,
    pub hashes: Option<String>,
    pub ice_address: Option<String>,
    pub live_delay: Duration,
    /// meshsrc `cache-size` in bytes; None for its default.
    pub cache_size: Option<u64>,
}

impl ViewerArgs {
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "viewer".to_owned(),
            "--kind".to_owned(),
            self.kind.name().to_owned(),
            "--uri".to_owned(),
            self.uri.clone(),
            "--live-delay-ms".to_owned(),
            self.live_delay.as_millis().to_string(),
        ];
        if let Some(bytes) = self.cache_size {
            args.extend(["--cache-size".to_owned(), bytes.to_string()]);
        }
        for (flag, value) in [
            ("--tracker", &self.tracker),
            ("--hashes", &self.hashes),
            ("--ice-address", &self.ice_address),
        ] {
            if let Some(v) = value {
                args.extend([flag.to_owned(), v.clone()]);
            }
        }
        args
    }

    pub fn parse(args: &[String]) -> Result<ViewerArgs, String> {
        let mut parsed = ViewerArgs {
            kind: Kind::Mesh,
            uri: String::new(),
            tracker: None,
            hashes: None,
            ice_address: None,
            live_delay: Duration::ZERO,
            cache_size: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .clone();
            match flag.as_str() {
                "--kind" => {
                    parsed.kind = match value.as_str() {
                        "mesh" => Kind::Mesh,
                        "baseline" => Kind::Baseline,
                        other => return Err(format!("unknown kind {other}")),
                    }
                }
                "--uri" => parsed.uri = value,
                "--tracker" => parsed.tracker = Some(value),
                "--hashes" => parsed.hashes = Some(value),
                "--ice-address" => parsed.ice_address = Some(value),
                "--cache-size" => {
                    parsed.cache_size =
                        Some(value.parse().map_err(|_| format!("bad size {value}"))?);
                }
                "--live-delay-ms" => {
                    let ms = value.parse().map_err(|_| format!("bad delay {value}"))?;
                    parsed.live_delay = Duration::from_millis(ms);
                }
                other => return Err(format!("unknown viewer option {other}")),
            }
        }
        if parsed.uri.is_empty() {
            return Err("--uri is required".into());
        }
        Ok(parsed)
    }
}

/// One report line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Since the viewer process started.
    pub t_ms: u64,
    /// First buffer at the sink, counted from the request to play.
    pub first_buffer_ms: Option<u64>,
    pub stalls: u64,
    pub starved_ms: u64,
    pub bytes_played: u64,
    pub bytes_cdn: u64,
    pub bytes_p2p: u64,
    pub bytes_uploaded: u64,
    pub peers: u64,
    pub segments_rejected: u64,
    pub cpu_ms: u64,
    pub peak_rss_kb: u64,
    pub eos: bool,
    pub error: Option<String>,
}

#[derive(Default)]
struct Playback {
    first_buffer: Option<Duration>,
    behind: Duration,
    stalls: u64,
    starved: Duration,
    bytes: u64,
}

pub fn run(args: &[String]) -> i32 {
    let args = match ViewerArgs::parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("swarm-bench viewer: {e}");
            return 2;
        }
    };
    let started = Instant::now();
    match play(&args, started) {
        Ok(()) => 0,
        Err(e) => {
            report(&Sample {
                t_ms: started.elapsed().as_millis() as u64,
                error: Some(e.clone()),
                ..Default::default()
            });
            eprintln!("swarm-bench viewer: {e}");
            1
        }
    }
}

fn report(sample: &Sample) {
    println!("{}", serde_json::to_string(sample).expect("serializable"));
}

fn make(factory: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|e| format!("{factory}: {e}"))
}

fn play(args: &ViewerArgs, started: Instant) -> Result<(), String> {
    gst::init().map_err(|e| e.to_string())?;
    let pipeline = gst::Pipeline::new();
    let queue = make("queue")?;
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", true)
        .build()
        .map_err(|e| e.to_string())?;
    pipeline
        .add_many([&queue, &sink])
        .map_err(|e| e.to_string())?;
    queue.link(&sink).map_err(|e| e.to_string())?;
    let (source, demuxer) = match args.kind {
        Kind::Mesh => {
            gstmesh::plugin_register_static().map_err(|e| e.to_string())?;
            let src = make("meshsrc")?;
            src.set_property("location", &args.uri);
            if let Some(t) = &args.tracker {
                src.set_property("tracker", t);
            }
            if let Some(h) = &args.hashes {
                src.set_property("segment-hashes", h);
            }
            if let Some(ip) = &args.ice_address {
                src.set_property("ice-address", ip);
            }
            src.set_property("live-delay", args.live_delay.as_nanos() as u64);
            if let Some(bytes) = args.cache_size {
                src.set_property("cache-size", bytes);
            }
            pipeline.add(&src).map_err(|e| e.to_string())?;
            (src.clone(), src)
        }
        Kind::Baseline => {
            let src = make("souphttpsrc")?;
            src.set_property("location", &args.uri);
            let demux = make("hlsdemux")?;
            pipeline
                .add_many([&src, &demux])
                .map_err(|e| e.to_string())?;
            src.link(&demux).map_err(|e| e.to_string())?;
            (src, demux)
        }
    };
    let queue_sink = queue.static_pad("sink").expect("queue sink pad");
    demuxer.connect_pad_added(move |_, pad| {
        // A muxed MPEG-TS stream has one pad; any later pad is left unlinked.
        if !queue_sink.is_linked() {
            let _ = pad.link(&queue_sink);
        }
    });

    let playback = Arc::new(Mutex::new(Playback::default()));
    let asked_to_play = Instant::now();
    let probe_state = playback.clone();
    let sink_ref = sink.downgrade();
    sink.static_pad("sink")
        .expect("fakesink sink pad")
        .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let mut guard = probe_state.lock().unwrap();
            let p = &mut *guard;
            p.bytes += buffer.size() as u64;
            p.first_buffer
                .get_or_insert_with(|| asked_to_play.elapsed());
            let (Some(pts), Some(sink)) = (buffer.pts(), sink_ref.upgrade()) else {
                return gst::PadProbeReturn::Ok;
            };
            if sink.current_state() != gst::State::Playing {
                return gst::PadProbeReturn::Ok;
            }
            let segment = pad
                .sticky_event::<gst::event::Segment>(0)
                .and_then(|e| e.segment().downcast_ref::<gst::ClockTime>().cloned());
            let due = segment.and_then(|s| s.to_running_time(pts));
            if let (Some(due), Some(now)) = (due, sink.current_running_time()) {
                let late = Duration::from_nanos(now.saturating_sub(due).nseconds());
                if late > p.behind {
                    if late - p.behind >= STALL_THRESHOLD {
                        p.stalls += 1;
                    }
                    p.starved += late - p.behind;
                    p.behind = late;
                }
            }
            gst::PadProbeReturn::Ok
        });

    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("set PLAYING: {e:?}"))?;
    let bus = pipeline.bus().expect("pipeline bus");
    let mut next_report = Instant::now() + REPORT_EVERY;
    let result = loop {
        let wait = next_report.saturating_duration_since(Instant::now());
        let eos = match bus.timed_pop(gst::ClockTime::from_nseconds(wait.as_nanos() as u64)) {
            Some(msg) => match msg.view() {
                gst::MessageView::Eos(_) => true,
                gst::MessageView::Error(e) => {
                    break Err(format!("{} ({:?})", e.error(), e.debug()));
                }
                _ => false,
            },
            None => false,
        };
        if eos || Instant::now() >= next_report {
            next_report += REPORT_EVERY;
            report(&sample(&playback, &source, args.kind, started, eos));
        }
        if eos {
            break Ok(());
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn sample(
    playback: &Mutex<Playback>,
    source: &gst::Element,
    kind: Kind,
    started: Instant,
    eos: bool,
) -> Sample {
    let p = playback.lock().unwrap();
    let mut s = Sample {
        t_ms: started.elapsed().as_millis() as u64,
        first_buffer_ms: p.first_buffer.map(|d| d.as_millis() as u64),
        stalls: p.stalls,
        starved_ms: p.starved.as_millis() as u64,
        bytes_played: p.bytes,
        eos,
        ..Default::default()
    };
    drop(p);
    if kind == Kind::Mesh {
        let stats = source.property::<gst::Structure>("stats");
        let get = |f: &str| stats.get::<u64>(f).unwrap_or(0);
        s.bytes_cdn = get("bytes-cdn");
        s.bytes_p2p = get("bytes-p2p");
        s.bytes_uploaded = get("bytes-uploaded");
        s.peers = get("peers");
        s.segments_rejected = get("segments-rejected");
    }
    (s.cpu_ms, s.peak_rss_kb) = own_usage();
    s
}

/// CPU time (user + system, all threads) and peak RSS of this process.
fn own_usage() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of proc(5), in USER_HZ (100 on Linux).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu_ms = (ticks(11) + ticks(12)) * 10;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (cpu_ms, peak_rss_kb)
}

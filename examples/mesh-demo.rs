//! mesh-demo: several viewers of one live stream sharing segments over WebRTC.
//!
//! ```text
//! cargo build --release -p mesh-tracker
//! cargo run --release --example mesh-demo -- [--viewers N] [--seconds S]
//! ```
//!
//! `scripts/demo.sh` does both. Building the example does not build the tracker binary,
//! which belongs to the mesh-tracker crate.
//!
//! * generates an H.264/AAC MPEG-TS stream with GStreamer's hlssink2 and serves it on
//!   127.0.0.1 as a live playlist with 2 s segments, plus its `segments-sha256.json`;
//! * starts the bundled WebTorrent tracker (`target/release/mesh-tracker`, found in the
//!   folder above this example's);
//! * starts N viewers a second apart, each a `playbin3 uri=mesh+http://…` with fake sinks
//!   playing in real time, whose meshsrc gets `tracker`, `segment-hashes` and
//!   `ice-address=127.0.0.1` in `source-setup`;
//! * prints every second what each viewer took from the CDN and from peers, and the share of
//!   the bytes that did not come from the origin (the origin counts its own bytes);
//! * exits 0 once every viewer reached EOS with bytes from peers, 1 otherwise.

#[path = "../tests/common/fixtures.rs"]
mod fixtures;
#[path = "../tests/common/origin.rs"]
mod origin;

use gst::prelude::*;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    viewers: usize,
    seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        viewers: 4,
        seconds: 40,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("bad {name} {v}"))
        };
        match a.as_str() {
            "--viewers" => args.viewers = value("--viewers")? as usize,
            "--seconds" => args.seconds = value("--seconds")?,
            "-h" | "--help" => {
                println!(
                    "usage: mesh-demo [--viewers N (2-16, default 4)] [--seconds S (10-600, default 40)]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !(2..=16).contains(&args.viewers) {
        return Err("--viewers must be between 2 and 16".into());
    }
    if !(10..=600).contains(&args.seconds) {
        return Err("--seconds must be between 10 and 600".into());
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mesh-demo: {e}");
            std::process::exit(2);
        }
    };
    std::process::exit(match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mesh-demo: error: {e}");
            1
        }
    });
}

/// The bundled tracker as a child process, killed on drop.
struct Tracker {
    child: Child,
    url: String,
}

impl Tracker {
    fn start() -> Result<Tracker, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let bin = exe
            .parent()
            .and_then(|examples| examples.parent())
            .map(|dir| dir.join("mesh-tracker"))
            .filter(|p| p.exists())
            .ok_or("mesh-tracker not built: run `cargo build --release -p mesh-tracker` first")?;
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("mesh-tracker: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
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

struct Viewer {
    pipeline: gst::Element,
    source: Arc<Mutex<Option<gst::Element>>>,
    eos: bool,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    cdn: u64,
    p2p: u64,
    uploaded: u64,
    peers: u64,
    rejected: u64,
}

impl Viewer {
    fn start(uri: &str, tracker: &str, hashes: &str) -> Result<Viewer, String> {
        let pipeline = gst::ElementFactory::make("playbin3")
            .property("uri", uri)
            .build()
            .map_err(|e| format!("playbin3: {e}"))?;
        for sink in ["video-sink", "audio-sink"] {
            let fakesink = gst::ElementFactory::make("fakesink")
                .property("sync", true)
                .build()
                .map_err(|e| e.to_string())?;
            pipeline.set_property(sink, &fakesink);
        }
        let source = Arc::new(Mutex::new(None));
        let slot = source.clone();
        let (tracker, hashes) = (tracker.to_owned(), hashes.to_owned());
        pipeline.connect("source-setup", false, move |values| {
            let src = values[1].get::<gst::Element>().expect("source element");
            if src.has_property("tracker") {
                src.set_property("tracker", &tracker);
                src.set_property("segment-hashes", &hashes);
                src.set_property("ice-address", "127.0.0.1");
                *slot.lock().unwrap() = Some(src);
            }
            None
        });
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("set PLAYING: {e:?}"))?;
        Ok(Viewer {
            pipeline,
            source,
            eos: false,
        })
    }

    fn counts(&self) -> Counts {
        let Some(src) = self.source.lock().unwrap().clone() else {
            return Counts::default();
        };
        let s = src.property::<gst::Structure>("stats");
        let get = |f: &str| s.get::<u64>(f).unwrap_or(0);
        Counts {
            cdn: get("bytes-cdn"),
            p2p: get("bytes-p2p"),
            uploaded: get("bytes-uploaded"),
            peers: get("peers"),
            rejected: get("segments-rejected"),
        }
    }

    /// Drains the bus: Ok(true) at EOS, Err on an error.
    fn poll(&mut self) -> Result<bool, String> {
        let bus = self.pipeline.bus().expect("pipeline bus");
        while let Some(msg) = bus.pop() {
            match msg.view() {
                gst::MessageView::Eos(_) => self.eos = true,
                gst::MessageView::Error(e) => {
                    return Err(format!("{} ({:?})", e.error(), e.debug()));
                }
                gst::MessageView::Warning(w) => eprintln!("warning: {}", w.error()),
                _ => {}
            }
        }
        Ok(self.eos)
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn run(args: &Args) -> Result<(), String> {
    gst::init().map_err(|e| e.to_string())?;
    gstmesh::plugin_register_static().map_err(|e| e.to_string())?;

    let tmp = std::env::temp_dir().join(format!("gst-mesh-demo-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(tmp.clone());
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let segments = args.seconds.div_ceil(fixtures::SEGMENT_SECS);
    let media_secs = (segments + 12) * fixtures::SEGMENT_SECS;
    println!(
        "generating {media_secs} s of HLS with hlssink2 in {}",
        tmp.display()
    );
    let stream = fixtures::hls_ts_vod_secs(&tmp.join("vod"), media_secs, true);

    let origin = origin::Origin::start(&tmp);
    origin.add_live_playlist(
        "live.m3u8",
        &stream.playlist,
        origin::LiveConfig {
            window: 6,
            start_segments: 6,
            segment_duration: Duration::from_secs(fixtures::SEGMENT_SECS),
            looped: false,
            end_after: Some(6 + segments),
            ..Default::default()
        },
    );
    let uri = origin.mesh_url("live.m3u8");
    let hashes = origin.live_hashes_url("live.m3u8");
    let tracker = Tracker::start()?;
    println!("origin {uri}\ntracker {}\nhashes {hashes}", tracker.url);

    let started = Instant::now();
    let limit = Duration::from_secs(args.seconds + 60 + args.viewers as u64);
    let mut viewers: Vec<Viewer> = Vec::new();
    let mut next_tick = started;
    loop {
        if viewers.len() < args.viewers {
            viewers.push(Viewer::start(&uri, &tracker.url, &hashes)?);
            println!("viewer {} joined", viewers.len());
        }
        let mut all_eos = viewers.len() == args.viewers;
        for (i, v) in viewers.iter_mut().enumerate() {
            all_eos &= v.poll().map_err(|e| format!("viewer {}: {e}", i + 1))?;
        }
        let counts: Vec<Counts> = viewers.iter().map(Viewer::counts).collect();
        let played: u64 = counts.iter().map(|c| c.cdn + c.p2p).sum();
        let offload = 1.0 - origin.bytes_sent() as f64 / played.max(1) as f64;
        let per_viewer: Vec<String> = counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "v{}: cdn {} p2p {} up {} peers {}",
                    i + 1,
                    mb(c.cdn),
                    mb(c.p2p),
                    mb(c.uploaded),
                    c.peers
                )
            })
            .collect();
        println!(
            "[{:>3.0}s] from peers {:>5.1}%  origin sent {}  viewers got {} | {}",
            started.elapsed().as_secs_f64(),
            offload.max(0.0) * 100.0,
            mb(origin.bytes_sent()),
            mb(played),
            per_viewer.join(" | ")
        );
        if all_eos {
            let p2p: u64 = counts.iter().map(|c| c.p2p).sum();
            let rejected: u64 = counts.iter().map(|c| c.rejected).sum();
            println!("---- summary ----");
            println!("viewers: {}, every one at EOS", viewers.len());
            println!(
                "origin sent {}, viewers got {} ({} from peers): {:.1}% of the bytes came from peers (ceiling {:.1}%)",
                mb(origin.bytes_sent()),
                mb(played),
                mb(p2p),
                offload * 100.0,
                (1.0 - 1.0 / args.viewers as f64) * 100.0
            );
            println!("segments rejected: {rejected}");
            return if p2p > 0 {
                Ok(())
            } else {
                Err("no byte came from peers".into())
            };
        }
        if started.elapsed() > limit {
            return Err(format!("not every viewer reached EOS within {limit:?}"));
        }
        next_tick += Duration::from_secs(1);
        std::thread::sleep(next_tick.saturating_duration_since(Instant::now()));
    }
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

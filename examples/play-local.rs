//! play-local: generate a local HLS stream, serve it over HTTP on 127.0.0.1 and
//! play it through `meshsrc`.
//!
//! ```text
//! cargo run --release --example play-local -- [--seconds N] [--live]
//! ```
//!
//! * generates an N-second (default 20) H.264/AAC MPEG-TS HLS stream with 2 s
//!   segments using GStreamer's hlssink2 into a temporary directory;
//! * serves it with the test origin (`tests/common/origin.rs`) on 127.0.0.1;
//!   with `--live` as a sliding-window live playlist that ends (EXT-X-ENDLIST)
//!   after N seconds of wall clock;
//! * plays `meshsrc location=http://127.0.0.1:PORT/... ! decodebin ! fakesink
//!   sync=true` (every meshsrc pad gets its own decodebin; every decoded pad its
//!   own fakesink), printing a progress line every second;
//! * prints a summary at EOS and exits 0, or exits 1 on an error or timeout.

#[path = "../tests/common/fixtures.rs"]
mod fixtures;
#[path = "../tests/common/origin.rs"]
mod origin;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

struct Args {
    seconds: u64,
    live: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 20,
        live: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--live" => args.live = true,
            "--seconds" => {
                let v = it.next().ok_or("--seconds needs a value")?;
                args.seconds = v.parse().map_err(|_| format!("bad --seconds {v}"))?;
            }
            s if s.starts_with("--seconds=") => {
                let v = &s["--seconds=".len()..];
                args.seconds = v.parse().map_err(|_| format!("bad --seconds {v}"))?;
            }
            "-h" | "--help" => {
                println!("usage: play-local [--seconds N] [--live]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.seconds < 2 || args.seconds > 3600 {
        return Err("--seconds must be between 2 and 3600".into());
    }
    // hlssink2 cuts 2 s segments; round up to a whole number of segments.
    args.seconds = args.seconds.div_ceil(2) * 2;
    Ok(args)
}

#[derive(Default)]
struct Stats {
    pads: Vec<String>,
    decoded: BTreeMap<String, u64>,
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("play-local: {e}");
            std::process::exit(2);
        }
    };
    std::process::exit(match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("play-local: error: {e}");
            1
        }
    });
}

fn run(args: &Args) -> Result<(), String> {
    gst::init().map_err(|e| e.to_string())?;
    gstmesh::plugin_register_static().map_err(|e| e.to_string())?;

    let tmp = std::env::temp_dir().join(format!("gst-mesh-play-local-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(tmp.clone());
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;

    // In live mode the VOD source is looped, so a short stream is enough.
    let gen_secs = if args.live {
        args.seconds.min(20)
    } else {
        args.seconds
    };
    println!(
        "generating {gen_secs} s of HLS (hlssink2) in {}",
        tmp.display()
    );
    let t = Instant::now();
    let stream = fixtures::hls_ts_vod_secs(&tmp.join("vod"), gen_secs, true);
    println!("generated in {:.1} s", t.elapsed().as_secs_f64());

    let origin = origin::Origin::start(&tmp);
    let location = if args.live {
        let segs = args.seconds / fixtures::SEGMENT_SECS;
        let start = 3u64.min(segs);
        origin.add_live_playlist(
            "live.m3u8",
            &stream.playlist,
            origin::LiveConfig {
                window: 6,
                start_segments: start,
                segment_duration: Duration::from_secs(fixtures::SEGMENT_SECS),
                looped: true,
                end_after: Some(segs),
                ..Default::default()
            },
        );
        origin.url("live.m3u8")
    } else {
        origin.url_of(&stream.playlist)
    };
    println!("serving {location}");

    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("meshsrc")
        .property("location", &location)
        .build()
        .map_err(|e| format!("meshsrc: {e}"))?;
    pipeline.add(&src).map_err(|e| e.to_string())?;

    let stats = Arc::new(Mutex::new(Stats::default()));
    let weak = pipeline.downgrade();
    let st = stats.clone();
    src.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let name = pad.name().to_string();
        st.lock().unwrap().pads.push(name.clone());
        let decodebin = gst::ElementFactory::make("decodebin")
            .build()
            .expect("decodebin");
        let weak = pipeline.downgrade();
        let st2 = st.clone();
        let src_name = name.clone();
        decodebin.connect_pad_added(move |_, dpad| {
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            let caps = dpad.current_caps().or_else(|| Some(dpad.query_caps(None)));
            let kind = caps
                .as_ref()
                .and_then(|c| c.structure(0).map(|s| s.name().to_string()))
                .unwrap_or_default();
            let kind = kind.split('/').next().unwrap_or("other").to_string();
            let label = format!("{src_name}:{kind}");
            let sink = gst::ElementFactory::make("fakesink")
                .property("sync", true)
                .build()
                .expect("fakesink");
            pipeline.add(&sink).expect("add fakesink");
            let _ = sink.sync_state_with_parent();
            let counter = st2.clone();
            let l2 = label.clone();
            counter.lock().unwrap().decoded.entry(label).or_insert(0);
            sink.static_pad("sink")
                .unwrap()
                .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    *counter
                        .lock()
                        .unwrap()
                        .decoded
                        .entry(l2.clone())
                        .or_insert(0) += 1;
                    gst::PadProbeReturn::Ok
                });
            if let Err(e) = dpad.link(&sink.static_pad("sink").unwrap()) {
                eprintln!("link {}: {e:?}", dpad.name());
            }
        });
        pipeline.add(&decodebin).expect("add decodebin");
        let _ = decodebin.sync_state_with_parent();
        if let Err(e) = pad.link(&decodebin.static_pad("sink").unwrap()) {
            eprintln!("link {name}: {e:?}");
        }
    });

    let bus = pipeline.bus().unwrap();
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("set PLAYING: {e:?}"))?;

    let started = Instant::now();
    let limit = Duration::from_secs(args.seconds * 3 + 60);
    let mut next_tick = started + Duration::from_secs(1);
    let result = loop {
        if started.elapsed() > limit {
            break Err(format!("timed out after {limit:?}"));
        }
        let wait = next_tick.saturating_duration_since(Instant::now());
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(wait.as_nanos() as u64)) {
            use gst::MessageView;
            match msg.view() {
                MessageView::Eos(_) => break Ok(()),
                MessageView::Error(e) => {
                    break Err(format!(
                        "{} from {}: {:?}",
                        e.error(),
                        msg.src()
                            .map(|s| s.path_string().to_string())
                            .unwrap_or_default(),
                        e.debug()
                    ));
                }
                MessageView::Warning(w) => eprintln!("warning: {} ({:?})", w.error(), w.debug()),
                MessageView::Element(e) => {
                    if let Some(s) = e.structure()
                        && s.name() == "mesh-variant-changed"
                    {
                        println!("variant: {s}");
                    }
                }
                _ => {}
            }
            continue;
        }
        next_tick += Duration::from_secs(1);
        let pos = pipeline.query_position::<gst::ClockTime>();
        let dur = pipeline.query_duration::<gst::ClockTime>();
        let s = stats.lock().unwrap();
        println!(
            "[{:>4.0}s] position {} / {}  served {} bytes in {} requests  pads {:?}  decoded {:?}",
            started.elapsed().as_secs_f64(),
            pos.map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".into()),
            dur.map(|d| d.display().to_string())
                .unwrap_or_else(|| "live".into()),
            origin.bytes_sent(),
            origin.request_count(),
            s.pads,
            s.decoded
        );
    };
    let _ = pipeline.set_state(gst::State::Null);

    let s = stats.lock().unwrap();
    println!("---- summary ----");
    println!("mode: {}", if args.live { "live" } else { "vod" });
    println!("wall clock: {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "origin: {} bytes in {} requests",
        origin.bytes_sent(),
        origin.request_count()
    );
    println!("pads: {:?}", s.pads);
    for (k, v) in &s.decoded {
        println!("decoded {k}: {v} buffers");
    }
    match &result {
        Ok(()) => {
            let video: u64 = s
                .decoded
                .iter()
                .filter(|(k, _)| k.ends_with(":video"))
                .map(|(_, v)| *v)
                .sum();
            if video == 0 {
                return Err("EOS without any decoded video frame".into());
            }
            println!("result: EOS");
        }
        Err(e) => println!("result: error: {e}"),
    }
    result
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

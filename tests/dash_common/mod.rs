//! DASH test streams made by real packagers (ffmpeg's dash muxer in every addressing mode,
//! GStreamer's dashsink), and the exact bytes each meshsrc pad must carry, computed from the
//! files on disk and the box layout, independently of the code under test.

#![allow(dead_code)]

pub mod live_origin;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const FPS: u64 = 25;
pub const SEGMENT_SECS: u64 = 2;

/// How ffmpeg's dash muxer addresses the segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// SegmentTemplate + SegmentTimeline (`-use_template 1 -use_timeline 1`).
    Timeline,
    /// SegmentTemplate with $Number$ and @duration (`-use_template 1 -use_timeline 0`).
    Number,
    /// SegmentList of files (`-use_template 0`).
    List,
    /// SegmentList of byte ranges in one file per representation (`-single_file 1`).
    SingleFileList,
    /// One file per representation with a global sidx, described by SegmentBase@indexRange
    /// (the MPD is rewritten from ffmpeg's SegmentList one).
    SegmentBase,
}

/// What one pad must carry: the parts in order (init section first).
#[derive(Clone, Debug, Default)]
pub struct Expected {
    pub parts: Vec<Vec<u8>>,
}

impl Expected {
    pub fn all(&self) -> Vec<u8> {
        self.parts.concat()
    }
    pub fn sizes(&self) -> Vec<usize> {
        self.parts.iter().map(Vec::len).collect()
    }
}

#[derive(Clone, Debug)]
pub struct DashStream {
    pub dir: PathBuf,
    /// The MPD, below the origin root.
    pub mpd: PathBuf,
    pub video: Expected,
    pub audio: Expected,
    pub video_frames: u64,
}

/// Runs a command with a time limit, panicking with its output on failure.
pub fn run(cmd: &mut Command, what: &str, timeout: Duration) {
    if let Err(e) = try_run(cmd, what, timeout) {
        panic!("{e}");
    }
}

/// Runs a command with a time limit; the error has its output.
pub fn try_run(cmd: &mut Command, what: &str, timeout: Duration) -> Result<(), String> {
    let out = std::env::temp_dir().join(format!(
        "gst-mesh-dash-{}-{}.log",
        std::process::id(),
        what.replace(' ', "_")
    ));
    let log = std::fs::File::create(&out).expect("log file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("clone")))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    match status {
        Some(s) if s.success() => Ok(()),
        other => Err(format!("{what} failed ({other:?}): {cmd:?}\n{text}")),
    }
}

fn ffmpeg_base(dir: &Path, seconds: u64) -> Command {
    let mut c = Command::new("ffmpeg");
    c.current_dir(dir).args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size=320x240:rate={FPS}"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &seconds.to_string(),
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        &(FPS * SEGMENT_SECS).to_string(),
        "-keyint_min",
        &(FPS * SEGMENT_SECS).to_string(),
        "-sc_threshold",
        "0",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-f",
        "dash",
        "-seg_duration",
        &SEGMENT_SECS.to_string(),
        "-adaptation_sets",
        "id=0,streams=v id=1,streams=a",
    ]);
    c
}

/// Files of `dir` whose names start with `prefix`, sorted by name.
pub fn files_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Top-level ISO-BMFF boxes of a file: (offset, size, type).
pub fn top_level_boxes(data: &[u8]) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset + 8 <= data.len() {
        let size32 = u32::from_be_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
        let kind = String::from_utf8_lossy(&data[offset + 4..offset + 8]).into_owned();
        let size = match size32 {
            0 => data.len() - offset,
            1 => u64::from_be_bytes(data[offset + 8..offset + 16].try_into().unwrap()) as usize,
            n => n,
        };
        assert!(size >= 8, "bad box size at {offset}");
        out.push((offset, size, kind));
        offset += size;
    }
    assert_eq!(
        offset,
        data.len(),
        "boxes do not end at the end of the file"
    );
    out
}

/// The separate-files modes: init, then the chunks in number order.
fn per_file_expected(dir: &Path, stream: u32) -> Expected {
    let mut parts = vec![read(&dir.join(format!("init-stream{stream}.m4s")))];
    let chunks = files_with_prefix(dir, &format!("chunk-stream{stream}-"));
    assert!(!chunks.is_empty(), "no chunks for stream {stream}");
    parts.extend(chunks.iter().map(|p| read(p)));
    Expected { parts }
}

/// Generates `seconds` of 25 fps video and AAC audio as DASH in `mode` under `dir/name/`.
pub fn ffmpeg_dash(root: &Path, name: &str, mode: Mode, seconds: u64) -> DashStream {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut cmd = ffmpeg_base(&dir, seconds);
    match mode {
        Mode::Timeline => cmd.args(["-use_template", "1", "-use_timeline", "1"]),
        Mode::Number => cmd.args(["-use_template", "1", "-use_timeline", "0"]),
        Mode::List => cmd.args(["-use_template", "0"]),
        Mode::SingleFileList => cmd.args(["-single_file", "1"]),
        Mode::SegmentBase => cmd.args(["-single_file", "1", "-global_sidx", "1"]),
    };
    cmd.arg("manifest.mpd");
    run(
        &mut cmd,
        &format!("ffmpeg dash {name}"),
        Duration::from_secs(120),
    );
    let mpd = dir.join("manifest.mpd");
    let (video, audio) = match mode {
        Mode::Timeline | Mode::Number | Mode::List => {
            (per_file_expected(&dir, 0), per_file_expected(&dir, 1))
        }
        Mode::SingleFileList => {
            // The init range and the media ranges cover each file from start to end.
            let whole = |s: u32| Expected {
                parts: vec![read(&dir.join(format!("manifest-stream{s}.mp4")))],
            };
            (whole(0), whole(1))
        }
        Mode::SegmentBase => {
            let text = std::fs::read_to_string(&mpd).expect("mpd");
            let mut text = text;
            let mut expected = Vec::new();
            for stream in 0..2 {
                let file = dir.join(format!("manifest-stream{stream}.mp4"));
                let data = read(&file);
                let boxes = top_level_boxes(&data);
                let (sidx_at, sidx_size, _) = boxes
                    .iter()
                    .find(|(_, _, k)| k == "sidx")
                    .cloned()
                    .expect("global sidx");
                let end = sidx_at + sidx_size;
                // Replace this representation's SegmentList with a SegmentBase.
                let base_url = format!("<BaseURL>manifest-stream{stream}.mp4</BaseURL>");
                let at = text.find(&base_url).expect("BaseURL") + base_url.len();
                let list_start = at + text[at..].find("<SegmentList").expect("SegmentList");
                let list_end = list_start
                    + text[list_start..].find("</SegmentList>").expect("end")
                    + "</SegmentList>".len();
                text.replace_range(
                    list_start..list_end,
                    &format!(
                        "<SegmentBase indexRange=\"{sidx_at}-{}\"><Initialization range=\"0-{}\"/></SegmentBase>",
                        end - 1,
                        sidx_at - 1
                    ),
                );
                expected.push(Expected {
                    parts: vec![data[..sidx_at].to_vec(), data[end..].to_vec()],
                });
            }
            assert!(!text.contains("SegmentList"));
            std::fs::write(&mpd, text).expect("write mpd");
            let audio = expected.pop().unwrap();
            (expected.pop().unwrap(), audio)
        }
    };
    DashStream {
        dir,
        mpd,
        video,
        audio,
        video_frames: seconds * FPS,
    }
}

/// Runs `description`, whose dashsink is named `sink` and has `streams` streams, in this
/// process until it is written.
///
/// GStreamer 1.22's dashsink now and then never posts EOS (about 1 run in 3 on two cores)
/// although every stream has finished: each stream's splitmuxsink has posted EOS, and dashsink
/// has written the final MPD on it. With `message-forward`, dashsink passes those EOS messages
/// on after writing the MPD, so the run is over when every splitmuxsink has posted EOS (or the
/// pipeline has).
fn run_dashsink(
    description: &str,
    sink: &str,
    streams: usize,
    timeout: Duration,
) -> Result<(), String> {
    use gst::prelude::*;
    super::common::init();
    let pipeline = gst::parse::launch(description)
        .map_err(|e| e.to_string())?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline".to_string())?;
    let dashsink = pipeline
        .by_name(sink)
        .ok_or_else(|| format!("no element named {sink}"))?;
    dashsink.set_property("message-forward", true);
    let bus = pipeline.bus().expect("pipeline bus");
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut finished = std::collections::BTreeSet::new();
    let result = loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break Err(format!("not written within {timeout:?}"));
        };
        let Some(message) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64))
        else {
            continue;
        };
        match message.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(e) => break Err(format!("{} ({:?})", e.error(), e.debug())),
            gst::MessageView::Element(e) => {
                let forwarded = e
                    .structure()
                    .filter(|s| s.name() == "GstBinForwarded")
                    .and_then(|s| s.get::<gst::Message>("message").ok());
                if let Some(inner) = forwarded
                    && let gst::MessageView::Eos(_) = inner.view()
                    && let Some(src) = inner.src()
                {
                    finished.insert(src.name().to_string());
                    if finished.len() == streams {
                        break Ok(());
                    }
                }
            }
            _ => {}
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// GStreamer's dashsink: MPEG-TS segments, SegmentTemplate $Number$ with @duration.
pub fn dashsink_ts(root: &Path, name: &str, seconds: u64) -> DashStream {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let frames = seconds * FPS;
    let audio_buffers = seconds * 48_000 / 1024 + 2;
    let pipeline = format!(
        "dashsink name=ds mpd-root-path={} target-duration={SEGMENT_SECS} muxer=ts \
         videotestsrc num-buffers={frames} ! video/x-raw,width=320,height=240,framerate={FPS}/1 \
         ! x264enc key-int-max={} speed-preset=ultrafast tune=zerolatency ! h264parse ! ds.video_0 \
         audiotestsrc num-buffers={audio_buffers} samplesperbuffer=1024 ! audio/x-raw,rate=48000 \
         ! avenc_aac ! aacparse ! ds.audio_0",
        dir.display(),
        FPS * SEGMENT_SECS
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    if let Err(e) = run_dashsink(&pipeline, "ds", 2, Duration::from_secs(120)) {
        panic!("dashsink {name}: {e}\npipeline: {pipeline}");
    }
    let numbered = |prefix: &str| {
        let mut files = files_with_prefix(&dir, prefix);
        let number = |p: &PathBuf| -> u64 {
            let n = p.file_stem().unwrap().to_str().unwrap();
            n.rsplit('_').next().unwrap().parse().unwrap()
        };
        files.sort_by_key(number);
        assert!(!files.is_empty(), "dashsink wrote no {prefix} files");
        Expected {
            parts: files.iter().map(|p| read(p)).collect(),
        }
    };
    DashStream {
        mpd: dir.join("dash.mpd"),
        video: numbered("video_0_"),
        audio: numbered("audio_0_"),
        dir,
        video_frames: frames,
    }
}

/// A VOD with one video and two audio AdaptationSets in different languages and with
/// different content (440 Hz `eng`, 880 Hz `fra`), SegmentTemplate `$Number$`.
#[derive(Clone, Debug)]
pub struct TwoLanguages {
    pub mpd: PathBuf,
    pub video: Expected,
    pub eng: Expected,
    pub fra: Expected,
}

/// Generates [`TwoLanguages`] with ffmpeg's dash muxer under `dir/name/`.
pub fn ffmpeg_dash_two_languages(root: &Path, name: &str, seconds: u64) -> TwoLanguages {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut cmd = Command::new("ffmpeg");
    cmd.current_dir(&dir).args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size=320x240:rate={FPS}"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=880:sample_rate=48000",
        "-t",
        &seconds.to_string(),
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-map",
        "2:a",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        &(FPS * SEGMENT_SECS).to_string(),
        "-keyint_min",
        &(FPS * SEGMENT_SECS).to_string(),
        "-sc_threshold",
        "0",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-metadata:s:a:0",
        "language=eng",
        "-metadata:s:a:1",
        "language=fra",
        "-f",
        "dash",
        "-seg_duration",
        &SEGMENT_SECS.to_string(),
        "-adaptation_sets",
        "id=0,streams=v id=1,streams=1 id=2,streams=2",
        "-use_template",
        "1",
        "-use_timeline",
        "0",
        "manifest.mpd",
    ]);
    run(
        &mut cmd,
        &format!("ffmpeg dash {name}"),
        Duration::from_secs(120),
    );
    let mpd = dir.join("manifest.mpd");
    let text = std::fs::read_to_string(&mpd).expect("mpd");
    assert!(
        text.contains(r#"lang="eng""#) && text.contains(r#"lang="fra""#),
        "languages missing from the MPD:\n{text}"
    );
    TwoLanguages {
        mpd,
        video: per_file_expected(&dir, 0),
        eng: per_file_expected(&dir, 1),
        fra: per_file_expected(&dir, 2),
    }
}

//! Streams from packagers, and packager modes, that the rest of the suite does not use:
//! ffmpeg's HLS muxer with fMP4 + EXT-X-PROGRAM-DATE-TIME, WebVTT subtitles beside a muxed
//! MPEG-TS variant, two audio renditions; ffmpeg's DASH muxer as SegmentBase + sidx, as two
//! Periods, as live (`-streaming 1`, `-ldash 1`) written in real time, and with its HLS
//! output (`-hls_playlist 1`, CMAF fragments) turned into LL-HLS / LL-DASH manifests;
//! HLS discontinuities with and without a new EXT-X-MAP; H.264 + H.265 masters; GStreamer's
//! legacy `hlssink`.
//!
//! Every generator returns the exact decoded video frame count, measured with
//! `ffprobe -count_frames` on the files the packager wrote (not assumed), and, where they
//! are well-defined, the exact bytes each meshsrc pad must carry, read from those files
//! independently of meshsrc (m3u8-rs for HLS, the MPD's segment count and the files for
//! DASH). docs/packagers.md lists the commands, and what GStreamer's own hlsdemux2 /
//! dashdemux2 make of each stream.
//!
//! Also here: [`LiveDash`] (ffmpeg writing live DASH in real time, killed on drop, served
//! by `growing::GrowingOrigin`) and [`seek_playbin3`] (a flushing seek in playbin3, with
//! the stream time of the first buffer every sink gets after the flush).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::fixtures::{ExpectedMedia, expected_media};
use super::pipeline::Done;

/// Segment (fragment) duration of every stream here.
pub const SEGMENT: Duration = Duration::from_secs(2);

/// Bound for one packager run.
const PACKAGER_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------
// What a generator returns
// ---------------------------------------------------------------------------------------

/// What one meshsrc pad must carry: the parts in order (init section first, if any).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PadBytes {
    /// Pad name, e.g. `video_00`.
    pub pad: String,
    pub parts: Vec<Vec<u8>>,
}

impl PadBytes {
    pub fn all(&self) -> Vec<u8> {
        self.parts.concat()
    }
    pub fn sizes(&self) -> Vec<usize> {
        self.parts.iter().map(Vec::len).collect()
    }
    /// init (if any) and every segment of a media playlist's expected output.
    pub fn from_media(pad: &str, e: &ExpectedMedia) -> PadBytes {
        let mut parts: Vec<Vec<u8>> = e.init.iter().cloned().collect();
        parts.extend(e.segments.iter().cloned());
        PadBytes {
            pad: pad.to_string(),
            parts,
        }
    }
}

/// A generated stream.
#[derive(Clone, Debug)]
pub struct Packaged {
    /// Directory holding the stream's files (below the origin root).
    pub dir: PathBuf,
    /// Entry point: master or media playlist, or MPD.
    pub entry: PathBuf,
    /// Decoded video frames a player must output (ffprobe on the files).
    pub video_frames: u64,
    pub has_audio: bool,
    /// Subtitle cues in the subtitle segments, when the stream has subtitles.
    pub cues: Option<u64>,
    /// Fragment (segment) duration.
    pub segment: Duration,
    /// Presentation duration.
    pub duration: Duration,
    /// What each meshsrc pad must carry; empty when that is not well-defined.
    pub pads: Vec<PadBytes>,
    /// Files a manifest names that do not exist and a VOD player must not fetch
    /// (EXT-X-PRELOAD-HINT targets).
    pub must_not_fetch: Vec<PathBuf>,
}

impl Packaged {
    pub fn pad(&self, name: &str) -> &PadBytes {
        self.pads
            .iter()
            .find(|p| p.pad == name)
            .unwrap_or_else(|| panic!("no expected pad {name} in {:?}", self.pad_names()))
    }
    pub fn pad_names(&self) -> Vec<String> {
        self.pads.iter().map(|p| p.pad.clone()).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Running tools
// ---------------------------------------------------------------------------------------

fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn read_back(f: &mut std::fs::File) -> String {
    let _ = f.seek(SeekFrom::Start(0));
    let mut data = Vec::new();
    let _ = f.read_to_end(&mut data);
    String::from_utf8_lossy(&data).into_owned()
}

/// Runs `cmd` (stdin closed) for at most `timeout`: its stdout if it exited with 0, else
/// an error with its stderr.
fn try_capture(cmd: &mut Command, what: &str, timeout: Duration) -> Result<String, String> {
    let mut out = tempfile::tempfile().map_err(|e| format!("temp file: {e}"))?;
    let mut err = tempfile::tempfile().map_err(|e| format!("temp file: {e}"))?;
    let child_out = out.try_clone().map_err(|e| format!("clone: {e}"))?;
    let child_err = err.try_clone().map_err(|e| format!("clone: {e}"))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(child_out))
        .stderr(Stdio::from(child_err))
        .spawn()
        .map_err(|e| format!("spawn {what}: {e}"))?;
    let status = wait_bounded(&mut child, timeout);
    let stdout = read_back(&mut out);
    let stderr = read_back(&mut err);
    match status {
        Some(s) if s.success() => Ok(stdout),
        other => Err(format!("{what} failed ({other:?}): {cmd:?}\n{stderr}")),
    }
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    try_capture(cmd, what, PACKAGER_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

fn ffmpeg(dir: &Path) -> Command {
    let mut c = Command::new("ffmpeg");
    c.current_dir(dir)
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"]);
    c
}

/// `testsrc`/`testsrc2` video at 25 fps, and optionally a sine tone (48 kHz).
fn lavfi(c: &mut Command, pattern: &str, size: &str, tone_hz: Option<u32>) {
    c.args([
        "-f",
        "lavfi",
        "-i",
        &format!("{pattern}=size={size}:rate=25"),
    ]);
    if let Some(hz) = tone_hz {
        c.args([
            "-f",
            "lavfi",
            "-i",
            &format!("sine=frequency={hz}:sample_rate=48000"),
        ]);
    }
}

/// H.264, 2 s closed GOPs (IDR every 50 frames), no B-frames, one thread.
fn x264(c: &mut Command) {
    c.args([
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-preset",
        "ultrafast",
        "-g",
        "50",
        "-keyint_min",
        "50",
        "-sc_threshold",
        "0",
        "-bf",
        "0",
        "-threads",
        "1",
    ]);
}

/// AAC-LC, mono, 64 kbit/s.
fn aac(c: &mut Command) {
    c.args(["-c:a", "aac", "-b:a", "64k", "-ac", "1"]);
}

fn mkdir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn read_string(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn write(path: &Path, data: impl AsRef<[u8]>) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn media_playlist(path: &Path) -> m3u8_rs::MediaPlaylist {
    match m3u8_rs::parse_playlist_res(&read(path)) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
        _ => panic!("{} is not a media playlist", path.display()),
    }
}

fn master_playlist(path: &Path) -> m3u8_rs::MasterPlaylist {
    match m3u8_rs::parse_playlist_res(&read(path)) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(m)) => m,
        _ => panic!("{} is not a master playlist", path.display()),
    }
}

// ---------------------------------------------------------------------------------------
// Probing
// ---------------------------------------------------------------------------------------

/// Video frames ffprobe decodes (`-count_frames`) in `data` (a TS stream, or an fMP4 init
/// followed by its fragments).
pub fn probe_video_frames(data: &[u8]) -> u64 {
    let mut tmp = tempfile::NamedTempFile::new().expect("temp file");
    tmp.write_all(data).expect("write temp file");
    tmp.flush().expect("flush temp file");
    let mut cmd = Command::new("ffprobe");
    cmd.args([
        "-v",
        "error",
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=nb_read_frames",
        "-of",
        "default=nw=1:nk=1",
    ])
    .arg(tmp.path());
    let out =
        try_capture(&mut cmd, "ffprobe", Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    // MPEG-TS input prints the count under the program and under the stream.
    out.lines()
        .find_map(|l| l.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no frame count in ffprobe output {out:?}"))
}

/// [`probe_video_frames`] of the concatenation of `files`.
pub fn probe_files(files: &[PathBuf]) -> u64 {
    let data: Vec<u8> = files.iter().flat_map(|f| read(f)).collect();
    probe_video_frames(&data)
}

// ---------------------------------------------------------------------------------------
// ISO-BMFF
// ---------------------------------------------------------------------------------------

/// Boxes in `data[start..end]`: (offset, size, type).
fn boxes_in(data: &[u8], start: usize, end: usize) -> Vec<(usize, usize, [u8; 4])> {
    let mut out = Vec::new();
    let mut at = start;
    while at + 8 <= end {
        let size32 = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = data[at + 4..at + 8].try_into().unwrap();
        let size = match size32 {
            0 => end - at,
            1 => u64::from_be_bytes(data[at + 8..at + 16].try_into().unwrap()) as usize,
            n => n,
        };
        assert!(size >= 8 && at + size <= end, "bad box at offset {at}");
        out.push((at, size, kind));
        at += size;
    }
    out
}

/// The CMAF chunks of a fragmented segment: (offset, length, samples) of each `moof` +
/// `mdat`, each starting at the `sidx` before its `moof` if there is one, the first at 0
/// (with the `styp`), so that the chunks cover the file.
fn cmaf_chunks(data: &[u8]) -> Vec<(usize, usize, u32)> {
    let top = boxes_in(data, 0, data.len());
    let mut starts: Vec<(usize, u32)> = Vec::new();
    for (i, &(at, size, kind)) in top.iter().enumerate() {
        if &kind != b"moof" {
            continue;
        }
        let start = if i > 0 && &top[i - 1].2 == b"sidx" {
            top[i - 1].0
        } else {
            at
        };
        let mut samples = 0u32;
        for (traf_at, traf_size, traf_kind) in boxes_in(data, at + 8, at + size) {
            if &traf_kind != b"traf" {
                continue;
            }
            for (trun_at, _, trun_kind) in boxes_in(data, traf_at + 8, traf_at + traf_size) {
                if &trun_kind == b"trun" {
                    samples +=
                        u32::from_be_bytes(data[trun_at + 12..trun_at + 16].try_into().unwrap());
                }
            }
        }
        starts.push((start, samples));
    }
    assert!(!starts.is_empty(), "no moof");
    starts[0].0 = 0;
    (0..starts.len())
        .map(|k| {
            let end = starts.get(k + 1).map_or(data.len(), |s| s.0);
            (starts[k].0, end - starts[k].0, starts[k].1)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// DASH helpers
// ---------------------------------------------------------------------------------------

/// `mediaPresentationDuration` (or another xs:duration attribute) of an MPD, in seconds.
fn mpd_duration(mpd: &str, attribute: &str) -> f64 {
    let key = format!("{attribute}=\"");
    let start = mpd
        .find(&key)
        .unwrap_or_else(|| panic!("no {attribute} in MPD"))
        + key.len();
    let value = &mpd[start..start + mpd[start..].find('"').unwrap()];
    let mut rest = value
        .strip_prefix("PT")
        .unwrap_or_else(|| panic!("unsupported duration {value}"));
    let mut secs = 0.0;
    for (unit, factor) in [('H', 3600.0), ('M', 60.0), ('S', 1.0)] {
        if let Some(i) = rest.find(unit) {
            let n: f64 = rest[..i]
                .parse()
                .unwrap_or_else(|_| panic!("bad duration {value}"));
            secs += n * factor;
            rest = &rest[i + 1..];
        }
    }
    secs
}

/// `text` with the value of the first `attribute="..."` replaced by `value`.
fn set_attribute(text: &str, attribute: &str, value: &str) -> String {
    let key = format!("{attribute}=\"");
    let start = text
        .find(&key)
        .unwrap_or_else(|| panic!("no {attribute} in {text}"))
        + key.len();
    let end = start + text[start..].find('"').expect("closing quote");
    format!("{}{value}{}", &text[..start], &text[end..])
}

/// ffmpeg's `$Number$` naming: init + the first `count` segments of stream `index`.
fn dash_number_parts(dir: &Path, index: u32, count: u64) -> Vec<Vec<u8>> {
    let mut parts = vec![read(&dir.join(format!("init-stream{index}.m4s")))];
    for n in 1..=count {
        parts.push(read(&dir.join(format!("chunk-stream{index}-{n:05}.m4s"))));
    }
    parts
}

/// Segments a `$Number$` template with @duration = [`SEGMENT`] addresses in `secs`.
fn number_segments(secs: f64) -> u64 {
    (secs / SEGMENT.as_secs_f64() - 1e-6).ceil() as u64
}

// ---------------------------------------------------------------------------------------
// a. ffmpeg HLS fMP4, independent segments, program date time
// ---------------------------------------------------------------------------------------

/// 16 s muxed A/V VOD, fMP4 (`-hls_segment_type fmp4`) with
/// `-hls_flags independent_segments+program_date_time`. ffmpeg writes each
/// EXT-X-PROGRAM-DATE-TIME after its EXTINF, with a `+0000` offset (not RFC 3339).
pub fn ffmpeg_hls_fmp4_pdt(dir: &Path) -> Packaged {
    mkdir(dir);
    let mut c = ffmpeg(dir);
    lavfi(&mut c, "testsrc", "320x240", Some(440));
    c.args(["-t", "16"]);
    x264(&mut c);
    aac(&mut c);
    c.args([
        "-f",
        "hls",
        "-hls_segment_type",
        "fmp4",
        "-hls_time",
        "2",
        "-hls_playlist_type",
        "vod",
        "-hls_flags",
        "independent_segments+program_date_time",
        "-hls_segment_filename",
        "seg_%03d.m4s",
        "-hls_fmp4_init_filename",
        "init.mp4",
        "playlist.m3u8",
    ]);
    run_ok(&mut c, "ffmpeg hls fmp4 program_date_time");
    let playlist = dir.join("playlist.m3u8");
    let text = read_string(&playlist);
    assert!(
        text.contains("#EXT-X-INDEPENDENT-SEGMENTS")
            && text.contains("#EXT-X-PROGRAM-DATE-TIME:")
            && text.contains("#EXT-X-MAP:"),
        "unexpected playlist:\n{text}"
    );
    let e = expected_media(&playlist);
    assert_eq!(e.segments.len(), 8, "{text}");
    Packaged {
        dir: dir.to_path_buf(),
        entry: playlist,
        video_frames: probe_video_frames(&e.all()),
        has_audio: true,
        cues: None,
        segment: SEGMENT,
        duration: Duration::from_secs(16),
        pads: vec![PadBytes::from_media("video_00", &e)],
        must_not_fetch: vec![],
    }
}

// ---------------------------------------------------------------------------------------
// b. ffmpeg HLS: WebVTT subtitles beside a muxed MPEG-TS variant
// ---------------------------------------------------------------------------------------

/// Cues written into the subtitle source: one per 2 s segment.
pub const WEBVTT_CUES: u64 = 8;

fn srt_time(ms: u64) -> String {
    format!(
        "{:02}:{:02}:{:02},{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// 16 s: a muxed H.264 + AAC MPEG-TS variant (`v0/index.m3u8`) and a WebVTT subtitle
/// rendition (`v0/index_vtt.m3u8`, one `.vtt` per segment), from
/// `-var_stream_map "v:0,a:0,s:0,sgroup:subs"`, with one cue per segment
/// (`Cue N`, from N×2+0.25 s to N×2+1.75 s).
///
/// ffmpeg 5.1 writes `#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="subtitle_0",
/// DEFAULT=YES,URI=...` without AUTOSELECT or LANGUAGE: the master is fixed up to
/// `DEFAULT=YES,AUTOSELECT=YES,LANGUAGE="en"`. Its `.vtt` segments have no
/// X-TIMESTAMP-MAP and end right after the cue text, without a blank line; GStreamer's
/// subparse (behind hlsdemux2) then drops every cue but the last. With `terminate_cues`
/// a newline is appended to each `.vtt` so that every cue block ends with a blank line.
pub fn ffmpeg_hls_ts_webvtt(dir: &Path, terminate_cues: bool) -> Packaged {
    mkdir(dir);
    let mut srt = String::new();
    for i in 0..WEBVTT_CUES {
        let start = i * 2000 + 250;
        let _ = write!(
            srt,
            "{}\n{} --> {}\nCue {}\n\n",
            i + 1,
            srt_time(start),
            srt_time(start + 1500),
            i + 1
        );
    }
    write(&dir.join("subs.srt"), srt);
    let mut c = ffmpeg(dir);
    lavfi(&mut c, "testsrc", "320x240", Some(440));
    c.args(["-i", "subs.srt", "-t", "16"]);
    c.args(["-map", "0:v", "-map", "1:a", "-map", "2:s"]);
    x264(&mut c);
    aac(&mut c);
    c.args([
        "-c:s",
        "webvtt",
        "-f",
        "hls",
        "-hls_time",
        "2",
        "-hls_playlist_type",
        "vod",
        "-var_stream_map",
        "v:0,a:0,s:0,sgroup:subs",
        "-master_pl_name",
        "master.m3u8",
        "-hls_segment_filename",
        "v%v/seg_%03d.ts",
        "v%v/index.m3u8",
    ]);
    run_ok(&mut c, "ffmpeg hls ts + webvtt");

    // Fix up the master so that a player selects the subtitles.
    let master = dir.join("master.m3u8");
    let text = read_string(&master);
    let mut fixed = String::new();
    let mut subtitles = 0;
    for line in text.lines() {
        if line.starts_with("#EXT-X-MEDIA:") && line.contains("TYPE=SUBTITLES") {
            assert!(line.contains("DEFAULT=YES,"), "{text}");
            subtitles += 1;
            let mut added = String::new();
            if !line.contains("AUTOSELECT=") {
                added.push_str("AUTOSELECT=YES,");
            }
            if !line.contains("LANGUAGE=") {
                added.push_str("LANGUAGE=\"en\",");
            }
            fixed.push_str(&line.replacen("DEFAULT=YES,", &format!("DEFAULT=YES,{added}"), 1));
        } else {
            fixed.push_str(line);
        }
        fixed.push('\n');
    }
    assert_eq!(subtitles, 1, "no subtitle rendition in the master:\n{text}");
    write(&master, &fixed);

    let m = master_playlist(&master);
    assert_eq!(m.variants.len(), 1, "{fixed}");
    let alt = m
        .alternatives
        .iter()
        .find(|a| a.media_type == m3u8_rs::AlternativeMediaType::Subtitles)
        .expect("EXT-X-MEDIA TYPE=SUBTITLES");
    assert!(alt.default && alt.autoselect, "{fixed}");
    assert_eq!(
        m.variants[0].subtitles.as_deref(),
        Some(alt.group_id.as_str())
    );
    let variant = dir.join(&m.variants[0].uri);
    let vtt_playlist = dir.join(alt.uri.as_deref().expect("subtitle URI"));

    if terminate_cues {
        for seg in media_playlist(&vtt_playlist).segments {
            let path = vtt_playlist.parent().unwrap().join(&seg.uri);
            let mut data = read(&path);
            if !data.ends_with(b"\n\n") {
                data.push(b'\n');
                write(&path, data);
            }
        }
    }
    let video = expected_media(&variant);
    let subs = expected_media(&vtt_playlist);
    assert_eq!(video.segments.len(), 8);
    assert_eq!(subs.segments.len(), 8, "subtitle segments");
    let mut cues = 0u64;
    for (i, seg) in subs.segments.iter().enumerate() {
        let n = String::from_utf8_lossy(seg).matches("-->").count() as u64;
        assert!(n >= 1, "subtitle segment {i} has no cue");
        cues += n;
    }
    assert_eq!(cues, WEBVTT_CUES, "cues in the .vtt segments");
    Packaged {
        dir: dir.to_path_buf(),
        entry: master,
        video_frames: probe_video_frames(&video.all()),
        has_audio: true,
        cues: Some(cues),
        segment: SEGMENT,
        duration: Duration::from_secs(16),
        pads: vec![
            PadBytes::from_media("video_00", &video),
            PadBytes::from_media("subtitle_00", &subs),
        ],
        must_not_fetch: vec![],
    }
}

// ---------------------------------------------------------------------------------------
// c. ffmpeg HLS: two audio languages
// ---------------------------------------------------------------------------------------

/// 16 s: a video-only TS variant (`v0/`) and two AAC renditions of one group, `eng`
/// (440 Hz, DEFAULT=YES, `vEnglish/`) and `fra` (880 Hz, `vFrancais/`). (ffmpeg 5.1 uses
/// `name:` for the directory, and writes NAME="audio_1"/"audio_2".)
pub fn ffmpeg_hls_two_audio_renditions(dir: &Path) -> Packaged {
    mkdir(dir);
    let mut c = ffmpeg(dir);
    lavfi(&mut c, "testsrc", "320x240", Some(440));
    c.args(["-f", "lavfi", "-i", "sine=frequency=880:sample_rate=48000"]);
    c.args(["-t", "16", "-map", "0:v", "-map", "1:a", "-map", "2:a"]);
    x264(&mut c);
    c.args(["-b:v", "300k"]);
    aac(&mut c);
    c.args([
        "-f",
        "hls",
        "-hls_time",
        "2",
        "-hls_playlist_type",
        "vod",
        "-var_stream_map",
        "v:0,agroup:aud a:0,agroup:aud,language:eng,name:English,default:yes \
         a:1,agroup:aud,language:fra,name:Francais",
        "-master_pl_name",
        "master.m3u8",
        "-hls_segment_filename",
        "v%v/seg_%03d.ts",
        "v%v/index.m3u8",
    ]);
    run_ok(&mut c, "ffmpeg hls two audio renditions");
    let master = dir.join("master.m3u8");
    let m = master_playlist(&master);
    let audio: Vec<&m3u8_rs::AlternativeMedia> = m
        .alternatives
        .iter()
        .filter(|a| a.media_type == m3u8_rs::AlternativeMediaType::Audio)
        .collect();
    assert_eq!(audio.len(), 2, "{:?}", m.alternatives);
    let eng = audio
        .iter()
        .find(|a| a.language.as_deref() == Some("eng"))
        .expect("eng rendition");
    assert!(eng.default);
    let video = expected_media(&dir.join(&m.variants[0].uri));
    let english = expected_media(&dir.join(eng.uri.as_deref().expect("URI")));
    Packaged {
        dir: dir.to_path_buf(),
        entry: master,
        video_frames: probe_video_frames(&video.all()),
        has_audio: true,
        cues: None,
        segment: SEGMENT,
        duration: Duration::from_secs(16),
        pads: vec![
            PadBytes::from_media("video_00", &video),
            PadBytes::from_media("audio_00", &english),
        ],
        must_not_fetch: vec![],
    }
}

// ---------------------------------------------------------------------------------------
// d. ffmpeg DASH -single_file 1: SegmentBase + sidx
// ---------------------------------------------------------------------------------------

/// 16 s, one video and one audio AdaptationSet, each Representation one file
/// (`manifest-stream{0,1}.mp4`) with a global sidx (`-single_file 1 -global_sidx 1`).
/// ffmpeg 5.1 always describes `-single_file` output with a SegmentList of byte ranges,
/// so `segment_base.mpd` replaces each SegmentList with
/// `<SegmentBase indexRange="sidx" indexRangeExact="true">` and, with `initialization`,
/// `<Initialization range="0-(sidx-1)"/>` (without it the init is implied: the bytes
/// before the index). A pad carries the init then the fragments after the sidx (as in
/// `dash_common::Mode::SegmentBase`).
pub fn ffmpeg_dash_segment_base(dir: &Path, initialization: bool) -> Packaged {
    mkdir(dir);
    let mut c = ffmpeg(dir);
    lavfi(&mut c, "testsrc", "320x240", Some(440));
    c.args(["-t", "16", "-map", "0:v", "-map", "1:a"]);
    x264(&mut c);
    aac(&mut c);
    c.args([
        "-f",
        "dash",
        "-seg_duration",
        "2",
        "-adaptation_sets",
        "id=0,streams=v id=1,streams=a",
        "-single_file",
        "1",
        "-global_sidx",
        "1",
        "manifest.mpd",
    ]);
    run_ok(&mut c, "ffmpeg dash single_file global_sidx");
    let mut text = read_string(&dir.join("manifest.mpd"));
    let mut pads = Vec::new();
    let mut video_frames = 0;
    for (stream, pad) in [(0u32, "video_00"), (1, "audio_00")] {
        let name = format!("manifest-stream{stream}.mp4");
        let data = read(&dir.join(&name));
        let (sidx_at, sidx_size, _) = boxes_in(&data, 0, data.len())
            .into_iter()
            .find(|(_, _, k)| k == b"sidx")
            .unwrap_or_else(|| panic!("no global sidx in {name}"));
        let sidx_end = sidx_at + sidx_size;
        let base_url = format!("<BaseURL>{name}</BaseURL>");
        let at = text.find(&base_url).expect("BaseURL") + base_url.len();
        let list_start = at + text[at..].find("<SegmentList").expect("SegmentList");
        let list_end = list_start
            + text[list_start..]
                .find("</SegmentList>")
                .expect("</SegmentList>")
            + "</SegmentList>".len();
        let init = if initialization {
            format!("<Initialization range=\"0-{}\" />", sidx_at - 1)
        } else {
            String::new()
        };
        text.replace_range(
            list_start..list_end,
            &format!(
                "<SegmentBase indexRange=\"{sidx_at}-{}\" indexRangeExact=\"true\">{init}</SegmentBase>",
                sidx_end - 1
            ),
        );
        if stream == 0 {
            video_frames = probe_video_frames(&data);
        }
        pads.push(PadBytes {
            pad: pad.to_string(),
            parts: vec![data[..sidx_at].to_vec(), data[sidx_end..].to_vec()],
        });
    }
    assert!(!text.contains("SegmentList"), "{text}");
    let mpd = dir.join("segment_base.mpd");
    write(&mpd, &text);
    Packaged {
        dir: dir.to_path_buf(),
        entry: mpd,
        video_frames,
        has_audio: true,
        cues: None,
        segment: SEGMENT,
        duration: Duration::from_secs(16),
        pads,
        must_not_fetch: vec![],
    }
}

// ---------------------------------------------------------------------------------------
// f. Two Periods
// ---------------------------------------------------------------------------------------

/// Two ffmpeg DASH VODs of 12 s each (`-use_template 1 -use_timeline 0`, `$Number$`,
/// timestamps of each starting at 0) in `p1/` (testsrc 320x240, 440 Hz) and `p2/`
/// (testsrc2 352x288, 880 Hz: a different video init), joined into `two_periods.mpd`:
/// `<Period id="p1" start="PT0S" duration="PT12S">` and
/// `<Period id="p2" start="PT12S" duration="PT12S">`, each with `<BaseURL>pN/</BaseURL>`.
/// A pad carries period 1's init and 6 segments, then period 2's (each Period addresses 6
/// segments; ffmpeg's 7th audio file, one AAC frame past 12 s, is not addressed).
pub fn ffmpeg_dash_two_periods(dir: &Path) -> Packaged {
    mkdir(dir);
    let mut periods = Vec::new();
    let mut header = String::new();
    let mut video_frames = 0;
    let mut video_parts = Vec::new();
    let mut audio_parts = Vec::new();
    for (n, pattern, size, hz) in [
        (1u32, "testsrc", "320x240", 440u32),
        (2, "testsrc2", "352x288", 880),
    ] {
        let pdir = dir.join(format!("p{n}"));
        mkdir(&pdir);
        let mut c = ffmpeg(&pdir);
        lavfi(&mut c, pattern, size, Some(hz));
        c.args(["-t", "12", "-map", "0:v", "-map", "1:a"]);
        x264(&mut c);
        aac(&mut c);
        c.args([
            "-f",
            "dash",
            "-seg_duration",
            "2",
            "-adaptation_sets",
            "id=0,streams=v id=1,streams=a",
            "-use_template",
            "1",
            "-use_timeline",
            "0",
            "manifest.mpd",
        ]);
        run_ok(&mut c, &format!("ffmpeg dash period {n}"));
        let text = read_string(&pdir.join("manifest.mpd"));
        let secs = mpd_duration(&text, "mediaPresentationDuration");
        assert!((secs - 12.0).abs() < 1e-3, "period {n} lasts {secs} s");
        let count = number_segments(12.0);
        let open = text.find("<Period").expect("<Period");
        let open_end = open + text[open..].find('>').expect(">") + 1;
        let close = text.find("</Period>").expect("</Period>") + "</Period>".len();
        if n == 1 {
            header = set_attribute(&text[..open], "mediaPresentationDuration", "PT24S");
        }
        periods.push(format!(
            "<Period id=\"p{n}\" start=\"PT{}S\" duration=\"PT12S\">\n\t\t<BaseURL>p{n}/</BaseURL>{}",
            (n - 1) * 12,
            &text[open_end..close]
        ));
        let video = dash_number_parts(&pdir, 0, count);
        video_frames += probe_video_frames(&video.concat());
        video_parts.extend(video);
        audio_parts.extend(dash_number_parts(&pdir, 1, count));
    }
    assert!(
        header.contains("mediaPresentationDuration=\"PT24S\""),
        "{header}"
    );
    let mpd = dir.join("two_periods.mpd");
    write(
        &mpd,
        format!("{header}{}\n\t{}\n</MPD>\n", periods[0], periods[1]),
    );
    Packaged {
        dir: dir.to_path_buf(),
        entry: mpd,
        video_frames,
        has_audio: true,
        cues: None,
        segment: SEGMENT,
        duration: Duration::from_secs(24),
        pads: vec![
            PadBytes {
                pad: "video_00".into(),
                parts: video_parts,
            },
            PadBytes {
                pad: "audio_00".into(),
                parts: audio_parts,
            },
        ],
        must_not_fetch: vec![],
    }
}

// ---------------------------------------------------------------------------------------
// g. HLS discontinuities
// ---------------------------------------------------------------------------------------

/// How the two 12 s parts of [`ffmpeg_hls_discontinuity`] are joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discontinuity {
    /// fMP4; part 2 (testsrc2 352x288, 880 Hz) has its own init: `#EXT-X-DISCONTINUITY`
    /// then `#EXT-X-MAP:URI="b_init.mp4"`.
    Fmp4NewMap,
    /// fMP4; part 2 (testsrc2 320x240, 880 Hz) made with the same encoder settings, whose
    /// init ffmpeg writes byte-identical: `#EXT-X-DISCONTINUITY` and no new EXT-X-MAP.
    Fmp4SameMap,
    /// MPEG-TS; part 2 testsrc2 352x288, 880 Hz.
    Ts,
}

/// One 12 s ffmpeg HLS VOD `name.m3u8` with segments `name_NNN.{m4s,ts}` and, for fMP4,
/// init `name_init.mp4`; returns its expected output.
fn hls_part(
    dir: &Path,
    name: &str,
    pattern: &str,
    size: &str,
    hz: u32,
    fmp4: bool,
) -> ExpectedMedia {
    let mut c = ffmpeg(dir);
    lavfi(&mut c, pattern, size, Some(hz));
    c.args(["-t", "12"]);
    x264(&mut c);
    aac(&mut c);
    c.args(["-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod"]);
    if fmp4 {
        c.args(["-hls_segment_type", "fmp4", "-hls_segment_filename"])
            .arg(format!("{name}_%03d.m4s"))
            .arg("-hls_fmp4_init_filename")
            .arg(format!("{name}_init.mp4"));
    } else {
        c.arg("-hls_segment_filename")
            .arg(format!("{name}_%03d.ts"));
    }
    c.arg(format!("{name}.m3u8"));
    run_ok(&mut c, &format!("ffmpeg hls part {name}"));
    expected_media(&dir.join(format!("{name}.m3u8")))
}

fn extinf_lines(e: &ExpectedMedia) -> String {
    e.uris
        .iter()
        .zip(&e.durations)
        .map(|(uri, d)| format!("#EXTINF:{d:.6},\n{uri}\n"))
        .collect()
}

/// Two 12 s ffmpeg HLS VODs (each with timestamps from the same start) joined into one
/// media playlist `joined.m3u8` with an EXT-X-DISCONTINUITY between them.
pub fn ffmpeg_hls_discontinuity(dir: &Path, kind: Discontinuity) -> Packaged {
    mkdir(dir);
    let fmp4 = kind != Discontinuity::Ts;
    let first = hls_part(dir, "a", "testsrc", "320x240", 440, fmp4);
    let second_size = if kind == Discontinuity::Fmp4SameMap {
        "320x240"
    } else {
        "352x288"
    };
    let second = hls_part(dir, "b", "testsrc2", second_size, 880, fmp4);
    let mut text = format!(
        "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-PLAYLIST-TYPE:VOD\n",
        if fmp4 { 7 } else { 3 }
    );
    if fmp4 {
        text.push_str("#EXT-X-MAP:URI=\"a_init.mp4\"\n");
    }
    text.push_str(&extinf_lines(&first));
    text.push_str("#EXT-X-DISCONTINUITY\n");
    match kind {
        Discontinuity::Fmp4NewMap => {
            assert!(first.init != second.init, "the two inits must differ");
            text.push_str("#EXT-X-MAP:URI=\"b_init.mp4\"\n");
        }
        Discontinuity::Fmp4SameMap => assert!(
            first.init == second.init,
            "ffmpeg wrote different init bytes for the same settings: one EXT-X-MAP cannot serve both parts"
        ),
        Discontinuity::Ts => {}
    }
    text.push_str(&extinf_lines(&second));
    text.push_str("#EXT-X-ENDLIST\n");
    let playlist = dir.join("joined.m3u8");
    write(&playlist, &text);
    let e = expected_media(&playlist);
    assert_eq!(
        e.segments.len(),
        first.segments.len() + second.segments.len()
    );
    Packaged {
        dir: dir.to_path_buf(),
        entry: playlist,
        video_frames: probe_video_frames(&first.all()) + probe_video_frames(&second.all()),
        has_audio: true,
        cues: None,
        segment: SEGMENT,
        duration: Duration::from_secs(24),
        pads: vec![PadBytes::from_media("video_00", &e)],
        must_not_fetch: vec![],
    }
}

// ---------------------------------------------------------------------------------------
// h. H.264 + H.265 masters
// ---------------------------------------------------------------------------------------

/// Which master [`ffmpeg_hls_avc_hevc`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecOrder {
    /// H.264 first at BANDWIDTH=300000, H.265 second at 900000.
    AvcFirst,
    /// H.265 first at BANDWIDTH=300000, H.264 second at 900000.
    HevcFirst,
    /// H.264 first (300000), H.265 second (900000), no CODECS attribute on either.
    NoCodecs,
}

/// A master with an H.264 and an H.265 variant of the same content.
#[derive(Clone, Debug)]
pub struct CodecMaster {
    /// `pads` is empty: which variant(s) a pad carries depends on the player's policy.
    pub stream: Packaged,
    /// What `video_00` carries if the whole H.264 / H.265 variant is played.
    pub avc: PadBytes,
    pub hevc: PadBytes,
    /// CODECS ffmpeg wrote for each variant (e.g. `avc1.42c00d,mp4a.40.2` and
    /// `hvc1.1.4.L60.B01,mp4a.40.2`).
    pub avc_codecs: String,
    pub hevc_codecs: String,
}

/// 12 s, muxed A/V MPEG-TS variants `v0/` (libx264, 300 kbit/s) and `v1/` (libx265,
/// 200 kbit/s, IDR every 50 frames, no B-frames, `-tag:v:1 hvc1`), one ffmpeg run with
/// `-var_stream_map "v:0,a:0 v:1,a:1"`; then the master for `order`, with bandwidths that
/// make an ABR with a fast connection want the second variant, of the other codec.
/// (Without `-tag:v:1 hvc1` ffmpeg writes no CODECS at all for HEVC in TS.)
pub fn ffmpeg_hls_avc_hevc(dir: &Path, order: CodecOrder) -> CodecMaster {
    mkdir(dir);
    let mut c = ffmpeg(dir);
    lavfi(&mut c, "testsrc", "320x240", Some(440));
    c.args([
        "-t", "12", "-map", "0:v", "-map", "1:a", "-map", "0:v", "-map", "1:a",
    ]);
    x264(&mut c);
    c.args([
        "-b:v:0",
        "300k",
        "-c:v:1",
        "libx265",
        "-tag:v:1",
        "hvc1",
        "-x265-params",
        "keyint=50:min-keyint=50:scenecut=0:bframes=0:open-gop=0:pools=1:frame-threads=1:log-level=error",
        "-b:v:1",
        "200k",
    ]);
    aac(&mut c);
    c.args([
        "-f",
        "hls",
        "-hls_time",
        "2",
        "-hls_playlist_type",
        "vod",
        "-var_stream_map",
        "v:0,a:0 v:1,a:1",
        "-master_pl_name",
        "ffmpeg_master.m3u8",
        "-hls_segment_filename",
        "v%v/seg_%03d.ts",
        "v%v/index.m3u8",
    ]);
    run_ok(&mut c, "ffmpeg hls h264 + h265");
    let m = master_playlist(&dir.join("ffmpeg_master.m3u8"));
    assert_eq!(m.variants.len(), 2);
    let codecs = |i: usize| {
        m.variants[i]
            .codecs
            .clone()
            .unwrap_or_else(|| panic!("ffmpeg wrote no CODECS for variant {i}"))
    };
    let (avc_codecs, hevc_codecs) = (codecs(0), codecs(1));
    assert!(avc_codecs.starts_with("avc1."), "{avc_codecs}");
    assert!(hevc_codecs.starts_with("hvc1."), "{hevc_codecs}");
    let avc = expected_media(&dir.join("v0/index.m3u8"));
    let hevc = expected_media(&dir.join("v1/index.m3u8"));
    let frames = probe_video_frames(&avc.all());
    assert_eq!(
        frames,
        probe_video_frames(&hevc.all()),
        "H.264 vs H.265 frames"
    );
    let inf = |bandwidth: u32, codecs: Option<&str>, uri: &str| {
        let codecs = codecs
            .map(|c| format!(",CODECS=\"{c}\""))
            .unwrap_or_default();
        format!("#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},RESOLUTION=320x240{codecs}\n{uri}\n")
    };
    let (name, body) = match order {
        CodecOrder::AvcFirst => (
            "avc_first.m3u8",
            inf(300_000, Some(avc_codecs.as_str()), "v0/index.m3u8")
                + &inf(900_000, Some(hevc_codecs.as_str()), "v1/index.m3u8"),
        ),
        CodecOrder::HevcFirst => (
            "hevc_first.m3u8",
            inf(300_000, Some(hevc_codecs.as_str()), "v1/index.m3u8")
                + &inf(900_000, Some(avc_codecs.as_str()), "v0/index.m3u8"),
        ),
        CodecOrder::NoCodecs => (
            "no_codecs.m3u8",
            inf(300_000, None, "v0/index.m3u8") + &inf(900_000, None, "v1/index.m3u8"),
        ),
    };
    let master = dir.join(name);
    write(&master, format!("#EXTM3U\n#EXT-X-VERSION:3\n{body}"));
    CodecMaster {
        stream: Packaged {
            dir: dir.to_path_buf(),
            entry: master,
            video_frames: frames,
            has_audio: true,
            cues: None,
            segment: SEGMENT,
            duration: Duration::from_secs(12),
            pads: vec![],
            must_not_fetch: vec![],
        },
        avc: PadBytes::from_media("video_00", &avc),
        hevc: PadBytes::from_media("video_00", &hevc),
        avc_codecs,
        hevc_codecs,
    }
}

// ---------------------------------------------------------------------------------------
// i. GStreamer's legacy hlssink
// ---------------------------------------------------------------------------------------

/// 16 s muxed A/V MPEG-TS packaged by GStreamer's legacy `hlssink` (after `mpegtsmux`;
/// the suite's other GStreamer packagers are hlssink2 and dashsink). Its playlist has
/// integer EXTINF (`#EXTINF:2,`), a last one of `1.9600000381469727`, a blank line after
/// the header, no EXT-X-PLAYLIST-TYPE, and no newline after `#EXT-X-ENDLIST`.
/// (dashsink's `muxer=mp4` is unusable in 1.22: it writes one non-fragmented MP4, without
/// init, then hangs.)
pub fn gst_hlssink_ts(dir: &Path) -> Packaged {
    mkdir(dir);
    let playlist = dir.join("playlist.m3u8");
    let desc = format!(
        "videotestsrc num-buffers=400 ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! x264enc key-int-max=50 bframes=0 speed-preset=ultrafast tune=zerolatency threads=1 \
         ! h264parse ! queue ! mpegtsmux name=mux \
         ! hlssink location={}/seg%05d.ts playlist-location={} target-duration=2 max-files=0 playlist-length=0 \
         audiotestsrc num-buffers=750 samplesperbuffer=1024 ! audio/x-raw,rate=48000,channels=1 \
         ! avenc_aac ! aacparse ! queue ! mux.",
        dir.display(),
        playlist.display()
    );
    let mut failure = String::new();
    for _ in 0..3 {
        let _ = std::fs::remove_file(&playlist);
        let mut cmd = Command::new("gst-launch-1.0");
        cmd.arg("-q").args(desc.split_whitespace());
        match try_capture(&mut cmd, "gst-launch-1.0 hlssink", Duration::from_secs(60)) {
            Ok(_)
                if std::fs::read_to_string(&playlist)
                    .unwrap_or_default()
                    .contains("#EXT-X-ENDLIST") =>
            {
                failure.clear();
                break;
            }
            Ok(_) => {
                failure = format!(
                    "no ENDLIST in {}:\n{}",
                    playlist.display(),
                    std::fs::read_to_string(&playlist).unwrap_or_default()
                )
            }
            Err(e) => failure = e,
        }
    }
    assert!(failure.is_empty(), "{failure}");
    let e = expected_media(&playlist);
    assert_eq!(e.segments.len(), 8, "{}", read_string(&playlist));
    Packaged {
        dir: dir.to_path_buf(),
        entry: playlist,
        video_frames: probe_video_frames(&e.all()),
        has_audio: true,
        cues: None,
        segment: SEGMENT,
        duration: Duration::from_secs(16),
        pads: vec![PadBytes::from_media("video_00", &e)],
        must_not_fetch: vec![],
    }
}

// ---------------------------------------------------------------------------------------
// j. LL-HLS and LL-DASH manifests over CMAF fragments
// ---------------------------------------------------------------------------------------

/// ffmpeg's dash muxer with its HLS output, VOD, 16 s: `manifest.mpd`, `master.m3u8`,
/// `media_0.m3u8` (video), `media_1.m3u8` (audio), segments of 5 CMAF chunks of 0.4 s
/// (`-frag_type duration -frag_duration 0.4`).
fn ffmpeg_cmaf(dir: &Path) {
    mkdir(dir);
    let mut c = ffmpeg(dir);
    lavfi(&mut c, "testsrc", "320x240", Some(440));
    c.args(["-t", "16", "-map", "0:v", "-map", "1:a"]);
    x264(&mut c);
    aac(&mut c);
    c.args([
        "-f",
        "dash",
        "-seg_duration",
        "2",
        "-frag_type",
        "duration",
        "-frag_duration",
        "0.4",
        "-use_template",
        "1",
        "-use_timeline",
        "0",
        "-hls_playlist",
        "1",
        "-adaptation_sets",
        "id=0,streams=v id=1,streams=a",
        "manifest.mpd",
    ]);
    run_ok(&mut c, "ffmpeg dash + hls playlists, CMAF chunks");
}

/// `prefix00008.ext` → `prefix00009.ext`.
fn next_numbered(uri: &str) -> String {
    let (stem, ext) = uri.rsplit_once('.').expect("extension");
    let digits = stem
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .count();
    assert!(digits > 0, "not numbered: {uri}");
    let (prefix, number) = stem.split_at(stem.len() - digits);
    let n: u64 = number.parse().expect("number");
    format!("{prefix}{:0width$}.{ext}", n + 1, width = digits)
}

/// Writes `dst`: the media playlist `src` as LL-HLS: EXT-X-SERVER-CONTROL
/// (CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0,HOLD-BACK=6), EXT-X-PART-INF:PART-TARGET=0.5,
/// before each EXTINF one EXT-X-PART per CMAF chunk (BYTERANGE into the segment file;
/// INDEPENDENT=YES on the first, which starts with the IDR frame), and an
/// EXT-X-PRELOAD-HINT for the next (nonexistent) segment before EXT-X-ENDLIST.
/// EXT-X-PROGRAM-DATE-TIME lines are dropped. Returns the hinted URI.
fn write_ll_hls(src: &Path, dst: &Path, sample_secs: f64) -> String {
    let text = read_string(src);
    let base = src.parent().unwrap();
    let mut out = String::new();
    let mut extinf: Option<String> = None;
    let mut last_uri: Option<String> = None;
    let mut hint = None;
    for line in text.lines() {
        let l = line.trim_end();
        if l.starts_with("#EXT-X-VERSION:") {
            out.push_str("#EXT-X-VERSION:9\n");
        } else if l.starts_with("#EXT-X-TARGETDURATION:") {
            out.push_str(l);
            out.push_str(
                "\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0,HOLD-BACK=6\n\
                 #EXT-X-PART-INF:PART-TARGET=0.5\n",
            );
        } else if l.starts_with("#EXTINF:") {
            extinf = Some(l.to_string());
        } else if l.starts_with("#EXT-X-PROGRAM-DATE-TIME:") {
        } else if l == "#EXT-X-ENDLIST" {
            let next = next_numbered(last_uri.as_deref().expect("a segment before ENDLIST"));
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{next}\"");
            out.push_str("#EXT-X-ENDLIST\n");
            hint = Some(next);
        } else if !l.is_empty() && !l.starts_with('#') {
            let data = read(&base.join(l));
            for (k, (offset, length, samples)) in cmaf_chunks(&data).into_iter().enumerate() {
                let duration = samples as f64 * sample_secs;
                assert!(duration <= 0.5 + 1e-9, "part of {duration} s in {l}");
                let independent = if k == 0 { ",INDEPENDENT=YES" } else { "" };
                let _ = writeln!(
                    out,
                    "#EXT-X-PART:DURATION={duration:.5},URI=\"{l}\",BYTERANGE=\"{length}@{offset}\"{independent}"
                );
            }
            out.push_str(&extinf.take().unwrap_or_else(|| panic!("no EXTINF for {l}")));
            out.push('\n');
            out.push_str(l);
            out.push('\n');
            last_uri = Some(l.to_string());
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    write(dst, &out);
    hint.unwrap_or_else(|| panic!("no ENDLIST in {}", src.display()))
}

/// LL-HLS as a static VOD: `ll_master.m3u8` (ffmpeg's master pointing at `ll_0.m3u8` and
/// `ll_1.m3u8`), the media playlists of [`ffmpeg_cmaf`] rewritten by `write_ll_hls`: a
/// player must play it at standard latency from the full segments, and never fetch the
/// preload-hinted parts.
pub fn ffmpeg_ll_hls(dir: &Path) -> Packaged {
    ffmpeg_cmaf(dir);
    let video_hint = write_ll_hls(
        &dir.join("media_0.m3u8"),
        &dir.join("ll_0.m3u8"),
        1.0 / 25.0,
    );
    let audio_hint = write_ll_hls(
        &dir.join("media_1.m3u8"),
        &dir.join("ll_1.m3u8"),
        1024.0 / 48000.0,
    );
    let master_text = read_string(&dir.join("master.m3u8"));
    assert!(
        master_text.contains("media_0.m3u8") && master_text.contains("media_1.m3u8"),
        "{master_text}"
    );
    let master = dir.join("ll_master.m3u8");
    write(
        &master,
        master_text
            .replace("media_0.m3u8", "ll_0.m3u8")
            .replace("media_1.m3u8", "ll_1.m3u8"),
    );
    let video = expected_media(&dir.join("ll_0.m3u8"));
    let audio = expected_media(&dir.join("ll_1.m3u8"));
    // The LL tags must not change what the segments are.
    assert_eq!(video.all(), expected_media(&dir.join("media_0.m3u8")).all());
    assert_eq!(audio.all(), expected_media(&dir.join("media_1.m3u8")).all());
    Packaged {
        dir: dir.to_path_buf(),
        entry: master,
        video_frames: probe_video_frames(&video.all()),
        has_audio: true,
        cues: None,
        segment: SEGMENT,
        duration: Duration::from_secs(16),
        pads: vec![
            PadBytes::from_media("video_00", &video),
            PadBytes::from_media("audio_00", &audio),
        ],
        must_not_fetch: vec![dir.join(video_hint), dir.join(audio_hint)],
    }
}

/// The MPD of [`ffmpeg_cmaf`] as a static LL-DASH MPD `ll.mpd`: every SegmentTemplate
/// gets `availabilityTimeOffset="1.6" availabilityTimeComplete="false"`, and the
/// ServiceDescription a `<Latency target="3000" min="2000" max="6000"/>`.
pub fn ffmpeg_ll_dash_static(dir: &Path) -> Packaged {
    ffmpeg_cmaf(dir);
    let text = read_string(&dir.join("manifest.mpd"));
    assert!(text.contains("type=\"static\""), "{text}");
    let secs = mpd_duration(&text, "mediaPresentationDuration");
    let ll = text
        .replace(
            "<SegmentTemplate ",
            "<SegmentTemplate availabilityTimeOffset=\"1.6\" availabilityTimeComplete=\"false\" ",
        )
        .replacen(
            "<ServiceDescription id=\"0\">",
            "<ServiceDescription id=\"0\">\n\t\t<Latency target=\"3000\" min=\"2000\" max=\"6000\" referenceId=\"0\"/>",
            1,
        );
    assert_eq!(ll.matches("availabilityTimeOffset").count(), 2, "{ll}");
    let mpd = dir.join("ll.mpd");
    write(&mpd, &ll);
    let count = number_segments(secs);
    let video = dash_number_parts(dir, 0, count);
    Packaged {
        dir: dir.to_path_buf(),
        entry: mpd,
        video_frames: probe_video_frames(&video.concat()),
        has_audio: true,
        cues: None,
        segment: SEGMENT,
        duration: Duration::from_secs_f64(secs),
        pads: vec![
            PadBytes {
                pad: "video_00".into(),
                parts: video,
            },
            PadBytes {
                pad: "audio_00".into(),
                parts: dash_number_parts(dir, 1, count),
            },
        ],
        must_not_fetch: vec![],
    }
}

// ---------------------------------------------------------------------------------------
// e. Live DASH written in real time
// ---------------------------------------------------------------------------------------

/// How [`LiveDash`] runs ffmpeg's dash muxer.
#[derive(Clone, Copy, Debug)]
pub struct LiveDashOptions {
    /// `-ldash 1 -frag_type duration -frag_duration 0.5` (else each frame is a chunk).
    pub ldash: bool,
    /// `-use_timeline 1` (SegmentTimeline, minimumUpdatePeriod 2 s) rather than `0`
    /// (`$Number$` with @duration, availabilityTimeOffset, minimumUpdatePeriod 500 s).
    pub timeline: bool,
    /// Media length (`-t`).
    pub seconds: u64,
}

/// ffmpeg 5.1 writing live DASH in real time (`-re ... -f dash -streaming 1
/// -window_size 5 -extra_window_size 10 -use_template 1 -use_timeline 0|1 [-ldash 1
/// -frag_type duration -frag_duration 0.5] manifest.mpd`), 25 fps testsrc + 440 Hz AAC.
///
/// What it writes (checked with strace): init segments in place, once, before the first
/// MPD; each media segment to `<name>.tmp`, growing chunk by chunk, renamed to `<name>`
/// when complete (after the next segment's `.tmp` was opened); the MPD to
/// `manifest.mpd.tmp`, renamed over `manifest.mpd` at every segment start (atomic). The
/// first MPD has no video @bandwidth and timeShiftBufferDepth="PT0.0S": join after
/// [`LiveDash::wait_for_segment`] (2). In `$Number$` mode the dynamic MPD says
/// minimumUpdatePeriod="PT500S" (a player that obeys never sees the end); ffmpeg writes
/// availabilityTimeOffset (1.960 / 1.979 s without `-ldash`, 1.500 with it) only in
/// `$Number$` mode. At exit the MPD becomes type="static" with mediaPresentationDuration.
/// ffmpeg is killed on drop.
pub struct LiveDash {
    pub dir: PathBuf,
    pub mpd: PathBuf,
    pub options: LiveDashOptions,
    pub started: Instant,
    log: PathBuf,
    child: Arc<Mutex<Child>>,
    exited: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl LiveDash {
    /// Starts ffmpeg writing into `dir` (created); returns at once.
    pub fn start(dir: &Path, options: LiveDashOptions) -> LiveDash {
        mkdir(dir);
        let log = dir.with_extension("ffmpeg.log");
        let logf = std::fs::File::create(&log).expect("create ffmpeg log");
        let logf2 = logf.try_clone().expect("clone log");
        let mut c = ffmpeg(dir);
        c.args(["-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"]);
        c.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
        c.arg("-t").arg(options.seconds.to_string());
        c.args(["-map", "0:v", "-map", "1:a"]);
        x264(&mut c);
        aac(&mut c);
        c.args([
            "-f",
            "dash",
            "-seg_duration",
            "2",
            "-adaptation_sets",
            "id=0,streams=v id=1,streams=a",
            "-streaming",
            "1",
            "-window_size",
            "5",
            "-extra_window_size",
            "10",
            "-use_template",
            "1",
            "-use_timeline",
            if options.timeline { "1" } else { "0" },
        ]);
        if options.ldash {
            c.args([
                "-ldash",
                "1",
                "-frag_type",
                "duration",
                "-frag_duration",
                "0.5",
            ]);
        }
        c.arg("manifest.mpd");
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf))
            .stderr(Stdio::from(logf2))
            .spawn()
            .expect("spawn ffmpeg");
        let child = Arc::new(Mutex::new(child));
        let exited = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (child, exited, stop) = (child.clone(), exited.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let done = {
                        let mut c = child.lock().unwrap_or_else(|e| e.into_inner());
                        !matches!(c.try_wait(), Ok(None))
                    };
                    if done {
                        exited.store(true, Ordering::SeqCst);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        LiveDash {
            dir: dir.to_path_buf(),
            mpd: dir.join("manifest.mpd"),
            options,
            started: Instant::now(),
            log,
            child,
            exited,
            stop,
            watcher: Some(watcher),
        }
    }

    /// Set once ffmpeg has exited (for `GrowingOrigin::start`).
    pub fn exit_flag(&self) -> Arc<AtomicBool> {
        self.exited.clone()
    }

    pub fn exited(&self) -> bool {
        self.exited.load(Ordering::SeqCst)
    }

    /// ffmpeg's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn init_file(&self, stream: u32) -> PathBuf {
        self.dir.join(format!("init-stream{stream}.m4s"))
    }

    pub fn segment_file(&self, stream: u32, number: u64) -> PathBuf {
        self.dir
            .join(format!("chunk-stream{stream}-{number:05}.m4s"))
    }

    /// (stream, number) of a segment URL path or file name.
    pub fn segment_of(path: &str) -> Option<(u32, u64)> {
        let name = path.rsplit('/').next()?;
        let (stream, number) = name
            .strip_prefix("chunk-stream")?
            .strip_suffix(".m4s")?
            .split_once('-')?;
        Some((stream.parse().ok()?, number.parse().ok()?))
    }

    /// Complete segments of `stream` on disk (numbered from 1).
    pub fn complete_segments(&self, stream: u32) -> u64 {
        let mut n = 0;
        while self.segment_file(stream, n + 1).is_file() {
            n += 1;
        }
        n
    }

    /// Waits (bounded) until video segment `number` is complete.
    pub fn wait_for_segment(&self, number: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.segment_file(0, number).is_file() {
                return true;
            }
            if self.exited() {
                return self.segment_file(0, number).is_file();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits (bounded) until ffmpeg has exited; true if it did, with status 0.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !self.exited() {
            return false;
        }
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        matches!(c.try_wait(), Ok(Some(s)) if s.success())
    }

    /// Time left until ffmpeg has written all the media (it runs in real time).
    pub fn remaining(&self) -> Duration {
        Duration::from_secs(self.options.seconds).saturating_sub(self.started.elapsed())
    }
}

impl Drop for LiveDash {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        {
            let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Seeking through playbin3
// ---------------------------------------------------------------------------------------

/// What one playbin3 sink saw during [`seek_playbin3`].
#[derive(Clone, Debug, Default)]
pub struct SinkTrace {
    pub buffers: u64,
    pub flush_stops: u32,
    /// Buffers since the last FLUSH_STOP.
    pub buffers_after_flush: u64,
    /// Stream time (`segment.to_stream_time(pts)`) of the first buffer after the last
    /// FLUSH_STOP; None if there was none, or it had no PTS or no TIME segment.
    pub first_after_flush: Option<gst::ClockTime>,
    /// An EOS event arrived after the last FLUSH_STOP (or at all, without flush).
    pub eos: bool,
    /// Buffers that had arrived when the seek was sent.
    pub buffers_at_seek: Option<u64>,
    /// Stream time of the first buffer ever, for a sink whose stream starts only after the
    /// seek (a sparse text stream) and so sees no flush.
    pub first_buffer: Option<gst::ClockTime>,
    segment: Option<gst::Segment>,
}

impl SinkTrace {
    fn on_buffer(&mut self, pts: Option<gst::ClockTime>) {
        self.buffers += 1;
        if self.buffers == 1 {
            self.first_buffer = self.stream_time(pts);
        }
        if self.flush_stops == 0 {
            return;
        }
        if self.buffers_after_flush == 0 {
            self.first_after_flush = self.stream_time(pts);
        }
        self.buffers_after_flush += 1;
    }

    fn stream_time(&self, pts: Option<gst::ClockTime>) -> Option<gst::ClockTime> {
        self.segment
            .as_ref()
            .and_then(|s| s.downcast_ref::<gst::ClockTime>())
            .and_then(|s| s.to_stream_time(pts))
    }

    /// The stream time where this sink's data resumed after the seek: the first buffer
    /// after its FLUSH_STOP, or for a stream that had not started when the seek was sent,
    /// its first buffer. None when neither applies.
    pub fn resumed_at(&self) -> Option<gst::ClockTime> {
        if self.flush_stops > 0 {
            self.first_after_flush
        } else if self.buffers_at_seek == Some(0) {
            self.first_buffer
        } else {
            None
        }
    }

    /// Buffers that arrived after the seek took effect on this sink.
    pub fn buffers_after_seek(&self) -> u64 {
        if self.flush_stops > 0 {
            self.buffers_after_flush
        } else if self.buffers_at_seek == Some(0) {
            self.buffers
        } else {
            0
        }
    }
}

/// Result of [`seek_playbin3`].
#[derive(Clone, Debug)]
pub struct SeekRun {
    pub done: Done,
    /// None: the seek was never sent (error, EOS wait or timeout before).
    pub seek: Option<Result<(), String>>,
    /// Video buffers that had arrived when the seek was sent.
    pub video_buffers_at_seek: u64,
    /// `video`, `audio`, `text`.
    pub sinks: BTreeMap<String, SinkTrace>,
    pub errors: Vec<String>,
    /// Factory names of the elements playbin3 created.
    pub elements: Vec<String>,
}

impl SeekRun {
    pub fn sink(&self, name: &str) -> &SinkTrace {
        self.sinks
            .get(name)
            .unwrap_or_else(|| panic!("no sink {name}"))
    }
}

type Traces = Arc<(Mutex<BTreeMap<String, SinkTrace>>, Condvar)>;

fn lock_traces(t: &Traces) -> std::sync::MutexGuard<'_, BTreeMap<String, SinkTrace>> {
    t.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fakesink (sync=false) whose pad probe records into `traces[name]`. The probe never
/// panics.
fn traced_sink(name: &str, traces: &Traces) -> gst::Element {
    let sink = gst::ElementFactory::make("fakesink")
        .name(format!("{name}-sink"))
        .property("sync", false)
        .build()
        .expect("fakesink");
    lock_traces(traces).insert(name.to_string(), SinkTrace::default());
    let key = name.to_string();
    let traces = traces.clone();
    sink.static_pad("sink").expect("sink pad").add_probe(
        gst::PadProbeType::BUFFER
            | gst::PadProbeType::BUFFER_LIST
            | gst::PadProbeType::EVENT_DOWNSTREAM
            | gst::PadProbeType::EVENT_FLUSH,
        move |_pad, info| {
            let mut map = lock_traces(&traces);
            if let Some(t) = map.get_mut(&key) {
                match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => t.on_buffer(b.pts()),
                    Some(gst::PadProbeData::BufferList(l)) => {
                        for b in l.iter() {
                            t.on_buffer(b.pts());
                        }
                    }
                    Some(gst::PadProbeData::Event(ev)) => match ev.view() {
                        gst::EventView::Segment(s) => t.segment = Some(s.segment().clone()),
                        gst::EventView::FlushStop(_) => {
                            t.flush_stops += 1;
                            t.buffers_after_flush = 0;
                            t.first_after_flush = None;
                            t.eos = false;
                        }
                        gst::EventView::Eos(_) => t.eos = true,
                        _ => {}
                    },
                    _ => {}
                }
            }
            drop(map);
            traces.1.notify_all();
            gst::PadProbeReturn::Ok
        },
    );
    sink
}

/// Video buffers that must have arrived, in PLAYING, before [`seek_playbin3`] seeks.
pub const BUFFERS_BEFORE_SEEK: u64 = 5;

/// Plays `uri` in playbin3 with fakesinks (sync=false) for video, audio and text; once
/// PLAYING with [`BUFFERS_BEFORE_SEEK`] video buffers, seeks to `target` with `flags`
/// (`seek_simple`), then waits for EOS (the video sink's EOS after its FLUSH_STOP, and an
/// EOS message), an ERROR, or `timeout` (for the whole run). `setup` is called for every
/// element added inside playbin3. Every wait is bounded.
pub fn seek_playbin3(
    uri: &str,
    target: gst::ClockTime,
    flags: gst::SeekFlags,
    timeout: Duration,
    setup: impl Fn(&gst::Element) + Send + Sync + 'static,
) -> SeekRun {
    trace_playbin3(uri, Some((target, flags)), timeout, setup)
}

/// Like [`seek_playbin3`]; without `seek`, plays to EOS (or ERROR, or `timeout`) and
/// records what every sink got (e.g. the number of text buffers).
pub fn trace_playbin3(
    uri: &str,
    seek_to: Option<(gst::ClockTime, gst::SeekFlags)>,
    timeout: Duration,
    setup: impl Fn(&gst::Element) + Send + Sync + 'static,
) -> SeekRun {
    super::init();
    let traces: Traces = Arc::new((Mutex::new(BTreeMap::new()), Condvar::new()));
    let vsink = traced_sink("video", &traces);
    let asink = traced_sink("audio", &traces);
    let tsink = traced_sink("text", &traces);
    let playbin = gst::ElementFactory::make("playbin3")
        .property("uri", uri)
        .property("video-sink", &vsink)
        .property("audio-sink", &asink)
        .property("text-sink", &tsink)
        .build()
        .expect("playbin3");
    let elements = Arc::new(Mutex::new(Vec::<String>::new()));
    let added = elements.clone();
    playbin
        .downcast_ref::<gst::Bin>()
        .expect("playbin3 is a bin")
        .connect_deep_element_added(move |_bin, _sub, element| {
            if let Some(f) = element.factory() {
                added
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(f.name().to_string());
            }
            setup(element);
        });
    let bus = playbin.bus().expect("bus");
    let deadline = Instant::now() + timeout;
    let mut errors = Vec::new();
    let mut seek: Option<Result<(), String>> = None;
    let mut video_buffers_at_seek = 0;
    let mut eos_after_seek = false;
    let _ = playbin.set_state(gst::State::Playing);
    let done = loop {
        if Instant::now() >= deadline {
            break Done::Timeout;
        }
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(50)) {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    errors.push(format!(
                        "{} from {}: {:?}",
                        e.error(),
                        msg.src()
                            .map(|s| s.path_string().to_string())
                            .unwrap_or_default(),
                        e.debug()
                    ));
                    break Done::Error;
                }
                gst::MessageView::Eos(_) if seek_to.is_none() => break Done::Eos,
                gst::MessageView::Eos(_) if seek.is_some() => eos_after_seek = true,
                _ => {}
            }
        }
        let (video_buffers, video_eos_after_flush) = {
            let map = lock_traces(&traces);
            let v = map.get("video").cloned().unwrap_or_default();
            (v.buffers, v.flush_stops > 0 && v.eos)
        };
        let Some((target, flags)) = seek_to else {
            continue;
        };
        if seek.is_none() {
            if video_buffers >= BUFFERS_BEFORE_SEEK
                && playbin.current_state() == gst::State::Playing
            {
                video_buffers_at_seek = video_buffers;
                for trace in lock_traces(&traces).values_mut() {
                    trace.buffers_at_seek = Some(trace.buffers);
                }
                let result = playbin
                    .seek_simple(flags, target)
                    .map_err(|e| e.to_string());
                let failed = result.is_err();
                seek = Some(result);
                if failed {
                    break Done::Error;
                }
            }
        } else if eos_after_seek && video_eos_after_flush {
            break Done::Eos;
        }
    };
    let _ = playbin.set_state(gst::State::Null);
    let sinks = lock_traces(&traces).clone();
    let elements = elements.lock().unwrap_or_else(|e| e.into_inner()).clone();
    SeekRun {
        done,
        seek,
        video_buffers_at_seek,
        sinks,
        errors,
        elements,
    }
}

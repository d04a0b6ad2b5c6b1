//! Test streams generated at test time by real packagers (GStreamer hlssink2 via
//! gst-launch-1.0, ffmpeg), and an independent reader computing the exact bytes a
//! client must output for a media playlist (`expected_bytes`), decrypting AES-128
//! with the `openssl` CLI.
//!
//! Depends only on std and m3u8-rs so that examples can include it with `#[path]`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Frame rate used by every generated stream.
pub const FPS: u64 = 25;
/// Segment duration (seconds) used by every generated stream.
pub const SEGMENT_SECS: u64 = 2;

/// Fixed AES-128 key used by the AES fixtures.
pub const AES_KEY: [u8; 16] = [
    0x10, 0x21, 0x32, 0x43, 0x54, 0x65, 0x76, 0x87, 0x98, 0xa9, 0xba, 0xcb, 0xdc, 0xed, 0xfe, 0x0f,
];
/// Explicit IV (hex, 32 digits) used by the explicit-IV AES fixture.
pub const AES_IV_HEX: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// A generated stream.
#[derive(Clone, Debug)]
pub struct Stream {
    /// Directory holding the stream.
    pub dir: PathBuf,
    /// Entry point (master or media playlist).
    pub playlist: PathBuf,
    /// Media playlists: for a master, in master order (variants first, then renditions).
    pub media: Vec<PathBuf>,
    /// Video frames encoded per variant.
    pub video_frames: u64,
    /// Nominal duration in seconds.
    pub seconds: u64,
    /// Plaintext segment files when the stream was encrypted by this module.
    pub plain_segments: Vec<PathBuf>,
}

/// Runs a command with stdin closed and output to `log`, killing it after `timeout`.
fn run_bounded(cmd: &mut Command, timeout: Duration, log: &Path) -> Option<ExitStatus> {
    let logf = std::fs::File::create(log).expect("create log");
    let logf2 = logf.try_clone().expect("clone log");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(logf))
        .stderr(Stdio::from(logf2))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_ok(cmd: &mut Command, what: &str, dir: &Path) {
    let log = dir.join(format!("{what}.log"));
    let st = run_bounded(cmd, Duration::from_secs(60), &log);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    match st {
        Some(s) if s.success() => {}
        other => panic!("{what} failed ({other:?}): {cmd:?}\n{text}"),
    }
}

fn ffmpeg(dir: &Path) -> Command {
    let mut c = Command::new("ffmpeg");
    c.current_dir(dir)
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"]);
    c
}

/// Common ffmpeg video encode args: H.264 baseline-ish, 2 s GOPs, no B-frames.
fn x264_args(c: &mut Command) {
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

fn lavfi_inputs(c: &mut Command, audio: bool) {
    c.args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"]);
    if audio {
        c.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
    }
}

fn mkdir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
}

/// Muxed A/V MPEG-TS VOD (8 s) packaged by GStreamer's hlssink2.
pub fn hls_ts_vod(dir: &Path) -> Stream {
    hls_ts_vod_secs(dir, 8, true)
}

/// MPEG-TS VOD of `secs` seconds (multiple of 2) packaged by hlssink2, video
/// (H.264, 320x240, 25 fps) plus optionally AAC audio.
pub fn hls_ts_vod_secs(dir: &Path, secs: u64, audio: bool) -> Stream {
    hls_ts_vod_with(dir, secs, audio, &TsVideo::default())
}

/// The video of an hlssink2-packaged stream.
#[derive(Debug, Clone)]
pub struct TsVideo {
    pub width: u32,
    pub height: u32,
    /// videotestsrc pattern: `ball` compresses to little, `snow` to exactly the bitrate.
    pub pattern: &'static str,
    /// x264enc's target in kbit/s; None for its default.
    pub bitrate_kbps: Option<u32>,
}

impl Default for TsVideo {
    fn default() -> Self {
        TsVideo {
            width: 320,
            height: 240,
            pattern: "ball",
            bitrate_kbps: None,
        }
    }
}

/// Like [`hls_ts_vod_secs`], with the video described by `video`.
pub fn hls_ts_vod_with(dir: &Path, secs: u64, audio: bool, video: &TsVideo) -> Stream {
    mkdir(dir);
    let playlist = dir.join("playlist.m3u8");
    let frames = secs * FPS;
    let audio_buffers = (secs * 48000).div_ceil(1024);
    let TsVideo {
        width,
        height,
        pattern,
        bitrate_kbps,
    } = video;
    let bitrate = bitrate_kbps
        .map(|k| format!("bitrate={k} "))
        .unwrap_or_default();
    let mut desc = format!(
        "videotestsrc num-buffers={frames} pattern={pattern} ! video/x-raw,width={width},height={height},framerate=25/1 \
         ! x264enc {bitrate}key-int-max=50 bframes=0 speed-preset=ultrafast tune=zerolatency threads=1 \
         ! h264parse ! queue ! hls.video "
    );
    if audio {
        desc.push_str(&format!(
            "audiotestsrc num-buffers={audio_buffers} samplesperbuffer=1024 \
             ! audio/x-raw,rate=48000,channels=1 ! avenc_aac ! aacparse ! queue ! hls.audio "
        ));
    }
    desc.push_str(&format!(
        "hlssink2 name=hls playlist-length=0 target-duration={SEGMENT_SECS} max-files=0 \
         location={}/seg%05d.ts playlist-location={}",
        dir.display(),
        playlist.display()
    ));
    // hlssink2 in GStreamer 1.22 sometimes writes the final playlist (with
    // EXT-X-ENDLIST) but never posts EOS when audio and video are muxed; treat a
    // playlist with ENDLIST as completion, kill the process and retry on failure.
    let mut last_err = String::new();
    for attempt in 0..3 {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "ts" || x == "m3u8") {
                let _ = std::fs::remove_file(p);
            }
        }
        let log = dir.join(format!("hlssink2-{attempt}.log"));
        let logf = std::fs::File::create(&log).expect("create log");
        let logf2 = logf.try_clone().expect("clone");
        let mut child = Command::new("gst-launch-1.0")
            .arg("-q")
            .args(desc.split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf))
            .stderr(Stdio::from(logf2))
            .spawn()
            .expect("spawn gst-launch-1.0");
        // Long streams take longer: ultrafast x264 runs at several times real time.
        let deadline = Instant::now() + Duration::from_secs(30 + secs / 2);
        let mut endlist_at: Option<Instant> = None;
        let ok = loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                break st.success();
            }
            let has_end = std::fs::read_to_string(&playlist)
                .map(|t| t.contains("#EXT-X-ENDLIST"))
                .unwrap_or(false);
            if has_end {
                let t = *endlist_at.get_or_insert_with(Instant::now);
                if t.elapsed() > Duration::from_millis(300) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break true;
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = std::fs::read_to_string(&playlist).unwrap_or_default();
        if ok && text.contains("#EXT-X-ENDLIST") {
            let segs = text.lines().filter(|l| l.ends_with(".ts")).count() as u64;
            assert_eq!(
                segs,
                secs / SEGMENT_SECS,
                "hlssink2 produced {segs} segments for {secs} s:\n{text}"
            );
            return Stream {
                dir: dir.to_path_buf(),
                playlist: playlist.clone(),
                media: vec![playlist],
                video_frames: frames,
                seconds: secs,
                plain_segments: vec![],
            };
        }
        last_err = format!(
            "attempt {attempt}: ok={ok} playlist:\n{text}\nlog:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    panic!("hlssink2 generation failed: {last_err}");
}

/// fMP4 (CMAF-style) VOD with EXT-X-MAP, 8 s, A/V, packaged by ffmpeg.
pub fn hls_fmp4_vod(dir: &Path) -> Stream {
    mkdir(dir);
    let mut c = ffmpeg(dir);
    lavfi_inputs(&mut c, true);
    c.args(["-t", "8"]);
    x264_args(&mut c);
    c.args(["-c:a", "aac", "-b:a", "64k", "-ac", "1"]);
    c.args([
        "-f",
        "hls",
        "-hls_segment_type",
        "fmp4",
        "-hls_time",
        "2",
        "-hls_playlist_type",
        "vod",
        "-hls_segment_filename",
        "seg_%03d.m4s",
        "-hls_fmp4_init_filename",
        "init.mp4",
        "playlist.m3u8",
    ]);
    run_ok(&mut c, "ffmpeg-fmp4", dir);
    let playlist = dir.join("playlist.m3u8");
    Stream {
        dir: dir.to_path_buf(),
        playlist: playlist.clone(),
        media: vec![playlist],
        video_frames: 8 * FPS,
        seconds: 8,
        plain_segments: vec![],
    }
}

/// Single-file TS VOD addressed with EXT-X-BYTERANGE, 8 s, A/V, packaged by ffmpeg.
pub fn hls_byterange_vod(dir: &Path) -> Stream {
    mkdir(dir);
    let mut c = ffmpeg(dir);
    lavfi_inputs(&mut c, true);
    c.args(["-t", "8"]);
    x264_args(&mut c);
    c.args(["-c:a", "aac", "-b:a", "64k", "-ac", "1"]);
    c.args([
        "-f",
        "hls",
        "-hls_flags",
        "single_file",
        "-hls_time",
        "2",
        "-hls_playlist_type",
        "vod",
        "playlist.m3u8",
    ]);
    run_ok(&mut c, "ffmpeg-byterange", dir);
    let playlist = dir.join("playlist.m3u8");
    let text = std::fs::read_to_string(&playlist).unwrap();
    assert!(text.contains("#EXT-X-BYTERANGE"), "no byte ranges:\n{text}");
    Stream {
        dir: dir.to_path_buf(),
        playlist: playlist.clone(),
        media: vec![playlist],
        video_frames: 8 * FPS,
        seconds: 8,
        plain_segments: vec![],
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AesIv {
    /// `IV=0x...` attribute in EXT-X-KEY (ffmpeg keyinfo with an IV line).
    Explicit,
    /// No IV attribute: IV is the media sequence number (playlist starts at 3).
    MediaSequence,
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// AES-128 encrypted TS VOD (6 s, video only). The key is served at `<dir>/enc.key`.
pub fn hls_aes_vod(dir: &Path, iv: AesIv) -> Stream {
    mkdir(dir);
    std::fs::write(dir.join("enc.key"), AES_KEY).unwrap();
    match iv {
        AesIv::Explicit => {
            let keyinfo = dir.join("keyinfo.txt");
            std::fs::write(
                &keyinfo,
                format!("enc.key\n{}\n{AES_IV_HEX}\n", dir.join("enc.key").display()),
            )
            .unwrap();
            let mut c = ffmpeg(dir);
            lavfi_inputs(&mut c, false);
            c.args(["-t", "6"]);
            x264_args(&mut c);
            c.args([
                "-f",
                "hls",
                "-hls_key_info_file",
                "keyinfo.txt",
                "-hls_time",
                "2",
                "-hls_playlist_type",
                "vod",
                "-hls_segment_filename",
                "seg_%03d.ts",
                "playlist.m3u8",
            ]);
            run_ok(&mut c, "ffmpeg-aes", dir);
            let playlist = dir.join("playlist.m3u8");
            let text = std::fs::read_to_string(&playlist).unwrap();
            assert!(
                text.contains(&format!("IV=0x{AES_IV_HEX}"))
                    || text.contains(&format!("IV=0X{AES_IV_HEX}")),
                "explicit IV missing:\n{text}"
            );
            Stream {
                dir: dir.to_path_buf(),
                playlist: playlist.clone(),
                media: vec![playlist],
                video_frames: 6 * FPS,
                seconds: 6,
                plain_segments: vec![],
            }
        }
        AesIv::MediaSequence => {
            // ffmpeg 5.1 always writes an explicit IV, so encrypt plain segments
            // ourselves with the openssl CLI using IV = media sequence number.
            let plain_dir = dir.join("plain");
            mkdir(&plain_dir);
            let mut c = ffmpeg(&plain_dir);
            lavfi_inputs(&mut c, false);
            c.args(["-t", "6"]);
            x264_args(&mut c);
            c.args([
                "-f",
                "hls",
                "-hls_time",
                "2",
                "-hls_playlist_type",
                "vod",
                "-hls_segment_filename",
                "seg_%03d.ts",
                "playlist.m3u8",
            ]);
            run_ok(&mut c, "ffmpeg-plain", &plain_dir);
            let plain_pl = std::fs::read(plain_dir.join("playlist.m3u8")).unwrap();
            let pl = match m3u8_rs::parse_playlist_res(&plain_pl) {
                Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
                _ => panic!("bad plain playlist"),
            };
            const FIRST_SEQ: u64 = 3;
            let mut text = format!(
                "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{FIRST_SEQ}\n\
                 #EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-KEY:METHOD=AES-128,URI=\"enc.key\"\n",
                pl.target_duration
            );
            let mut plain_segments = Vec::new();
            for (i, seg) in pl.segments.iter().enumerate() {
                let seq = FIRST_SEQ + i as u64;
                let src = plain_dir.join(&seg.uri);
                let out_name = format!("enc_{i:03}.ts");
                let data = std::fs::read(&src).unwrap();
                let enc = openssl_aes(false, &AES_KEY, &format!("{seq:032x}"), &data);
                std::fs::write(dir.join(&out_name), enc).unwrap();
                text.push_str(&format!("#EXTINF:{:.6},\n{out_name}\n", seg.duration));
                plain_segments.push(src);
            }
            text.push_str("#EXT-X-ENDLIST\n");
            let playlist = dir.join("playlist.m3u8");
            std::fs::write(&playlist, text).unwrap();
            Stream {
                dir: dir.to_path_buf(),
                playlist: playlist.clone(),
                media: vec![playlist],
                video_frames: 6 * FPS,
                seconds: 6,
                plain_segments,
            }
        }
    }
}

/// Video bitrates of the three-variant master (ffmpeg adds 10% in BANDWIDTH).
pub const THREE_VARIANT_KBPS: [u32; 3] = [200, 500, 1000];

/// Master playlist with three video-only TS variants (200k/500k/1000k), 6 s,
/// `v0/index.m3u8`, `v1/index.m3u8`, `v2/index.m3u8`, `master.m3u8` (ffmpeg).
pub fn hls_master_three_variants(dir: &Path) -> Stream {
    mkdir(dir);
    let mut c = ffmpeg(dir);
    lavfi_inputs(&mut c, false);
    c.args(["-t", "6", "-map", "0:v", "-map", "0:v", "-map", "0:v"]);
    x264_args(&mut c);
    for (i, kbps) in THREE_VARIANT_KBPS.iter().enumerate() {
        c.arg(format!("-b:v:{i}")).arg(format!("{kbps}k"));
        c.arg(format!("-maxrate:v:{i}")).arg(format!("{kbps}k"));
        c.arg(format!("-bufsize:v:{i}"))
            .arg(format!("{}k", kbps * 2));
    }
    c.args([
        "-f",
        "hls",
        "-hls_time",
        "2",
        "-hls_playlist_type",
        "vod",
        "-var_stream_map",
        "v:0 v:1 v:2",
        "-master_pl_name",
        "master.m3u8",
        "-hls_segment_filename",
        "v%v/seg_%03d.ts",
        "v%v/index.m3u8",
    ]);
    run_ok(&mut c, "ffmpeg-3var", dir);
    let playlist = dir.join("master.m3u8");
    let text = std::fs::read(&playlist).unwrap();
    let m = match m3u8_rs::parse_playlist_res(&text) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(m)) => m,
        _ => panic!("not a master playlist"),
    };
    assert_eq!(m.variants.len(), 3);
    assert!(
        m.variants[0].bandwidth < m.variants[1].bandwidth
            && m.variants[1].bandwidth < m.variants[2].bandwidth,
        "bandwidths not increasing: {:?}",
        m.variants.iter().map(|v| v.bandwidth).collect::<Vec<_>>()
    );
    Stream {
        dir: dir.to_path_buf(),
        playlist,
        media: (0..3)
            .map(|i| dir.join(format!("v{i}/index.m3u8")))
            .collect(),
        video_frames: 6 * FPS,
        seconds: 6,
        plain_segments: vec![],
    }
}

/// Master with a video-only variant (`v0/index.m3u8`) and a separate default AAC
/// audio rendition (`v1/index.m3u8`, EXT-X-MEDIA TYPE=AUDIO ... DEFAULT=YES), 6 s.
pub fn hls_alt_audio(dir: &Path) -> Stream {
    mkdir(dir);
    let mut c = ffmpeg(dir);
    lavfi_inputs(&mut c, true);
    c.args(["-t", "6", "-map", "0:v", "-map", "1:a"]);
    x264_args(&mut c);
    c.args(["-b:v", "300k", "-c:a", "aac", "-b:a", "64k", "-ac", "1"]);
    c.args([
        "-f",
        "hls",
        "-hls_time",
        "2",
        "-hls_playlist_type",
        "vod",
        "-var_stream_map",
        "v:0,agroup:aud a:0,agroup:aud,default:yes",
        "-master_pl_name",
        "master.m3u8",
        "-hls_segment_filename",
        "v%v/seg_%03d.ts",
        "v%v/index.m3u8",
    ]);
    run_ok(&mut c, "ffmpeg-altaudio", dir);
    let playlist = dir.join("master.m3u8");
    let text = std::fs::read(&playlist).unwrap();
    let m = match m3u8_rs::parse_playlist_res(&text) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(m)) => m,
        _ => panic!("not a master playlist"),
    };
    assert_eq!(m.variants.len(), 1, "{}", String::from_utf8_lossy(&text));
    let alt = m
        .alternatives
        .iter()
        .find(|a| a.media_type == m3u8_rs::AlternativeMediaType::Audio)
        .expect("no EXT-X-MEDIA TYPE=AUDIO");
    assert!(alt.default, "audio rendition not DEFAULT=YES");
    assert_eq!(alt.uri.as_deref(), Some("v1/index.m3u8"));
    assert_eq!(m.variants[0].audio.as_deref(), Some(alt.group_id.as_str()));
    Stream {
        dir: dir.to_path_buf(),
        playlist,
        media: vec![dir.join("v0/index.m3u8"), dir.join("v1/index.m3u8")],
        video_frames: 6 * FPS,
        seconds: 6,
        plain_segments: vec![],
    }
}

/// Master with a video-only variant (`v0/index.m3u8`) and two audio renditions in one group:
/// `eng` (440 Hz, DEFAULT=YES, `vEnglish/index.m3u8`) and `fra` (880 Hz,
/// `vFrancais/index.m3u8`), 6 s.
pub fn hls_two_languages(dir: &Path) -> Stream {
    mkdir(dir);
    let mut c = ffmpeg(dir);
    lavfi_inputs(&mut c, true);
    c.args(["-f", "lavfi", "-i", "sine=frequency=880:sample_rate=48000"]);
    c.args(["-t", "6", "-map", "0:v", "-map", "1:a", "-map", "2:a"]);
    x264_args(&mut c);
    c.args(["-b:v", "300k", "-c:a", "aac", "-b:a", "64k", "-ac", "1"]);
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
    run_ok(&mut c, "ffmpeg-twolang", dir);
    let playlist = dir.join("master.m3u8");
    let text = std::fs::read_to_string(&playlist).unwrap();
    assert!(
        text.contains("LANGUAGE=\"eng\"") && text.contains("LANGUAGE=\"fra\""),
        "{text}"
    );
    Stream {
        dir: dir.to_path_buf(),
        playlist,
        media: vec![
            dir.join("v0/index.m3u8"),
            dir.join("vEnglish/index.m3u8"),
            dir.join("vFrancais/index.m3u8"),
        ],
        video_frames: 6 * FPS,
        seconds: 6,
        plain_segments: vec![],
    }
}

/// Runs `openssl enc -aes-128-cbc` (decrypt if `decrypt`) with PKCS#7 padding.
pub fn openssl_aes(decrypt: bool, key: &[u8], iv_hex: &str, data: &[u8]) -> Vec<u8> {
    let mut cmd = Command::new("openssl");
    cmd.arg("enc");
    if decrypt {
        cmd.arg("-d");
    }
    cmd.args(["-aes-128-cbc", "-K", &hex(key), "-iv", iv_hex])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn openssl");
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    writer.join().unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "openssl failed: {err}");
    out
}

/// Expected client output for a media playlist, read independently from disk.
#[derive(Clone, Debug, Default)]
pub struct ExpectedMedia {
    /// Bytes of the first EXT-X-MAP (range applied), if any.
    pub init: Option<Vec<u8>>,
    /// Bytes of each media segment (range applied, decrypted). A segment that
    /// switches to a different EXT-X-MAP has that init prepended.
    pub segments: Vec<Vec<u8>>,
    pub durations: Vec<f64>,
    pub media_sequence: u64,
    pub uris: Vec<String>,
}

impl ExpectedMedia {
    /// init + all segments.
    pub fn all(&self) -> Vec<u8> {
        self.bytes_from_segment(0)
    }
    /// init + segments[idx..].
    pub fn bytes_from_segment(&self, idx: usize) -> Vec<u8> {
        let mut v = self.init.clone().unwrap_or_default();
        for s in &self.segments[idx.min(self.segments.len())..] {
            v.extend_from_slice(s);
        }
        v
    }
    pub fn total_duration(&self) -> f64 {
        self.durations.iter().sum()
    }
    /// Index of the segment containing time `t` (seconds).
    pub fn segment_at(&self, t: f64) -> usize {
        let mut acc = 0.0;
        for (i, d) in self.durations.iter().enumerate() {
            if t < acc + d {
                return i;
            }
            acc += d;
        }
        self.durations.len().saturating_sub(1)
    }
}

fn parse_iv(iv: &str) -> String {
    let h = iv.trim().trim_start_matches("0x").trim_start_matches("0X");
    format!("{:0>32}", h.to_ascii_lowercase())
}

fn read_range(path: &Path, range: Option<(u64, u64)>) -> Vec<u8> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    match range {
        Some((len, off)) => {
            let (s, e) = (off as usize, (off + len) as usize);
            assert!(
                e <= data.len(),
                "range {s}..{e} beyond {} ({})",
                data.len(),
                path.display()
            );
            data[s..e].to_vec()
        }
        None => data,
    }
}

/// Parses a local media playlist and reads the expected output from disk.
pub fn expected_media(media_playlist: &Path) -> ExpectedMedia {
    let text = std::fs::read(media_playlist)
        .unwrap_or_else(|e| panic!("read {}: {e}", media_playlist.display()));
    let pl = match m3u8_rs::parse_playlist_res(&text) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
        _ => panic!("{} is not a media playlist", media_playlist.display()),
    };
    let base = media_playlist.parent().unwrap().to_path_buf();
    let local = |uri: &str| -> PathBuf {
        assert!(!uri.contains("://"), "only relative URIs supported: {uri}");
        base.join(uri.split('?').next().unwrap())
    };
    let mut out = ExpectedMedia {
        media_sequence: pl.media_sequence,
        ..Default::default()
    };
    let mut cur_key: Option<m3u8_rs::Key> = None;
    let mut cur_map: Option<(PathBuf, Option<(u64, u64)>)> = None;
    let mut emitted_map: Option<(PathBuf, Option<(u64, u64)>)> = None;
    let mut next_off: std::collections::HashMap<PathBuf, u64> = Default::default();
    for (i, seg) in pl.segments.iter().enumerate() {
        let seq = pl.media_sequence + i as u64;
        if let Some(k) = &seg.key {
            cur_key = match k.method {
                m3u8_rs::KeyMethod::None => None,
                m3u8_rs::KeyMethod::AES128 => Some(k.clone()),
                ref m => panic!("unsupported key method {m:?}"),
            };
        }
        if let Some(m) = &seg.map {
            cur_map = Some((
                local(&m.uri),
                m.byte_range
                    .as_ref()
                    .map(|b| (b.length, b.offset.unwrap_or(0))),
            ));
        }
        let path = local(&seg.uri);
        let range = seg.byte_range.as_ref().map(|b| {
            let off = b
                .offset
                .unwrap_or_else(|| *next_off.get(&path).unwrap_or(&0));
            next_off.insert(path.clone(), off + b.length);
            (b.length, off)
        });
        let mut bytes = read_range(&path, range);
        if let Some(k) = &cur_key {
            let key_path = local(k.uri.as_deref().expect("key without URI"));
            let key = std::fs::read(&key_path).unwrap();
            assert_eq!(key.len(), 16, "bad key length");
            let iv = match &k.iv {
                Some(iv) => parse_iv(iv),
                None => format!("{seq:032x}"),
            };
            bytes = openssl_aes(true, &key, &iv, &bytes);
        }
        let mut seg_bytes = Vec::new();
        if cur_map != emitted_map {
            if let Some((p, r)) = &cur_map {
                let init = read_range(p, *r);
                if emitted_map.is_none() && i == 0 {
                    out.init = Some(init);
                } else {
                    seg_bytes.extend_from_slice(&init);
                }
            }
            emitted_map = cur_map.clone();
        }
        seg_bytes.extend_from_slice(&bytes);
        out.segments.push(seg_bytes);
        out.durations.push(seg.duration as f64);
        out.uris.push(seg.uri.clone());
    }
    out
}

/// init + every segment of a local media playlist, exactly as a client must output.
pub fn expected_bytes(media_playlist: &Path) -> Vec<u8> {
    expected_media(media_playlist).all()
}

/// Copies a media playlist to `new_name` in the same directory, appending `query`
/// (e.g. `token=abc`) to every segment/map/key URI.
pub fn rewrite_with_query(media_playlist: &Path, new_name: &str, query: &str) -> PathBuf {
    let text = std::fs::read_to_string(media_playlist).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let l = line.trim();
        if !l.is_empty() && !l.starts_with('#') {
            let sep = if l.contains('?') { '&' } else { '?' };
            out.push_str(&format!("{l}{sep}{query}\n"));
        } else if l.starts_with("#EXT-X-MAP:") || l.starts_with("#EXT-X-KEY:") {
            // URI="x" -> URI="x?query"
            if let Some(i) = l.find("URI=\"") {
                let start = i + 5;
                let end = start + l[start..].find('"').unwrap();
                let uri = &l[start..end];
                let sep = if uri.contains('?') { '&' } else { '?' };
                out.push_str(&format!("{}{uri}{sep}{query}{}\n", &l[..start], &l[end..]));
            } else {
                out.push_str(l);
                out.push('\n');
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let p = media_playlist.with_file_name(new_name);
    std::fs::write(&p, out).unwrap();
    p
}

//! Streams from packagers, and packager modes, that the rest of the suite does not use
//! (`common::packagers`), through meshsrc: playbin3 decodes exactly the video frames
//! ffprobe counts in the files, every pad carries exactly the bytes read from the files,
//! flushing seeks (key unit and accurate) land within a fragment of the target on every
//! sink and play on to EOS, WebVTT cues reach the text sink, H.264 + H.265 masters play
//! whole when the ABR would want the other codec, and live DASH is followed while ffmpeg
//! writes it (`common::growing`).
//!
//! GStreamer's own demuxers are not the oracle here: on several of these streams they
//! lose frames, cues or seeks (docs/packagers.md).

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::growing::GrowingOrigin;
use common::packagers::*;
use common::{
    Done, Env, MeshRun, RunState, VOD_TIMEOUT, assert_bytes_eq, run_playbin3, run_playbin3_until,
};
use gst::prelude::*;

fn is_meshsrc(e: &gst::Element) -> bool {
    e.factory().is_some_and(|f| f.name() == "meshsrc")
}

fn key_unit() -> gst::SeekFlags {
    gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT
}

fn accurate() -> gst::SeekFlags {
    gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE
}

/// playbin3 on `url` (mesh+http) reaches EOS without error through meshsrc, and decodes
/// exactly the stream's video frames (and some audio if it has audio).
fn assert_plays_every_frame(
    url: &str,
    p: &Packaged,
    setup: impl Fn(&gst::Element) + Send + Sync + 'static,
) {
    let r = run_playbin3(url, VOD_TIMEOUT, setup);
    assert_eq!(
        r.done,
        Done::Eos,
        "playbin3 on {url}: {}",
        r.state.errors_text()
    );
    assert!(
        r.state.elements.iter().any(|e| e == "meshsrc"),
        "meshsrc not used: {:?}",
        r.state.elements
    );
    assert_eq!(
        r.video_frames(),
        p.video_frames,
        "decoded video frames of {} (ffprobe counted {})",
        p.entry.display(),
        p.video_frames
    );
    if p.has_audio {
        assert!(r.state.audio_buffers > 0, "no audio decoded");
    }
}

/// meshsrc on `url` (http) to EOS: exactly the expected pads, each with exactly the
/// expected bytes and an EOS, and no ERROR.
fn assert_pads_exact(url: &str, p: &Packaged) -> RunState {
    let run = MeshRun::new(url);
    let s = run.run_to_eos(VOD_TIMEOUT);
    assert!(s.errors.is_empty(), "{}", s.errors_text());
    let mut got = s.pad_order.clone();
    got.sort();
    let mut want = p.pad_names();
    want.sort();
    assert_eq!(got, want, "pads of {}", p.entry.display());
    for expected in &p.pads {
        let pad = &s.pads[&expected.pad];
        assert!(pad.eos, "{} got no EOS", expected.pad);
        assert_bytes_eq(
            &format!("{} of {}", expected.pad, p.entry.display()),
            &pad.data,
            &expected.all(),
            Some(&expected.sizes()),
        );
    }
    s
}

/// A flushing seek to `target_secs` in playbin3 on `url` succeeds, every sink in
/// `required` gets data after the flush, the first buffer after the flush on every sink
/// that got one is within one fragment of the target (stream time), and the run then
/// reaches EOS without error.
fn assert_seek_lands(
    url: &str,
    p: &Packaged,
    target_secs: u64,
    flags: gst::SeekFlags,
    required: &[&str],
) -> SeekRun {
    let target = gst::ClockTime::from_seconds(target_secs);
    let run = seek_playbin3(url, target, flags, VOD_TIMEOUT, |_| {});
    let context = format!(
        "seek to {target} ({flags:?}) in {}: {run:#?}",
        p.entry.display()
    );
    assert_eq!(run.seek, Some(Ok(())), "{context}");
    assert_eq!(run.done, Done::Eos, "{context}");
    assert!(
        run.elements.iter().any(|e| e == "meshsrc"),
        "meshsrc not used: {context}"
    );
    for name in required {
        let t = run.sink(name);
        // A sink whose stream had not started when the seek was sent (text, sparse) sees
        // no flush; its first buffer is where it resumed.
        assert!(
            t.flush_stops > 0 || t.buffers_at_seek == Some(0),
            "{name} sink had data before the seek but saw no FLUSH_STOP: {context}"
        );
        assert!(
            t.buffers_after_seek() > 0,
            "{name} sink got nothing after the seek: {context}"
        );
    }
    let tolerance = p.segment.as_nanos() as u64;
    for (name, t) in &run.sinks {
        if t.buffers_after_seek() == 0 {
            continue;
        }
        let at = t.resumed_at().unwrap_or_else(|| {
            panic!("{name}: the first buffer after the seek has no stream time: {context}")
        });
        let off = at.nseconds().abs_diff(target.nseconds());
        assert!(
            off <= tolerance,
            "{name}: first buffer after the seek at {at}, {} from the target: {context}",
            gst::ClockTime::from_nseconds(off)
        );
    }
    run
}

/// The sinks that must get data after a seek: video, and audio if the stream has some.
fn av(p: &Packaged) -> Vec<&'static str> {
    if p.has_audio {
        vec!["video", "audio"]
    } else {
        vec!["video"]
    }
}

fn frames_case(make: impl FnOnce(&Path) -> Packaged) {
    let env = Env::new();
    let p = make(&env.path("stream"));
    assert_plays_every_frame(&env.origin.mesh_url_of(&p.entry), &p, |_| {});
}

fn bytes_case(make: impl FnOnce(&Path) -> Packaged) {
    let env = Env::new();
    let p = make(&env.path("stream"));
    assert_pads_exact(&env.origin.url_of(&p.entry), &p);
}

fn seek_case(make: impl FnOnce(&Path) -> Packaged, target_secs: u64, flags: gst::SeekFlags) {
    let env = Env::new();
    let p = make(&env.path("stream"));
    let required = av(&p);
    assert_seek_lands(
        &env.origin.mesh_url_of(&p.entry),
        &p,
        target_secs,
        flags,
        &required,
    );
}

// ---------------------------------------------------------------------------------------
// a. ffmpeg HLS fMP4 with EXT-X-INDEPENDENT-SEGMENTS and EXT-X-PROGRAM-DATE-TIME
// ---------------------------------------------------------------------------------------

#[test]
fn hls_fmp4_with_program_date_time_plays_every_frame() {
    frames_case(ffmpeg_hls_fmp4_pdt);
}

#[test]
fn hls_fmp4_with_program_date_time_pads_are_byte_exact() {
    bytes_case(ffmpeg_hls_fmp4_pdt);
}

#[test]
fn hls_fmp4_with_program_date_time_key_unit_seek_lands_within_a_fragment_on_every_sink() {
    seek_case(ffmpeg_hls_fmp4_pdt, 6, key_unit());
}

#[test]
fn hls_fmp4_with_program_date_time_accurate_seek_lands_within_a_fragment_on_every_sink() {
    seek_case(ffmpeg_hls_fmp4_pdt, 6, accurate());
}

// ---------------------------------------------------------------------------------------
// b. WebVTT subtitles beside a muxed MPEG-TS variant
// ---------------------------------------------------------------------------------------

/// playbin3 on the master plays to EOS without error, decodes every video frame, and the
/// text sink gets one buffer per cue.
fn webvtt_case(terminate_cues: bool) {
    let env = Env::new();
    let p = ffmpeg_hls_ts_webvtt(&env.path("subs"), terminate_cues);
    let url = env.origin.mesh_url_of(&p.entry);
    let run = trace_playbin3(&url, None, VOD_TIMEOUT, |_| {});
    let context = format!("{}: {run:#?}", p.entry.display());
    assert_eq!(run.done, Done::Eos, "{context}");
    assert!(
        run.elements.iter().any(|e| e == "meshsrc"),
        "meshsrc not used: {context}"
    );
    assert_eq!(run.sink("video").buffers, p.video_frames, "{context}");
    assert!(run.sink("audio").buffers > 0, "{context}");
    let text = run.sink("text").buffers;
    assert!(text > 0, "no subtitle reached the text sink: {context}");
    assert_eq!(Some(text), p.cues, "text buffers vs cues: {context}");
}

/// ffmpeg's own `.vtt` segments (no blank line after the last cue; hlsdemux2 delivers
/// only the last cue of the stream).
#[test]
fn hls_webvtt_beside_muxed_ts_plays_every_frame_and_every_cue() {
    webvtt_case(false);
}

#[test]
fn hls_webvtt_with_blank_line_terminated_cues_plays_every_frame_and_every_cue() {
    webvtt_case(true);
}

#[test]
fn hls_webvtt_beside_muxed_ts_pads_are_byte_exact() {
    bytes_case(|d| ffmpeg_hls_ts_webvtt(d, false));
}

fn webvtt_seek_case(flags: gst::SeekFlags) {
    let env = Env::new();
    let p = ffmpeg_hls_ts_webvtt(&env.path("subs"), true);
    assert_seek_lands(
        &env.origin.mesh_url_of(&p.entry),
        &p,
        6,
        flags,
        &["video", "audio", "text"],
    );
}

#[test]
fn hls_webvtt_key_unit_seek_lands_within_a_fragment_on_video_audio_and_text() {
    webvtt_seek_case(key_unit());
}

#[test]
fn hls_webvtt_accurate_seek_lands_within_a_fragment_on_video_audio_and_text() {
    webvtt_seek_case(accurate());
}

// ---------------------------------------------------------------------------------------
// c. Two audio renditions (eng default, fra) beside a video-only variant
// ---------------------------------------------------------------------------------------

#[test]
fn hls_two_audio_renditions_play_every_frame() {
    frames_case(ffmpeg_hls_two_audio_renditions);
}

#[test]
fn hls_two_audio_renditions_pads_carry_the_video_and_the_default_language_byte_exact() {
    bytes_case(ffmpeg_hls_two_audio_renditions);
}

#[test]
fn hls_two_audio_renditions_key_unit_seek_lands_within_a_fragment_on_every_sink() {
    seek_case(ffmpeg_hls_two_audio_renditions, 6, key_unit());
}

#[test]
fn hls_two_audio_renditions_accurate_seek_lands_within_a_fragment_on_every_sink() {
    seek_case(ffmpeg_hls_two_audio_renditions, 6, accurate());
}

/// GStreamer 1.22's playbin3 leaves a stream unlinked, and preroll never ends, when the
/// pads' collections reach decodebin3 close together (docs/packagers.md). Under playbin3
/// meshsrc starts its pads one after another: the audio pad pushes its first buffer only
/// once the video's decoded output is exposed, and both decoded outputs exist before
/// either sink gets a buffer, so neither prerolls alone.
#[test]
fn hls_two_audio_renditions_start_one_pad_after_another_under_playbin3() {
    let env = Env::new();
    let p = ffmpeg_hls_two_audio_renditions(&env.path("stream"));
    common::init();
    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    let note_first = |pad: &gst::Pad, what: String, order: &Arc<Mutex<Vec<String>>>| {
        let order = order.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            order.lock().unwrap().push(what.clone());
            gst::PadProbeReturn::Remove
        });
    };
    let sink = |name: &str| {
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .build()
            .unwrap();
        note_first(
            &sink.static_pad("sink").unwrap(),
            format!("sink:{name}"),
            &order,
        );
        sink
    };
    let playbin = gst::ElementFactory::make("playbin3")
        .property("uri", env.origin.mesh_url_of(&p.entry))
        .property("video-sink", sink("video"))
        .property("audio-sink", sink("audio"))
        .property("text-sink", sink("text"))
        .build()
        .unwrap();
    let seen = order.clone();
    playbin
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .connect_deep_element_added(move |_, _, element| {
            let seen = seen.clone();
            if is_meshsrc(element) {
                element.connect_pad_added(move |_, pad| {
                    note_first(pad, format!("pad:{}", pad.name()), &seen);
                });
            }
        });
    // playbin3 made its uridecodebin3 before any handler could see it added.
    let uridecodebin = playbin
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "uridecodebin3"))
        .expect("playbin3 has a uridecodebin3");
    let seen = order.clone();
    uridecodebin.connect_pad_added(move |_, pad| {
        if pad.direction() == gst::PadDirection::Src {
            let kind = pad.name().split('_').next().unwrap_or_default().to_string();
            seen.lock().unwrap().push(format!("output:{kind}"));
        }
    });
    let bus = playbin.bus().unwrap();
    playbin.set_state(gst::State::Playing).unwrap();
    let done = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(VOD_TIMEOUT.as_secs()),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    playbin.set_state(gst::State::Null).unwrap();
    let done = done.map(|m| m.type_());
    assert_eq!(
        done,
        Some(gst::MessageType::Eos),
        "{:?}",
        order.lock().unwrap()
    );
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order.get(..4).unwrap_or(&order),
        [
            "pad:video_00",
            "output:video",
            "pad:audio_00",
            "output:audio"
        ],
        "{order:?}"
    );
    let mut sinks = order[4..].to_vec();
    sinks.sort();
    assert_eq!(sinks, ["sink:audio", "sink:video"], "{order:?}");
}

// ---------------------------------------------------------------------------------------
// d. DASH SegmentBase + sidx (ffmpeg -single_file 1 -global_sidx 1)
// ---------------------------------------------------------------------------------------

#[test]
fn dash_segment_base_with_sidx_plays_every_frame() {
    frames_case(|d| ffmpeg_dash_segment_base(d, true));
}

#[test]
fn dash_segment_base_with_sidx_pads_are_byte_exact() {
    bytes_case(|d| ffmpeg_dash_segment_base(d, true));
}

#[test]
fn dash_segment_base_without_initialization_element_plays_every_frame() {
    frames_case(|d| ffmpeg_dash_segment_base(d, false));
}

#[test]
fn dash_segment_base_without_initialization_element_pads_are_byte_exact() {
    bytes_case(|d| ffmpeg_dash_segment_base(d, false));
}

/// (dashdemux2 restarts from 0 on this one.)
#[test]
fn dash_segment_base_key_unit_seek_lands_within_a_fragment_on_every_sink() {
    seek_case(|d| ffmpeg_dash_segment_base(d, true), 6, key_unit());
}

#[test]
fn dash_segment_base_accurate_seek_lands_within_a_fragment_on_every_sink() {
    seek_case(|d| ffmpeg_dash_segment_base(d, true), 6, accurate());
}

// ---------------------------------------------------------------------------------------
// e. Live DASH, served while ffmpeg writes it
// ---------------------------------------------------------------------------------------

const LIVE_SECONDS: u64 = 16;

/// Video segment numbers of `stream` fetched with status 200, in request order.
fn fetched(origin: &GrowingOrigin, stream: u32) -> Vec<u64> {
    origin
        .log()
        .iter()
        .filter(|h| h.status == 200)
        .filter_map(|h| LiveDash::segment_of(&h.path))
        .filter(|(s, _)| *s == stream)
        .map(|(_, n)| n)
        .collect()
}

fn describe(origin: &GrowingOrigin) -> String {
    origin
        .log()
        .iter()
        .map(|h| {
            format!(
                "{} {} growing={} {} B",
                h.status, h.path, h.growing, h.bytes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every segment once, in order, from the first fetched on.
fn assert_contiguous(numbers: &[u64], what: &str, origin: &GrowingOrigin) {
    assert!(
        !numbers.is_empty(),
        "no {what} segment fetched:\n{}",
        describe(origin)
    );
    let contiguous: Vec<u64> = (numbers[0]..numbers[0] + numbers.len() as u64).collect();
    assert_eq!(
        numbers,
        contiguous.as_slice(),
        "{what}: not every segment once, in order:\n{}",
        describe(origin)
    );
}

/// Starts ffmpeg, an origin serving its directory as it is written, and waits until two
/// video segments are complete (ffmpeg's first MPD lacks the video @bandwidth).
fn start_live(env: &Env, options: LiveDashOptions) -> (LiveDash, GrowingOrigin) {
    let live = LiveDash::start(&env.path("live"), options);
    let origin = GrowingOrigin::start(env.dir.path(), live.exit_flag());
    assert!(
        live.wait_for_segment(2, Duration::from_secs(20)),
        "ffmpeg did not write two segments:\n{}",
        live.log_text()
    );
    (live, origin)
}

/// meshsrc follows the live MPD until ffmpeg ends: no ERROR; each pad carries the init and
/// then every segment it fetched, once, in order, byte-exact against the final files; the
/// video pad gets the last segment; with a SegmentTimeline (minimumUpdatePeriod 2 s, the
/// MPD turns static at the end) the run reaches EOS. (With `$Number$` ffmpeg announces
/// minimumUpdatePeriod="PT500S", so the end is not signalled and EOS is not required.)
fn live_bytes_case(options: LiveDashOptions) {
    let env = Env::new();
    let (live, origin) = start_live(&env, options);
    let run = MeshRun::new(&origin.url_of(&live.mpd));
    let _ = run.play();
    let ffmpeg_ok = live.wait_exit(live.remaining() + Duration::from_secs(20));
    let done = run.wait_done(Duration::from_secs(15));
    let state = run.snapshot();
    run.stop();
    assert!(ffmpeg_ok, "ffmpeg failed:\n{}", live.log_text());
    assert!(state.errors.is_empty(), "{}", state.errors_text());
    if options.timeline {
        assert_eq!(
            done,
            Done::Eos,
            "no EOS after the MPD turned static:\n{}",
            describe(&origin)
        );
    }
    for (pad_name, stream) in [("video_00", 0u32), ("audio_00", 1u32)] {
        let numbers = fetched(&origin, stream);
        assert_contiguous(&numbers, pad_name, &origin);
        if stream == 0 {
            assert_eq!(
                numbers.last().copied(),
                Some(live.complete_segments(0)),
                "the last video segment was not fetched:\n{}",
                describe(&origin)
            );
        }
        let mut parts = vec![std::fs::read(live.init_file(stream)).expect("init")];
        for n in &numbers {
            parts.push(std::fs::read(live.segment_file(stream, *n)).expect("segment"));
        }
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        assert_bytes_eq(
            &format!("{pad_name} of live DASH {options:?}"),
            &state
                .pads
                .get(pad_name)
                .unwrap_or_else(|| panic!("no {pad_name}: {:?}", state.pad_order))
                .data,
            &parts.concat(),
            Some(&sizes),
        );
    }
}

/// playbin3 on the live MPD decodes exactly the frames of the video segments it fetched.
fn live_frames_case(options: LiveDashOptions) {
    let env = Env::new();
    let (live, origin) = start_live(&env, options);
    // With `$Number$`, ffmpeg never announces the end: once it has exited and meshsrc has
    // had time to fetch the last segment, EOS drains the pipeline.
    let ended = std::sync::Mutex::new(None::<std::time::Instant>);
    let r = run_playbin3_until(
        &origin.mesh_url_of(&live.mpd),
        live.remaining() + Duration::from_secs(15),
        |_| {},
        || {
            let mut ended = ended.lock().unwrap_or_else(|e| e.into_inner());
            if !live.exited() {
                return false;
            }
            let at = *ended.get_or_insert_with(std::time::Instant::now);
            at.elapsed() > Duration::from_secs(5)
        },
    );
    assert!(
        live.wait_exit(Duration::from_secs(20)),
        "ffmpeg failed:\n{}",
        live.log_text()
    );
    assert_ne!(r.done, Done::Error, "{}", r.state.errors_text());
    if options.timeline {
        assert_eq!(r.done, Done::Eos, "no EOS:\n{}", describe(&origin));
    }
    let numbers = fetched(&origin, 0);
    assert_contiguous(&numbers, "video", &origin);
    assert_eq!(numbers.last().copied(), Some(live.complete_segments(0)));
    let mut files: Vec<PathBuf> = vec![live.init_file(0)];
    files.extend(numbers.iter().map(|n| live.segment_file(0, *n)));
    assert_eq!(
        r.video_frames(),
        probe_files(&files),
        "decoded frames vs the frames of video segments {numbers:?}"
    );
}

#[test]
fn live_dash_number_template_is_followed_to_the_end_byte_exact() {
    live_bytes_case(LiveDashOptions {
        ldash: false,
        timeline: false,
        seconds: LIVE_SECONDS,
    });
}

#[test]
fn live_dash_timeline_is_followed_to_the_end_byte_exact_and_ends() {
    live_bytes_case(LiveDashOptions {
        ldash: false,
        timeline: true,
        seconds: LIVE_SECONDS,
    });
}

#[test]
fn live_low_latency_dash_number_template_is_followed_to_the_end_byte_exact() {
    live_bytes_case(LiveDashOptions {
        ldash: true,
        timeline: false,
        seconds: LIVE_SECONDS,
    });
}

#[test]
fn live_low_latency_dash_timeline_is_followed_to_the_end_byte_exact_and_ends() {
    live_bytes_case(LiveDashOptions {
        ldash: true,
        timeline: true,
        seconds: LIVE_SECONDS,
    });
}

#[test]
fn live_dash_number_template_decodes_every_frame_it_fetched() {
    live_frames_case(LiveDashOptions {
        ldash: false,
        timeline: false,
        seconds: LIVE_SECONDS,
    });
}

#[test]
fn live_low_latency_dash_timeline_decodes_every_frame_it_fetched() {
    live_frames_case(LiveDashOptions {
        ldash: true,
        timeline: true,
        seconds: LIVE_SECONDS,
    });
}

// ---------------------------------------------------------------------------------------
// f. Two Periods
// ---------------------------------------------------------------------------------------

#[test]
fn dash_two_periods_play_every_frame_of_both() {
    frames_case(ffmpeg_dash_two_periods);
}

#[test]
fn dash_two_periods_pads_carry_both_periods_byte_exact() {
    bytes_case(ffmpeg_dash_two_periods);
}

#[test]
fn dash_two_periods_key_unit_seek_into_the_first_period_lands_within_a_fragment() {
    seek_case(ffmpeg_dash_two_periods, 6, key_unit());
}

/// (dashdemux2 refuses this seek and aborts.)
#[test]
fn dash_two_periods_key_unit_seek_into_the_second_period_lands_within_a_fragment() {
    seek_case(ffmpeg_dash_two_periods, 18, key_unit());
}

#[test]
fn dash_two_periods_accurate_seek_into_the_second_period_lands_within_a_fragment() {
    seek_case(ffmpeg_dash_two_periods, 18, accurate());
}

// ---------------------------------------------------------------------------------------
// g. HLS discontinuities
// ---------------------------------------------------------------------------------------

#[test]
fn hls_fmp4_discontinuity_with_new_map_plays_every_frame() {
    frames_case(|d| ffmpeg_hls_discontinuity(d, Discontinuity::Fmp4NewMap));
}

#[test]
fn hls_fmp4_discontinuity_with_new_map_pads_are_byte_exact() {
    bytes_case(|d| ffmpeg_hls_discontinuity(d, Discontinuity::Fmp4NewMap));
}

#[test]
fn hls_fmp4_discontinuity_with_new_map_key_unit_seek_past_it_lands_within_a_fragment() {
    seek_case(
        |d| ffmpeg_hls_discontinuity(d, Discontinuity::Fmp4NewMap),
        18,
        key_unit(),
    );
}

#[test]
fn hls_fmp4_discontinuity_with_new_map_accurate_seek_before_it_lands_within_a_fragment() {
    seek_case(
        |d| ffmpeg_hls_discontinuity(d, Discontinuity::Fmp4NewMap),
        6,
        accurate(),
    );
}

#[test]
fn hls_fmp4_discontinuity_with_the_same_map_plays_every_frame() {
    frames_case(|d| ffmpeg_hls_discontinuity(d, Discontinuity::Fmp4SameMap));
}

#[test]
fn hls_fmp4_discontinuity_with_the_same_map_pads_are_byte_exact() {
    bytes_case(|d| ffmpeg_hls_discontinuity(d, Discontinuity::Fmp4SameMap));
}

#[test]
fn hls_ts_discontinuity_plays_every_frame() {
    frames_case(|d| ffmpeg_hls_discontinuity(d, Discontinuity::Ts));
}

#[test]
fn hls_ts_discontinuity_pads_are_byte_exact() {
    bytes_case(|d| ffmpeg_hls_discontinuity(d, Discontinuity::Ts));
}

#[test]
fn hls_ts_discontinuity_accurate_seek_past_it_lands_within_a_fragment() {
    seek_case(
        |d| ffmpeg_hls_discontinuity(d, Discontinuity::Ts),
        18,
        accurate(),
    );
}

// ---------------------------------------------------------------------------------------
// h. H.264 + H.265 masters
// ---------------------------------------------------------------------------------------

/// A connection speed at which the ABR wants the second variant (900 kbit/s), whose codec
/// differs from the first's (300 kbit/s, where playback starts).
const FAST: u32 = 100_000_000;

fn fast_meshsrc(e: &gst::Element) {
    if is_meshsrc(e) {
        e.set_property("connection-bitrate", FAST);
    }
}

/// playbin3 plays the whole master to EOS, every frame, without error (hlsdemux2 switches
/// to the other codec mid-stream here and decodes 50 of 300 frames).
fn codec_frames_case(order: CodecOrder) {
    let env = Env::new();
    let m = ffmpeg_hls_avc_hevc(&env.path("codecs"), order);
    assert_plays_every_frame(
        &env.origin.mesh_url_of(&m.stream.entry),
        &m.stream,
        fast_meshsrc,
    );
}

/// meshsrc's `video_00` carries one whole variant: never a mix of codecs.
fn codec_bytes_case(order: CodecOrder) {
    let env = Env::new();
    let m = ffmpeg_hls_avc_hevc(&env.path("codecs"), order);
    let run = MeshRun::with(&env.origin.url_of(&m.stream.entry), |e| {
        e.set_property("connection-bitrate", FAST)
    });
    let s = run.run_to_eos(VOD_TIMEOUT);
    assert!(s.errors.is_empty(), "{}", s.errors_text());
    assert_eq!(s.pad_order, ["video_00"], "{}", s.errors_text());
    let data = &s.pads["video_00"].data;
    let (avc, hevc) = (m.avc.all(), m.hevc.all());
    assert!(
        *data == avc || *data == hevc,
        "video_00 ({} bytes) is neither the whole H.264 variant ({} bytes) nor the whole \
         H.265 one ({} bytes): {:?}",
        data.len(),
        avc.len(),
        hevc.len(),
        env.origin
            .log()
            .iter()
            .map(|r| r.path.clone())
            .collect::<Vec<_>>()
    );
}

#[test]
fn hls_h264_first_master_plays_every_frame_when_abr_wants_the_h265_variant() {
    codec_frames_case(CodecOrder::AvcFirst);
}

#[test]
fn hls_h265_first_master_plays_every_frame_when_abr_wants_the_h264_variant() {
    codec_frames_case(CodecOrder::HevcFirst);
}

#[test]
fn hls_master_without_codecs_plays_every_frame_when_abr_wants_the_other_codec() {
    codec_frames_case(CodecOrder::NoCodecs);
}

#[test]
fn hls_h264_first_master_pad_carries_one_whole_variant() {
    codec_bytes_case(CodecOrder::AvcFirst);
}

#[test]
fn hls_h265_first_master_pad_carries_one_whole_variant() {
    codec_bytes_case(CodecOrder::HevcFirst);
}

#[test]
fn hls_master_without_codecs_pad_carries_one_whole_variant() {
    codec_bytes_case(CodecOrder::NoCodecs);
}

/// With `codec-preference=hevc` and a fast connection, the H.264-first master is played
/// from its H.265 variant, whole.
#[test]
fn hls_codec_preference_hevc_plays_the_h265_variant_of_an_h264_first_master() {
    let env = Env::new();
    let m = ffmpeg_hls_avc_hevc(&env.path("codecs"), CodecOrder::AvcFirst);
    let run = MeshRun::with(&env.origin.url_of(&m.stream.entry), |e| {
        assert!(e.has_property("codec-preference"), "no codec-preference");
        e.set_property("codec-preference", "hevc");
        e.set_property("connection-bitrate", FAST);
    });
    let s = run.run_to_eos(VOD_TIMEOUT);
    assert!(s.errors.is_empty(), "{}", s.errors_text());
    assert_bytes_eq(
        "video_00 with codec-preference=hevc",
        &s.pads["video_00"].data,
        &m.hevc.all(),
        Some(&m.hevc.sizes()),
    );
    let r = run_playbin3(&env.origin.mesh_url_of(&m.stream.entry), VOD_TIMEOUT, |e| {
        if is_meshsrc(e) && e.has_property("codec-preference") {
            e.set_property("codec-preference", "hevc");
            e.set_property("connection-bitrate", FAST);
        }
    });
    assert_eq!(r.done, Done::Eos, "{}", r.state.errors_text());
    assert_eq!(r.video_frames(), m.stream.video_frames);
}

// ---------------------------------------------------------------------------------------
// i. GStreamer's legacy hlssink
// ---------------------------------------------------------------------------------------

#[test]
fn gstreamer_hlssink_ts_plays_every_frame() {
    frames_case(gst_hlssink_ts);
}

#[test]
fn gstreamer_hlssink_ts_pads_are_byte_exact() {
    bytes_case(gst_hlssink_ts);
}

#[test]
fn gstreamer_hlssink_ts_key_unit_seek_lands_within_a_fragment_on_every_sink() {
    seek_case(gst_hlssink_ts, 6, key_unit());
}

// ---------------------------------------------------------------------------------------
// j. LL-HLS and LL-DASH manifests as static VODs
// ---------------------------------------------------------------------------------------

#[test]
fn ll_hls_vod_plays_every_frame_at_standard_latency() {
    frames_case(ffmpeg_ll_hls);
}

/// The pads carry the full segments; no part is fetched by byte range and no
/// preload-hinted file is requested.
#[test]
fn ll_hls_vod_pads_are_byte_exact_from_full_segments_and_preload_hints_are_not_fetched() {
    let env = Env::new();
    let p = ffmpeg_ll_hls(&env.path("ll"));
    assert_pads_exact(&env.origin.url_of(&p.entry), &p);
    let log = env.origin.log();
    let ranged: Vec<String> = log
        .iter()
        .filter(|r| r.range.is_some() && r.path_only().ends_with(".m4s"))
        .map(|r| format!("{} {:?}", r.path, r.range))
        .collect();
    assert!(ranged.is_empty(), "parts fetched by range: {ranged:#?}");
    for hint in &p.must_not_fetch {
        let path = env.origin.rel_path(hint);
        assert!(
            env.origin.requests_for(&path).is_empty(),
            "the preload hint {path} was fetched"
        );
    }
}

#[test]
fn ll_hls_vod_key_unit_seek_lands_within_a_fragment_on_every_sink() {
    seek_case(ffmpeg_ll_hls, 6, key_unit());
}

#[test]
fn ll_dash_static_mpd_plays_every_frame() {
    frames_case(ffmpeg_ll_dash_static);
}

#[test]
fn ll_dash_static_mpd_pads_are_byte_exact() {
    bytes_case(ffmpeg_ll_dash_static);
}

//! MPEG-DASH through meshsrc, on streams made by real packagers and served on loopback:
//! exact bytes per pad, decoded frame counts equal to dashdemux2's, a live stream followed
//! for a minute, and bad MPDs.

mod common;
mod dash_common;

use common::{Env, MeshRun, assert_bytes_eq, run_playbin3};
use dash_common::live_origin::{LiveAddressing, LiveConfig, LiveOrigin};
use dash_common::{DashStream, Mode, dashsink_ts, ffmpeg_dash};
use gst::prelude::*;
use std::time::{Duration, Instant};

const SECONDS: u64 = 7;
const VOD_TIMEOUT: Duration = Duration::from_secs(60);

/// meshsrc on the MPD: video_00 and audio_00 carry exactly the expected bytes with the
/// expected caps, and nothing goes wrong on the way.
fn assert_exact_pads(env: &Env, stream: &DashStream, caps: &str) {
    let run = MeshRun::new(&env.origin.url_of(&stream.mpd));
    let state = run.run_to_eos(VOD_TIMEOUT);
    assert_eq!(
        state.pad_order,
        ["video_00", "audio_00"],
        "{}",
        state.errors_text()
    );
    assert!(
        state.warnings.is_empty() && state.errors.is_empty(),
        "{}",
        state.errors_text()
    );
    for (name, expected) in [("video_00", &stream.video), ("audio_00", &stream.audio)] {
        let pad = run.pad(name);
        assert_bytes_eq(
            &format!("{name} of {}", stream.mpd.display()),
            &pad.data,
            &expected.all(),
            Some(&expected.sizes()),
        );
        assert!(pad.eos, "{name} got no EOS");
        assert_eq!(pad.caps_name().as_deref(), Some(caps), "{name} caps");
    }
}

/// playbin3 decodes as many video frames from mesh+http:// as from http:// (dashdemux2).
fn assert_frames_match_dashdemux2(env: &Env, stream: &DashStream) {
    let http = env.origin.url_of(&stream.mpd);
    let mesh = env.origin.mesh_url_of(&stream.mpd);
    let reference = run_playbin3(&http, VOD_TIMEOUT, |_| {});
    let mut ours = run_playbin3(&mesh, VOD_TIMEOUT, |_| {});
    // Known start-up race of GStreamer 1.22's decodebin3 with two source pads that each
    // carry a container: when the first input's collection arrives alone it is selected
    // alone, and the other stream can be refused with not-linked (a few percent of runs
    // under load; it affects HLS alternate audio the same way). Retry that case only.
    for _ in 0..2 {
        let not_linked =
            ours.done == common::Done::Error && ours.state.errors_text().contains("not-linked");
        if !not_linked {
            break;
        }
        eprintln!("playbin3 start-up race (not-linked), retrying");
        ours = run_playbin3(&mesh, VOD_TIMEOUT, |_| {});
    }
    assert_eq!(
        reference.done,
        common::Done::Eos,
        "dashdemux2: {}",
        reference.state.errors_text()
    );
    assert_eq!(
        ours.done,
        common::Done::Eos,
        "meshsrc: {}",
        ours.state.errors_text()
    );
    assert!(
        reference.state.elements.iter().any(|e| e == "dashdemux2"),
        "the reference run did not use dashdemux2: {:?}",
        reference.state.elements
    );
    assert!(
        ours.state.elements.iter().any(|e| e == "meshsrc")
            && !ours.state.elements.iter().any(|e| e == "dashdemux2"),
        "{:?}",
        ours.state.elements
    );
    assert!(
        ours.video_frames() >= stream.video_frames - 1,
        "meshsrc decoded {} of {} frames",
        ours.video_frames(),
        stream.video_frames
    );
    assert_eq!(
        ours.video_frames(),
        reference.video_frames(),
        "decoded video frames: meshsrc vs dashdemux2"
    );
    assert!(ours.state.audio_buffers > 0, "no audio decoded");
}

fn vod_case(mode: Mode) {
    let env = Env::new();
    let stream = ffmpeg_dash(env.dir.path(), "dash", mode, SECONDS);
    assert_exact_pads(&env, &stream, "video/quicktime");
    assert_frames_match_dashdemux2(&env, &stream);
}

#[test]
fn ffmpeg_template_timeline_exact_bytes_and_frames() {
    vod_case(Mode::Timeline);
}

#[test]
fn ffmpeg_template_number_exact_bytes_and_frames() {
    vod_case(Mode::Number);
}

#[test]
fn ffmpeg_segment_list_exact_bytes_and_frames() {
    vod_case(Mode::List);
}

#[test]
fn ffmpeg_single_file_segment_list_ranges_exact_bytes_and_frames() {
    vod_case(Mode::SingleFileList);
}

#[test]
fn single_file_segment_base_sidx_exact_bytes_and_frames() {
    let env = Env::new();
    let stream = ffmpeg_dash(env.dir.path(), "dash", Mode::SegmentBase, SECONDS);
    assert_exact_pads(&env, &stream, "video/quicktime");
    // The index is read with one range request per representation, the media by ranges.
    let log = env.origin.log();
    let ranged = log
        .iter()
        .filter(|r| r.path_only().ends_with(".mp4") && r.range.is_some())
        .count();
    assert!(ranged >= 2 * 5, "expected range requests, got {ranged}");
    assert_frames_match_dashdemux2(&env, &stream);
}

#[test]
fn gstreamer_dashsink_mpegts_exact_bytes_and_frames() {
    let env = Env::new();
    let stream = dashsink_ts(env.dir.path(), "dashsink", SECONDS);
    assert_exact_pads(&env, &stream, "video/mpegts");
    assert_frames_match_dashdemux2(&env, &stream);
}

#[test]
fn max_video_limits_choose_the_representation() {
    // Two video representations; the limits leave only the smaller one.
    let env = Env::new();
    let stream = ffmpeg_dash(env.dir.path(), "dash", Mode::Number, 4);
    let mpd = std::fs::read_to_string(&stream.mpd).unwrap();
    let big = mpd.replace(
        r#"<Representation id="0" mimeType="video/mp4""#,
        r#"<Representation id="big" mimeType="video/mp4" width="1920" height="1080" frameRate="50/1"><SegmentTemplate timescale="1000" duration="2000" initialization="missing-init.m4s" media="missing-$Number$.m4s"/></Representation>
			<Representation id="0" mimeType="video/mp4""#,
    );
    assert_ne!(big, mpd);
    std::fs::write(stream.dir.join("two.mpd"), big).unwrap();
    for (width, height, rate) in [(640, 0, (0, 1)), (0, 480, (0, 1)), (0, 0, (30, 1))] {
        let run = MeshRun::with(&env.origin.url_of(&stream.dir.join("two.mpd")), |e| {
            e.set_property("max-video-width", width as u32);
            e.set_property("max-video-height", height as u32);
            e.set_property("max-video-framerate", gst::Fraction::new(rate.0, rate.1));
        });
        let state = run.run_to_eos(VOD_TIMEOUT);
        assert!(state.errors.is_empty(), "{}", state.errors_text());
        assert_bytes_eq(
            "video_00",
            &run.pad("video_00").data,
            &stream.video.all(),
            Some(&stream.video.sizes()),
        );
    }
    // Without limits the first (big, missing) representation is chosen and fails.
    let run = MeshRun::new(&env.origin.url_of(&stream.dir.join("two.mpd")));
    let state = run.run_to_error(VOD_TIMEOUT);
    assert!(
        state.errors[0].resource() == Some(gst::ResourceError::NotFound),
        "{}",
        state.errors_text()
    );
}

/// Follows a live stream for `seconds` and checks every segment arrived, in order, never
/// requested before it was available, and the MPD was not fetched more than its
/// minimumUpdatePeriod allows.
fn live_case(addressing: LiveAddressing, seconds: u64) {
    let env = Env::new();
    // Enough media for the preroll plus the run, with margin.
    let stream = ffmpeg_dash(env.dir.path(), "src", Mode::Number, seconds + 30);
    let origin = LiveOrigin::start(
        stream.dir.clone(),
        LiveConfig {
            addressing,
            // The server clock is 25 s behind ours: trusting the local clock would ask for
            // segments 12 ahead of the live edge.
            skew: chrono::Duration::seconds(-25),
            preroll: Duration::from_secs(12),
            minimum_update_period: 4,
            time_shift_buffer: 20,
        },
    );
    let run = MeshRun::with(&origin.url("manifest.mpd"), |e| {
        e.set_property("presentation-delay", "6s");
    });
    let started = Instant::now();
    let _ = run.play();
    let done = run.wait_done(Duration::from_secs(seconds));
    let state = run.snapshot();
    run.stop();
    let elapsed = started.elapsed();
    assert_eq!(
        done,
        common::Done::Timeout,
        "the live stream ended early: {}",
        state.errors_text()
    );
    assert!(
        state.errors.is_empty() && state.warnings.is_empty(),
        "{}",
        state.errors_text()
    );
    let log = origin.log();
    let early: Vec<_> = log
        .iter()
        .filter(|h| h.status != 200)
        .map(|h| format!("{} {} at {}", h.status, h.path, h.server_time))
        .collect();
    assert!(early.is_empty(), "requests that failed: {early:#?}");
    for stream_index in [0u32, 1] {
        let numbers: Vec<u64> = log
            .iter()
            .filter_map(|h| h.segment)
            .filter(|(s, _)| *s == stream_index)
            .map(|(_, n)| n)
            .collect();
        assert!(
            numbers.len() as u64 >= seconds / 2 - 3,
            "stream {stream_index}: only {} segments in {elapsed:?}: {numbers:?}",
            numbers.len()
        );
        let expected: Vec<u64> = (numbers[0]..numbers[0] + numbers.len() as u64).collect();
        assert_eq!(
            numbers, expected,
            "stream {stream_index}: not every segment, in order"
        );
        // 6 s behind a 12 s preroll: playback starts around segment 4.
        assert!(
            (3..=5).contains(&numbers[0]),
            "stream {stream_index} started at segment {}",
            numbers[0]
        );
        for hit in log
            .iter()
            .filter(|h| h.segment.is_some_and(|(s, _)| s == stream_index))
        {
            let number = hit.segment.unwrap().1;
            assert!(
                hit.server_time >= origin.available_at(number),
                "segment {number} requested at {} before {}",
                hit.server_time,
                origin.available_at(number)
            );
        }
        // The pad carries init + every segment in order (the last may still be in flight).
        let pad = run.pad(if stream_index == 0 {
            "video_00"
        } else {
            "audio_00"
        });
        let mut parts = vec![std::fs::read(origin.init_file(stream_index)).unwrap()];
        parts.extend(
            numbers
                .iter()
                .map(|n| std::fs::read(origin.segment_file(stream_index, *n)).unwrap()),
        );
        let mut delivered = parts.len();
        while delivered > 0
            && parts[..delivered].iter().map(Vec::len).sum::<usize>() > pad.data.len()
        {
            delivered -= 1;
        }
        assert!(
            delivered + 2 >= parts.len(),
            "stream {stream_index}: pad has {} bytes, only {delivered} of {} parts",
            pad.data.len(),
            parts.len()
        );
        let expected = parts[..delivered].concat();
        assert_bytes_eq(
            &format!("live stream {stream_index}"),
            &pad.data,
            &expected,
            None,
        );
    }
    let mpd_fetches = log.iter().filter(|h| h.path == "/manifest.mpd").count() as u64;
    assert!(
        mpd_fetches >= seconds / 8 && mpd_fetches <= seconds / 4 + 3,
        "{mpd_fetches} MPD fetches in {elapsed:?} with minimumUpdatePeriod=4s"
    );
    assert!(log.iter().any(|h| h.path == "/time"), "UTCTiming not used");
}

#[test]
fn live_template_number_followed_for_a_minute() {
    live_case(LiveAddressing::Number, 60);
}

#[test]
fn live_template_timeline_followed() {
    live_case(LiveAddressing::Timeline, 40);
}

fn bad_mpd_case(env: &Env, name: &str, body: &str, needle: &str) {
    let path = format!("/bad/{name}.mpd");
    env.origin
        .set_body(&path, body.as_bytes().to_vec(), "application/dash+xml");
    let started = Instant::now();
    let run = MeshRun::new(&env.origin.url(&path));
    let state = run.run_to_error(Duration::from_secs(10));
    let error = &state.errors[0];
    assert!(error.from_meshsrc, "{}", error.describe());
    assert_eq!(
        error.stream(),
        Some(gst::StreamError::Decode),
        "{name}: {}",
        error.describe()
    );
    let message = error.error.message().to_string();
    assert!(
        message.starts_with("invalid playlist: MPD: ") && message.contains(needle),
        "{name}: {needle:?} not in {message:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn bad_mpds_end_in_a_stream_decode_error() {
    let env = Env::new();
    let good = ffmpeg_dash(env.dir.path(), "ok", Mode::Timeline, 4);
    let text = std::fs::read_to_string(&good.mpd).unwrap();
    bad_mpd_case(
        &env,
        "garbage",
        "\u{1}\u{2}this is not a manifest",
        "not XML",
    );
    bad_mpd_case(&env, "truncated", &text[..text.len() * 2 / 3], "truncated");
    bad_mpd_case(
        &env,
        "noperiod",
        r#"<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT4S"></MPD>"#,
        "no Period",
    );
    // SegmentTemplate with neither @duration nor SegmentTimeline.
    let start = text.find("<SegmentTimeline>").unwrap();
    let end = text.find("</SegmentTimeline>").unwrap() + "</SegmentTimeline>".len();
    let mut unsupported = text.clone();
    unsupported.replace_range(start..end, "");
    bad_mpd_case(&env, "unsupported", &unsupported, "unsupported addressing");
    bad_mpd_case(
        &env,
        "html",
        "<!DOCTYPE html><html><body>Bad gateway</body></html>",
        "HTML",
    );
}

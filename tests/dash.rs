//! MPEG-DASH through meshsrc, on streams made by real packagers and served on loopback:
//! exact bytes per pad, decoded frame counts equal to dashdemux2's, a live stream followed
//! for a minute, bad MPDs, and the stream collection and select-streams.

mod common;
mod dash_common;

use common::{Env, MeshRun, assert_bytes_eq, run_playbin3};
use dash_common::live_origin::{LiveAddressing, LiveConfig, LiveOrigin};
use dash_common::{DashStream, Mode, dashsink_ts, ffmpeg_dash, ffmpeg_dash_two_languages};
use gst::prelude::*;
use std::sync::{Arc, Condvar, Mutex};
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
    let ours = run_playbin3(&mesh, VOD_TIMEOUT, |_| {});
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

/// A stream of a collection: id, type, flags, caps name and language code.
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    id: String,
    kind: gst::StreamType,
    flags: gst::StreamFlags,
    caps: Option<String>,
    language: Option<String>,
}

/// The streams of the one collection meshsrc posted.
fn meshsrc_collection(state: &common::RunState) -> Vec<Listed> {
    let ours: Vec<&gst::StreamCollection> = state
        .collections
        .iter()
        .filter(|(from_meshsrc, _)| *from_meshsrc)
        .map(|(_, c)| c)
        .collect();
    assert_eq!(ours.len(), 1, "meshsrc posted {} collections", ours.len());
    ours[0]
        .iter()
        .map(|s| Listed {
            id: s.stream_id().expect("stream id").to_string(),
            kind: s.stream_type(),
            flags: s.stream_flags(),
            caps: s
                .caps()
                .and_then(|c| c.structure(0).map(|st| st.name().to_string())),
            language: s.tags().and_then(|t| {
                t.get::<gst::tags::LanguageCode>()
                    .map(|v| v.get().to_string())
            }),
        })
        .collect()
}

/// `streams-selected` messages from meshsrc: (seqnum, stream ids).
fn meshsrc_selections(state: &common::RunState) -> Vec<(gst::Seqnum, Vec<String>)> {
    state
        .streams_selected
        .iter()
        .filter(|m| m.from_meshsrc)
        .map(|m| (m.seqnum, m.stream_ids.clone()))
        .collect()
}

#[test]
fn stream_collection_lists_every_adaptation_set() {
    let env = Env::new();
    let two = ffmpeg_dash_two_languages(env.dir.path(), "lang", SECONDS);
    let url = env.origin.url_of(&two.mpd);
    let run = MeshRun::new(&url);
    let state = run.run_to_eos(VOD_TIMEOUT);
    assert!(
        state.errors.is_empty() && state.warnings.is_empty(),
        "{}",
        state.errors_text()
    );
    assert_eq!(state.pad_order, ["video_00", "audio_00"]);

    let listed = meshsrc_collection(&state);
    let kinds: Vec<gst::StreamType> = listed.iter().map(|l| l.kind).collect();
    assert_eq!(
        kinds,
        [
            gst::StreamType::VIDEO,
            gst::StreamType::AUDIO,
            gst::StreamType::AUDIO
        ]
    );
    let languages: Vec<Option<&str>> = listed.iter().map(|l| l.language.as_deref()).collect();
    assert_eq!(languages, [None, Some("eng"), Some("fra")]);
    let caps: Vec<Option<&str>> = listed.iter().map(|l| l.caps.as_deref()).collect();
    assert_eq!(
        caps,
        [Some("video/x-h264"), Some("audio/mpeg"), Some("audio/mpeg")]
    );
    // The streams the pads start with are flagged SELECT; the other language is not.
    let selected: Vec<bool> = listed
        .iter()
        .map(|l| l.flags.contains(gst::StreamFlags::SELECT))
        .collect();
    assert_eq!(selected, [true, true, false]);
    let ids: Vec<&str> = listed.iter().map(|l| l.id.as_str()).collect();
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );

    // The default selection is announced, and each pad starts with its stream.
    assert_eq!(
        meshsrc_selections(&state)
            .into_iter()
            .map(|(_, ids)| ids)
            .collect::<Vec<_>>(),
        [vec![ids[0].to_string(), ids[1].to_string()]]
    );
    for (name, id, expected) in [
        ("video_00", ids[0], &two.video),
        ("audio_00", ids[1], &two.eng),
    ] {
        let pad = run.pad(name);
        assert_eq!(pad.stream_starts, [(id.to_string(), 0)], "{name}");
        assert_bytes_eq(name, &pad.data, &expected.all(), Some(&expected.sizes()));
    }

    // Stream ids are stable: the same URL lists the same ids.
    let again = MeshRun::new(&url);
    let state = again.run_to_eos(VOD_TIMEOUT);
    assert_eq!(meshsrc_collection(&state), listed);
}

/// How a selection reaches meshsrc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SendTo {
    /// `gst_element_send_event()` on meshsrc, as an application does.
    Element,
    /// Upstream from the element linked to `audio_00`, as decodebin3 forwards them.
    Pad,
}

/// Holds `audio_00` while it pushes its third buffer (init, segment 1, segment 2), selects
/// the French stream, lets it go: the pad then carries the French init and segments 3 on,
/// announced by a new stream-start and answered by `streams-selected`.
fn switch_language(send_to: SendTo) {
    const HELD: u32 = 3;
    let env = Env::new();
    let two = ffmpeg_dash_two_languages(env.dir.path(), "lang", SECONDS);
    let run = MeshRun::new(&env.origin.url_of(&two.mpd));
    // (audio buffers seen, held, released)
    let gate = Arc::new((Mutex::new((0u32, false, false)), Condvar::new()));
    let probe_gate = gate.clone();
    run.src.connect_pad_added(move |_, pad| {
        if pad.name() != "audio_00" {
            return;
        }
        let gate = probe_gate.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let (lock, cond) = &*gate;
            let mut g = lock.lock().unwrap();
            g.0 += 1;
            if g.0 == HELD {
                g.1 = true;
                cond.notify_all();
                let deadline = Instant::now() + VOD_TIMEOUT;
                while !g.2 && Instant::now() < deadline {
                    g = cond.wait_timeout(g, Duration::from_millis(100)).unwrap().0;
                }
            }
            gst::PadProbeReturn::Ok
        });
    });
    let _ = run.play();
    {
        let (lock, cond) = &*gate;
        let mut g = lock.lock().unwrap();
        let deadline = Instant::now() + VOD_TIMEOUT;
        while !g.1 && Instant::now() < deadline {
            g = cond.wait_timeout(g, Duration::from_millis(100)).unwrap().0;
        }
        assert!(g.1, "audio_00 never reached buffer {HELD}");
    }
    let listed = meshsrc_collection(&run.snapshot());
    let (video, eng, fra) = (&listed[0].id, &listed[1].id, &listed[2].id);
    assert_eq!(listed[2].language.as_deref(), Some("fra"));

    // Unknown stream ids refuse the selection and change nothing.
    let unknown = gst::event::SelectStreams::builder([video.as_str(), "no-such-stream"]).build();
    assert!(!run.src.send_event(unknown), "unknown stream id accepted");

    let select = gst::event::SelectStreams::builder([video.as_str(), fra.as_str()]).build();
    let seqnum = select.seqnum();
    let handled = match send_to {
        SendTo::Element => run.src.send_event(select),
        SendTo::Pad => {
            let sink = run.pipeline.by_name("sink_audio_00").expect("audio sink");
            sink.static_pad("sink")
                .expect("sink pad")
                .push_event(select)
        }
    };
    assert!(handled, "select-streams not handled");
    {
        let (lock, cond) = &*gate;
        lock.lock().unwrap().2 = true;
        cond.notify_all();
    }
    assert_eq!(run.wait_done(VOD_TIMEOUT), common::Done::Eos);
    let state = run.snapshot();
    assert!(
        state.errors.is_empty() && state.warnings.is_empty(),
        "{}",
        state.errors_text()
    );

    // English up to the held buffer, then the French init and media from segment 3.
    let held = HELD as usize;
    let mut parts: Vec<Vec<u8>> = two.eng.parts[..held].to_vec();
    parts.push(two.fra.parts[0].clone());
    parts.extend(two.fra.parts[held..].iter().cloned());
    assert_eq!(parts.len(), two.fra.parts.len() + 1);
    let audio = run.pad("audio_00");
    assert_bytes_eq(
        "audio_00",
        &audio.data,
        &parts.concat(),
        Some(&parts.iter().map(Vec::len).collect::<Vec<_>>()),
    );
    let switch_at: usize = two.eng.parts[..held].iter().map(Vec::len).sum();
    assert_eq!(
        audio.stream_starts,
        [(eng.clone(), 0), (fra.clone(), switch_at)]
    );
    assert_eq!(audio.caps.len(), 2, "caps after each stream-start");
    assert!(audio.eos);
    // The video pad is not touched.
    let video_pad = run.pad("video_00");
    assert_bytes_eq(
        "video_00",
        &video_pad.data,
        &two.video.all(),
        Some(&two.video.sizes()),
    );
    assert_eq!(video_pad.stream_starts, [(video.clone(), 0)]);

    // The default selection, then the answer to the event, with its seqnum.
    let selections = meshsrc_selections(&state);
    assert_eq!(selections.len(), 2, "{selections:?}");
    assert_eq!(selections[0].1, [video.clone(), eng.clone()]);
    assert_eq!(selections[1], (seqnum, vec![video.clone(), fra.clone()]));
    let switches: Vec<_> = state
        .variant_changes()
        .into_iter()
        .filter(|v| v.reason == "select-streams")
        .collect();
    assert_eq!(switches.len(), 1, "{switches:?}");
    assert_eq!(switches[0].pad_name, "audio_00");
}

#[test]
fn select_streams_switches_the_audio_language() {
    switch_language(SendTo::Element);
}

#[test]
fn select_streams_upstream_from_the_pad_switches_the_audio_language() {
    switch_language(SendTo::Pad);
}

/// Every event of one seqnum a sink's pad saw: flush-stops and segments.
#[derive(Debug, Default, Clone)]
struct SeekTrace {
    flush_stops: Vec<gst::Seqnum>,
    segments: Vec<(gst::Seqnum, gst::Segment)>,
}

/// A seek sent up one pad only (as playbin3 sends it, up one sink's path) moves every pad:
/// each flushes and restarts with the seek's seqnum, every pad starts flushing before any
/// stops (as adaptivedemux2 flushes; a flush of one stream while another plays on left
/// playbin3 stuck now and then), the same seek arriving again on the other pad is done once,
/// the segments follow the target, and position and duration queries agree on every pad.
#[test]
fn a_seek_up_one_pad_moves_every_pad_once_with_its_seqnum() {
    let env = Env::new();
    let stream = ffmpeg_dash(env.dir.path(), "dash", Mode::Number, 8);
    let run = MeshRun::new(&env.origin.url_of(&stream.mpd));
    let _ = run.pause();
    assert!(
        run.wait_until(VOD_TIMEOUT, |s| {
            ["video_00", "audio_00"]
                .iter()
                .all(|p| s.pads.get(*p).is_some_and(|o| !o.data.is_empty()))
                || !s.errors.is_empty()
        }),
        "no data on both pads"
    );
    assert!(run.snapshot().errors.is_empty());
    let _ = run.pipeline.state(gst::ClockTime::from_seconds(5));

    let sink_pad = |pad: &str| {
        run.pipeline
            .by_name(&format!("sink_{pad}"))
            .and_then(|s| s.static_pad("sink"))
            .expect("sink pad")
    };
    let traces: Arc<Mutex<std::collections::BTreeMap<String, SeekTrace>>> = Arc::default();
    // Flush events of both pads in the order they came: (pad, is a flush-start).
    let flushes: Arc<Mutex<Vec<(&'static str, bool)>>> = Arc::default();
    for pad in ["video_00", "audio_00"] {
        let traces = traces.clone();
        let flushes = flushes.clone();
        let key = pad.to_string();
        sink_pad(pad).add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::EVENT_FLUSH,
            move |_, info| {
                if let Some(gst::PadProbeData::Event(ev)) = &info.data {
                    let mut traces = traces.lock().unwrap_or_else(|e| e.into_inner());
                    let t = traces.entry(key.clone()).or_default();
                    let mut flushes = flushes.lock().unwrap_or_else(|e| e.into_inner());
                    match ev.view() {
                        gst::EventView::FlushStart(_) => flushes.push((pad, true)),
                        gst::EventView::FlushStop(_) => {
                            flushes.push((pad, false));
                            t.flush_stops.push(ev.seqnum())
                        }
                        gst::EventView::Segment(s) => {
                            t.segments.push((ev.seqnum(), s.segment().clone()))
                        }
                        _ => {}
                    }
                }
                gst::PadProbeReturn::Ok
            },
        );
    }

    // Queries agree on every pad.
    let pads: Vec<gst::Pad> = run.src.src_pads();
    assert_eq!(pads.len(), 2);
    let durations: Vec<Option<gst::ClockTime>> = pads
        .iter()
        .map(|p| p.query_duration::<gst::ClockTime>())
        .collect();
    assert!(durations[0].is_some(), "no duration");
    assert_eq!(durations[0], durations[1], "durations differ across pads");
    let positions: Vec<Option<gst::ClockTime>> = pads
        .iter()
        .map(|p| p.query_position::<gst::ClockTime>())
        .collect();
    assert!(positions[0].is_some(), "no position");
    assert_eq!(positions[0], positions[1], "positions differ across pads");

    // One seek, up the video pad only.
    let target = gst::ClockTime::from_seconds(5);
    let seek = gst::event::Seek::new(
        1.0,
        gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
        gst::SeekType::Set,
        target,
        gst::SeekType::None,
        gst::ClockTime::NONE,
    );
    let seqnum = seek.seqnum();
    assert!(
        sink_pad("video_00").push_event(seek.clone()),
        "seek refused"
    );
    // The same seek up the other pad, as decodebin3 may send it: done already.
    assert!(
        sink_pad("audio_00").push_event(seek),
        "repeated seek refused"
    );
    let _ = run.play();
    assert_eq!(
        run.wait_done(VOD_TIMEOUT),
        common::Done::Eos,
        "{}",
        run.snapshot().errors_text()
    );
    let traces = traces.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let flushes = flushes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let first_stop = flushes.iter().position(|(_, start)| !start);
    for pad in ["video_00", "audio_00"] {
        let started = flushes[..first_stop.unwrap_or(flushes.len())]
            .iter()
            .any(|&(p, start)| p == pad && start);
        assert!(
            started,
            "{pad} had not started flushing at the first flush-stop: {flushes:?}"
        );
    }
    for pad in ["video_00", "audio_00"] {
        let t = &traces[pad];
        assert_eq!(t.flush_stops, [seqnum], "{pad}: flushes {t:?}");
        assert!(!t.segments.is_empty(), "{pad}: no segment after the seek");
        for (s, segment) in &t.segments {
            assert_eq!(*s, seqnum, "{pad}: a segment with another seqnum: {t:?}");
            // Key unit: the video segment start at or before 5 s (a 2 s segment), in stream
            // time, and so the audio.
            let segment = segment
                .downcast_ref::<gst::ClockTime>()
                .expect("time segment");
            assert_eq!(
                segment.time(),
                Some(gst::ClockTime::from_seconds(4)),
                "{pad}: {segment:?}"
            );
        }
    }
    // Both pads carry their init, then every segment from the one holding 4 s: the video's
    // third; the audio's segments do not end on the same frames, so its second or third.
    // (ffmpeg writes one more, tiny, audio file that the MPD's duration leaves out.)
    let s = run.snapshot();
    let addressed = stream.video.parts.len() - 1;
    let from = |expected: &dash_common::Expected, first: usize| {
        let mut want = expected.parts[0].clone();
        want.extend(expected.parts[1 + first..1 + addressed].concat());
        want
    };
    let video = s.pads["video_00"].data_since_last_flush();
    assert_bytes_eq(
        "video_00 after the seek",
        video,
        &from(&stream.video, 2),
        None,
    );
    let audio = s.pads["audio_00"].data_since_last_flush();
    let starts: Vec<usize> = (0..addressed)
        .filter(|first| audio == from(&stream.audio, *first).as_slice())
        .collect();
    assert!(
        starts == [1] || starts == [2],
        "audio_00 after the seek ({} bytes) is not its init and its segments from the one \
         holding 4 s (matches from segments {starts:?}; part sizes {:?})",
        audio.len(),
        stream.audio.sizes()
    );
}

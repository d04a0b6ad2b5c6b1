//! VOD HLS through meshsrc: byte-exact output per pad against bytes read from disk,
//! caps, URI handler, redirects, query strings, retries, seeking, and decoded frame
//! counts against GStreamer's own hlsdemux2 (through playbin3).

mod common;

use common::*;
use gst::prelude::*;

fn ok_only(s: &RunState) {
    assert!(
        s.errors.is_empty(),
        "unexpected errors:\n{}",
        s.errors_text()
    );
}

/// Runs meshsrc on `url` to EOS and checks that the only pad is `video_00`,
/// carrying exactly `expected` bytes with caps named `caps_name`.
fn single_pad_exact(url: &str, expected: &ExpectedMedia, caps_name: &str) -> RunState {
    let run = MeshRun::new(url);
    let s = run.run_to_eos(VOD_TIMEOUT);
    ok_only(&s);
    assert_eq!(s.pad_order, vec!["video_00".to_string()], "pads");
    assert!(s.no_more_pads, "no-more-pads not emitted");
    let pad = &s.pads["video_00"];
    assert_eq!(
        pad.caps_name().as_deref(),
        Some(caps_name),
        "caps: {:?}",
        pad.caps
    );
    assert!(pad.eos, "EOS did not reach video_00's sink");
    assert!(pad.flush_marks.is_empty(), "unexpected flush");
    assert_pad_matches("video_00", &pad.data, expected);
    s
}

#[test]
fn hls_ts_vod_byte_exact() {
    let env = Env::new();
    let st = hls_ts_vod(&env.path("ts"));
    let e = expected_media(&st.playlist);
    let s = single_pad_exact(&env.origin.url_of(&st.playlist), &e, "video/mpegts");
    let caps = &s.pads["video_00"].caps[0];
    let cs = caps.structure(0).unwrap();
    assert_eq!(
        cs.get::<bool>("systemstream").ok(),
        Some(true),
        "caps {caps}"
    );
    // Every segment requested exactly once, in order.
    let segs = ok_paths(&env.origin.log(), "/ts/seg");
    let want: Vec<String> = e.uris.iter().map(|u| format!("/ts/{u}")).collect();
    assert_eq!(segs, want);
}

#[test]
fn hls_fmp4_vod_byte_exact() {
    let env = Env::new();
    let st = hls_fmp4_vod(&env.path("fmp4"));
    let e = expected_media(&st.playlist);
    assert!(e.init.is_some());
    single_pad_exact(&env.origin.url_of(&st.playlist), &e, "video/quicktime");
}

#[test]
fn hls_byterange_vod_byte_exact() {
    let env = Env::new();
    let st = hls_byterange_vod(&env.path("br"));
    let e = expected_media(&st.playlist);
    single_pad_exact(&env.origin.url_of(&st.playlist), &e, "video/mpegts");
    // Media requests must be ranged (no whole-file download).
    let log: Vec<RequestRecord> = env
        .origin
        .requests_for("/br/playlist.ts")
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert!(!log.is_empty());
    for r in &log {
        assert!(
            r.range.is_some(),
            "unranged request for single-file TS: {r:?}"
        );
        assert_eq!(r.status, 206, "{r:?}");
    }
    let total: u64 = log.iter().map(|r| r.body_bytes).sum();
    assert_eq!(
        total as usize,
        e.all().len(),
        "bytes fetched for byte-range media"
    );
}

#[test]
fn hls_aes_explicit_iv_byte_exact() {
    let env = Env::new();
    let st = hls_aes_vod(&env.path("aes"), AesIv::Explicit);
    let e = expected_media(&st.playlist);
    single_pad_exact(&env.origin.url_of(&st.playlist), &e, "video/mpegts");
    assert!(!env.origin.requests_for("/aes/enc.key").is_empty());
}

#[test]
fn hls_aes_sequence_iv_byte_exact() {
    let env = Env::new();
    let st = hls_aes_vod(&env.path("aes"), AesIv::MediaSequence);
    let e = expected_media(&st.playlist);
    let plain: Vec<u8> = st
        .plain_segments
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(e.all(), plain, "fixture self-check");
    single_pad_exact(&env.origin.url_of(&st.playlist), &e, "video/mpegts");
}

#[test]
fn hls_alt_audio_byte_exact() {
    let env = Env::new();
    let st = hls_alt_audio(&env.path("alt"));
    let ev = expected_media(&st.media[0]);
    let ea = expected_media(&st.media[1]);
    let run = MeshRun::new(&env.origin.url_of(&st.playlist));
    let s = run.run_to_eos(VOD_TIMEOUT);
    ok_only(&s);
    let mut names = s.pad_order.clone();
    names.sort();
    assert_eq!(names, vec!["audio_00".to_string(), "video_00".to_string()]);
    assert!(s.no_more_pads);
    let v = &s.pads["video_00"];
    let a = &s.pads["audio_00"];
    assert_eq!(v.caps_name().as_deref(), Some("video/mpegts"));
    assert_eq!(a.caps_name().as_deref(), Some("video/mpegts"));
    assert!(v.eos && a.eos);
    assert_pad_matches("video_00", &v.data, &ev);
    assert_pad_matches("audio_00", &a.data, &ea);
}

#[test]
fn hls_uri_handler_mesh_http() {
    init();
    let env = Env::new();
    let st = hls_ts_vod(&env.path("ts"));
    let e = expected_media(&st.playlist);
    let uri = env.origin.mesh_url_of(&st.playlist);
    let run = MeshRun::from_uri(&uri);
    assert_eq!(
        run.src.factory().unwrap().name(),
        "meshsrc",
        "mesh+http:// must be handled by meshsrc"
    );
    assert_eq!(
        run.src.property::<Option<String>>("location").as_deref(),
        Some(env.origin.url_of(&st.playlist).as_str())
    );
    let handler = run.src.dynamic_cast_ref::<gst::URIHandler>().unwrap();
    assert_eq!(
        handler.uri().map(|u| u.to_string()).as_deref(),
        Some(uri.as_str())
    );
    let protocols: Vec<String> = handler.protocols().iter().map(|p| p.to_string()).collect();
    assert!(
        protocols.contains(&"mesh+http".to_string()),
        "{protocols:?}"
    );
    assert!(
        protocols.contains(&"mesh+https".to_string()),
        "{protocols:?}"
    );
    let s = run.run_to_eos(VOD_TIMEOUT);
    ok_only(&s);
    assert_pad_matches("video_00", &s.pads["video_00"].data, &e);
}

#[test]
fn hls_properties_defaults() {
    init();
    let e = gst::ElementFactory::make("meshsrc").build().unwrap();
    assert!(e.is::<gst::Bin>(), "meshsrc must be a GstBin");
    assert_eq!(e.property::<i32>("max-retries"), 3);
    assert_eq!(e.property::<u32>("timeout"), 15);
    assert_eq!(e.property::<u32>("connection-bitrate"), 0);
    assert!((e.property::<f32>("bandwidth-target-ratio") - 0.8).abs() < 1e-6);
    let _: u32 = e.property("min-bitrate");
    let _: u32 = e.property("max-bitrate");
    let _: u32 = e.property("start-bitrate");
    let _: u64 = e.property("max-buffering-time");
    e.set_property("max-bitrate", 600_000u32);
    assert_eq!(e.property::<u32>("max-bitrate"), 600_000);
}

#[test]
fn hls_redirect_master_byte_exact() {
    let env = Env::new();
    let st = hls_master_three_variants(&env.path("m3"));
    let url = env.origin.url("redirect/m3/master.m3u8");
    let run = MeshRun::with(&url, |e| {
        // Deterministic variant: allow everything, fixed connection speed.
        e.set_property("connection-bitrate", 100_000_000u32);
    });
    let s = run.run_to_eos(VOD_TIMEOUT);
    ok_only(&s);
    let log = env.origin.log();
    // Only the master went through the redirect; everything else resolved against
    // the final URL (/m3/master.m3u8).
    let via_redirect: Vec<&str> = log
        .iter()
        .map(|r| r.path.as_str())
        .filter(|p| p.starts_with("/redirect/"))
        .collect();
    assert_eq!(
        via_redirect,
        vec!["/redirect/m3/master.m3u8"],
        "log: {log:#?}"
    );
    assert_eq!(ok_paths(&log, "/m3/master.m3u8").len(), 1);
    let seg_paths = ok_paths(&log, "/m3/v");
    let variant = seg_paths
        .iter()
        .find(|p| p.ends_with(".ts"))
        .map(|p| p[4..6].to_string())
        .expect("no segment requests");
    let idx: usize = variant[1..].parse().unwrap();
    assert_eq!(idx, 2, "with 100 Mbit/s the top variant must be chosen");
    assert_pad_matches(
        "video_00",
        &s.pads["video_00"].data,
        &expected_media(&st.media[idx]),
    );
}

#[test]
fn hls_query_strings_preserved() {
    let env = Env::new();
    let st = hls_fmp4_vod(&env.path("q"));
    let pl = rewrite_with_query(&st.playlist, "tok.m3u8", "token=abc");
    let e = expected_media(&pl);
    let url = format!("{}?session=s1", env.origin.url_of(&pl));
    single_pad_exact(&url, &e, "video/quicktime");
    let log = env.origin.log();
    let media: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| r.method == "GET")
        .filter(|r| r.path_only().ends_with(".m4s") || r.path_only().ends_with(".mp4"))
        .collect();
    assert_eq!(media.len(), e.segments.len() + 1, "log: {log:#?}");
    for r in media {
        assert_eq!(r.query(), Some("token=abc"), "query dropped: {}", r.path);
    }
    let manifest: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| r.path_only() == "/q/tok.m3u8")
        .collect();
    assert_eq!(manifest[0].query(), Some("session=s1"));
}

#[test]
fn hls_segment_retry_503_byte_exact() {
    let env = Env::new();
    let st = hls_ts_vod(&env.path("ts"));
    let e = expected_media(&st.playlist);
    let seg1 = format!("/ts/{}", e.uris[1]);
    env.origin.fail_next(&seg1, 2, 503);
    let run = MeshRun::with(&env.origin.url_of(&st.playlist), |e| {
        e.set_property("max-retries", 3i32)
    });
    let s = run.run_to_eos(VOD_TIMEOUT);
    ok_only(&s);
    assert_pad_matches("video_00", &s.pads["video_00"].data, &e);
    let statuses: Vec<u16> = env
        .origin
        .requests_for(&seg1)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![503, 503, 200]);
}

#[test]
fn hls_seek_vod_segment_accurate() {
    let env = Env::new();
    let st = hls_ts_vod_secs(&env.path("ts"), 10, true);
    let e = expected_media(&st.playlist);
    let run = MeshRun::new(&env.origin.url_of(&st.playlist));
    let _ = run.pause();
    let has_data = |s: &RunState| s.pads.get("video_00").is_some_and(|p| !p.data.is_empty());
    assert!(
        run.wait_until(VOD_TIMEOUT, |s| has_data(s) || !s.errors.is_empty()),
        "no data in PAUSED"
    );
    ok_only(&run.snapshot());
    let _ = run.pipeline.state(gst::ClockTime::from_seconds(5));

    let dur = run
        .pipeline
        .query_duration::<gst::ClockTime>()
        .expect("duration query");
    let total = e.total_duration();
    assert!(
        (dur.nseconds() as f64 / 1e9 - total).abs() < 0.05,
        "duration {dur} vs playlist total {total}"
    );
    let mut q = gst::query::Seeking::new(gst::Format::Time);
    assert!(run.pipeline.query(&mut q), "seeking query failed");
    let (seekable, _, _) = q.result();
    assert!(seekable, "VOD must be seekable");

    let target = 5.0;
    let seg = e.segment_at(target);
    assert_eq!(seg, 2);
    run.pipeline
        .seek_simple(
            gst::SeekFlags::FLUSH,
            gst::ClockTime::from_nseconds((target * 1e9) as u64),
        )
        .expect("seek");
    assert!(
        run.wait_until(VOD_TIMEOUT, |s| {
            !s.errors.is_empty()
                || s.pads["video_00"]
                    .flush_marks
                    .last()
                    .is_some_and(|&m| s.pads["video_00"].data.len() > m)
        }),
        "no data after the flushing seek"
    );
    let _ = run.play();
    assert_eq!(
        run.wait_done(VOD_TIMEOUT),
        Done::Eos,
        "{}",
        run.snapshot().errors_text()
    );
    let s = run.snapshot();
    ok_only(&s);
    let pad = &s.pads["video_00"];
    assert!(
        !pad.flush_marks.is_empty(),
        "no FLUSH_STOP seen by the sink"
    );
    let got = pad.data_since_last_flush();
    let exp = e.bytes_from_segment(seg);
    assert_bytes_eq(
        "video_00 after seek to 5 s",
        got,
        &exp,
        Some(&part_sizes(&e, seg)),
    );
}

fn frames_vs_hlsdemux2(st: &Stream, env: &Env) {
    let mesh = run_playbin3(&env.origin.mesh_url_of(&st.playlist), VOD_TIMEOUT, |_| {});
    assert_eq!(
        mesh.done,
        Done::Eos,
        "playbin3 on mesh+http: {}",
        mesh.state.errors_text()
    );
    assert!(
        mesh.state.elements.iter().any(|e| e == "meshsrc"),
        "meshsrc not used: {:?}",
        mesh.state.elements
    );
    let oracle = run_playbin3(&env.origin.url_of(&st.playlist), VOD_TIMEOUT, |_| {});
    assert_eq!(
        oracle.done,
        Done::Eos,
        "playbin3 on http: {}",
        oracle.state.errors_text()
    );
    assert!(
        oracle.state.elements.iter().any(|e| e == "hlsdemux2"),
        "oracle did not use hlsdemux2: {:?}",
        oracle.state.elements
    );
    assert!(mesh.video_frames() > 0);
    assert_eq!(
        mesh.video_frames(),
        oracle.video_frames(),
        "decoded video frames: meshsrc vs hlsdemux2"
    );
    assert_eq!(
        mesh.video_frames(),
        st.video_frames,
        "decoded frames vs encoded"
    );
    assert_eq!(mesh.state.audio_buffers > 0, oracle.state.audio_buffers > 0);
}

#[test]
fn hls_playbin3_ts_frames_match_hlsdemux2() {
    let env = Env::new();
    let st = hls_ts_vod(&env.path("ts"));
    frames_vs_hlsdemux2(&st, &env);
}

#[test]
fn hls_playbin3_fmp4_frames_match_hlsdemux2() {
    let env = Env::new();
    let st = hls_fmp4_vod(&env.path("fmp4"));
    frames_vs_hlsdemux2(&st, &env);
}

/// Alternate audio renditions are streams of the collection, and select-streams switches
/// `audio_00` to another language from the segment after the one it was pushing.
#[test]
fn hls_select_streams_switches_the_audio_rendition() {
    use std::sync::{Arc, Condvar, Mutex};
    const HELD: u32 = 2;
    let env = Env::new();
    let st = hls_two_languages(&env.path("lang"));
    let (video, eng, fra) = (
        expected_media(&st.media[0]),
        expected_media(&st.media[1]),
        expected_media(&st.media[2]),
    );
    let run = MeshRun::new(&env.origin.url_of(&st.playlist));
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
                let deadline = std::time::Instant::now() + VOD_TIMEOUT;
                while !g.2 && std::time::Instant::now() < deadline {
                    g = cond
                        .wait_timeout(g, std::time::Duration::from_millis(100))
                        .unwrap()
                        .0;
                }
            }
            gst::PadProbeReturn::Ok
        });
    });
    let _ = run.play();
    assert!(
        run.wait_until(VOD_TIMEOUT, |_| gate.0.lock().unwrap().1),
        "audio_00 never reached buffer {HELD}"
    );
    let state = run.snapshot();
    let collections: Vec<&gst::StreamCollection> = state
        .collections
        .iter()
        .filter(|(from_meshsrc, _)| *from_meshsrc)
        .map(|(_, c)| c)
        .collect();
    assert_eq!(collections.len(), 1);
    let streams: Vec<gst::Stream> = collections[0].iter().collect();
    let kinds: Vec<gst::StreamType> = streams.iter().map(|s| s.stream_type()).collect();
    assert_eq!(
        kinds,
        [
            gst::StreamType::VIDEO,
            gst::StreamType::AUDIO,
            gst::StreamType::AUDIO
        ]
    );
    let language = |s: &gst::Stream| {
        s.tags().and_then(|t| {
            t.get::<gst::tags::LanguageCode>()
                .map(|v| v.get().to_string())
        })
    };
    let languages: Vec<Option<String>> = streams.iter().map(language).collect();
    assert_eq!(
        languages,
        [None, Some("eng".to_string()), Some("fra".to_string())]
    );
    let ids: Vec<String> = streams
        .iter()
        .map(|s| s.stream_id().unwrap().to_string())
        .collect();

    let select = gst::event::SelectStreams::builder([ids[0].as_str(), ids[2].as_str()]).build();
    let seqnum = select.seqnum();
    assert!(run.src.send_event(select), "select-streams not handled");
    {
        let (lock, cond) = &*gate;
        lock.lock().unwrap().2 = true;
        cond.notify_all();
    }
    assert_eq!(run.wait_done(VOD_TIMEOUT), Done::Eos);
    let state = run.snapshot();
    ok_only(&state);
    assert!(state.warnings.is_empty(), "{}", state.errors_text());

    let held = HELD as usize;
    let mut parts: Vec<Vec<u8>> = eng.segments[..held].to_vec();
    parts.extend(fra.segments[held..].iter().cloned());
    let audio = &state.pads["audio_00"];
    assert_bytes_eq(
        "audio_00",
        &audio.data,
        &parts.concat(),
        Some(&parts.iter().map(Vec::len).collect::<Vec<_>>()),
    );
    let switch_at: usize = eng.segments[..held].iter().map(Vec::len).sum();
    assert_eq!(
        audio.stream_starts,
        [(ids[1].clone(), 0), (ids[2].clone(), switch_at)]
    );
    assert_pad_matches("video_00", &state.pads["video_00"].data, &video);
    let selected: Vec<(gst::Seqnum, Vec<String>)> = state
        .streams_selected
        .iter()
        .filter(|m| m.from_meshsrc)
        .map(|m| (m.seqnum, m.stream_ids.clone()))
        .collect();
    assert_eq!(selected.len(), 2, "{selected:?}");
    assert_eq!(selected[0].1, [ids[0].clone(), ids[1].clone()]);
    assert_eq!(selected[1], (seqnum, vec![ids[0].clone(), ids[2].clone()]));
}

//! Variant selection on a three-variant master (BANDWIDTH 220000 / 550000 /
//! 1100000): meshsrc must pick the same variant as GStreamer's hlsdemux2 (through
//! playbin3 on http://) with the same properties, announce it with a
//! `mesh-variant-changed` message, and output exactly that variant's bytes.

mod common;

use common::*;
use gst::prelude::*;

#[derive(Clone, Copy, Debug)]
enum Prop {
    U32(&'static str, u32),
}

fn apply(e: &gst::Element, props: &[Prop]) {
    for p in props {
        match *p {
            Prop::U32(n, v) => e.set_property(n, v),
        }
    }
}

/// Variant index of a `/m3/v<N>/...ts` path.
fn variant_of(path: &str) -> Option<usize> {
    let rest = path.strip_prefix("/m3/v")?;
    if !rest.ends_with(".ts") {
        return None;
    }
    rest.split('/').next()?.parse().ok()
}

/// Segment index of a `/m3/v<N>/seg_<i>.ts` path.
fn segment_of(path: &str) -> Option<usize> {
    let f = path.rsplit('/').next()?;
    f.strip_prefix("seg_")?.strip_suffix(".ts")?.parse().ok()
}

/// (segment index, variant) of every successful segment request, in order.
fn segment_requests(log: &[RequestRecord]) -> Vec<(usize, usize)> {
    ok_paths(log, "/m3/v")
        .iter()
        .filter_map(|p| Some((segment_of(p)?, variant_of(p)?)))
        .collect()
}

fn variants_requested(log: &[RequestRecord]) -> Vec<usize> {
    let mut v: Vec<usize> = segment_requests(log).iter().map(|&(_, v)| v).collect();
    v.sort();
    v.dedup();
    v
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Fixed connection speed: one variant from the start, no switch.
    Fixed,
    /// Measured speed: the variant may change; compare the variant of the last segment.
    Steady,
}

/// Runs meshsrc and the hlsdemux2 oracle with `props` and asserts that both end up
/// on variant `want`, the mesh-variant-changed messages, and the bytes.
fn check_choice(props: &[Prop], want: usize, mode: Mode) {
    let env = Env::new();
    let st = hls_master_three_variants(&env.path("m3"));
    let master = std::fs::read(&st.playlist).unwrap();
    let m = match m3u8_rs::parse_playlist_res(&master) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(m)) => m,
        _ => panic!("master"),
    };
    let expected: Vec<ExpectedMedia> = st.media.iter().map(|p| expected_media(p)).collect();
    let nseg = expected[0].segments.len();

    // meshsrc
    let p = props.to_vec();
    let run = MeshRun::with(&env.origin.url_of(&st.playlist), move |e| apply(e, &p));
    let s = run.run_to_eos(VOD_TIMEOUT);
    assert!(s.errors.is_empty(), "{}", s.errors_text());
    let mesh_reqs = segment_requests(&env.origin.log());
    let mesh_variants = variants_requested(&env.origin.log());

    // hlsdemux2 oracle
    env.origin.clear_log();
    let p = props.to_vec();
    let oracle = run_playbin3(&env.origin.url_of(&st.playlist), VOD_TIMEOUT, move |e| {
        if e.factory().is_some_and(|f| f.name() == "hlsdemux2") {
            apply(e, &p);
        }
    });
    assert_eq!(
        oracle.done,
        Done::Eos,
        "oracle: {}",
        oracle.state.errors_text()
    );
    assert!(oracle.state.elements.iter().any(|e| e == "hlsdemux2"));
    let oracle_reqs = segment_requests(&env.origin.log());
    let oracle_variants = variants_requested(&env.origin.log());

    // Variant that delivered each segment index (last successful request wins).
    let per_index = |reqs: &[(usize, usize)]| -> Vec<Option<usize>> {
        let mut v = vec![None; nseg];
        for &(i, var) in reqs {
            if i < nseg {
                v[i] = Some(var);
            }
        }
        v
    };
    let mesh_idx = per_index(&mesh_reqs);
    let oracle_idx = per_index(&oracle_reqs);
    assert!(
        mesh_idx.iter().all(|v| v.is_some()),
        "meshsrc segment requests: {mesh_reqs:?}"
    );
    match mode {
        Mode::Fixed => {
            assert_eq!(
                mesh_variants, oracle_variants,
                "variants whose segments were requested: meshsrc {mesh_reqs:?} vs hlsdemux2 {oracle_reqs:?} (props {props:?})"
            );
            assert_eq!(
                mesh_variants,
                vec![want],
                "meshsrc variant (props {props:?})"
            );
        }
        Mode::Steady => {
            assert_eq!(
                mesh_idx[nseg - 1],
                oracle_idx[nseg - 1],
                "variant of the last segment: meshsrc {mesh_reqs:?} vs hlsdemux2 {oracle_reqs:?} (props {props:?})"
            );
            assert_eq!(mesh_idx[nseg - 1], Some(want), "meshsrc {mesh_reqs:?}");
            assert!(
                mesh_variants.iter().all(|&v| v <= want),
                "meshsrc fetched a variant above max-bitrate: {mesh_reqs:?}"
            );
        }
    }

    // mesh-variant-changed: "initial" then one "abr" per switch, last = final variant.
    let changes = s.variant_changes();
    assert!(!changes.is_empty(), "no mesh-variant-changed message");
    assert_eq!(changes[0].reason, "initial", "{changes:?}");
    assert!(
        changes[1..].iter().all(|c| c.reason == "abr"),
        "{changes:?}"
    );
    let switches = mesh_idx.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(
        changes.len(),
        1 + switches,
        "messages {changes:?} for requests {mesh_reqs:?}"
    );
    let last = changes.last().unwrap();
    assert_eq!(last.pad_name, "video_00");
    assert_eq!(last.bandwidth, m.variants[want].bandwidth, "{last:?}");
    assert!(
        last.uri.ends_with(&format!("/m3/v{want}/index.m3u8")),
        "variant uri {:?}",
        last.uri
    );
    let first_var = mesh_idx[0].unwrap();
    assert_eq!(
        changes[0].bandwidth, m.variants[first_var].bandwidth,
        "{changes:?}"
    );
    let msg = s
        .element_msgs
        .iter()
        .find(|m| m.structure.name() == "mesh-variant-changed")
        .unwrap();
    assert!(msg.from_meshsrc, "posted by {}", msg.src_path);

    // Bytes: each segment from the variant that delivered it.
    assert_eq!(s.pad_order, vec!["video_00".to_string()]);
    let mut exp = Vec::new();
    let mut sizes = Vec::new();
    for (i, v) in mesh_idx.iter().enumerate() {
        let seg = &expected[v.unwrap()].segments[i];
        sizes.push(seg.len());
        exp.extend_from_slice(seg);
    }
    assert_bytes_eq(
        &format!("video_00 (variants per segment {mesh_idx:?})"),
        &s.pads["video_00"].data,
        &exp,
        Some(&sizes),
    );
}

/// max-bitrate alone (speed measured: loopback is fast): both settle on the middle.
#[test]
fn variants_max_bitrate_selects_middle() {
    check_choice(&[Prop::U32("max-bitrate", 600_000)], 1, Mode::Steady);
}

#[test]
fn variants_connection_bitrate_high_selects_top() {
    check_choice(
        &[Prop::U32("connection-bitrate", 2_000_000)],
        2,
        Mode::Fixed,
    );
}

#[test]
fn variants_connection_bitrate_mid_selects_middle() {
    check_choice(&[Prop::U32("connection-bitrate", 800_000)], 1, Mode::Fixed);
}

#[test]
fn variants_connection_bitrate_low_selects_bottom() {
    check_choice(&[Prop::U32("connection-bitrate", 300_000)], 0, Mode::Fixed);
}

/// hlsdemux2 (1.22) uses a fixed connection-bitrate as is: neither
/// bandwidth-target-ratio nor max-bitrate lowers the choice (1.3 Mbit/s -> 1.1 Mbit/s
/// variant; 100 Mbit/s with max-bitrate 600 kbit/s -> top variant).
#[test]
fn variants_connection_bitrate_as_hlsdemux2() {
    check_choice(
        &[Prop::U32("connection-bitrate", 1_300_000)],
        2,
        Mode::Fixed,
    );
    check_choice(
        &[
            Prop::U32("connection-bitrate", 100_000_000),
            Prop::U32("max-bitrate", 600_000),
        ],
        2,
        Mode::Fixed,
    );
}

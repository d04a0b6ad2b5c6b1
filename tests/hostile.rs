//! Hostile peers and trackers against a real viewer (`gst-launch-1.0 meshsrc …`, a process of
//! its own, on a live origin on loopback). The peers are `common::hostile`'s own client of the
//! wire format, on 127.0.0.2; the tracker is the rig's, which relays like a real one and can
//! turn hostile. Each test asserts, of the victim: its output is exactly the origin's segments
//! from the live starting point to the end, none skipped; it exits cleanly; its peak RSS
//! (VmHWM) stays under [`RSS_LIMIT`]; and what it counted in `segments-rejected` and
//! `peers-banned`.

mod common;

use common::hostile::{Attack, HostileConfig, HostilePeer, Rig, TrackerMode};
use common::viewer::{LIVE, Viewer, assert_live_exact};
use common::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The victim's peak RSS must stay under this under any single attack.
const RSS_LIMIT: u64 = 60 * 1000 * 1000;
/// Live segments published after the first 10.
const SEGMENTS: u64 = 8;
/// Where live playback starts: 10 segments at the start, three target durations held back.
const FIRST_PLAYED: u64 = 7;
const SWARM_ID: &str = "gst-mesh-hostile-test";

fn live_config(window: usize, start: u64, end_after: u64) -> LiveConfig {
    LiveConfig {
        window,
        start_segments: start,
        segment_duration: Duration::from_secs(SEGMENT_SECS),
        looped: false,
        end_after: Some(end_after),
        ..Default::default()
    }
}

/// A live stream of 10 + [`SEGMENTS`] segments; or, with `vod`, all of them listed at once with
/// ENDLIST.
fn stream(vod: bool) -> Env {
    let env = Env::new();
    let total = 10 + SEGMENTS;
    let vod_stream = hls_ts_vod_secs(&env.path("vod"), (total + 4) * SEGMENT_SECS, true);
    let config = if vod {
        live_config(total as usize, total, total)
    } else {
        live_config(6, 10, total)
    };
    env.origin
        .add_live_playlist(LIVE, &vod_stream.playlist, config);
    env
}

/// The origin's bytes of each segment id (its media sequence number), for hostile peers that
/// serve real bytes.
fn segment_source(env: &Env) -> Arc<dyn Fn(i64) -> Option<Vec<u8>> + Send + Sync> {
    let segments: HashMap<i64, Vec<u8>> = (0..10 + SEGMENTS + 4)
        .map(|seq| (seq as i64, env.origin.live_segment_bytes(LIVE, seq)))
        .collect();
    Arc::new(move |id| segments.get(&id).cloned())
}

fn viewer(env: &Env, rig: &Rig, name: &str, extra: &[String]) -> Viewer {
    let mut properties = vec![
        format!("tracker={}", rig.url),
        format!("segment-hashes={}", env.origin.live_hashes_url(LIVE)),
        format!("swarm-id={SWARM_ID}"),
    ];
    properties.extend_from_slice(extra);
    Viewer::spawn(env, name, &env.origin.url(LIVE), &properties)
}

fn hostile(rig: &Rig, env: &Env, attack: Attack, identities: u64) -> HostilePeer {
    hostile_waiting(rig, env, attack, identities, Duration::from_secs(6))
}

/// A hostile peer that gives up on an identity after `link_wait` without a link.
fn hostile_waiting(
    rig: &Rig,
    env: &Env,
    attack: Attack,
    identities: u64,
    link_wait: Duration,
) -> HostilePeer {
    let info_hash = rig.wait_for_swarm(Duration::from_secs(20));
    HostilePeer::spawn(
        rig,
        HostileConfig {
            tracker: rig.url.clone(),
            info_hash,
            attack,
            identities,
            link_wait,
            segments: segment_source(env),
            duration: Duration::from_secs(60),
        },
    )
}

/// The victim played every live segment from the starting point to the end, stayed under the
/// RSS limit, and exited cleanly (`wait` asserts the exit status).
fn assert_played_every_segment(env: &Env, v: &mut Viewer) {
    v.wait(Duration::from_secs(120));
    let first = assert_live_exact(&env.origin, &v.name, &v.output(), 10 + SEGMENTS - 1);
    assert_eq!(
        first, FIRST_PLAYED,
        "{}: playback started at {first}",
        v.name
    );
    let log = std::fs::read_to_string(&v.messages).unwrap_or_default();
    assert!(
        !log.contains("panicked"),
        "{}: a panic:\n{}",
        v.name,
        v.log()
    );
    eprintln!(
        "{}: peak RSS {:.1} MB, CPU {:?}, {:?}",
        v.name,
        v.peak_rss() as f64 / 1e6,
        v.cpu_time(),
        v.stats()
    );
    // The sampler saw the process run (a viewer takes well over 5 MB).
    assert!(v.peak_rss() > 5_000_000, "{}: no RSS sampled", v.name);
    assert!(
        v.peak_rss() < RSS_LIMIT,
        "{}: peak RSS {} B over {RSS_LIMIT} B",
        v.name,
        v.peak_rss()
    );
}

/// Issue 15's first finding: a peer claims one byte more than the segment has, sends every real
/// byte and stalls. The resume past the end gets 416 and starts again from byte 0; the claim is
/// a lie the origin contradicts, so the peer is banned, and its re-offers from its address are
/// ignored.
#[test]
fn a_claim_of_one_byte_more_then_a_stall_is_banned_and_live_plays_every_segment() {
    let env = stream(false);
    let rig = Rig::start(TrackerMode::Relay);
    let mut victim = viewer(&env, &rig, "victim", &[]);
    let peer = hostile(&rig, &env, Attack::ClaimExtra { extra: 1 }, 6);
    assert_played_every_segment(&env, &mut victim);
    let s = victim.stats();
    assert!(
        peer.get(|c| &c.requests) >= 1,
        "the victim never asked the liar"
    );
    assert_eq!(s.peers_banned, 1, "{s:?}");
    assert_eq!(s.segments_rejected, 0, "{s:?}");
    assert_eq!(
        peer.get(|c| &c.links),
        1,
        "the banned peer linked again under a new peer_id"
    );
    assert!(peer.get(|c| &c.identities) >= 2);
    // Every segment the liar was asked for came whole from the CDN after all.
    assert!(s.segments_cdn >= SEGMENTS, "{s:?}");
}

/// The same lie against VOD: the viewer reaches EOS with every segment.
#[test]
fn vod_with_a_peer_claiming_more_than_it_sends_reaches_eos() {
    let env = stream(true);
    let rig = Rig::start(TrackerMode::Relay);
    let mut victim = viewer(&env, &rig, "victim", &[]);
    let peer = hostile(&rig, &env, Attack::ClaimExtra { extra: 100_000 }, 4);
    victim.wait(Duration::from_secs(120));
    let total = 10 + SEGMENTS;
    let first = assert_live_exact(&env.origin, "victim", &victim.output(), total - 1);
    assert_eq!(first, 0, "VOD playback started at segment {first}");
    let rss = victim.peak_rss();
    assert!(rss > 5_000_000 && rss < RSS_LIMIT, "peak RSS {rss} B");
    let s = victim.stats();
    eprintln!("{s:?}, hostile asked {} times", peer.get(|c| &c.requests));
    if peer.get(|c| &c.requests) > 0 {
        assert_eq!(s.peers_banned, 1, "{s:?}");
    }
}

/// A `segment data` header restarted for the same request is a lie: the link closes at once;
/// the second time (a new peer_id, the same address) the peer is banned.
#[test]
fn a_restarted_header_closes_the_link_and_the_second_offence_bans() {
    let env = stream(false);
    let rig = Rig::start(TrackerMode::Relay);
    let mut victim = viewer(&env, &rig, "victim", &[]);
    let peer = hostile(&rig, &env, Attack::HeaderRestart, 6);
    assert_played_every_segment(&env, &mut victim);
    let s = victim.stats();
    assert_eq!(s.peers_banned, 1, "{s:?}");
    assert_eq!(s.segments_rejected, 0, "{s:?}");
    assert_eq!(
        peer.get(|c| &c.links),
        2,
        "one offence per link, banned at the second"
    );
    assert_eq!(peer.get(|c| &c.closed_by_victim), 2);
}

/// A message of 256 KiB (the victim advertises 64 KiB) is refused while it arrives and closes
/// the link; the second link does the same and bans the peer.
#[test]
fn an_oversized_message_closes_the_link_without_being_buffered() {
    let env = stream(false);
    let rig = Rig::start(TrackerMode::Relay);
    let mut victim = viewer(&env, &rig, "victim", &[]);
    let peer = hostile(&rig, &env, Attack::Oversized, 6);
    assert_played_every_segment(&env, &mut victim);
    assert!(peer.get(|c| &c.links) >= 1);
    assert_eq!(peer.get(|c| &c.links), peer.get(|c| &c.closed_by_victim));
}

/// Unsolicited `segment data` headers close the link at the first one.
#[test]
fn unsolicited_answers_close_the_link_and_repeated_offences_ban() {
    let env = stream(false);
    let rig = Rig::start(TrackerMode::Relay);
    let mut victim = viewer(&env, &rig, "victim", &[]);
    let peer = hostile(
        &rig,
        &env,
        Attack::UnsolicitedHeaders { per_second: 2_000 },
        6,
    );
    assert_played_every_segment(&env, &mut victim);
    let s = victim.stats();
    assert_eq!(s.peers_banned, 1, "{s:?}");
    assert_eq!(peer.get(|c| &c.links), 2);
}

/// 2,000 `cancel`s a second: nothing is kept per cancel, the link is cut once it has kept its
/// command budget spent for 3 s, and the victim plays on.
#[test]
fn a_flood_of_cancels_costs_no_memory() {
    let env = stream(false);
    let rig = Rig::start(TrackerMode::Relay);
    let mut victim = viewer(&env, &rig, "victim", &[]);
    let peer = hostile(&rig, &env, Attack::CancelFlood { per_second: 2_000 }, 1);
    assert_played_every_segment(&env, &mut victim);
    let sent = peer.get(|c| &c.commands_sent);
    eprintln!("cancels sent: {sent}");
    // The budget is 100 a second; 3 s over it (LINK_FLOOD_GRACE) cuts the link, a first
    // offence: the stack below would otherwise queue the rest.
    assert!(sent > 2_000, "only {sent} cancels went out");
    assert_eq!(peer.get(|c| &c.links), 1);
    assert_eq!(peer.get(|c| &c.closed_by_victim), 1);
    assert_eq!(victim.stats().peers_banned, 0);
}

/// Announcements of 4,000 + 4,000 ids (under the bound) as fast as they go: read at the
/// link's command budget, at most five a second reach the scheduler.
#[test]
fn a_flood_of_announcements_is_read_at_the_links_budget() {
    let env = stream(false);
    let rig = Rig::start(TrackerMode::Relay);
    let mut victim = viewer(&env, &rig, "victim", &[]);
    let peer = hostile(&rig, &env, Attack::AnnounceFlood { ids: 4_000 }, 1);
    assert_played_every_segment(&env, &mut victim);
    let sent = peer.get(|c| &c.commands_sent);
    let seconds = victim.cpu_time().as_secs_f64();
    eprintln!("announcements sent: {sent}, victim CPU {seconds:.1} s");
    assert_eq!(victim.stats().peers_banned, 0);
}

/// Announcements longer than the bound are an offence.
#[test]
fn announcements_over_the_bound_ban_the_peer() {
    let env = stream(false);
    let rig = Rig::start(TrackerMode::Relay);
    let mut victim = viewer(&env, &rig, "victim", &[]);
    let peer = hostile(&rig, &env, Attack::AnnounceFlood { ids: 65_025 }, 6);
    assert_played_every_segment(&env, &mut victim);
    assert_eq!(victim.stats().peers_banned, 1);
    assert_eq!(peer.get(|c| &c.links), 2);
}

/// Issue 15's third finding: re-links by a banned peer used to leak the peer budget until the
/// mesh was off. A peer banned at its second malformed link re-offers under twenty new
/// peer_ids; each offer is ignored before any handshake, without costing budget, and an
/// honest viewer that comes later still links with the victim and gets segments from it.
#[test]
fn an_honest_peer_still_connects_after_many_re_offers_by_a_banned_one() {
    let env = stream(false);
    let rig = Rig::start(TrackerMode::Relay);
    let mut victim = viewer(&env, &rig, "victim", &[]);
    let peer = hostile_waiting(&rig, &env, Attack::Malformed, 20, Duration::from_secs(2));
    // Once it is banned and re-offering, bring in an honest viewer 12 s behind the edge; the
    // re-offers go on meanwhile.
    let wait = std::time::Instant::now();
    while peer.get(|c| &c.identities) < 4 && wait.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut honest = viewer(&env, &rig, "honest", &["live-delay=12000000000".to_owned()]);
    assert_played_every_segment(&env, &mut victim);
    honest.wait(Duration::from_secs(120));
    assert_live_exact(&env.origin, "honest", &honest.output(), 10 + SEGMENTS - 1);
    let (v, h) = (victim.stats(), honest.stats());
    eprintln!("victim {v:?}\nhonest {h:?}");
    assert!(peer.get(|c| &c.identities) >= 8);
    // Banned by the victim, or by the honest viewer when the hostile peer met it first.
    assert!(v.peers_banned + h.peers_banned >= 1, "{v:?} {h:?}");
    assert!(
        peer.get(|c| &c.links) <= 4,
        "{} links",
        peer.get(|c| &c.links)
    );
    assert!(
        h.bytes_p2p > 0,
        "the honest viewer got nothing from the victim: {h:?}"
    );
}

/// A peer that asks the victim for segments and never reads the answers holds the upload turn
/// only until the send deadline: it is cut, and an honest viewer still gets its segments from
/// the victim.
#[test]
fn a_reader_that_stops_reading_is_cut_and_uploads_to_honest_peers_go_on() {
    let env = stream(false);
    let rig = Rig::start(TrackerMode::Relay);
    let mut victim = viewer(&env, &rig, "victim", &[]);
    let peer = hostile(&rig, &env, Attack::NoRead, 3);
    std::thread::sleep(Duration::from_secs(4));
    let mut honest = viewer(&env, &rig, "honest", &["live-delay=12000000000".to_owned()]);
    assert_played_every_segment(&env, &mut victim);
    honest.wait(Duration::from_secs(120));
    assert_live_exact(&env.origin, "honest", &honest.output(), 10 + SEGMENTS - 1);
    let (v, h) = (victim.stats(), honest.stats());
    eprintln!(
        "victim {v:?}\nhonest {h:?}\nhostile received {} B",
        peer.get(|c| &c.bytes_received)
    );
    assert!(
        h.bytes_p2p > 0,
        "the honest viewer got nothing from peers: {h:?}"
    );
    assert!(v.bytes_uploaded >= h.bytes_p2p);
    // `bytes-uploaded` counts what peers acknowledged: besides the honest viewer's bytes, at
    // most what the hostile peer's stack took in unread: its 1 MiB SCTP window, the 256
    // messages the webrtc pipeline reads ahead, and the transport's queue of 64 (16 KiB each).
    let unread_at_most = 1024 * 1024 + (256 + 64) * 16 * 1024;
    assert!(
        v.bytes_uploaded <= h.bytes_p2p + unread_at_most,
        "counted {} B uploaded, the honest viewer got {} B",
        v.bytes_uploaded,
        h.bytes_p2p
    );
}

/// A tracker that sends a 59 MB frame on every connection: each is refused at its header, the
/// victim reconnects with backoff, plays from the CDN, and warns once per outage.
#[test]
fn a_tracker_sending_a_59_mb_frame_cannot_grow_the_victim() {
    let env = stream(false);
    let rig = Rig::start(TrackerMode::OversizedFrame(59_000_000));
    let mut victim = viewer(&env, &rig, "victim", &[]);
    assert_played_every_segment(&env, &mut victim);
    let hostile_frames = rig
        .counters()
        .hostile_frames
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        hostile_frames >= 2,
        "{hostile_frames} oversized frames sent"
    );
    let warnings = victim.warnings();
    assert!(
        warnings.len() <= 4,
        "{} warnings:\n{warnings:#?}",
        warnings.len()
    );
}

/// A tracker that floods each connection with 500 bad frames a second: read at the tracker
/// budget, and each kind of warning goes out at most once per 10 s.
#[test]
fn a_tracker_flood_is_read_at_its_budget_and_its_warnings_rate_limited() {
    let env = stream(false);
    let rig = Rig::start(TrackerMode::Flood {
        per_second: 500,
        seconds: 40,
    });
    let mut victim = viewer(&env, &rig, "victim", &[]);
    assert_played_every_segment(&env, &mut victim);
    let warnings = victim.warnings();
    let frames = rig
        .counters()
        .hostile_frames
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{frames} flood frames, {} warnings", warnings.len());
    assert!(frames >= 1_000, "{frames}");
    // Two kinds (invalid messages, failure reasons), one per 10 s each over about 30 s.
    assert!(
        warnings.len() <= 10,
        "{} warnings:\n{warnings:#?}",
        warnings.len()
    );
}

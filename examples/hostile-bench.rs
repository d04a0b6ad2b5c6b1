//! hostile-bench: one real viewer (`gst-launch-1.0 meshsrc …`) under each attack of
//! `tests/common/hostile.rs` in turn, on a live origin on loopback, and what it cost the
//! viewer: peak RSS (VmHWM), CPU time over the run, and whether it played every segment.
//!
//! ```text
//! cargo build --release && cargo run --release --example hostile-bench -- [--segments N] [ATTACK…]
//! ```
//!
//! ATTACK is one of: baseline, claim-extra, header-restart, oversized, unsolicited, cancels,
//! announces, long-announces, malformed-sybils, no-read, tracker-59mb, tracker-flood (all of
//! them by default).

#[path = "../tests/common/mod.rs"]
mod common;

use common::hostile::{Attack, HostileConfig, HostilePeer, Rig, TrackerMode};
use common::viewer::{LIVE, Viewer, assert_live_exact};
use common::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Case {
    name: &'static str,
    tracker: TrackerMode,
    attack: Option<(Attack, u64)>,
}

fn cases() -> Vec<Case> {
    let relay = TrackerMode::Relay;
    let peer = |name, attack, identities| Case {
        name,
        tracker: relay,
        attack: Some((attack, identities)),
    };
    vec![
        Case {
            name: "baseline",
            tracker: relay,
            attack: None,
        },
        peer("claim-extra", Attack::ClaimExtra { extra: 1 }, 6),
        peer("header-restart", Attack::HeaderRestart, 6),
        peer("oversized", Attack::Oversized, 6),
        peer(
            "unsolicited",
            Attack::UnsolicitedHeaders { per_second: 2_000 },
            6,
        ),
        peer("cancels", Attack::CancelFlood { per_second: 2_000 }, 1),
        peer("announces", Attack::AnnounceFlood { ids: 4_000 }, 1),
        peer("long-announces", Attack::AnnounceFlood { ids: 65_025 }, 6),
        peer("malformed-sybils", Attack::Malformed, 20),
        peer("no-read", Attack::NoRead, 3),
        Case {
            name: "tracker-59mb",
            tracker: TrackerMode::OversizedFrame(59_000_000),
            attack: None,
        },
        Case {
            name: "tracker-flood",
            tracker: TrackerMode::Flood {
                per_second: 500,
                seconds: 120,
            },
            attack: None,
        },
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut segments = 15u64;
    let mut wanted = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--segments" => {
                segments = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--segments N")
            }
            name => wanted.push(name.to_owned()),
        }
    }
    println!(
        "{:<18} {:>10} {:>8} {:>8} {:>6} {:>7} {:>8} {:>9}",
        "attack", "peak RSS", "CPU s", "CPU %", "exact", "banned", "links", "warnings"
    );
    for case in cases() {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == case.name) {
            continue;
        }
        run(&case, segments);
    }
}

fn run(case: &Case, segments: u64) {
    let env = Env::new();
    let total = 10 + segments;
    let vod = hls_ts_vod_secs(&env.path("vod"), (total + 4) * SEGMENT_SECS, true);
    env.origin.add_live_playlist(
        LIVE,
        &vod.playlist,
        LiveConfig {
            window: 6,
            start_segments: 10,
            segment_duration: Duration::from_secs(SEGMENT_SECS),
            looped: false,
            end_after: Some(total),
            ..Default::default()
        },
    );
    let rig = Rig::start(case.tracker);
    let properties = vec![
        format!("tracker={}", rig.url),
        format!("segment-hashes={}", env.origin.live_hashes_url(LIVE)),
        "swarm-id=hostile-bench".to_owned(),
    ];
    let started = Instant::now();
    let mut victim = Viewer::spawn(&env, case.name, &env.origin.url(LIVE), &properties);
    let peer = case.attack.map(|(attack, identities)| {
        let by_id: HashMap<i64, Vec<u8>> = (0..total + 4)
            .map(|seq| (seq as i64, env.origin.live_segment_bytes(LIVE, seq)))
            .collect();
        HostilePeer::spawn(
            &rig,
            HostileConfig {
                tracker: rig.url.clone(),
                info_hash: rig.wait_for_swarm(Duration::from_secs(20)),
                attack,
                identities,
                link_wait: Duration::from_secs(6),
                segments: Arc::new(move |id| by_id.get(&id).cloned()),
                duration: Duration::from_secs(2 * total * SEGMENT_SECS),
            },
        )
    });
    victim.wait(Duration::from_secs(60 + 3 * total * SEGMENT_SECS));
    let wall = started.elapsed();
    let exact = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_live_exact(&env.origin, case.name, &victim.output(), total - 1)
    }))
    .map_or("no".to_owned(), |first| {
        if first == 7 {
            "yes".to_owned()
        } else {
            format!("from {first}")
        }
    });
    let stats = victim.stats();
    let cpu = victim.cpu_time().as_secs_f64();
    println!(
        "{:<18} {:>7.1} MB {:>8.2} {:>7.1}% {:>6} {:>7} {:>8} {:>9}",
        case.name,
        victim.peak_rss() as f64 / 1e6,
        cpu,
        100.0 * cpu / wall.as_secs_f64(),
        exact,
        stats.peers_banned,
        peer.as_ref().map_or(0, |p| p.get(|c| &c.links)),
        victim.warnings().len(),
    );
}

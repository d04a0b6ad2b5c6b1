//! The sans-IO hybrid delivery scheduler: it decides who serves each segment request and when.
//!
//! Time is an input (a `Duration` since the session started) and decisions are the output, so
//! the same code runs under tokio and in the simulator.
//!
//! Sources:
//! - the CDN (HTTP), with a concurrency cap, deadline order and retries with backoff;
//! - peers of the segment's swarm, for shareable segments with time to spare.
//!
//! Policy for a shareable segment:
//! - within `urgent_window` of its deadline it only comes from the CDN;
//! - before that, from a peer that announced it and has no request of ours outstanding (a link
//!   carries one transfer per direction); while every holder is busy, wait for one;
//! - while a peer announces it as loading, wait for that peer;
//! - when nobody has it, a few peers of the swarm seed it from the CDN. Each peer draws its
//!   rank for the segment among the swarm's peers (a uniform draw times the swarm size the
//!   tracker reports) and waits `seed_spacing` per rank: swarm-wide about one peer per
//!   `seed_spacing` starts, whatever the swarm's size, and a neighbour that started announces
//!   the segment as loading, which holds the others back;
//! - a peer transfer that stalls, or cannot end `peer_margin` before the deadline, is aborted
//!   and resumed from the first missing byte by another peer that has the segment, or else by
//!   the CDN;
//! - data that fails verification bans the peers that sent it and is fetched again from the
//!   CDN;
//! - an HTTP resume never starts past the end of the resource: one that gets 416 (a peer
//!   claimed more bytes than there are), or would start past the byte range the origin gives,
//!   starts again from byte 0.

use crate::error::MeshError;
use crate::mesh::SegmentId;
use crate::mesh::swarm::InfoHash;
use crate::model::Resource;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

/// A request's id, the same on the wire as in the scheduler.
pub use mesh_proto::ids::RequestId;

/// A connected peer link (one per peer and swarm), numbered by the I/O layer.
pub type PeerRef = u64;

/// Scheduler time: elapsed since the session started.
pub type Time = Duration;

/// Where a shareable segment lives in the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShareKey {
    pub swarm: InfoHash,
    pub segment: SegmentId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub key: ShareKey,
    /// Peers may serve it: a published hash can verify their data, or integrity is off.
    pub from_peers: bool,
    /// Honest peers may hold another segment under this id (p2p-media-loader reuses HLS ids
    /// when a live playlist ends): it is never served or announced, and data that fails its
    /// hash is no proof that the peer lied.
    pub id_ambiguous: bool,
    /// The SHA-256 the origin published for it, when known.
    pub hash: Option<crate::mesh::integrity::Sha256Hash>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRequest {
    pub resource: Resource,
    /// When the bytes are needed; None for requests that are needed now (manifests, keys).
    pub deadline: Option<Time>,
    /// Live segments may 404 briefly while the origin catches up: retry those too.
    pub retry_not_found: bool,
    /// Media segments that peers exchange; None for manifests, keys and hash files.
    pub share: Option<Share>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub max_http_transfers: usize,
    pub max_peer_transfers: usize,
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Within this of its deadline a segment only comes from the CDN.
    pub urgent_window: Duration,
    /// A peer of rank r in the per-segment seeding draw waits r times this before it fetches
    /// a segment nobody has from the CDN.
    pub seed_spacing: Duration,
    /// A peer transfer with no progress for this long is handed to the CDN.
    pub peer_stall_timeout: Duration,
    /// A peer transfer must be projected to end this long before the deadline.
    pub peer_margin: Duration,
    /// A peer transfer's rate is projected once its data has flowed this long.
    pub peer_rate_window: Duration,
    /// Seeds the per-segment draws; each peer picks its own.
    pub seed: u64,
    /// Until this session time, a segment with time to spare waits for peers still being
    /// found rather than going to the CDN at once (zero without a tracker).
    pub discovery_grace: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_http_transfers: 4,
            max_peer_transfers: 4,
            max_retries: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            urgent_window: Duration::from_secs(1),
            seed_spacing: Duration::from_millis(100),
            peer_stall_timeout: Duration::from_millis(1500),
            peer_margin: Duration::from_millis(500),
            peer_rate_window: Duration::from_secs(1),
            seed: 0,
            discovery_grace: Duration::ZERO,
        }
    }
}

/// How a peer transfer ended, as the I/O layer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerOutcome {
    /// Every byte arrived and the segment's hash matched (or integrity is off).
    Complete,
    /// The peer does not have the segment.
    Absent,
    /// The link failed or the peer broke the protocol; the bytes received so far are kept.
    Failed,
    /// The data did not match the published hash; it has been dropped.
    Corrupt,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Submit {
        id: RequestId,
        request: SegmentRequest,
    },
    /// The requester no longer wants the result.
    Cancel {
        id: RequestId,
    },
    /// An HTTP transfer the scheduler started has ended. Success means every byte from the
    /// requested offset arrived (and, after a resumed peer transfer, the whole segment
    /// verified).
    HttpFinished {
        id: RequestId,
        result: Result<(), MeshError>,
    },
    /// The segment assembled from peer and CDN bytes failed verification; it has been dropped.
    IntegrityFailed {
        id: RequestId,
    },
    PeerConnected {
        peer: PeerRef,
        swarm: InfoHash,
    },
    /// How many peers a tracker counts in the swarm (its `complete` + `incomplete`).
    SwarmSize {
        swarm: InfoHash,
        peers: u64,
    },
    PeerDisconnected {
        peer: PeerRef,
    },
    /// A peer's full segment state in its swarm; it replaces the previous one.
    PeerAnnounced {
        peer: PeerRef,
        loaded: Vec<SegmentId>,
        loading: Vec<SegmentId>,
    },
    /// Bytes of the segment now held (from every source so far), and its size once known.
    PeerProgress {
        id: RequestId,
        received: u64,
        total: Option<u64>,
    },
    PeerFinished {
        id: RequestId,
        outcome: PeerOutcome,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Fetch the request's resource over HTTP from byte `from` (attempt 0 is the first try).
    StartHttp {
        id: RequestId,
        attempt: u32,
        from: u64,
    },
    /// Abort the running HTTP transfer of a cancelled request.
    AbortHttp { id: RequestId },
    /// Ask `peer` for the segment from byte `from`.
    StartPeer {
        id: RequestId,
        peer: PeerRef,
        from: u64,
    },
    /// Cancel the peer transfer; the bytes received so far are kept.
    AbortPeer { id: RequestId, peer: PeerRef },
    /// The peer sent data that failed verification: disconnect it for the session.
    BanPeer { peer: PeerRef },
    /// Hand the fetched bytes to the requester.
    Deliver { id: RequestId },
    /// Give up and report the error to the requester.
    Fail { id: RequestId, error: MeshError },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    Http,
    RetryAt(Time),
    Peer {
        peer: PeerRef,
        started: Time,
        /// When this transfer's first data arrived and the bytes then held: its rate is
        /// measured from there, leaving out the request's round trip and any queue at the peer.
        first_data: Option<(Time, u64)>,
        last_progress: Time,
    },
}

#[derive(Debug)]
struct Entry {
    request: SegmentRequest,
    attempt: u32,
    phase: Phase,
    /// Bytes already held, from peers; HTTP resumes from here.
    received: u64,
    total: Option<u64>,
    /// Peers whose bytes are in `received`.
    contributors: BTreeSet<PeerRef>,
    /// Peers that failed this request: not asked again.
    tried: BTreeSet<PeerRef>,
    /// Peers are off for this request (its peer data failed verification).
    cdn_only: bool,
    /// A peer transfer of it was too slow: no more waiting, another holder or the CDN now.
    hurry: bool,
    submitted: Time,
}

impl Entry {
    /// The peer data failed the published hash: it was dropped, the CDN serves the segment,
    /// and the peers that sent it are banned, unless they may have meant another segment.
    fn failed_verification(&mut self, actions: &mut Vec<Action>) {
        let contributors = std::mem::take(&mut self.contributors);
        if !self.request.share.as_ref().is_some_and(|s| s.id_ambiguous) {
            actions.extend(
                contributors
                    .into_iter()
                    .map(|peer| Action::BanPeer { peer }),
            );
        }
        self.received = 0;
        self.cdn_only = true;
        self.phase = Phase::Queued;
    }
}

#[derive(Debug)]
struct PeerInfo {
    swarm: InfoHash,
    loaded: BTreeSet<SegmentId>,
    loading: BTreeSet<SegmentId>,
    /// Until its first announcement, a new link may hold anything: seeding waits for it until
    /// then, at most [`FIRST_ANNOUNCEMENT_WAIT`] after it opened.
    announcement_due: Option<Time>,
}

/// How long a segment nobody is known to have waits for a new link's first announcement
/// before this peer seeds it: peers announce what they hold as soon as a link opens.
pub const FIRST_ANNOUNCEMENT_WAIT: Duration = Duration::from_millis(500);

/// What a queued request should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Http,
    Peer(PeerRef),
    /// Nothing yet; look again at this time (or when an input arrives).
    WaitUntil(Time),
}

#[derive(Debug, Default)]
pub struct Scheduler {
    config: SchedulerConfig,
    entries: BTreeMap<RequestId, Entry>,
    http_running: usize,
    peers: BTreeMap<PeerRef, PeerInfo>,
    /// Swarm sizes reported by trackers.
    swarm_sizes: BTreeMap<InfoHash, u64>,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser: a cheap, well-spread deterministic hash.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hash_of(value: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        Scheduler {
            config,
            ..Default::default()
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Transfers running, over HTTP and from peers.
    pub fn in_flight(&self) -> usize {
        self.http_running + self.peer_running()
    }

    pub fn peer_running(&self) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e.phase, Phase::Peer { .. }))
            .count()
    }

    pub fn pending(&self) -> usize {
        self.entries.len()
    }

    pub fn connected_peers(&self) -> usize {
        self.peers.len()
    }

    pub fn handle(&mut self, now: Time, input: Input) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::Submit { id, request } => {
                self.entries.insert(
                    id,
                    Entry {
                        request,
                        attempt: 0,
                        phase: Phase::Queued,
                        received: 0,
                        total: None,
                        contributors: BTreeSet::new(),
                        tried: BTreeSet::new(),
                        cdn_only: false,
                        hurry: false,
                        submitted: now,
                    },
                );
            }
            Input::Cancel { id } => {
                if let Some(entry) = self.entries.remove(&id) {
                    match entry.phase {
                        Phase::Http => {
                            self.http_running -= 1;
                            actions.push(Action::AbortHttp { id });
                        }
                        Phase::Peer { peer, .. } => actions.push(Action::AbortPeer { id, peer }),
                        _ => {}
                    }
                }
            }
            Input::HttpFinished { id, result } => self.http_finished(now, id, result, &mut actions),
            Input::IntegrityFailed { id } => {
                if let Some(entry) = self.entries.get_mut(&id) {
                    if entry.phase == Phase::Http {
                        self.http_running -= 1;
                    }
                    entry.failed_verification(&mut actions);
                }
            }
            Input::PeerConnected { peer, swarm } => {
                self.peers.insert(
                    peer,
                    PeerInfo {
                        swarm,
                        loaded: BTreeSet::new(),
                        loading: BTreeSet::new(),
                        announcement_due: Some(now + FIRST_ANNOUNCEMENT_WAIT),
                    },
                );
            }
            Input::SwarmSize { swarm, peers } => {
                self.swarm_sizes.insert(swarm, peers);
            }
            Input::PeerDisconnected { peer } => {
                self.peers.remove(&peer);
                for entry in self.entries.values_mut() {
                    if matches!(entry.phase, Phase::Peer { peer: p, .. } if p == peer) {
                        entry.tried.insert(peer);
                        entry.phase = Phase::Queued;
                    }
                }
            }
            Input::PeerAnnounced {
                peer,
                loaded,
                loading,
            } => {
                if let Some(info) = self.peers.get_mut(&peer) {
                    info.loaded = loaded.into_iter().collect();
                    info.loading = loading.into_iter().collect();
                    info.announcement_due = None;
                }
            }
            Input::PeerProgress {
                id,
                received,
                total,
            } => {
                if let Some(entry) = self.entries.get_mut(&id)
                    && let Phase::Peer {
                        ref mut last_progress,
                        ref mut first_data,
                        peer,
                        ..
                    } = entry.phase
                {
                    if received > entry.received {
                        *last_progress = now;
                        first_data.get_or_insert((now, received));
                        entry.received = received;
                        entry.contributors.insert(peer);
                    }
                    entry.total = total.or(entry.total);
                }
            }
            Input::PeerFinished { id, outcome } => self.peer_finished(id, outcome, &mut actions),
        }
        self.check_peer_transfers(now, &mut actions);
        self.start_due(now, &mut actions);
        actions
    }

    fn http_finished(
        &mut self,
        now: Time,
        id: RequestId,
        result: Result<(), MeshError>,
        actions: &mut Vec<Action>,
    ) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return; // cancelled meanwhile
        };
        if entry.phase != Phase::Http {
            return;
        }
        self.http_running -= 1;
        match result {
            Ok(()) => {
                self.entries.remove(&id);
                actions.push(Action::Deliver { id });
            }
            Err(error) if entry.received > 0 && error.http_status() == Some(416) => {
                // Resumed past the end: what peers sent cannot be trusted to be the start.
                entry.received = 0;
                entry.contributors.clear();
                entry.cdn_only = true;
                entry.phase = Phase::Queued;
            }
            Err(error)
                if entry.attempt < self.config.max_retries
                    && error.is_transient(entry.request.retry_not_found) =>
            {
                let backoff = self
                    .config
                    .initial_backoff
                    .saturating_mul(1 << entry.attempt.min(16))
                    .min(self.config.max_backoff);
                entry.attempt += 1;
                entry.phase = Phase::RetryAt(now + backoff);
            }
            Err(error) => {
                self.entries.remove(&id);
                actions.push(Action::Fail { id, error });
            }
        }
    }

    fn peer_finished(&mut self, id: RequestId, outcome: PeerOutcome, actions: &mut Vec<Action>) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let Phase::Peer { peer, .. } = entry.phase else {
            return;
        };
        match outcome {
            PeerOutcome::Complete => {
                self.entries.remove(&id);
                actions.push(Action::Deliver { id });
            }
            PeerOutcome::Absent | PeerOutcome::Failed => {
                entry.tried.insert(peer);
                entry.phase = Phase::Queued;
            }
            PeerOutcome::Corrupt => {
                entry.contributors.insert(peer);
                entry.failed_verification(actions);
            }
        }
    }

    /// Hands stalled or too slow peer transfers to the CDN.
    fn check_peer_transfers(&mut self, now: Time, actions: &mut Vec<Action>) {
        let config = self.config;
        for (&id, entry) in self.entries.iter_mut() {
            let Phase::Peer {
                peer,
                first_data,
                last_progress,
                ..
            } = entry.phase
            else {
                continue;
            };
            let stalled = now >= last_progress + config.peer_stall_timeout;
            let late = entry.request.deadline.is_some_and(|deadline| {
                let limit = deadline.saturating_sub(config.peer_margin);
                if now >= limit {
                    return true;
                }
                let (Some(total), Some((since, held_then))) = (entry.total, first_data) else {
                    return false;
                };
                let elapsed = now.saturating_sub(since);
                let moved = entry.received.saturating_sub(held_then);
                // A rate needs a little history; the hard limit above covers the rest.
                if elapsed < config.peer_rate_window || moved == 0 {
                    return false;
                }
                let remaining = total.saturating_sub(entry.received);
                let rate = moved as f64 / elapsed.as_secs_f64();
                now + Duration::from_secs_f64(remaining as f64 / rate) > limit
            });
            if stalled || late {
                actions.push(Action::AbortPeer { id, peer });
                entry.tried.insert(peer);
                // A stalled peer may just be busy with others: with time to spare, wait for
                // another holder. A slow one leaves no time for that.
                entry.hurry |= late;
                entry.phase = Phase::Queued;
            }
        }
    }

    /// Acts on timers that are due.
    pub fn poll(&mut self, now: Time) -> Vec<Action> {
        let mut actions = Vec::new();
        self.check_peer_transfers(now, &mut actions);
        self.start_due(now, &mut actions);
        actions
    }

    /// When `poll` next has something to do, if ever.
    pub fn next_wakeup(&self, now: Time) -> Option<Time> {
        self.entries
            .values()
            .filter_map(|e| match e.phase {
                Phase::RetryAt(t) => Some(t),
                Phase::Queued => match self.decide(now, e) {
                    Decision::WaitUntil(t) => Some(t),
                    // Waiting for a peer slot: the CDN takes over at the urgent time.
                    Decision::Peer(_) => e
                        .request
                        .deadline
                        .map(|d| d.saturating_sub(self.config.urgent_window)),
                    // Waiting for an HTTP slot: only an input frees it.
                    Decision::Http => None,
                },
                Phase::Peer {
                    last_progress,
                    started,
                    ..
                } => {
                    let stall = last_progress.max(started) + self.config.peer_stall_timeout;
                    let late = e
                        .request
                        .deadline
                        .map(|d| d.saturating_sub(self.config.peer_margin));
                    Some(late.map_or(stall, |l| l.min(stall)))
                }
                Phase::Http => None,
            })
            .min()
    }

    /// The swarm's size as far as this peer knows: the trackers' count, or its own links.
    fn swarm_size(&self, swarm: &InfoHash) -> u64 {
        let linked = self.peers.values().filter(|p| &p.swarm == swarm).count() as u64 + 1;
        self.swarm_sizes
            .get(swarm)
            .copied()
            .unwrap_or(0)
            .max(linked)
    }

    /// When this peer seeds `key` from the CDN if nobody near has it, for a request submitted
    /// at `submitted` that turns urgent at `urgent_at`.
    ///
    /// Its rank in a per-segment draw (the expected number of the swarm's other peers that
    /// drew lower) times `seed_spacing`: swarm-wide, about one peer per `seed_spacing` starts,
    /// whatever the swarm's size. A peer the mesh has not reached by half its slack starts at a
    /// drawn time in the second half rather than all at the urgent time: it then serves its
    /// neighbours, which the urgent fetches could not.
    fn seed_at(&self, key: &ShareKey, submitted: Time, urgent_at: Time) -> Time {
        let draw = mix(self.config.seed ^ hash_of(key));
        let rank_draw = draw as f64 / u64::MAX as f64;
        let late_draw = mix(draw) as f64 / u64::MAX as f64;
        let others = self.swarm_size(&key.swarm).saturating_sub(1) as f64;
        let half_slack = urgent_at.saturating_sub(submitted) / 2;
        let by_rank = self.config.seed_spacing.as_secs_f64() * rank_draw * others;
        let by_slack = half_slack.as_secs_f64() * (1.0 + late_draw);
        submitted + Duration::from_secs_f64(by_rank.min(by_slack))
    }

    fn peer_active(&self, peer: PeerRef) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e.phase, Phase::Peer { peer: p, .. } if p == peer))
            .count()
    }

    fn decide(&self, now: Time, entry: &Entry) -> Decision {
        let (Some(share), Some(deadline)) = (&entry.request.share, entry.request.deadline) else {
            return Decision::Http;
        };
        if !share.from_peers || entry.cdn_only {
            return Decision::Http;
        }
        let urgent_at = deadline.saturating_sub(self.config.urgent_window);
        if now >= urgent_at {
            return Decision::Http;
        }
        let key = &share.key;
        let swarm_peers = || {
            self.peers
                .iter()
                .filter(move |(_, info)| info.swarm == key.swarm)
        };
        let mut holders = swarm_peers()
            .filter(|(p, info)| info.loaded.contains(&key.segment) && !entry.tried.contains(p))
            .peekable();
        let any_holder = holders.peek().is_some();
        let idle_holder = holders
            .filter(|(p, _)| self.peer_active(**p) == 0)
            .min_by_key(|(p, _)| mix(self.config.seed ^ **p))
            .map(|(p, _)| *p);
        if let Some(peer) = idle_holder {
            return Decision::Peer(peer);
        }
        if entry.hurry {
            return Decision::Http;
        }
        if any_holder {
            // One transfer per link: wait for a holder to be free, until the urgent time.
            return Decision::WaitUntil(urgent_at);
        }
        let someone_loading = swarm_peers()
            .any(|(p, info)| info.loading.contains(&key.segment) && !entry.tried.contains(p));
        if someone_loading {
            return Decision::WaitUntil(urgent_at);
        }
        if swarm_peers().next().is_none() {
            // Nobody to wait for, unless peers are still being found.
            return if now < self.config.discovery_grace {
                Decision::WaitUntil(self.config.discovery_grace.min(urgent_at))
            } else {
                Decision::Http
            };
        }
        // A link that has not announced yet may hold it.
        let announcement = swarm_peers()
            .filter_map(|(_, info)| info.announcement_due)
            .filter(|due| *due > now)
            .min();
        if let Some(due) = announcement {
            return Decision::WaitUntil(due.min(urgent_at));
        }
        let seed_at = self.seed_at(key, entry.submitted, urgent_at);
        if now >= seed_at {
            // Nobody near has started it and this peer's turn in the draw has come.
            return Decision::Http;
        }
        Decision::WaitUntil(seed_at.min(urgent_at))
    }

    /// Starts the most urgent ready requests while slots are free.
    fn start_due(&mut self, now: Time, actions: &mut Vec<Action>) {
        let mut ready: Vec<(Duration, RequestId)> = self
            .entries
            .iter()
            .filter(|(_, e)| match e.phase {
                Phase::Queued => true,
                Phase::RetryAt(t) => t <= now,
                _ => false,
            })
            // Requests without deadline are needed now; then earliest deadline; then FIFO.
            .map(|(id, e)| (e.request.deadline.unwrap_or(Duration::ZERO), *id))
            .collect();
        ready.sort_unstable();
        let mut peer_running = self.peer_running();
        for (_, id) in ready {
            let entry = &self.entries[&id];
            match self.decide(now, entry) {
                Decision::Http if self.http_running < self.config.max_http_transfers => {
                    let entry = self.entries.get_mut(&id).expect("entry just found");
                    if entry
                        .request
                        .resource
                        .range
                        .is_some_and(|r| entry.received > r.length)
                    {
                        entry.received = 0;
                        entry.contributors.clear();
                        entry.cdn_only = true;
                    }
                    entry.phase = Phase::Http;
                    self.http_running += 1;
                    actions.push(Action::StartHttp {
                        id,
                        attempt: entry.attempt,
                        from: entry.received,
                    });
                }
                Decision::Peer(peer) if peer_running < self.config.max_peer_transfers => {
                    let entry = self.entries.get_mut(&id).expect("entry just found");
                    entry.phase = Phase::Peer {
                        peer,
                        started: now,
                        first_data: None,
                        last_progress: now,
                    };
                    peer_running += 1;
                    actions.push(Action::StartPeer {
                        id,
                        peer,
                        from: entry.received,
                    });
                }
                Decision::Http | Decision::Peer(_) | Decision::WaitUntil(_) => {
                    // A retry that is due but has to wait for a slot goes back in the queue.
                    let entry = self.entries.get_mut(&id).expect("entry just found");
                    entry.phase = Phase::Queued;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    fn request(deadline_s: Option<u64>) -> SegmentRequest {
        SegmentRequest {
            resource: Resource {
                url: Url::parse("http://cdn.test/s.ts").unwrap(),
                range: None,
            },
            deadline: deadline_s.map(Duration::from_secs),
            retry_not_found: false,
            share: None,
        }
    }

    fn http_error(status: u16) -> MeshError {
        MeshError::HttpStatus {
            url: "http://cdn.test/s.ts".into(),
            status,
        }
    }

    const T0: Time = Duration::ZERO;

    #[test]
    fn caps_concurrency_and_orders_by_deadline() {
        let mut s = Scheduler::new(SchedulerConfig {
            max_http_transfers: 2,
            ..Default::default()
        });
        assert_eq!(
            s.handle(
                T0,
                Input::Submit {
                    id: 1,
                    request: request(Some(30))
                }
            ),
            vec![Action::StartHttp {
                id: 1,
                attempt: 0,
                from: 0
            }]
        );
        assert_eq!(
            s.handle(
                T0,
                Input::Submit {
                    id: 2,
                    request: request(Some(20))
                }
            ),
            vec![Action::StartHttp {
                id: 2,
                attempt: 0,
                from: 0
            }]
        );
        assert!(
            s.handle(
                T0,
                Input::Submit {
                    id: 3,
                    request: request(Some(50))
                }
            )
            .is_empty()
        );
        assert!(
            s.handle(
                T0,
                Input::Submit {
                    id: 4,
                    request: request(Some(10))
                }
            )
            .is_empty()
        );
        assert_eq!(s.in_flight(), 2);
        let a = s.handle(
            T0,
            Input::HttpFinished {
                id: 1,
                result: Ok(()),
            },
        );
        assert_eq!(
            a,
            vec![
                Action::Deliver { id: 1 },
                Action::StartHttp {
                    id: 4,
                    attempt: 0,
                    from: 0
                }
            ]
        );
        let a = s.handle(T0, Input::Cancel { id: 3 });
        assert!(a.is_empty());
        assert_eq!(s.pending(), 2);
    }

    #[test]
    fn retries_transient_errors_with_exponential_backoff_then_fails() {
        let mut s = Scheduler::new(SchedulerConfig::default());
        s.handle(
            T0,
            Input::Submit {
                id: 7,
                request: request(None),
            },
        );
        let mut now = T0;
        let mut waits = Vec::new();
        for attempt in 1..=3 {
            assert!(
                s.handle(
                    now,
                    Input::HttpFinished {
                        id: 7,
                        result: Err(http_error(503))
                    }
                )
                .is_empty()
            );
            let wake = s.next_wakeup(now).unwrap();
            waits.push(wake - now);
            assert!(s.poll(wake - Duration::from_millis(1)).is_empty());
            assert_eq!(
                s.poll(wake),
                vec![Action::StartHttp {
                    id: 7,
                    attempt,
                    from: 0
                }]
            );
            now = wake;
        }
        assert_eq!(waits, [250, 500, 1000].map(Duration::from_millis));
        let a = s.handle(
            now,
            Input::HttpFinished {
                id: 7,
                result: Err(http_error(503)),
            },
        );
        assert_eq!(
            a,
            vec![Action::Fail {
                id: 7,
                error: http_error(503)
            }]
        );
        assert_eq!(s.pending(), 0);
        assert_eq!(s.next_wakeup(now), None);
    }

    #[test]
    fn not_found_is_final_unless_asked_to_retry() {
        let mut s = Scheduler::new(SchedulerConfig::default());
        s.handle(
            T0,
            Input::Submit {
                id: 1,
                request: request(None),
            },
        );
        let a = s.handle(
            T0,
            Input::HttpFinished {
                id: 1,
                result: Err(http_error(404)),
            },
        );
        assert_eq!(
            a,
            vec![Action::Fail {
                id: 1,
                error: http_error(404)
            }]
        );

        let live = SegmentRequest {
            retry_not_found: true,
            ..request(Some(4))
        };
        s.handle(
            T0,
            Input::Submit {
                id: 2,
                request: live,
            },
        );
        assert!(
            s.handle(
                T0,
                Input::HttpFinished {
                    id: 2,
                    result: Err(http_error(404))
                }
            )
            .is_empty()
        );
        assert_eq!(s.next_wakeup(T0), Some(Duration::from_millis(250)));
    }

    #[test]
    fn cancelling_a_running_transfer_aborts_it_and_frees_the_slot() {
        let mut s = Scheduler::new(SchedulerConfig {
            max_http_transfers: 1,
            ..Default::default()
        });
        s.handle(
            T0,
            Input::Submit {
                id: 1,
                request: request(Some(1)),
            },
        );
        s.handle(
            T0,
            Input::Submit {
                id: 2,
                request: request(Some(2)),
            },
        );
        let a = s.handle(T0, Input::Cancel { id: 1 });
        assert_eq!(
            a,
            vec![
                Action::AbortHttp { id: 1 },
                Action::StartHttp {
                    id: 2,
                    attempt: 0,
                    from: 0
                }
            ]
        );
        // A late completion of the aborted transfer is ignored.
        assert!(
            s.handle(
                T0,
                Input::HttpFinished {
                    id: 1,
                    result: Ok(())
                }
            )
            .is_empty()
        );
    }

    // ---- peers -------------------------------------------------------------------------

    const SWARM: &str = "0123456789abcdef0123";
    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn swarm() -> InfoHash {
        InfoHash::parse(SWARM).unwrap()
    }

    fn shared(segment: SegmentId, deadline_ms: u64) -> SegmentRequest {
        SegmentRequest {
            share: Some(Share {
                key: ShareKey {
                    swarm: swarm(),
                    segment,
                },
                from_peers: true,
                id_ambiguous: false,
                hash: None,
            }),
            deadline: Some(MS(deadline_ms)),
            ..request(None)
        }
    }

    fn with_peers(config: SchedulerConfig, peers: &[PeerRef]) -> Scheduler {
        let mut s = Scheduler::new(config);
        for &peer in peers {
            s.handle(
                T0,
                Input::PeerConnected {
                    peer,
                    swarm: swarm(),
                },
            );
            // Each has announced that it holds nothing yet.
            s.handle(
                T0,
                Input::PeerAnnounced {
                    peer,
                    loaded: Vec::new(),
                    loading: Vec::new(),
                },
            );
        }
        s
    }

    fn announce(
        s: &mut Scheduler,
        now: Time,
        peer: PeerRef,
        loaded: &[i64],
        loading: &[i64],
    ) -> Vec<Action> {
        s.handle(
            now,
            Input::PeerAnnounced {
                peer,
                loaded: loaded.to_vec(),
                loading: loading.to_vec(),
            },
        )
    }

    fn submit(s: &mut Scheduler, now: Time, id: RequestId, request: SegmentRequest) -> Vec<Action> {
        s.handle(now, Input::Submit { id, request })
    }

    /// Peers 10 and 11 hold segment 7; request 1 for it has gone to one of them.
    /// Returns the scheduler, the peer asked and the other.
    /// Progress of request 1 from a peer.
    fn progress(received: u64, total: u64) -> Input {
        Input::PeerProgress {
            id: 1,
            received,
            total: Some(total),
        }
    }

    fn asking_one_of_two_holders(deadline_ms: u64) -> (Scheduler, PeerRef, PeerRef) {
        let mut s = with_peers(SchedulerConfig::default(), &[10, 11]);
        announce(&mut s, T0, 10, &[7], &[]);
        announce(&mut s, T0, 11, &[7], &[]);
        let a = submit(&mut s, T0, 1, shared(7, deadline_ms));
        let Action::StartPeer { peer: asked, .. } = a[0] else {
            panic!("{a:?}")
        };
        (s, asked, if asked == 10 { 11 } else { 10 })
    }

    #[test]
    fn shareable_segment_without_peers_goes_to_the_cdn_at_once() {
        let mut s = Scheduler::new(SchedulerConfig::default());
        assert_eq!(
            submit(&mut s, T0, 1, shared(5, 10_000)),
            vec![Action::StartHttp {
                id: 1,
                attempt: 0,
                from: 0
            }]
        );
    }

    #[test]
    fn a_new_link_is_heard_out_before_this_peer_seeds_what_nobody_announced() {
        let config = SchedulerConfig {
            seed_spacing: Duration::ZERO,
            ..Default::default()
        };
        let mut s = with_peers(config, &[10]);
        announce(&mut s, T0, 10, &[], &[]);
        // A link opens at 100 ms; a segment nobody has announced waits for its first
        // announcement, which lists it: it comes from that peer.
        s.handle(
            MS(100),
            Input::PeerConnected {
                peer: 11,
                swarm: swarm(),
            },
        );
        assert!(submit(&mut s, MS(120), 1, shared(7, 10_000)).is_empty());
        assert_eq!(
            s.next_wakeup(MS(120)),
            Some(MS(100) + FIRST_ANNOUNCEMENT_WAIT)
        );
        assert_eq!(
            announce(&mut s, MS(300), 11, &[7], &[]),
            vec![Action::StartPeer {
                id: 1,
                peer: 11,
                from: 0
            }]
        );
        // A link that stays silent holds seeding back no longer than the wait.
        s.handle(
            MS(1_000),
            Input::PeerConnected {
                peer: 12,
                swarm: swarm(),
            },
        );
        assert!(submit(&mut s, MS(1_000), 2, shared(8, 10_000)).is_empty());
        assert_eq!(
            s.poll(MS(1_000) + FIRST_ANNOUNCEMENT_WAIT),
            vec![Action::StartHttp {
                id: 2,
                attempt: 0,
                from: 0
            }]
        );
    }

    #[test]
    fn while_peers_are_being_found_a_segment_with_time_to_spare_waits_for_them() {
        let config = SchedulerConfig {
            discovery_grace: MS(3_000),
            // No seeding draw fires inside this test.
            seed_spacing: MS(60_000),
            ..Default::default()
        };
        let mut s = Scheduler::new(config);
        // Urgent at 1.5 s, before the grace ends: wait until then, then the CDN.
        assert!(submit(&mut s, T0, 1, shared(5, 2_500)).is_empty());
        assert_eq!(s.next_wakeup(T0), Some(MS(1_500)));
        // A peer that turns up with the segment serves it.
        assert!(submit(&mut s, T0, 2, shared(6, 10_000)).is_empty());
        s.handle(
            MS(400),
            Input::PeerConnected {
                peer: 10,
                swarm: swarm(),
            },
        );
        assert_eq!(
            announce(&mut s, MS(500), 10, &[6], &[]),
            vec![Action::StartPeer {
                id: 2,
                peer: 10,
                from: 0
            }]
        );
        s.handle(MS(600), Input::PeerDisconnected { peer: 10 });
        assert_eq!(
            s.poll(MS(1_500)),
            vec![Action::StartHttp {
                id: 1,
                attempt: 0,
                from: 0
            }]
        );
        // After the grace, a lone viewer goes straight to the CDN, for the request left
        // waiting too.
        assert_eq!(
            submit(&mut s, MS(3_000), 3, shared(7, 20_000)),
            vec![
                Action::StartHttp {
                    id: 2,
                    attempt: 0,
                    from: 0
                },
                Action::StartHttp {
                    id: 3,
                    attempt: 0,
                    from: 0
                }
            ]
        );
    }

    #[test]
    fn a_peer_that_holds_the_segment_serves_it() {
        let mut s = with_peers(SchedulerConfig::default(), &[10]);
        announce(&mut s, T0, 10, &[4, 5], &[]);
        assert_eq!(
            submit(&mut s, T0, 1, shared(5, 10_000)),
            vec![Action::StartPeer {
                id: 1,
                peer: 10,
                from: 0
            }]
        );
        assert_eq!(s.in_flight(), 1);
        let a = s.handle(
            MS(50),
            Input::PeerFinished {
                id: 1,
                outcome: PeerOutcome::Complete,
            },
        );
        assert_eq!(a, vec![Action::Deliver { id: 1 }]);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn the_urgent_window_is_served_by_the_cdn_even_when_a_peer_holds_it() {
        let mut s = with_peers(SchedulerConfig::default(), &[10]);
        announce(&mut s, T0, 10, &[5], &[]);
        // Deadline 0.8 s away, inside the 1 s urgent window.
        assert_eq!(
            submit(&mut s, T0, 1, shared(5, 800)),
            vec![Action::StartHttp {
                id: 1,
                attempt: 0,
                from: 0
            }]
        );
    }

    #[test]
    fn an_idle_holder_is_chosen_and_peer_transfers_are_capped() {
        let config = SchedulerConfig {
            max_peer_transfers: 2,
            ..Default::default()
        };
        let mut s = with_peers(config, &[10, 11]);
        announce(&mut s, T0, 10, &[1, 2, 3], &[]);
        announce(&mut s, T0, 11, &[1, 2, 3], &[]);
        let first = submit(&mut s, T0, 1, shared(1, 10_000));
        let second = submit(&mut s, T0, 2, shared(2, 10_000));
        let peer_of = |a: &[Action]| match a {
            [Action::StartPeer { peer, .. }] => *peer,
            other => panic!("expected one StartPeer, got {other:?}"),
        };
        let (p1, p2) = (peer_of(&first), peer_of(&second));
        assert_ne!(p1, p2, "the second request goes to the idle peer");
        assert!(
            submit(&mut s, T0, 3, shared(3, 10_000)).is_empty(),
            "cap of 2 reached"
        );
        // The next timer is the stall check of the running transfers (1.5 s), before the
        // third request's urgent time (9 s).
        assert_eq!(s.next_wakeup(T0), Some(MS(1_500)));
        let a = s.handle(
            MS(10),
            Input::PeerFinished {
                id: 1,
                outcome: PeerOutcome::Complete,
            },
        );
        assert_eq!(
            a,
            vec![
                Action::Deliver { id: 1 },
                Action::StartPeer {
                    id: 3,
                    peer: p1,
                    from: 0
                }
            ]
        );
    }

    #[test]
    fn a_busy_holder_is_never_asked_a_second_time_and_the_cdn_takes_over_when_urgent() {
        let mut s = with_peers(SchedulerConfig::default(), &[10]);
        announce(&mut s, T0, 10, &[1, 2, 3], &[]);
        assert_eq!(
            submit(&mut s, T0, 1, shared(1, 60_000)),
            vec![Action::StartPeer {
                id: 1,
                peer: 10,
                from: 0
            }]
        );
        // The only holder is busy: wait for it, however many requests.
        assert!(submit(&mut s, T0, 2, shared(2, 60_000)).is_empty());
        assert!(submit(&mut s, T0, 3, shared(3, 4_000)).is_empty());
        assert_eq!(s.peer_running(), 1);
        // It finishes: the earliest deadline goes to it next, and only that one.
        assert_eq!(
            s.handle(
                MS(500),
                Input::PeerFinished {
                    id: 1,
                    outcome: PeerOutcome::Complete
                }
            ),
            vec![
                Action::Deliver { id: 1 },
                Action::StartPeer {
                    id: 3,
                    peer: 10,
                    from: 0
                }
            ]
        );
        assert_eq!(s.peer_running(), 1);
        // Request 2 is still waiting at its urgent time: the CDN serves it.
        let mut s2 = with_peers(SchedulerConfig::default(), &[10]);
        announce(&mut s2, T0, 10, &[1, 2], &[]);
        submit(&mut s2, T0, 1, shared(1, 60_000));
        submit(&mut s2, T0, 2, shared(2, 5_000));
        for ms in (500..4_000).step_by(500) {
            s2.handle(MS(ms), progress(ms * 100, 1 << 20));
        }
        assert_eq!(s2.next_wakeup(MS(3_500)), Some(MS(4_000)));
        assert_eq!(
            s2.poll(MS(4_000)),
            vec![Action::StartHttp {
                id: 2,
                attempt: 0,
                from: 0
            }]
        );
    }

    #[test]
    fn a_resume_that_gets_416_starts_again_from_byte_0_from_the_cdn() {
        let mut s = with_peers(SchedulerConfig::default(), &[10]);
        announce(&mut s, T0, 10, &[7], &[]);
        submit(&mut s, T0, 1, shared(7, 3_000));
        // The peer claimed one byte more than there is, sent them all, and went quiet.
        s.handle(MS(100), progress(50_000, 50_001));
        assert_eq!(
            s.handle(MS(1_600), Input::PeerDisconnected { peer: 10 }),
            vec![Action::StartHttp {
                id: 1,
                attempt: 0,
                from: 50_000
            }]
        );
        assert_eq!(
            s.handle(
                MS(1_700),
                Input::HttpFinished {
                    id: 1,
                    result: Err(http_error(416))
                }
            ),
            vec![Action::StartHttp {
                id: 1,
                attempt: 0,
                from: 0
            }]
        );
        assert_eq!(
            s.handle(
                MS(1_800),
                Input::HttpFinished {
                    id: 1,
                    result: Ok(())
                }
            ),
            vec![Action::Deliver { id: 1 }]
        );
        // 416 for a request from byte 0 is an error like any other.
        submit(&mut s, MS(2_000), 2, request(None));
        assert_eq!(
            s.handle(
                MS(2_000),
                Input::HttpFinished {
                    id: 2,
                    result: Err(http_error(416))
                }
            ),
            vec![Action::Fail {
                id: 2,
                error: http_error(416)
            }]
        );
    }

    #[test]
    fn a_resume_never_starts_past_the_byte_range_the_origin_gives() {
        let mut s = with_peers(SchedulerConfig::default(), &[10]);
        announce(&mut s, T0, 10, &[7], &[]);
        let mut ranged = shared(7, 3_000);
        ranged.resource.range = Some(crate::model::ByteRange {
            offset: 4_000,
            length: 1_000,
        });
        submit(&mut s, T0, 1, ranged);
        s.handle(MS(100), progress(1_200, 1_200));
        assert_eq!(
            s.handle(MS(200), Input::PeerDisconnected { peer: 10 }),
            vec![Action::StartHttp {
                id: 1,
                attempt: 0,
                from: 0
            }]
        );
    }

    #[test]
    fn a_queued_request_waiting_for_a_peer_slot_falls_back_to_the_cdn_when_urgent() {
        let config = SchedulerConfig {
            max_peer_transfers: 1,
            ..Default::default()
        };
        let mut s = with_peers(config, &[10]);
        announce(&mut s, T0, 10, &[1, 2], &[]);
        submit(&mut s, T0, 1, shared(1, 60_000));
        assert!(submit(&mut s, T0, 2, shared(2, 5_000)).is_empty());
        // Progress keeps transfer 1 alive; request 2 turns urgent at 4 s.
        for ms in (500..4_000).step_by(500) {
            s.handle(MS(ms), progress(ms * 100, 1 << 20));
        }
        assert_eq!(s.next_wakeup(MS(3_500)), Some(MS(4_000)));
        assert_eq!(
            s.poll(MS(4_000)),
            vec![Action::StartHttp {
                id: 2,
                attempt: 0,
                from: 0
            }]
        );
    }

    #[test]
    fn nobody_has_it_so_the_seed_draw_decides_when_to_fetch_from_the_cdn() {
        let config = SchedulerConfig {
            seed: 42,
            ..Default::default()
        };
        let mut s = with_peers(config, &[10]);
        assert!(submit(&mut s, T0, 1, shared(7, 10_000)).is_empty());
        let seed_at = s.next_wakeup(T0).expect("a seeding time");
        assert!(
            seed_at < config.seed_spacing,
            "drawn inside the window: {seed_at:?}"
        );
        assert!(s.poll(seed_at.saturating_sub(MS(1))).is_empty());
        assert_eq!(
            s.poll(seed_at),
            vec![Action::StartHttp {
                id: 1,
                attempt: 0,
                from: 0
            }]
        );
    }

    #[test]
    fn a_peer_loading_the_segment_holds_us_back_until_it_has_it() {
        let mut s = with_peers(SchedulerConfig::default(), &[10]);
        announce(&mut s, T0, 10, &[], &[7]);
        assert!(submit(&mut s, T0, 1, shared(7, 10_000)).is_empty());
        // Loading elsewhere: wait up to the urgent time (9 s), not the seed draw.
        assert_eq!(s.next_wakeup(T0), Some(MS(9_000)));
        assert!(s.poll(MS(1_000)).is_empty());
        assert_eq!(
            announce(&mut s, MS(1_200), 10, &[7], &[]),
            vec![Action::StartPeer {
                id: 1,
                peer: 10,
                from: 0
            }]
        );
    }

    #[test]
    fn a_loading_peer_that_never_finishes_leaves_it_to_the_cdn_at_the_urgent_time() {
        let mut s = with_peers(SchedulerConfig::default(), &[10]);
        announce(&mut s, T0, 10, &[], &[7]);
        submit(&mut s, T0, 1, shared(7, 10_000));
        assert!(s.poll(MS(8_999)).is_empty());
        assert_eq!(
            s.poll(MS(9_000)),
            vec![Action::StartHttp {
                id: 1,
                attempt: 0,
                from: 0
            }]
        );
    }

    #[test]
    fn a_stalled_peer_transfer_waits_for_another_holder_then_the_cdn_resumes_it() {
        let mut s = with_peers(SchedulerConfig::default(), &[10, 11]);
        // A big swarm: this peer's seeding turn is far off, the mesh is expected to reach it.
        s.handle(
            T0,
            Input::SwarmSize {
                swarm: swarm(),
                peers: 100_000,
            },
        );
        announce(&mut s, T0, 10, &[7], &[]);
        submit(&mut s, T0, 1, shared(7, 20_000));
        s.handle(MS(100), progress(48_000, 100_000));
        assert_eq!(s.next_wakeup(MS(100)), Some(MS(1_600)));
        assert!(s.poll(MS(1_599)).is_empty());
        // Time to spare and nobody else has it: wait for another holder.
        assert_eq!(
            s.poll(MS(1_600)),
            vec![Action::AbortPeer { id: 1, peer: 10 }]
        );
        let turn = s.next_wakeup(MS(1_600)).expect("a seeding time");
        assert!(turn >= MS(9_500) && turn < MS(19_000), "{turn:?}");
        assert_eq!(
            announce(&mut s, MS(3_000), 11, &[7], &[]),
            vec![Action::StartPeer {
                id: 1,
                peer: 11,
                from: 48_000
            }]
        );
        // The second holder stalls as well, at the urgent time: the CDN resumes it.
        assert_eq!(
            s.poll(MS(19_000)),
            vec![
                Action::AbortPeer { id: 1, peer: 11 },
                Action::StartHttp {
                    id: 1,
                    attempt: 0,
                    from: 48_000
                }
            ]
        );
        // A late completion from the aborted peer is ignored.
        assert!(
            s.handle(
                MS(1_700),
                Input::PeerFinished {
                    id: 1,
                    outcome: PeerOutcome::Complete
                }
            )
            .is_empty()
        );
        assert_eq!(
            s.handle(
                MS(1_800),
                Input::HttpFinished {
                    id: 1,
                    result: Ok(())
                }
            ),
            vec![Action::Deliver { id: 1 }]
        );
    }

    #[test]
    fn a_peer_transfer_projected_to_miss_the_deadline_is_handed_to_the_cdn() {
        let mut s = with_peers(SchedulerConfig::default(), &[10]);
        announce(&mut s, T0, 10, &[7], &[]);
        submit(&mut s, T0, 1, shared(7, 8_000));
        assert!(s.handle(MS(500), progress(10_000, 1_000_000)).is_empty());
        // Before the rate window has passed, a slow start is not judged.
        assert!(s.handle(MS(1_400), progress(15_000, 1_000_000)).is_empty());
        // 10 kB/s with 980 kB left: it would end long after 7.5 s.
        assert_eq!(
            s.handle(MS(1_500), progress(20_000, 1_000_000)),
            vec![
                Action::AbortPeer { id: 1, peer: 10 },
                Action::StartHttp {
                    id: 1,
                    attempt: 0,
                    from: 20_000
                }
            ]
        );
    }

    #[test]
    fn a_slow_peer_transfer_moves_to_another_holder_before_the_cdn() {
        let (mut s, slow, other) = asking_one_of_two_holders(8_000);
        s.handle(MS(500), progress(10_000, 1_000_000));
        assert_eq!(
            s.handle(MS(1_500), progress(20_000, 1_000_000)),
            vec![
                Action::AbortPeer { id: 1, peer: slow },
                Action::StartPeer {
                    id: 1,
                    peer: other,
                    from: 20_000
                }
            ]
        );
        // The second holder is slow too: no third, so the CDN completes it.
        s.handle(MS(1_600), progress(25_000, 1_000_000));
        assert_eq!(
            s.handle(MS(2_600), progress(30_000, 1_000_000)),
            vec![
                Action::AbortPeer { id: 1, peer: other },
                Action::StartHttp {
                    id: 1,
                    attempt: 0,
                    from: 30_000
                }
            ]
        );
    }

    #[test]
    fn the_rate_is_measured_from_the_first_data_not_from_the_request() {
        let mut s = with_peers(SchedulerConfig::default(), &[10]);
        announce(&mut s, T0, 10, &[7], &[]);
        submit(&mut s, T0, 1, shared(7, 6_000));
        // Queued at the peer behind others for 1.2 s, then 500 kB/s: ends at about 3.2 s.
        assert!(s.handle(MS(1_200), progress(16_000, 1_000_000)).is_empty());
        assert!(s.handle(MS(2_200), progress(516_000, 1_000_000)).is_empty());
        assert_eq!(
            s.handle(
                MS(3_200),
                Input::PeerFinished {
                    id: 1,
                    outcome: PeerOutcome::Complete
                }
            ),
            vec![Action::Deliver { id: 1 }]
        );
    }

    #[test]
    fn the_seeding_wait_scales_with_the_swarm_size_the_tracker_reports() {
        let config = SchedulerConfig {
            seed: 7,
            ..Default::default()
        };
        // A far deadline, so that only the rank decides.
        let wait_with_tracker_count = |count: Option<u64>| {
            let mut s = with_peers(config, &[10]);
            if let Some(peers) = count {
                s.handle(
                    T0,
                    Input::SwarmSize {
                        swarm: swarm(),
                        peers,
                    },
                );
            }
            submit(&mut s, T0, 1, shared(7, 100_000_000));
            s.next_wakeup(T0).expect("a seeding time")
        };
        let alone_with_one_link = wait_with_tracker_count(None);
        // One other peer: at most one spacing.
        assert!(alone_with_one_link < config.seed_spacing);
        assert!(!alone_with_one_link.is_zero());
        // A tracker count under the links known changes nothing.
        assert_eq!(wait_with_tracker_count(Some(1)), alone_with_one_link);
        // 1,001 peers: the same draw ranks 1,000 times as far.
        let big = wait_with_tracker_count(Some(1_001)).as_secs_f64();
        let ratio = big / alone_with_one_link.as_secs_f64();
        assert!((ratio - 1_000.0).abs() < 1e-3, "{ratio}");
    }

    #[test]
    fn a_peer_the_mesh_has_not_reached_by_half_its_slack_seeds_before_the_urgent_time() {
        let mut s = with_peers(
            SchedulerConfig {
                seed: 3,
                ..Default::default()
            },
            &[10],
        );
        // A huge swarm: its rank would put it far past the deadline.
        s.handle(
            T0,
            Input::SwarmSize {
                swarm: swarm(),
                peers: 1_000_000,
            },
        );
        submit(&mut s, MS(1_000), 1, shared(7, 11_000));
        // Urgent at 10 s; half the 9 s slack is 5.5 s.
        let seed_at = s.next_wakeup(MS(1_000)).expect("a seeding time");
        assert!(seed_at >= MS(5_500) && seed_at < MS(10_000), "{seed_at:?}");
        assert!(s.poll(seed_at.saturating_sub(MS(1))).is_empty());
        assert_eq!(
            s.poll(seed_at),
            vec![Action::StartHttp {
                id: 1,
                attempt: 0,
                from: 0
            }]
        );
    }

    #[test]
    fn a_fast_peer_transfer_is_left_alone() {
        let mut s = with_peers(SchedulerConfig::default(), &[10]);
        announce(&mut s, T0, 10, &[7], &[]);
        submit(&mut s, T0, 1, shared(7, 4_000));
        let a = s.handle(MS(100), progress(500_000, 1_000_000));
        assert!(a.is_empty());
    }

    #[test]
    fn a_peer_leaving_mid_transfer_is_resumed_from_another_holder() {
        let mut s = with_peers(SchedulerConfig::default(), &[10, 11]);
        announce(&mut s, T0, 10, &[7], &[]);
        let first = submit(&mut s, T0, 1, shared(7, 20_000));
        assert_eq!(
            first,
            vec![Action::StartPeer {
                id: 1,
                peer: 10,
                from: 0
            }]
        );
        announce(&mut s, T0, 11, &[7], &[]);
        s.handle(MS(100), progress(30_000, 90_000));
        assert_eq!(
            s.handle(MS(200), Input::PeerDisconnected { peer: 10 }),
            vec![Action::StartPeer {
                id: 1,
                peer: 11,
                from: 30_000
            }]
        );
    }

    #[test]
    fn a_peer_killed_mid_transfer_is_completed_over_http_from_the_first_missing_byte() {
        let mut s = with_peers(SchedulerConfig::default(), &[10]);
        announce(&mut s, T0, 10, &[7], &[]);
        submit(&mut s, T0, 1, shared(7, 3_000));
        s.handle(MS(300), progress(40_000, 100_000));
        // The only holder vanishes; the deadline leaves no time to look for another.
        assert_eq!(
            s.handle(MS(2_100), Input::PeerDisconnected { peer: 10 }),
            vec![Action::StartHttp {
                id: 1,
                attempt: 0,
                from: 40_000
            }]
        );
    }

    #[test]
    fn absent_answers_try_the_next_peer_then_the_cdn() {
        let (mut s, first, _) = asking_one_of_two_holders(20_000);
        let a = s.handle(
            MS(10),
            Input::PeerFinished {
                id: 1,
                outcome: PeerOutcome::Absent,
            },
        );
        let Action::StartPeer { peer: second, .. } = a[0] else {
            panic!("{a:?}")
        };
        assert_ne!(first, second);
        // Both tried and nobody else has it: the seed draw applies, within two spacings.
        assert!(
            s.handle(
                MS(20),
                Input::PeerFinished {
                    id: 1,
                    outcome: PeerOutcome::Absent
                }
            )
            .is_empty()
        );
        assert_eq!(
            s.poll(MS(1_020)),
            vec![Action::StartHttp {
                id: 1,
                attempt: 0,
                from: 0
            }]
        );
    }

    #[test]
    fn corrupt_peer_data_bans_the_peer_and_refetches_everything_from_the_cdn() {
        let mut s = with_peers(SchedulerConfig::default(), &[10, 11]);
        announce(&mut s, T0, 10, &[7], &[]);
        announce(&mut s, T0, 11, &[7], &[]);
        let a = submit(&mut s, T0, 1, shared(7, 20_000));
        let Action::StartPeer { peer, .. } = a[0] else {
            panic!("{a:?}")
        };
        s.handle(MS(10), progress(90_000, 90_000));
        assert_eq!(
            s.handle(
                MS(20),
                Input::PeerFinished {
                    id: 1,
                    outcome: PeerOutcome::Corrupt
                }
            ),
            vec![
                Action::BanPeer { peer },
                Action::StartHttp {
                    id: 1,
                    attempt: 0,
                    from: 0
                }
            ]
        );
    }

    #[test]
    fn data_that_fails_the_hash_of_an_ambiguous_id_bans_nobody() {
        let mut s = with_peers(SchedulerConfig::default(), &[10]);
        announce(&mut s, T0, 10, &[13], &[]);
        let mut request = shared(13, 20_000);
        request.share.as_mut().unwrap().id_ambiguous = true;
        let a = submit(&mut s, T0, 1, request);
        assert!(
            matches!(a[..], [Action::StartPeer { peer: 10, .. }]),
            "{a:?}"
        );
        s.handle(MS(10), progress(90_000, 90_000));
        // The peer may have sent the other segment it knows by id 13: the CDN, no ban.
        assert_eq!(
            s.handle(
                MS(20),
                Input::PeerFinished {
                    id: 1,
                    outcome: PeerOutcome::Corrupt
                }
            ),
            vec![Action::StartHttp {
                id: 1,
                attempt: 0,
                from: 0
            }]
        );
    }

    #[test]
    fn a_resumed_segment_that_fails_verification_bans_every_contributor() {
        let mut s = with_peers(SchedulerConfig::default(), &[10, 11]);
        announce(&mut s, T0, 10, &[7], &[]);
        submit(&mut s, T0, 1, shared(7, 20_000));
        s.handle(MS(10), progress(1_000, 9_000));
        announce(&mut s, MS(10), 11, &[7], &[]);
        s.handle(
            MS(20),
            Input::PeerFinished {
                id: 1,
                outcome: PeerOutcome::Failed,
            },
        );
        s.handle(MS(30), progress(2_000, 9_000));
        let a = s.poll(MS(2_030));
        assert_eq!(
            a,
            vec![
                Action::AbortPeer { id: 1, peer: 11 },
                Action::StartHttp {
                    id: 1,
                    attempt: 0,
                    from: 2_000
                }
            ]
        );
        assert_eq!(
            s.handle(MS(2_100), Input::IntegrityFailed { id: 1 }),
            vec![
                Action::BanPeer { peer: 10 },
                Action::BanPeer { peer: 11 },
                Action::StartHttp {
                    id: 1,
                    attempt: 0,
                    from: 0
                }
            ]
        );
    }

    #[test]
    fn cancelling_a_peer_transfer_cancels_it_at_the_peer() {
        let mut s = with_peers(SchedulerConfig::default(), &[10]);
        announce(&mut s, T0, 10, &[7], &[]);
        submit(&mut s, T0, 1, shared(7, 20_000));
        assert_eq!(
            s.handle(MS(5), Input::Cancel { id: 1 }),
            vec![Action::AbortPeer { id: 1, peer: 10 }]
        );
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn peers_of_another_swarm_are_not_asked() {
        let mut s = Scheduler::new(SchedulerConfig::default());
        s.handle(
            T0,
            Input::PeerConnected {
                peer: 10,
                swarm: InfoHash::parse("ffffffffffffffffffff").unwrap(),
            },
        );
        announce(&mut s, T0, 10, &[7], &[]);
        assert_eq!(
            submit(&mut s, T0, 1, shared(7, 20_000)),
            vec![Action::StartHttp {
                id: 1,
                attempt: 0,
                from: 0
            }]
        );
    }

    #[test]
    fn segments_peers_may_not_serve_go_to_the_cdn() {
        let mut s = with_peers(SchedulerConfig::default(), &[10]);
        announce(&mut s, T0, 10, &[7], &[]);
        let mut request = shared(7, 20_000);
        request.share.as_mut().unwrap().from_peers = false;
        assert_eq!(
            submit(&mut s, T0, 1, request),
            vec![Action::StartHttp {
                id: 1,
                attempt: 0,
                from: 0
            }]
        );
    }

    fn is_pending(node: &Scheduler, id: RequestId) -> bool {
        node.entries.contains_key(&id)
    }

    /// Six schedulers in one swarm with instant links, each seeing every new live segment at
    /// a different moment: each segment leaves the CDN exactly once, because the first seeder
    /// announces it as loading and the others wait for it, then fetch it from peers.
    #[test]
    fn a_swarm_of_six_fetches_each_new_segment_from_the_cdn_once() {
        const PEERS: usize = 6;
        const SEGMENTS: i64 = 30;
        let mut nodes: Vec<Scheduler> = (0..PEERS)
            .map(|me| {
                let others: Vec<PeerRef> = (0..PEERS as u64).filter(|p| *p != me as u64).collect();
                let config = SchedulerConfig {
                    seed: 1000 + me as u64,
                    ..Default::default()
                };
                with_peers(config, &others)
            })
            .collect();
        let mut loaded = vec![Vec::<i64>::new(); PEERS];
        let mut loading = vec![Vec::<i64>::new(); PEERS];
        let (mut cdn, mut p2p) = (0, 0);
        let mut now = T0;
        for segment in 0..SEGMENTS {
            let id: RequestId = segment;
            let t0 = MS(segment as u64 * 2_000);
            let deadline = t0.as_millis() as u64 + 6_000;
            let mut submits: Vec<(Time, usize)> = (0..PEERS)
                .map(|me| (t0 + MS(150 * me as u64), me))
                .collect();
            loop {
                let next_submit = submits.first().copied();
                let next_wake = (0..PEERS)
                    .filter_map(|i| nodes[i].next_wakeup(now).map(|t| (t, i)))
                    .min();
                let (at, node, actions) = match (next_submit, next_wake) {
                    (Some((ts, i)), wake) if wake.is_none_or(|(tw, _)| ts <= tw) => {
                        submits.remove(0);
                        let a = submit(&mut nodes[i], ts, id, shared(segment, deadline));
                        (ts, i, a)
                    }
                    (_, Some((tw, i))) => (tw, i, nodes[i].poll(tw)),
                    _ => break,
                };
                now = at;
                let mut work: Vec<(usize, Action)> =
                    actions.into_iter().map(|a| (node, a)).collect();
                while let Some((i, action)) = work.pop() {
                    let follow = match action {
                        Action::StartHttp { .. } => {
                            cdn += 1;
                            loading[i].push(segment);
                            Some(Input::HttpFinished { id, result: Ok(()) })
                        }
                        Action::StartPeer { .. } => {
                            p2p += 1;
                            Some(Input::PeerFinished {
                                id,
                                outcome: PeerOutcome::Complete,
                            })
                        }
                        Action::Deliver { .. } => {
                            loading[i].retain(|s| *s != segment);
                            loaded[i].push(segment);
                            None
                        }
                        other => panic!("unexpected {other:?}"),
                    };
                    // Every change of state reaches the other nodes at once.
                    for j in (0..PEERS).filter(|j| *j != i) {
                        let announced = Input::PeerAnnounced {
                            peer: i as PeerRef,
                            loaded: loaded[i].clone(),
                            loading: loading[i].clone(),
                        };
                        work.extend(nodes[j].handle(now, announced).into_iter().map(|a| (j, a)));
                    }
                    if let Some(input) = follow {
                        work.extend(nodes[i].handle(now, input).into_iter().map(|a| (i, a)));
                    }
                }
            }
            assert!(nodes.iter().all(|n| !is_pending(n, id)));
        }
        assert_eq!(cdn, SEGMENTS);
        assert_eq!(p2p, SEGMENTS * (PEERS as i64 - 1));
    }
}

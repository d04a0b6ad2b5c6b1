//! The delivery engine of one session, sans-IO: every fetch (manifest, key, init or media
//! segment) is one [`SegmentRequest`] submitted to it, and the [`Scheduler`] decides whether
//! the CDN or a peer serves it and when. It holds the receive and upload state of every peer
//! link, the segment cache, the announcements, the joined swarms, the bans and the statistics.
//!
//! The run loop is str0m's: the driver feeds [`Engine::handle_input`] with the time and what
//! happened (a request, an HTTP answer, a link's message, the clock), then drains
//! [`Engine::poll_output`] until it returns [`Output::Timeout`], carrying out each output
//! (start a transfer, send a command, close a link, answer a requester). Nothing here waits,
//! reads a clock or touches a socket, so the plugin's tokio hub and the simulator run the same
//! engine.
//!
//! Protocol breaches are offences: the link closes, and the second offence of a peer id or
//! address bans it ([`Bans`]). Data that fails its hash, or a size claim the origin
//! contradicts, bans at once.

use super::inbound::{Asked, Inbound, Verdict};
use super::uploads::{Upload, UploadAction, UploadTurns};
use crate::error::MeshError;
use crate::mesh::cache::SegmentCache;
use crate::mesh::guard::{Bans, OffenceOutcome, WarningLimiter};
use crate::mesh::integrity;
use crate::mesh::protocol::{self, Command, Incoming};
use crate::mesh::swarm::{InfoHash, PeerId};
use crate::mesh::{SegmentId, Time};
use crate::model::Resource;
use crate::scheduler::{
    self, Action, PeerOutcome, PeerRef, RequestId, Scheduler, SchedulerConfig, SegmentRequest,
    Share, ShareKey,
};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// A segment from a peer may claim at most this size when the origin does not give it (a
/// byte range): twice the default `cache-size`, beyond which a default viewer stores nothing
/// to serve.
pub const MAX_PEER_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Segment ids in one announcement list at most; a longer list is an offence.
pub const MAX_ANNOUNCED_IDS: usize = 4096;
/// How long the link holding the upload turn may go without handing a data message to the
/// transport before it is cut (plus what the upload rate cap makes it wait).
pub const UPLOAD_SEND_DEADLINE: Duration = Duration::from_secs(3);
/// Bus warnings of one kind at most once per this window; the count of the others follows.
pub const WARNING_WINDOW: Duration = Duration::from_secs(10);
/// Upload data messages: small enough for a smooth rate cap and steady progress reports.
pub const UPLOAD_CHUNK: usize = 16 * 1024;
/// How long after start segments with time to spare wait for peers still being found.
pub const DISCOVERY_GRACE: Duration = Duration::from_secs(3);
/// Swarms joined at once: the current rendition of each track and a few recent ones.
pub const MAX_JOINED_SWARMS: usize = 6;
/// Size claims remembered per request, to check against the size the origin gives.
const MAX_CLAIMS: usize = 16;

/// What the engine is set up with.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub scheduler: SchedulerConfig,
    /// Whether peers can be found at all (a tracker is set): then segments with time to spare
    /// wait [`DISCOVERY_GRACE`] for them.
    pub discovery: bool,
    /// Serve segments to peers.
    pub upload: bool,
    /// Upload cap in bytes per second; 0 for none.
    pub max_upload_rate: u64,
    /// Bytes of segments kept to serve peers.
    pub cache_size: usize,
}

/// A segment or file as the engine delivers it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Bytes,
    /// The URL after redirects: relative references resolve against it.
    pub final_url: Url,
    /// Time spent in transfers, for throughput estimates (waiting does not count).
    pub elapsed: Duration,
}

/// The session's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub bytes_cdn: u64,
    pub bytes_p2p: u64,
    pub bytes_uploaded: u64,
    pub segments_cdn: u64,
    pub segments_p2p: u64,
    pub segments_rejected: u64,
    pub peers: u64,
    pub peers_banned: u64,
}

/// What happened, for [`Engine::handle_input`].
#[derive(Debug)]
pub enum Input {
    /// A requester asks for `request` under an id it chose, unique in the session.
    Submit {
        id: RequestId,
        request: SegmentRequest,
    },
    /// The requester of `id` stopped waiting.
    Cancel { id: RequestId },
    /// Stop serving and announcing a segment id: another segment now has it.
    Withdraw { key: ShareKey },
    /// The HTTP transfer [`Output::StartHttp`] started for `id` from byte `from` ended.
    HttpFinished {
        id: RequestId,
        from: u64,
        result: Result<Fetched, MeshError>,
    },
    /// A data channel to `remote` in `swarm` is open, under the driver's name `link`.
    LinkUp {
        link: PeerRef,
        swarm: InfoHash,
        remote: PeerId,
        address: Option<IpAddr>,
    },
    /// A message decoded from the link.
    Message { link: PeerRef, message: Incoming },
    /// The link's peer broke the wire protocol or its budget.
    Malformed { link: PeerRef, reason: String },
    /// The link closed.
    LinkDown { link: PeerRef },
    /// The driver could not queue an [`Output::Send`] for the link: its peer does not keep up.
    LinkStalled { link: PeerRef },
    /// An upload of the link handed another data message to the transport.
    UploadProgress {
        link: PeerRef,
        request_id: protocol::RequestId,
    },
    /// An upload of the link is all handed to the transport (`sending completed` included).
    UploadDone {
        link: PeerRef,
        request_id: protocol::RequestId,
    },
    /// Bytes of uploads a peer acknowledged.
    Uploaded { bytes: u64 },
    /// A tracker's count of the swarm's peers.
    SwarmSize { swarm: InfoHash, peers: u64 },
    /// A warning from signalling; `kind` groups those rate-limited together.
    Warning { kind: String, error: MeshError },
}

/// What to do, from [`Engine::poll_output`].
#[derive(Debug)]
pub enum Output {
    /// Fetch `resource` from byte `from` over HTTP, then report [`Input::HttpFinished`].
    StartHttp {
        id: RequestId,
        resource: Resource,
        from: u64,
    },
    /// Stop the HTTP transfer of `id`; no [`Input::HttpFinished`] is expected for it.
    AbortHttp { id: RequestId },
    /// Queue a command to the link's peer; report [`Input::LinkStalled`] if it cannot be.
    Send { link: PeerRef, command: Command },
    /// Send this upload on the link now, replacing any under way; `None` stops it.
    Upload {
        link: PeerRef,
        upload: Option<Upload>,
    },
    /// Close the link; no more inputs are taken for it.
    CloseLink { link: PeerRef },
    /// Join the swarm through every tracker.
    Join { swarm: InfoHash },
    /// Leave the swarm.
    Leave { swarm: InfoHash },
    /// The answer to the requester of `id`.
    Delivered { id: RequestId, fetched: Fetched },
    /// The request `id` failed.
    Failed { id: RequestId, error: MeshError },
    /// A warning for the application.
    Warning(MeshError),
    /// Nothing more to do until this time (or the next input); `None` means no timer.
    Timeout(Option<Time>),
}

/// A size a peer claimed for a request's segment (what it held before, plus the `segment data`
/// size), to check against the size the origin turns out to give.
#[derive(Debug, Clone)]
struct Claim {
    peer: PeerId,
    address: Option<IpAddr>,
    total: u64,
}

/// A request the engine is serving.
struct Pending {
    request: SegmentRequest,
    /// Bytes held so far (from peers; HTTP appends the rest).
    data: BytesMut,
    /// Any of `data` came from peers.
    from_peers: bool,
    /// Bytes of `data` from peers, counted in the statistics once delivered.
    peer_bytes: u64,
    /// Some of `data` came over HTTP.
    from_cdn: bool,
    /// The link serving it now, if a peer does.
    peer: Option<PeerRef>,
    /// Size claims of the peers that served it, oldest first, at most [`MAX_CLAIMS`].
    claims: VecDeque<Claim>,
    /// Time spent in transfers, for throughput estimates (waiting does not count).
    active: Duration,
    transfer_started: Option<Time>,
    final_url: Option<Url>,
}

impl Pending {
    fn new(request: SegmentRequest) -> Pending {
        Pending {
            request,
            data: BytesMut::new(),
            from_peers: false,
            peer_bytes: 0,
            from_cdn: false,
            peer: None,
            claims: VecDeque::new(),
            active: Duration::ZERO,
            transfer_started: None,
            final_url: None,
        }
    }

    fn begin_transfer(&mut self, now: Time) {
        self.transfer_started = Some(now);
    }

    fn end_transfer(&mut self, now: Time) {
        if let Some(t) = self.transfer_started.take() {
            self.active += now.saturating_sub(t);
        }
    }

    /// The segment's size when the origin gives it (a byte range).
    fn known_size(&self) -> Option<u64> {
        self.request.resource.range.map(|r| r.length)
    }

    fn id_ambiguous(&self) -> bool {
        self.request.share.as_ref().is_some_and(|s| s.id_ambiguous)
    }

    /// Takes the size claims that `is_false` proves lies; under an ambiguous id none is one
    /// (the peer may have meant another segment).
    fn false_claims(&mut self, is_false: impl Fn(u64) -> bool) -> Vec<Claim> {
        let claims = std::mem::take(&mut self.claims);
        if self.id_ambiguous() {
            return Vec::new();
        }
        claims.into_iter().filter(|c| is_false(c.total)).collect()
    }

    fn drop_peer_bytes(&mut self) {
        self.data.clear();
        self.from_peers = false;
        self.peer_bytes = 0;
    }
}

/// What the engine knows of one peer link.
struct Link {
    swarm: InfoHash,
    remote: PeerId,
    /// Where its packets come from.
    address: Option<IpAddr>,
    inbound: Inbound,
}

/// The sans-IO delivery engine. See the module documentation.
pub struct Engine {
    now: Time,
    scheduler: Scheduler,
    requests: HashMap<RequestId, Pending>,
    links: HashMap<PeerRef, Link>,
    bans: Arc<Bans>,
    uploads: UploadTurns,
    warning_limiter: WarningLimiter,
    cache: SegmentCache,
    /// Shareable segments being fetched from the CDN: announced as loading.
    loading: BTreeSet<(InfoHash, SegmentId)>,
    /// Segment ids the session withdrew: never stored or announced again.
    withdrawn: Withdrawn,
    /// Swarms joined, least recently used first.
    joined: Vec<InfoHash>,
    upload: bool,
    stats: StatsSnapshot,
    outputs: VecDeque<Output>,
}

impl Engine {
    /// An engine whose bans are shared with `bans` (signalling refuses banned peers before
    /// they link).
    pub fn new(config: EngineConfig, bans: Arc<Bans>) -> Engine {
        // A chunk the rate cap holds back does not count against the deadline.
        let rate_wait = if config.max_upload_rate > 0 {
            Duration::from_secs_f64(2.0 * UPLOAD_CHUNK as f64 / config.max_upload_rate as f64)
        } else {
            Duration::ZERO
        };
        let mut scheduler = config.scheduler;
        if config.discovery {
            scheduler.discovery_grace = DISCOVERY_GRACE;
        }
        Engine {
            now: Duration::ZERO,
            scheduler: Scheduler::new(scheduler),
            requests: HashMap::new(),
            links: HashMap::new(),
            bans,
            uploads: UploadTurns::new(UPLOAD_SEND_DEADLINE + rate_wait),
            warning_limiter: WarningLimiter::new(WARNING_WINDOW),
            cache: SegmentCache::new(config.cache_size),
            loading: BTreeSet::new(),
            withdrawn: Withdrawn::default(),
            joined: Vec::new(),
            upload: config.upload,
            stats: StatsSnapshot::default(),
            outputs: VecDeque::new(),
        }
    }

    /// The counters, with `peers` the links open now.
    pub fn stats(&self) -> StatsSnapshot {
        StatsSnapshot {
            peers: self.links.len() as u64,
            ..self.stats
        }
    }

    /// Requests the engine is serving.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// Bytes of segments held to serve peers.
    pub fn cached_bytes(&self) -> usize {
        self.cache.used()
    }

    /// Takes what happened at `now` (never earlier than the last input's time).
    pub fn handle_input(&mut self, now: Time, input: Input) {
        self.now = self.now.max(now);
        let actions = match input {
            Input::Submit { id, request } => self.submit(id, request),
            Input::Cancel { id } => {
                // The scheduler's aborts first: a peer's cancel names the request's segment.
                let aborts = self.schedule(scheduler::Input::Cancel { id });
                self.apply(aborts);
                self.forget(id);
                Vec::new()
            }
            Input::Withdraw { key } => {
                self.withdraw(&key);
                Vec::new()
            }
            Input::HttpFinished { id, from, result } => self.http_done(id, from, result),
            Input::LinkUp {
                link,
                swarm,
                remote,
                address,
            } => self.link_up(link, swarm, remote, address),
            Input::Message { link, message } => self.on_message(link, message),
            Input::Malformed { link, .. } => self.offence(link, "malformed message"),
            Input::LinkDown { link } => self.drop_link(link, ""),
            Input::LinkStalled { link } => self.drop_link(link, "peer does not keep up"),
            Input::UploadProgress { link, request_id } => {
                self.uploads.progress(self.now, link, request_id);
                Vec::new()
            }
            Input::UploadDone { link, request_id } => {
                let next = self.uploads.done(self.now, link, request_id);
                self.apply_uploads(next)
            }
            Input::Uploaded { bytes } => {
                self.stats.bytes_uploaded += bytes;
                Vec::new()
            }
            Input::Warning { kind, error } => {
                if let Some(held_back) = self.warning_limiter.admit(self.now, &kind) {
                    self.outputs
                        .push_back(Output::Warning(with_held_back(error, held_back)));
                }
                Vec::new()
            }
            Input::SwarmSize { swarm, peers } => {
                self.schedule(scheduler::Input::SwarmSize { swarm, peers })
            }
        };
        self.apply(actions);
    }

    /// The clock reached `now`: timers due fire.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = self.now.max(now);
        let cuts = self.uploads.poll(self.now);
        let mut actions = self.apply_uploads(cuts);
        actions.extend(self.scheduler.poll(self.now));
        self.apply(actions);
    }

    /// The next thing to do; [`Output::Timeout`] when there is nothing until then.
    pub fn poll_output(&mut self) -> Output {
        if let Some(output) = self.outputs.pop_front() {
            return output;
        }
        let wake = [
            self.scheduler.next_wakeup(self.now),
            self.uploads.next_wakeup(),
        ]
        .into_iter()
        .flatten()
        .min();
        Output::Timeout(wake)
    }

    fn schedule(&mut self, input: scheduler::Input) -> Vec<Action> {
        self.scheduler.handle(self.now, input)
    }

    fn send(&mut self, link: PeerRef, command: Command) {
        self.outputs.push_back(Output::Send { link, command });
    }

    fn submit(&mut self, id: RequestId, request: SegmentRequest) -> Vec<Action> {
        if let Some(share) = &request.share {
            self.join(&share.key.swarm.clone());
        }
        self.requests.insert(id, Pending::new(request.clone()));
        self.schedule(scheduler::Input::Submit { id, request })
    }

    /// Joins the swarm, leaving the least recently used one beyond the limit.
    fn join(&mut self, swarm: &InfoHash) {
        if let Some(pos) = self.joined.iter().position(|s| s == swarm) {
            let s = self.joined.remove(pos);
            self.joined.push(s);
            return;
        }
        self.joined.push(swarm.clone());
        self.outputs.push_back(Output::Join {
            swarm: swarm.clone(),
        });
        if self.joined.len() > MAX_JOINED_SWARMS {
            let old = self.joined.remove(0);
            self.outputs.push_back(Output::Leave { swarm: old });
        }
    }

    fn forget(&mut self, id: RequestId) {
        if let Some(pending) = self.requests.remove(&id) {
            self.stop_loading(&pending.request.share);
        }
    }

    fn apply(&mut self, actions: Vec<Action>) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            let more = self.act(action);
            queue.extend(more);
        }
    }

    fn act(&mut self, action: Action) -> Vec<Action> {
        let now = self.now;
        match action {
            Action::StartHttp { id, from, .. } => {
                let Some(pending) = self.requests.get_mut(&id) else {
                    return Vec::new();
                };
                pending.data.truncate(from as usize);
                if from == 0 {
                    pending.from_peers = false;
                    pending.peer_bytes = 0;
                }
                pending.peer = None;
                pending.begin_transfer(now);
                let resource = pending.request.resource.clone();
                let share = pending.request.share.clone();
                self.outputs
                    .push_back(Output::StartHttp { id, resource, from });
                // Announced as loading only when it will be served to peers afterwards.
                if let Some(share) = share
                    .filter(|s| self.upload && !s.id_ambiguous && !self.withdrawn.contains(&s.key))
                {
                    let key = (share.key.swarm.clone(), share.key.segment);
                    if self.loading.insert(key) {
                        self.announce(&share.key.swarm);
                    }
                }
            }
            Action::AbortHttp { id } => self.outputs.push_back(Output::AbortHttp { id }),
            Action::StartPeer { id, peer, from } => {
                let (Some(pending), Some(link)) =
                    (self.requests.get_mut(&id), self.links.get_mut(&peer))
                else {
                    return self.schedule(scheduler::Input::PeerFinished {
                        id,
                        outcome: PeerOutcome::Failed,
                    });
                };
                let Some(segment) = pending.request.share.as_ref().map(|s| s.key.segment) else {
                    return Vec::new();
                };
                pending.data.truncate(from as usize);
                pending.peer = Some(peer);
                pending.begin_transfer(now);
                // A peer meaning another segment by an ambiguous id may state another size.
                let exact_size = pending
                    .known_size()
                    .filter(|_| !pending.id_ambiguous())
                    .map(|len| len.saturating_sub(from));
                link.inbound.ask(Asked {
                    request: id,
                    exact_size,
                    max_size: MAX_PEER_SEGMENT_BYTES.saturating_sub(from),
                });
                self.send(
                    peer,
                    Command::SegmentRequest {
                        id: segment,
                        request_id: id,
                        byte_from: (from > 0).then_some(from),
                    },
                );
            }
            Action::AbortPeer { id, peer } => {
                if let Some(pending) = self.requests.get_mut(&id) {
                    pending.peer = None;
                    pending.end_transfer(now);
                }
                if let Some(link) = self.links.get_mut(&peer) {
                    link.inbound.cancel(id);
                    let segment = self
                        .requests
                        .get(&id)
                        .and_then(|p| p.request.share.as_ref())
                        .map_or(0, |s| s.key.segment);
                    self.send(
                        peer,
                        Command::Cancel {
                            id: segment,
                            request_id: id,
                        },
                    );
                }
            }
            Action::BanPeer { peer } => {
                let Some(link) = self.links.get(&peer) else {
                    return Vec::new();
                };
                let (remote, address) = (link.remote.clone(), link.address);
                self.ban(&remote, address);
                return self.drop_link(peer, "sent data that failed verification");
            }
            Action::Deliver { id } => {
                if let Some(pending) = self.requests.remove(&id) {
                    self.deliver(id, pending);
                }
            }
            Action::Fail { id, error } => {
                if let Some(pending) = self.requests.remove(&id) {
                    self.stop_loading(&pending.request.share);
                    self.outputs.push_back(Output::Failed { id, error });
                }
            }
        }
        Vec::new()
    }

    fn http_done(
        &mut self,
        id: RequestId,
        from: u64,
        result: Result<Fetched, MeshError>,
    ) -> Vec<Action> {
        let now = self.now;
        let Some(pending) = self.requests.get_mut(&id) else {
            return self.schedule(scheduler::Input::HttpFinished {
                id,
                result: result.map(|_| ()),
            });
        };
        pending.end_transfer(now);
        let mut liars = Vec::new();
        let result = match result {
            Ok(fetched) => {
                self.stats.bytes_cdn += fetched.bytes.len() as u64;
                pending.data.truncate(from as usize);
                pending.data.extend_from_slice(&fetched.bytes);
                pending.from_cdn |= !fetched.bytes.is_empty();
                pending.final_url = Some(fetched.final_url);
                // The origin has said how long the segment is: every other claim was a lie.
                let size = pending.data.len() as u64;
                liars.extend(pending.false_claims(|total| total != size));
                let expected = pending.request.share.as_ref().and_then(|s| s.hash);
                if pending.from_peers
                    && let Some(hash) = expected
                    && !integrity::verify(&pending.data, &hash)
                {
                    // Peer bytes completed over HTTP do not match: drop them all.
                    self.stats.segments_rejected += 1;
                    pending.drop_peer_bytes();
                    self.ban_claimants(liars);
                    return self.schedule(scheduler::Input::IntegrityFailed { id });
                }
                Ok(())
            }
            Err(e) => {
                if from > 0 && e.http_status() == Some(416) {
                    // Nothing at or past `from`: the segment is shorter than every claim that
                    // reached past it.
                    liars.extend(pending.false_claims(|total| total > from));
                    pending.drop_peer_bytes();
                }
                Err(e)
            }
        };
        self.ban_claimants(liars);
        self.schedule(scheduler::Input::HttpFinished { id, result })
    }

    fn deliver(&mut self, id: RequestId, mut pending: Pending) {
        pending.end_transfer(self.now);
        let bytes = pending.data.split().freeze();
        self.stats.bytes_p2p += pending.peer_bytes;
        if let Some(share) = &pending.request.share {
            // A segment counts as from peers only when no byte of it came from the CDN.
            if pending.from_peers && !pending.from_cdn {
                self.stats.segments_p2p += 1;
            } else {
                self.stats.segments_cdn += 1;
            }
            self.store(share, &bytes);
        }
        self.stop_loading(&pending.request.share);
        let fetched = Fetched {
            bytes,
            final_url: pending
                .final_url
                .unwrap_or_else(|| pending.request.resource.url.clone()),
            elapsed: pending.active,
        };
        self.outputs.push_back(Output::Delivered { id, fetched });
    }

    /// Keeps a segment to serve peers, if they can trust it.
    fn store(&mut self, share: &Share, bytes: &Bytes) {
        // Never pass on what we know to be wrong; without a hash, receivers verify.
        let trusted = share
            .hash
            .is_none_or(|hash| integrity::verify(bytes, &hash));
        if !trusted || !self.upload || share.id_ambiguous || self.withdrawn.contains(&share.key) {
            return;
        }
        let inserted = self
            .cache
            .insert(share.key.swarm.clone(), share.key.segment, bytes.clone());
        self.cache
            .set_playhead(share.key.swarm.clone(), share.key.segment);
        if inserted.stored || !inserted.evicted.is_empty() {
            self.announce(&share.key.swarm);
        }
    }

    fn withdraw(&mut self, key: &ShareKey) {
        self.withdrawn.insert(key);
        let cached = self.cache.remove(&key.swarm, key.segment).is_some();
        let loading = self.loading.remove(&(key.swarm.clone(), key.segment));
        if cached || loading {
            self.announce(&key.swarm);
        }
    }

    fn stop_loading(&mut self, share: &Option<Share>) {
        if let Some(share) = share
            && self
                .loading
                .remove(&(share.key.swarm.clone(), share.key.segment))
        {
            self.announce(&share.key.swarm);
        }
    }

    fn announcement(&self, swarm: &InfoHash) -> Command {
        let loaded = self.cache.held_ids(swarm);
        let loading = self
            .loading
            .iter()
            .filter(|(s, _)| s == swarm)
            .map(|(_, id)| *id)
            .collect();
        Command::SegmentsAnnouncement { loaded, loading }
    }

    /// Sends our segment state to every link of the swarm.
    fn announce(&mut self, swarm: &InfoHash) {
        if self.links.is_empty() {
            return;
        }
        let command = self.announcement(swarm);
        let mut peers: Vec<PeerRef> = self
            .links
            .iter()
            .filter(|(_, l)| &l.swarm == swarm)
            .map(|(p, _)| *p)
            .collect();
        peers.sort_unstable();
        for peer in peers {
            self.send(peer, command.clone());
        }
    }

    fn link_up(
        &mut self,
        peer: PeerRef,
        swarm: InfoHash,
        remote: PeerId,
        address: Option<IpAddr>,
    ) -> Vec<Action> {
        let refused = self.bans.refuses(&remote, address.as_slice());
        if refused || !self.joined.contains(&swarm) || self.links.contains_key(&peer) {
            if refused && !self.bans.is_peer_banned(&remote) {
                // A new peer id from a banned address: the same peer.
                self.ban(&remote, address);
            }
            self.outputs.push_back(Output::CloseLink { link: peer });
            return Vec::new();
        }
        let announcement = self.announcement(&swarm);
        self.links.insert(
            peer,
            Link {
                swarm: swarm.clone(),
                remote,
                address,
                inbound: Inbound::default(),
            },
        );
        self.send(peer, announcement);
        self.schedule(scheduler::Input::PeerConnected { peer, swarm })
    }

    fn drop_link(&mut self, peer: PeerRef, _reason: &str) -> Vec<Action> {
        if self.links.remove(&peer).is_none() {
            return Vec::new();
        }
        self.outputs.push_back(Output::CloseLink { link: peer });
        let now = self.now;
        for pending in self.requests.values_mut() {
            if pending.peer == Some(peer) {
                pending.peer = None;
                pending.end_transfer(now);
            }
        }
        let next = self.uploads.link_gone(now, peer);
        let mut actions = self.apply_uploads(next);
        actions.extend(self.schedule(scheduler::Input::PeerDisconnected { peer }));
        actions
    }

    /// Whether links other than from `peer` come from `address`: then it is not the peer's own.
    fn address_shared(&self, peer: &PeerId, address: Option<IpAddr>) -> bool {
        address.is_some_and(|a| {
            self.links
                .values()
                .any(|l| l.address == Some(a) && &l.remote != peer)
        })
    }

    /// Bans `peer` (and its address, unless shared) for the session.
    fn ban(&mut self, peer: &PeerId, address: Option<IpAddr>) {
        let shared = self.address_shared(peer, address);
        if self.bans.ban(peer, address, shared) {
            self.stats.peers_banned += 1;
        }
    }

    /// Bans the peers whose size claims the origin contradicted, and drops their links.
    fn ban_claimants(&mut self, liars: Vec<Claim>) {
        for liar in liars {
            self.ban(&liar.peer, liar.address);
            let mut links: Vec<PeerRef> = self
                .links
                .iter()
                .filter(|(_, l)| l.remote == liar.peer)
                .map(|(p, _)| *p)
                .collect();
            links.sort_unstable();
            for peer in links {
                let actions = self.drop_link(peer, "claimed a false size");
                self.apply(actions);
            }
        }
    }

    /// The link's peer broke the protocol: close the link, and ban the peer at its second
    /// offence (by peer id, or by address unless shared).
    fn offence(&mut self, peer: PeerRef, reason: &str) -> Vec<Action> {
        let Some(link) = self.links.get(&peer) else {
            return Vec::new();
        };
        let (remote, address) = (link.remote.clone(), link.address);
        let shared = self.address_shared(&remote, address);
        if self.bans.offence(&remote, address, shared) == OffenceOutcome::Banned {
            self.stats.peers_banned += 1;
        }
        self.drop_link(peer, reason)
    }

    /// Carries out what the upload turns decided.
    fn apply_uploads(&mut self, actions: Vec<UploadAction>) -> Vec<Action> {
        let mut out = Vec::new();
        for action in actions {
            match action {
                UploadAction::Send { link, upload } => {
                    if self.links.contains_key(&link) {
                        self.outputs.push_back(Output::Upload {
                            link,
                            upload: Some(upload),
                        });
                    }
                }
                UploadAction::Stop { link } => {
                    if self.links.contains_key(&link) {
                        self.outputs
                            .push_back(Output::Upload { link, upload: None });
                    }
                }
                UploadAction::Cut { link } => {
                    out.extend(self.offence(link, "does not drain what it is sent"))
                }
            }
        }
        out
    }

    /// Tells the scheduler how much of request `id` is held, and its size once known.
    fn progress(&mut self, id: RequestId, total: Option<u64>) -> Vec<Action> {
        let received = self.requests.get(&id).map_or(0, |p| p.data.len() as u64);
        self.schedule(scheduler::Input::PeerProgress {
            id,
            received,
            total,
        })
    }

    /// A peer asks us for a segment: it replaces what we were sending it.
    fn on_segment_request(
        &mut self,
        peer: PeerRef,
        id: SegmentId,
        request_id: protocol::RequestId,
        byte_from: Option<u64>,
    ) -> Vec<Action> {
        let link = &self.links[&peer];
        let data = if self.upload {
            self.cache.get(&link.swarm, id)
        } else {
            None
        };
        let from = byte_from.unwrap_or(0);
        let upload = data
            .filter(|data| from <= data.len() as u64)
            .map(|data| Upload {
                request_id,
                segment: id,
                data: data.slice(from as usize..),
            });
        let absent = upload.is_none();
        let next = self.uploads.request(self.now, peer, upload);
        let actions = self.apply_uploads(next);
        if absent && self.links.contains_key(&peer) {
            self.send(peer, Command::SegmentAbsent { id, request_id });
        }
        actions
    }

    fn on_message(&mut self, peer: PeerRef, message: Incoming) -> Vec<Action> {
        if !self.links.contains_key(&peer) {
            return Vec::new();
        }
        match message {
            Incoming::Command(Command::SegmentsAnnouncement { loaded, loading }) => {
                if loaded.len() > MAX_ANNOUNCED_IDS || loading.len() > MAX_ANNOUNCED_IDS {
                    return self.offence(peer, "announcement too long");
                }
                self.schedule(scheduler::Input::PeerAnnounced {
                    peer,
                    loaded,
                    loading,
                })
            }
            Incoming::Command(Command::SegmentRequest {
                id,
                request_id,
                byte_from,
            }) => self.on_segment_request(peer, id, request_id, byte_from),
            Incoming::Command(Command::Cancel { request_id, .. }) => {
                let next = self.uploads.cancel(self.now, peer, request_id);
                self.apply_uploads(next)
            }
            Incoming::Command(command) => {
                let verdicts = self
                    .links
                    .get_mut(&peer)
                    .map_or_else(Vec::new, |l| l.inbound.on_command(&command));
                self.on_verdicts(peer, verdicts)
            }
            Incoming::Data(bytes) => {
                let verdict = self.links.get_mut(&peer).map(|l| l.inbound.on_data(bytes));
                self.on_verdicts(peer, verdict.into_iter().collect())
            }
        }
    }

    fn on_verdicts(&mut self, peer: PeerRef, verdicts: Vec<Verdict>) -> Vec<Action> {
        let mut actions = Vec::new();
        for verdict in verdicts {
            match verdict {
                Verdict::Offence(reason) => {
                    actions.extend(self.offence(peer, reason));
                    break;
                }
                Verdict::Dropped => {}
                Verdict::Started { request, size } => {
                    let Some(link) = self.links.get(&peer) else {
                        break;
                    };
                    let claim = Claim {
                        peer: link.remote.clone(),
                        address: link.address,
                        total: 0,
                    };
                    let Some(pending) = self.requests.get_mut(&request) else {
                        continue;
                    };
                    let held = pending.data.len() as u64;
                    let total = held.saturating_add(size);
                    // One allocation of the claimed size, not a doubling one.
                    pending
                        .data
                        .reserve(usize::try_from(size).unwrap_or(usize::MAX));
                    if pending.claims.len() == MAX_CLAIMS {
                        pending.claims.pop_front();
                    }
                    pending.claims.push_back(Claim { total, ..claim });
                    actions.extend(self.progress(request, Some(total)));
                }
                Verdict::Data { request, bytes } => {
                    let Some(pending) = self.requests.get_mut(&request) else {
                        continue;
                    };
                    pending.data.extend_from_slice(&bytes);
                    pending.from_peers = true;
                    pending.peer_bytes += bytes.len() as u64;
                    actions.extend(self.progress(request, None));
                }
                Verdict::Completed { request } => {
                    actions.extend(self.peer_completed(request));
                }
                Verdict::Absent { request } => {
                    actions.extend(self.peer_ended(peer, request, PeerOutcome::Absent));
                }
                Verdict::Abandoned { request } => {
                    actions.extend(self.peer_ended(peer, request, PeerOutcome::Failed));
                }
            }
        }
        actions
    }

    /// The peer's transfer of `id` ended without the segment; the scheduler looks elsewhere.
    fn peer_ended(&mut self, peer: PeerRef, id: RequestId, outcome: PeerOutcome) -> Vec<Action> {
        let now = self.now;
        match self.requests.get_mut(&id) {
            Some(pending) if pending.peer == Some(peer) => {
                pending.peer = None;
                pending.end_transfer(now);
                self.schedule(scheduler::Input::PeerFinished { id, outcome })
            }
            _ => Vec::new(),
        }
    }

    /// Every byte of a peer's answer arrived: verify the segment.
    fn peer_completed(&mut self, id: RequestId) -> Vec<Action> {
        let now = self.now;
        let Some(pending) = self.requests.get_mut(&id) else {
            return Vec::new();
        };
        pending.end_transfer(now);
        let mut liars = Vec::new();
        let outcome = match pending.request.share.as_ref().and_then(|s| s.hash) {
            Some(hash) if !integrity::verify(&pending.data, &hash) => {
                self.stats.segments_rejected += 1;
                pending.drop_peer_bytes();
                PeerOutcome::Corrupt
            }
            verified => {
                // The hash vouches for the size too: earlier claims of another size were lies.
                if verified.is_some() {
                    let size = pending.data.len() as u64;
                    liars.extend(pending.false_claims(|total| total != size));
                }
                PeerOutcome::Complete
            }
        };
        pending.peer = None;
        self.ban_claimants(liars);
        self.schedule(scheduler::Input::PeerFinished { id, outcome })
    }
}

/// `error` with a note of how many like it were held back.
fn with_held_back(error: MeshError, held_back: u64) -> MeshError {
    if held_back == 0 {
        return error;
    }
    let note = format!(" ({held_back} more like it in the last {WARNING_WINDOW:?} not shown)");
    match error {
        MeshError::Tracker { url, reason } => MeshError::Tracker {
            url,
            reason: reason + &note,
        },
        MeshError::Mesh(reason) => MeshError::Mesh(reason + &note),
        other => other,
    }
}

/// Withdrawn segment ids, the oldest forgotten beyond [`Withdrawn::MAX`]: ids are withdrawn a
/// few per playlist, so this covers any playlist a session holds.
#[derive(Default)]
struct Withdrawn {
    keys: BTreeSet<(InfoHash, SegmentId)>,
    order: VecDeque<(InfoHash, SegmentId)>,
}

impl Withdrawn {
    const MAX: usize = 4096;

    fn insert(&mut self, key: &ShareKey) {
        let key = (key.swarm.clone(), key.segment);
        if self.keys.insert(key.clone()) {
            self.order.push_back(key);
            if self.order.len() > Self::MAX
                && let Some(oldest) = self.order.pop_front()
            {
                self.keys.remove(&oldest);
            }
        }
    }

    fn contains(&self, key: &ShareKey) -> bool {
        self.keys.contains(&(key.swarm.clone(), key.segment))
    }
}

#[cfg(test)]
mod tests;

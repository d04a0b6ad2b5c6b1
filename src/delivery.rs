//! The delivery hub of one session: every fetch (manifest, key, init or media segment) is one
//! [`SegmentRequest`] submitted to it, and the sans-IO [`Scheduler`] decides whether the CDN or a
//! peer serves it and when.
//!
//! The hub task owns the scheduler, the HTTP transfers, the peer links (their downloads and
//! uploads), the segment cache and the statistics. Tracker signalling runs in its own tasks
//! ([`crate::mesh::signalling`]) and hands the hub each data channel once it is open. The hub
//! never waits on a peer: each link has a reader and a writer task with bounded queues.
//!
//! Hostile peers are held to bounds where their input enters: the reader reads at most
//! [`LINK_COMMANDS_PER_SECOND`] commands and [`LINK_COMMAND_BYTES_PER_SECOND`] command bytes
//! a second (beyond that the channel is not read; a link that keeps its budget spent for
//! [`LINK_FLOOD_GRACE`] is cut as an offence, since the stack below still queues), and passes on
//! at most [`LINK_ANNOUNCEMENTS_PER_SECOND`] announcements (the latest one wins). Answers to
//! our requests are checked by [`inbound::Inbound`]; uploads take turns with a send deadline
//! ([`uploads::UploadTurns`]). Protocol breaches are offences: the link closes, and the second
//! offence of a peer id or address bans it ([`crate::mesh::guard::Bans`]). Data that fails its
//! hash, or a size claim the origin contradicts, bans at once.

use mesh_core::delivery::{inbound, uploads};

use crate::error::MeshError;
use crate::fetch::{Fetched, HttpConfig, build_client, http_get};
use crate::mesh::cache::SegmentCache;
use crate::mesh::guard::{Bans, OffenceOutcome, TokenBucket, WarningLimiter};
use crate::mesh::integrity;
use crate::mesh::protocol::{self, Command, Incoming};
use crate::mesh::signalling::{HubEvent, PeerSlot, Signalling, SignallingConfig};
use crate::mesh::swarm::{InfoHash, PeerId};
use crate::mesh::transport::{ChannelEvent, ChannelSender, PeerChannel};
use crate::scheduler::{
    Action, Input, PeerOutcome, PeerRef, RequestId, Scheduler, SchedulerConfig, SegmentRequest,
    Share, ShareKey,
};
use bytes::{Bytes, BytesMut};
use inbound::{Asked, Inbound, Verdict};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use uploads::{Upload, UploadAction, UploadTurns};

/// A segment from a peer may claim at most this size when the origin does not give it (a
/// byte range): twice the default `cache-size`, beyond which a default viewer stores nothing
/// to serve.
pub const MAX_PEER_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Commands queued to one peer before it counts as unresponsive.
pub const LINK_CONTROL_QUEUE: usize = 64;
/// Commands read from one link per second, on average (bursts of twice that).
pub const LINK_COMMANDS_PER_SECOND: f64 = 100.0;
/// Bytes of commands read from one link per second, on average (bursts of twice that).
pub const LINK_COMMAND_BYTES_PER_SECOND: f64 = 256.0 * 1024.0;
/// How long a link may keep its command budget spent before it counts as flooding. While it
/// is spent the link is not read, but the WebRTC stack below keeps accepting and queueing what
/// the peer sends, so a peer that never slows down is cut, not only throttled.
pub const LINK_FLOOD_GRACE: Duration = Duration::from_secs(3);
/// Announcements passed on to the scheduler per link per second; the rest wait, and only the
/// latest is kept.
pub const LINK_ANNOUNCEMENTS_PER_SECOND: f64 = 5.0;
/// Segment ids in one announcement list at most; a longer list is an offence.
pub const MAX_ANNOUNCED_IDS: usize = 4096;
/// How long the link holding the upload turn may go without handing a data message to the
/// transport before it is cut (plus what the upload rate cap makes it wait).
pub const UPLOAD_SEND_DEADLINE: Duration = Duration::from_secs(3);
/// Size claims remembered per request, to check against the size the origin gives.
const MAX_CLAIMS: usize = 16;
/// Bus warnings of one kind at most once per this window; the count of the others follows.
pub const WARNING_WINDOW: Duration = Duration::from_secs(10);
/// How often a writer looks at what its peer has acknowledged while it waits.
const ACK_POLL: Duration = Duration::from_millis(200);
/// Upload data messages: small enough for a smooth rate cap and steady progress reports.
const UPLOAD_CHUNK: usize = 16 * 1024;
/// How long after start segments with time to spare wait for peers still being found.
const DISCOVERY_GRACE: Duration = Duration::from_secs(3);
/// Swarms joined at once: the current rendition of each track and a few recent ones.
const MAX_JOINED_SWARMS: usize = 6;

/// Mesh settings; `None` in [`Delivery::spawn`] means CDN only.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub signalling: SignallingConfig,
    /// Serve segments to peers.
    pub upload: bool,
    /// Upload cap in bytes per second; 0 for none.
    pub max_upload_rate: u64,
    /// Bytes of segments kept to serve peers.
    pub cache_size: usize,
}

/// Counters of one session, read by the element for `stats` and `mesh-statistics`.
#[derive(Debug, Default)]
pub struct MeshStats {
    pub bytes_cdn: AtomicU64,
    pub bytes_p2p: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub segments_cdn: AtomicU64,
    pub segments_p2p: AtomicU64,
    pub segments_rejected: AtomicU64,
    pub peers: AtomicU64,
    pub peers_banned: AtomicU64,
}

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

impl MeshStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            bytes_cdn: get(&self.bytes_cdn),
            bytes_p2p: get(&self.bytes_p2p),
            bytes_uploaded: get(&self.bytes_uploaded),
            segments_cdn: get(&self.segments_cdn),
            segments_p2p: get(&self.segments_p2p),
            segments_rejected: get(&self.segments_rejected),
            peers: get(&self.peers),
            peers_banned: get(&self.peers_banned),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

struct Job {
    id: RequestId,
    request: SegmentRequest,
    reply: oneshot::Sender<Result<Fetched, MeshError>>,
}

/// Handle to the delivery hub of one session. Cheap to clone.
#[derive(Clone)]
pub struct Delivery {
    jobs: mpsc::Sender<Job>,
    cancels: mpsc::UnboundedSender<RequestId>,
    withdrawals: mpsc::Sender<ShareKey>,
    next_id: Arc<AtomicU64>,
    started: Instant,
}

/// Tells the hub when a requester stops waiting (seek, shutdown).
struct CancelOnDrop<'a> {
    id: RequestId,
    cancels: &'a mpsc::UnboundedSender<RequestId>,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.cancels.send(self.id);
        }
    }
}

impl Delivery {
    /// Spawns the hub on the current tokio runtime; it ends when every handle is dropped.
    /// Mesh warnings (tracker down, peers off) go to `warnings`.
    pub fn spawn(
        scheduler: SchedulerConfig,
        http: HttpConfig,
        mesh: Option<MeshConfig>,
        stats: Arc<MeshStats>,
        warnings: mpsc::Sender<MeshError>,
    ) -> Result<Delivery, MeshError> {
        let client = build_client(&http)?;
        let (jobs, job_rx) = mpsc::channel(64);
        let (cancels, cancel_rx) = mpsc::unbounded_channel();
        let (withdrawals, withdrawal_rx) = mpsc::channel(16);
        let started = Instant::now();
        let (hub_tx, hub_rx) = mpsc::channel(256);
        let bans = Arc::new(Bans::new());
        let signalling = mesh.as_ref().and_then(|m| {
            (!m.signalling.trackers.is_empty())
                .then(|| Signalling::spawn(m.signalling.clone(), hub_tx.clone(), bans.clone()))
        });
        let upload_limit = mesh.as_ref().map_or(0, |m| m.max_upload_rate);
        // A chunk the rate cap holds back does not count against the deadline.
        let rate_wait = if upload_limit > 0 {
            Duration::from_secs_f64(2.0 * UPLOAD_CHUNK as f64 / upload_limit as f64)
        } else {
            Duration::ZERO
        };
        let mut scheduler = scheduler;
        if signalling.is_some() {
            scheduler.discovery_grace = DISCOVERY_GRACE;
        }
        let hub = Hub {
            scheduler: Scheduler::new(scheduler),
            client,
            timeout: http.timeout,
            started,
            stats,
            warnings,
            requests: HashMap::new(),
            transfers: JoinSet::new(),
            http_aborts: HashMap::new(),
            links: HashMap::new(),
            next_link: 1,
            bans,
            uploads: UploadTurns::new(UPLOAD_SEND_DEADLINE + rate_wait),
            warning_limiter: WarningLimiter::new(WARNING_WINDOW),
            cache: Arc::new(Mutex::new(SegmentCache::new(
                mesh.as_ref().map_or(0, |m| m.cache_size),
            ))),
            loading: BTreeSet::new(),
            withdrawn: Withdrawn::default(),
            joined: Vec::new(),
            upload_limiter: (upload_limit > 0).then(|| Arc::new(RateLimiter::new(upload_limit))),
            upload: mesh.as_ref().is_some_and(|m| m.upload),
            signalling,
            hub_tx,
        };
        tokio::spawn(hub.run(job_rx, cancel_rx, withdrawal_rx, hub_rx));
        Ok(Delivery {
            jobs,
            cancels,
            withdrawals,
            next_id: Arc::new(AtomicU64::new(1)),
            started,
        })
    }

    /// Session time now, the scheduler's clock.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// The instant session time counts from.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stops serving and announcing a segment id: another segment now has it.
    pub async fn withdraw(&self, key: ShareKey) {
        let _ = self.withdrawals.send(key).await;
    }

    pub async fn fetch(&self, request: SegmentRequest) -> Result<Fetched, MeshError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let url = request.resource.url.to_string();
        let (reply, result) = oneshot::channel();
        let gone = || MeshError::Read {
            url: url.clone(),
            reason: "delivery service stopped".into(),
        };
        self.jobs
            .send(Job { id, request, reply })
            .await
            .map_err(|_| gone())?;
        let mut guard = CancelOnDrop {
            id,
            cancels: &self.cancels,
            armed: true,
        };
        let outcome = result.await.map_err(|_| gone())?;
        guard.armed = false;
        outcome
    }
}

/// A size a peer claimed for a request's segment (what it held before, plus the `segment data`
/// size), to check against the size the origin turns out to give.
#[derive(Debug, Clone)]
struct Claim {
    peer: PeerId,
    address: Option<IpAddr>,
    total: u64,
}

/// A request the hub is serving.
struct Pending {
    request: SegmentRequest,
    reply: oneshot::Sender<Result<Fetched, MeshError>>,
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
    transfer_started: Option<Instant>,
    final_url: Option<url::Url>,
}

impl Pending {
    fn begin_transfer(&mut self) {
        self.transfer_started = Some(Instant::now());
    }

    fn end_transfer(&mut self) {
        if let Some(t) = self.transfer_started.take() {
            self.active += t.elapsed();
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

struct Link {
    swarm: InfoHash,
    remote: PeerId,
    /// Where its packets come from.
    address: Option<IpAddr>,
    control: mpsc::Sender<Command>,
    /// The upload the writer is to send now, if any.
    orders: watch::Sender<Option<Upload>>,
    sender: ChannelSender,
    inbound: Inbound,
    tasks: Vec<AbortHandle>,
    /// Its share of the peer budget, given back when the link is dropped.
    _slot: PeerSlot,
}

type HttpResult = (RequestId, u64, Result<Fetched, MeshError>);

struct Hub {
    scheduler: Scheduler,
    client: reqwest::Client,
    timeout: Duration,
    started: Instant,
    stats: Arc<MeshStats>,
    warnings: mpsc::Sender<MeshError>,
    requests: HashMap<RequestId, Pending>,
    transfers: JoinSet<HttpResult>,
    http_aborts: HashMap<RequestId, AbortHandle>,
    links: HashMap<PeerRef, Link>,
    next_link: PeerRef,
    bans: Arc<Bans>,
    uploads: UploadTurns,
    warning_limiter: WarningLimiter,
    cache: Arc<Mutex<SegmentCache>>,
    /// Shareable segments being fetched from the CDN: announced as loading.
    loading: BTreeSet<(InfoHash, crate::mesh::SegmentId)>,
    /// Segment ids the session withdrew: never stored or announced again.
    withdrawn: Withdrawn,
    /// Swarms joined, least recently used first.
    joined: Vec<InfoHash>,
    upload_limiter: Option<Arc<RateLimiter>>,
    upload: bool,
    signalling: Option<Signalling>,
    hub_tx: mpsc::Sender<HubEvent>,
}

impl Hub {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    async fn run(
        mut self,
        mut jobs: mpsc::Receiver<Job>,
        mut cancels: mpsc::UnboundedReceiver<RequestId>,
        mut withdrawals: mpsc::Receiver<ShareKey>,
        mut events: mpsc::Receiver<HubEvent>,
    ) {
        loop {
            let now = self.now();
            let wake = [self.scheduler.next_wakeup(now), self.uploads.next_wakeup()]
                .into_iter()
                .flatten()
                .min()
                .map(|t| tokio::time::Instant::from_std(self.started + t));
            let actions = tokio::select! {
                job = jobs.recv() => match job {
                    Some(job) => self.submit(job),
                    // Every handle is gone: nobody waits for what is still in flight.
                    None => break,
                },
                Some(id) = cancels.recv() => {
                    self.forget(id);
                    self.scheduler.handle(self.now(), Input::Cancel { id })
                }
                Some(key) = withdrawals.recv() => {
                    self.withdraw(&key);
                    Vec::new()
                }
                Some(joined) = self.transfers.join_next(), if !self.transfers.is_empty() => {
                    match joined {
                        Ok((id, from, result)) => self.http_done(id, from, result),
                        Err(_) => Vec::new(), // aborted on cancel
                    }
                }
                Some(event) = events.recv() => self.on_event(event),
                _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {
                    let now = self.now();
                    let cuts = self.uploads.poll(now);
                    let mut actions = self.apply_uploads(cuts);
                    actions.extend(self.scheduler.poll(now));
                    actions
                }
            };
            self.apply(actions);
        }
        self.transfers.abort_all();
        for (_, link) in self.links.drain() {
            close_link(link);
        }
        self.stats.peers.store(0, Ordering::Relaxed);
    }

    fn submit(&mut self, job: Job) -> Vec<Action> {
        let Job { id, request, reply } = job;
        if let Some(share) = &request.share {
            self.join(&share.key.swarm);
        }
        self.requests.insert(
            id,
            Pending {
                request: request.clone(),
                reply,
                data: BytesMut::new(),
                from_peers: false,
                peer_bytes: 0,
                from_cdn: false,
                peer: None,
                claims: VecDeque::new(),
                active: Duration::ZERO,
                transfer_started: None,
                final_url: None,
            },
        );
        self.scheduler
            .handle(self.now(), Input::Submit { id, request })
    }

    /// Joins the swarm through every tracker, leaving the least recently used one beyond the
    /// limit.
    fn join(&mut self, swarm: &InfoHash) {
        if let Some(pos) = self.joined.iter().position(|s| s == swarm) {
            let s = self.joined.remove(pos);
            self.joined.push(s);
            return;
        }
        self.joined.push(swarm.clone());
        if let Some(signalling) = &self.signalling {
            signalling.join(swarm.clone());
            if self.joined.len() > MAX_JOINED_SWARMS {
                let old = self.joined.remove(0);
                signalling.leave(old);
            }
        } else if self.joined.len() > MAX_JOINED_SWARMS {
            self.joined.remove(0);
        }
    }

    fn forget(&mut self, id: RequestId) {
        if let Some(pending) = self.requests.remove(&id) {
            self.stop_loading(&pending.request.share);
        }
    }

    fn apply(&mut self, actions: Vec<Action>) {
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            let more = self.act(action);
            queue.extend(more);
        }
    }

    fn act(&mut self, action: Action) -> Vec<Action> {
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
                pending.begin_transfer();
                let resource = pending.request.resource.clone();
                let share = pending.request.share.clone();
                let (client, timeout) = (self.client.clone(), self.timeout);
                let handle = self.transfers.spawn(async move {
                    (id, from, http_get(&client, &resource, from, timeout).await)
                });
                self.http_aborts.insert(id, handle);
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
            Action::AbortHttp { id } => {
                if let Some(handle) = self.http_aborts.remove(&id) {
                    handle.abort();
                }
            }
            Action::StartPeer { id, peer, from } => {
                let (Some(pending), Some(link)) =
                    (self.requests.get_mut(&id), self.links.get_mut(&peer))
                else {
                    return self.scheduler.handle(
                        self.now(),
                        Input::PeerFinished {
                            id,
                            outcome: PeerOutcome::Failed,
                        },
                    );
                };
                let Some(segment) = pending.request.share.as_ref().map(|s| s.key.segment) else {
                    return Vec::new();
                };
                pending.data.truncate(from as usize);
                pending.peer = Some(peer);
                pending.begin_transfer();
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
                let command = Command::SegmentRequest {
                    id: segment,
                    request_id: id as protocol::RequestId,
                    byte_from: (from > 0).then_some(from),
                };
                if link.control.try_send(command).is_err() {
                    return self.drop_link(peer, "peer does not keep up");
                }
            }
            Action::AbortPeer { id, peer } => {
                if let Some(pending) = self.requests.get_mut(&id) {
                    pending.peer = None;
                    pending.end_transfer();
                }
                if let Some(link) = self.links.get_mut(&peer) {
                    link.inbound.cancel(id);
                    let segment = self
                        .requests
                        .get(&id)
                        .and_then(|p| p.request.share.as_ref())
                        .map_or(0, |s| s.key.segment);
                    let _ = link.control.try_send(Command::Cancel {
                        id: segment,
                        request_id: id as protocol::RequestId,
                    });
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
                    self.deliver(pending);
                }
            }
            Action::Fail { id, error } => {
                if let Some(pending) = self.requests.remove(&id) {
                    self.stop_loading(&pending.request.share);
                    let _ = pending.reply.send(Err(error));
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
        self.http_aborts.remove(&id);
        let now = self.now();
        let Some(pending) = self.requests.get_mut(&id) else {
            return self.scheduler.handle(
                now,
                Input::HttpFinished {
                    id,
                    result: result.map(|_| ()),
                },
            );
        };
        pending.end_transfer();
        let mut liars = Vec::new();
        let result = match result {
            Ok(fetched) => {
                MeshStats::add(&self.stats.bytes_cdn, fetched.bytes.len() as u64);
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
                    MeshStats::add(&self.stats.segments_rejected, 1);
                    pending.drop_peer_bytes();
                    self.ban_claimants(liars);
                    return self.scheduler.handle(now, Input::IntegrityFailed { id });
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
        self.scheduler
            .handle(now, Input::HttpFinished { id, result })
    }

    fn deliver(&mut self, mut pending: Pending) {
        pending.end_transfer();
        let bytes = pending.data.split().freeze();
        MeshStats::add(&self.stats.bytes_p2p, pending.peer_bytes);
        if let Some(share) = &pending.request.share {
            // A segment counts as from peers only when no byte of it came from the CDN.
            if pending.from_peers && !pending.from_cdn {
                MeshStats::add(&self.stats.segments_p2p, 1);
            } else {
                MeshStats::add(&self.stats.segments_cdn, 1);
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
        let _ = pending.reply.send(Ok(fetched));
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
        let mut cache = self.cache.lock().expect("cache lock");
        let inserted = cache.insert(share.key.swarm.clone(), share.key.segment, bytes.clone());
        cache.set_playhead(share.key.swarm.clone(), share.key.segment);
        drop(cache);
        if inserted.stored || !inserted.evicted.is_empty() {
            self.announce(&share.key.swarm);
        }
    }

    fn withdraw(&mut self, key: &ShareKey) {
        self.withdrawn.insert(key);
        let cached = self
            .cache
            .lock()
            .expect("cache lock")
            .remove(&key.swarm, key.segment)
            .is_some();
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
        let loaded = self.cache.lock().expect("cache lock").held_ids(swarm);
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
        let slow: Vec<PeerRef> = self
            .links
            .iter()
            .filter(|(_, l)| &l.swarm == swarm)
            .filter(|(_, l)| l.control.try_send(command.clone()).is_err())
            .map(|(p, _)| *p)
            .collect();
        for peer in slow {
            let actions = self.drop_link(peer, "peer does not keep up");
            self.apply(actions);
        }
    }

    fn on_event(&mut self, event: HubEvent) -> Vec<Action> {
        let now = self.now();
        match event {
            HubEvent::LinkUp {
                swarm,
                remote,
                channel,
                slot,
            } => self.link_up(swarm, remote, channel, slot),
            HubEvent::Message { link, message } => self.on_message(link, message),
            HubEvent::Malformed { link, .. } => self.offence(link, "malformed message"),
            HubEvent::LinkDown { link, .. } => self.drop_link(link, ""),
            HubEvent::UploadProgress { link, request_id } => {
                self.uploads.progress(now, link, request_id);
                Vec::new()
            }
            HubEvent::UploadDone { link, request_id } => {
                let next = self.uploads.done(now, link, request_id);
                self.apply_uploads(next)
            }
            HubEvent::Uploaded { bytes, .. } => {
                MeshStats::add(&self.stats.bytes_uploaded, bytes);
                Vec::new()
            }
            HubEvent::Warning { kind, error } => {
                if let Some(held_back) = self.warning_limiter.admit(now, &kind) {
                    let _ = self.warnings.try_send(with_held_back(error, held_back));
                }
                Vec::new()
            }
            HubEvent::SwarmSize { swarm, peers } => self
                .scheduler
                .handle(now, Input::SwarmSize { swarm, peers }),
        }
    }

    fn link_up(
        &mut self,
        swarm: InfoHash,
        remote: PeerId,
        channel: PeerChannel,
        slot: PeerSlot,
    ) -> Vec<Action> {
        let PeerChannel {
            sender,
            events,
            remote_addr,
        } = channel;
        let refused = self.bans.refuses(&remote, remote_addr.as_slice());
        if refused || !self.joined.contains(&swarm) {
            if refused && !self.bans.is_peer_banned(&remote) {
                // A new peer id from a banned address: the same peer.
                self.ban(&remote, remote_addr);
            }
            // The slot goes back as the refused link is dropped.
            drop(slot);
            tokio::spawn(async move { sender.close().await });
            return Vec::new();
        }
        let peer = self.next_link;
        self.next_link += 1;
        let (control_tx, control_rx) = mpsc::channel(LINK_CONTROL_QUEUE);
        let (orders_tx, orders_rx) = watch::channel(None);
        let reader = tokio::spawn(read_link(peer, events, self.hub_tx.clone(), self.started));
        let writer = tokio::spawn(write_link(
            peer,
            sender.clone(),
            control_rx,
            orders_rx,
            self.upload_limiter.clone(),
            self.hub_tx.clone(),
        ));
        let _ = control_tx.try_send(self.announcement(&swarm));
        self.links.insert(
            peer,
            Link {
                swarm: swarm.clone(),
                remote,
                address: remote_addr,
                control: control_tx,
                orders: orders_tx,
                sender,
                inbound: Inbound::default(),
                tasks: vec![reader.abort_handle(), writer.abort_handle()],
                _slot: slot,
            },
        );
        self.stats
            .peers
            .store(self.links.len() as u64, Ordering::Relaxed);
        self.scheduler
            .handle(self.now(), Input::PeerConnected { peer, swarm })
    }

    fn drop_link(&mut self, peer: PeerRef, _reason: &str) -> Vec<Action> {
        let Some(link) = self.links.remove(&peer) else {
            return Vec::new();
        };
        close_link(link);
        self.stats
            .peers
            .store(self.links.len() as u64, Ordering::Relaxed);
        for pending in self.requests.values_mut() {
            if pending.peer == Some(peer) {
                pending.peer = None;
                pending.end_transfer();
            }
        }
        let next = self.uploads.link_gone(self.now(), peer);
        let mut actions = self.apply_uploads(next);
        actions.extend(
            self.scheduler
                .handle(self.now(), Input::PeerDisconnected { peer }),
        );
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
            MeshStats::add(&self.stats.peers_banned, 1);
        }
    }

    /// Bans the peers whose size claims the origin contradicted, and drops their links.
    fn ban_claimants(&mut self, liars: Vec<Claim>) {
        for liar in liars {
            self.ban(&liar.peer, liar.address);
            let links: Vec<PeerRef> = self
                .links
                .iter()
                .filter(|(_, l)| l.remote == liar.peer)
                .map(|(p, _)| *p)
                .collect();
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
            MeshStats::add(&self.stats.peers_banned, 1);
        }
        self.drop_link(peer, reason)
    }

    /// Carries out what the upload turns decided.
    fn apply_uploads(&mut self, actions: Vec<UploadAction>) -> Vec<Action> {
        let mut out = Vec::new();
        for action in actions {
            match action {
                UploadAction::Send { link, upload } => {
                    if let Some(l) = self.links.get(&link) {
                        l.orders.send_replace(Some(upload));
                    }
                }
                UploadAction::Stop { link } => {
                    if let Some(l) = self.links.get(&link) {
                        l.orders.send_replace(None);
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
    fn progress(&mut self, now: Duration, id: RequestId, total: Option<u64>) -> Vec<Action> {
        let received = self.requests.get(&id).map_or(0, |p| p.data.len() as u64);
        self.scheduler.handle(
            now,
            Input::PeerProgress {
                id,
                received,
                total,
            },
        )
    }

    /// A peer asks us for a segment: it replaces what we were sending it.
    fn on_segment_request(
        &mut self,
        peer: PeerRef,
        id: crate::mesh::SegmentId,
        request_id: protocol::RequestId,
        byte_from: Option<u64>,
    ) -> Vec<Action> {
        let link = &self.links[&peer];
        let data = if self.upload {
            self.cache.lock().expect("cache lock").get(&link.swarm, id)
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
        let next = self.uploads.request(self.now(), peer, upload);
        let mut actions = self.apply_uploads(next);
        if absent
            && let Some(link) = self.links.get(&peer)
            && link
                .control
                .try_send(Command::SegmentAbsent { id, request_id })
                .is_err()
        {
            actions.extend(self.drop_link(peer, "peer does not keep up"));
        }
        actions
    }

    fn on_message(&mut self, peer: PeerRef, message: Incoming) -> Vec<Action> {
        if !self.links.contains_key(&peer) {
            return Vec::new();
        }
        let now = self.now();
        match message {
            Incoming::Command(Command::SegmentsAnnouncement { loaded, loading }) => {
                if loaded.len() > MAX_ANNOUNCED_IDS || loading.len() > MAX_ANNOUNCED_IDS {
                    return self.offence(peer, "announcement too long");
                }
                self.scheduler.handle(
                    now,
                    Input::PeerAnnounced {
                        peer,
                        loaded,
                        loading,
                    },
                )
            }
            Incoming::Command(Command::SegmentRequest {
                id,
                request_id,
                byte_from,
            }) => self.on_segment_request(peer, id, request_id, byte_from),
            Incoming::Command(Command::Cancel { request_id, .. }) => {
                let next = self.uploads.cancel(now, peer, request_id);
                self.apply_uploads(next)
            }
            Incoming::Command(command) => {
                let verdicts = self
                    .links
                    .get_mut(&peer)
                    .map_or_else(Vec::new, |l| l.inbound.on_command(&command));
                self.on_verdicts(now, peer, verdicts)
            }
            Incoming::Data(bytes) => {
                let verdict = self.links.get_mut(&peer).map(|l| l.inbound.on_data(bytes));
                self.on_verdicts(now, peer, verdict.into_iter().collect())
            }
        }
    }

    fn on_verdicts(&mut self, now: Duration, peer: PeerRef, verdicts: Vec<Verdict>) -> Vec<Action> {
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
                    actions.extend(self.progress(now, request, Some(total)));
                }
                Verdict::Data { request, bytes } => {
                    let Some(pending) = self.requests.get_mut(&request) else {
                        continue;
                    };
                    pending.data.extend_from_slice(&bytes);
                    pending.from_peers = true;
                    pending.peer_bytes += bytes.len() as u64;
                    actions.extend(self.progress(now, request, None));
                }
                Verdict::Completed { request } => {
                    actions.extend(self.peer_completed(now, request));
                }
                Verdict::Absent { request } => {
                    actions.extend(self.peer_ended(now, peer, request, PeerOutcome::Absent));
                }
                Verdict::Abandoned { request } => {
                    actions.extend(self.peer_ended(now, peer, request, PeerOutcome::Failed));
                }
            }
        }
        actions
    }

    /// The peer's transfer of `id` ended without the segment; the scheduler looks elsewhere.
    fn peer_ended(
        &mut self,
        now: Duration,
        peer: PeerRef,
        id: RequestId,
        outcome: PeerOutcome,
    ) -> Vec<Action> {
        match self.requests.get_mut(&id) {
            Some(pending) if pending.peer == Some(peer) => {
                pending.peer = None;
                pending.end_transfer();
                self.scheduler
                    .handle(now, Input::PeerFinished { id, outcome })
            }
            _ => Vec::new(),
        }
    }

    /// Every byte of a peer's answer arrived: verify the segment.
    fn peer_completed(&mut self, now: Duration, id: RequestId) -> Vec<Action> {
        let Some(pending) = self.requests.get_mut(&id) else {
            return Vec::new();
        };
        pending.end_transfer();
        let mut liars = Vec::new();
        let outcome = match pending.request.share.as_ref().and_then(|s| s.hash) {
            Some(hash) if !integrity::verify(&pending.data, &hash) => {
                MeshStats::add(&self.stats.segments_rejected, 1);
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
        self.scheduler
            .handle(now, Input::PeerFinished { id, outcome })
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

fn close_link(link: Link) {
    for task in &link.tasks {
        task.abort();
    }
    let sender = link.sender;
    tokio::spawn(async move { sender.close().await });
}

/// Decodes a link's messages for the hub, within the link's command budget: over it, the
/// channel is not read (its SCTP window closes) until the budget refills. Announcements pass at
/// most [`LINK_ANNOUNCEMENTS_PER_SECOND`]; one that has to wait is replaced by a newer one.
/// The bounded hub queue holds the reader back too when the hub is busy.
async fn read_link(
    link: PeerRef,
    mut events: mpsc::Receiver<ChannelEvent>,
    hub: mpsc::Sender<HubEvent>,
    started: Instant,
) {
    let now = || started.elapsed();
    let mut decoder = protocol::Decoder::new();
    let mut commands = TokenBucket::new(
        LINK_COMMANDS_PER_SECOND,
        2.0 * LINK_COMMANDS_PER_SECOND,
        now(),
    );
    let mut command_bytes = TokenBucket::new(
        LINK_COMMAND_BYTES_PER_SECOND,
        2.0 * LINK_COMMAND_BYTES_PER_SECOND,
        now(),
    );
    let mut announcements = TokenBucket::new(
        LINK_ANNOUNCEMENTS_PER_SECOND,
        LINK_ANNOUNCEMENTS_PER_SECOND,
        now(),
    );
    let mut held_announcement: Option<Incoming> = None;
    // Since when the budget has been spent at every read, if it has.
    let mut spent_since: Option<Duration> = None;
    let at = |t: Duration| tokio::time::Instant::from_std(started + t);
    let reason = loop {
        let t = now();
        let read_at = [commands.ready_at(t, 1.0), command_bytes.ready_at(t, 1.0)]
            .into_iter()
            .map(|r| r.unwrap_or(t))
            .fold(t, Duration::max);
        let announce_at = announcements.ready_at(t, 1.0).unwrap_or(t);
        let forward = tokio::select! {
            event = events.recv(), if read_at <= t => match event {
                Some(ChannelEvent::Message(message)) => {
                    if protocol::is_command_part(&message) {
                        let t = now();
                        commands.take(t, 1.0);
                        command_bytes.take(t, message.len() as f64);
                        let spent = commands.ready_at(t, 1.0) != Some(t)
                            || command_bytes.ready_at(t, 1.0) != Some(t);
                        match (spent, spent_since) {
                            (false, _) => spent_since = None,
                            (true, None) => spent_since = Some(t),
                            (true, Some(since)) if t.saturating_sub(since) > LINK_FLOOD_GRACE => {
                                let reason = "commands beyond the link's budget".to_owned();
                                let _ = hub.send(HubEvent::Malformed { link, reason }).await;
                                return;
                            }
                            (true, Some(_)) => {}
                        }
                    }
                    match decoder.push(message) {
                        Ok(Some(message @ Incoming::Command(Command::SegmentsAnnouncement { .. }))) => {
                            held_announcement = Some(message);
                            None
                        }
                        Ok(message) => message,
                        Err(e) => {
                            let _ = hub
                                .send(HubEvent::Malformed { link, reason: e.to_string() })
                                .await;
                            return;
                        }
                    }
                }
                Some(ChannelEvent::Closed { reason }) => break reason,
                None => break "channel closed".to_owned(),
            },
            _ = tokio::time::sleep_until(at(read_at)), if read_at > t => None,
            _ = tokio::time::sleep_until(at(announce_at)), if held_announcement.is_some() && announce_at > t => None,
        };
        if let Some(message) = forward
            && hub.send(HubEvent::Message { link, message }).await.is_err()
        {
            return;
        }
        if held_announcement.is_some() && announcements.try_take(now(), 1.0) {
            let message = held_announcement.take().expect("announcement held");
            if hub.send(HubEvent::Message { link, message }).await.is_err() {
                return;
            }
        }
    };
    let _ = hub.send(HubEvent::LinkDown { link, reason }).await;
}

/// What a writer has handed to the transport and what its peer has acknowledged, to count
/// `bytes-uploaded` on acknowledgement only.
struct Acked {
    handed: u64,
    counted: u64,
}

impl Acked {
    /// Reports the data bytes acknowledged since the last report.
    async fn report(
        &mut self,
        link: PeerRef,
        sender: &ChannelSender,
        hub: &mpsc::Sender<HubEvent>,
    ) {
        if self.counted == self.handed {
            return;
        }
        // Unacknowledged bytes include commands, so this never counts too much.
        let outstanding = sender.buffered_amount().await as u64;
        let acked = self.handed.saturating_sub(outstanding);
        if acked > self.counted {
            let bytes = acked - self.counted;
            self.counted = acked;
            let _ = hub.send(HubEvent::Uploaded { link, bytes }).await;
        }
    }
}

/// Sends a link's commands, and the upload the hub orders (one at a time over all links), with
/// commands slipped in between data chunks. A new order replaces the upload under way: it
/// stops at the next chunk, without `sending completed`, as p2p-media-loader does.
async fn write_link(
    link: PeerRef,
    sender: ChannelSender,
    mut control: mpsc::Receiver<Command>,
    mut orders: watch::Receiver<Option<Upload>>,
    limiter: Option<Arc<RateLimiter>>,
    hub: mpsc::Sender<HubEvent>,
) {
    let send_command = async |command: &Command| -> bool {
        for part in protocol::encode(command) {
            if sender.send(Bytes::from(part)).await.is_err() {
                return false;
            }
        }
        true
    };
    let mut acked = Acked {
        handed: 0,
        counted: 0,
    };
    let ok = 'outer: loop {
        let waiting_for_acks = acked.counted < acked.handed;
        tokio::select! {
            biased;
            command = control.recv() => match command {
                Some(command) => if !send_command(&command).await { break false },
                None => break true,
            },
            changed = orders.changed() => {
                if changed.is_err() {
                    break true;
                }
                let Some(upload) = orders.borrow_and_update().clone() else { continue };
                let Upload { request_id, segment, data } = upload;
                let header = Command::SegmentData { id: segment, request_id, size: data.len() as u64 };
                if !send_command(&header).await {
                    break false;
                }
                let mut replaced = false;
                for from in (0..data.len()).step_by(UPLOAD_CHUNK) {
                    let chunk = data.slice(from..(from + UPLOAD_CHUNK).min(data.len()));
                    while let Ok(command) = control.try_recv() {
                        if !send_command(&command).await { break 'outer false }
                    }
                    if orders.has_changed().unwrap_or(true) {
                        replaced = true;
                        break;
                    }
                    if let Some(limiter) = &limiter {
                        limiter.take(chunk.len() as u64).await;
                    }
                    let n = chunk.len() as u64;
                    if sender.send(chunk).await.is_err() {
                        break 'outer false;
                    }
                    acked.handed += n;
                    let _ = hub.send(HubEvent::UploadProgress { link, request_id }).await;
                    acked.report(link, &sender, &hub).await;
                }
                if replaced {
                    // The requester has moved on; its next answer starts afresh.
                    continue;
                }
                let done = Command::SendingCompleted { id: segment, request_id };
                if !send_command(&done).await {
                    break false;
                }
                let _ = hub.send(HubEvent::UploadDone { link, request_id }).await;
            }
            _ = tokio::time::sleep(ACK_POLL), if waiting_for_acks => {
                acked.report(link, &sender, &hub).await;
            }
        }
    };
    if !ok {
        let _ = hub
            .send(HubEvent::LinkDown {
                link,
                reason: "send failed".into(),
            })
            .await;
    }
}

/// A token bucket shared by every upload: `rate` bytes per second, bursts of one second.
pub struct RateLimiter {
    rate: u64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(rate: u64) -> Self {
        RateLimiter {
            rate,
            state: Mutex::new((rate as f64, Instant::now())),
        }
    }

    /// Waits until `n` bytes may be sent.
    pub async fn take(&self, n: u64) {
        let wait = {
            let mut state = self.state.lock().expect("limiter lock");
            let (tokens, at) = &mut *state;
            let now = Instant::now();
            *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate as f64)
                .min(self.rate as f64);
            *at = now;
            *tokens -= n as f64;
            if *tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-*tokens / self.rate as f64)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Withdrawn segment ids, the oldest forgotten beyond [`Withdrawn::MAX`]: ids are withdrawn a
/// few per playlist, so this covers any playlist a session holds.
#[derive(Default)]
struct Withdrawn {
    keys: BTreeSet<(InfoHash, crate::mesh::SegmentId)>,
    order: std::collections::VecDeque<(InfoHash, crate::mesh::SegmentId)>,
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

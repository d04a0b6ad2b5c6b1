//! The delivery hub of one session: every fetch (manifest, key, init or media segment) is one
//! [`SegmentRequest`] submitted to it, and the sans-IO [`Scheduler`] decides whether the CDN or a
//! peer serves it and when.
//!
//! The hub task owns the scheduler, the HTTP transfers, the peer links (their downloads and
//! uploads), the segment cache and the statistics. Tracker signalling runs in its own tasks
//! ([`crate::mesh::signalling`]) and hands the hub each data channel once it is open. The hub
//! never waits on a peer: each link has a writer task with bounded queues.

use crate::error::MeshError;
use crate::fetch::{Fetched, HttpConfig, build_client, http_get};
use crate::mesh::SegmentId;
use crate::mesh::cache::SegmentCache;
use crate::mesh::integrity;
use crate::mesh::protocol::{self, Command, Incoming};
use crate::mesh::signalling::{HubEvent, Signalling, SignallingConfig};
use crate::mesh::swarm::{InfoHash, PeerId};
use crate::mesh::transport::{ChannelEvent, ChannelSender, PeerChannel};
use crate::scheduler::{
    Action, Input, PeerOutcome, PeerRef, RequestId, Scheduler, SchedulerConfig, SegmentRequest,
    Share,
};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};

/// A segment bigger than this from a peer is refused (the protocol would allow any size).
const MAX_PEER_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Commands queued to one peer before it counts as unresponsive.
const LINK_CONTROL_QUEUE: usize = 64;
/// Uploads queued to one peer; more requests get "absent".
const LINK_UPLOAD_QUEUE: usize = 8;
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
        let started = Instant::now();
        let (hub_tx, hub_rx) = mpsc::channel(256);
        let signalling = mesh.as_ref().and_then(|m| {
            (!m.signalling.trackers.is_empty())
                .then(|| Signalling::spawn(m.signalling.clone(), hub_tx.clone()))
        });
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
            banned: HashSet::new(),
            cache: Arc::new(Mutex::new(SegmentCache::new(
                mesh.as_ref().map_or(0, |m| m.cache_size),
            ))),
            loading: BTreeSet::new(),
            joined: Vec::new(),
            upload_limiter: mesh
                .as_ref()
                .filter(|m| m.max_upload_rate > 0)
                .map(|m| Arc::new(RateLimiter::new(m.max_upload_rate))),
            upload_turn: Arc::new(Semaphore::new(1)),
            upload: mesh.as_ref().is_some_and(|m| m.upload),
            signalling,
            hub_tx,
        };
        tokio::spawn(hub.run(job_rx, cancel_rx, hub_rx));
        Ok(Delivery {
            jobs,
            cancels,
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
}

/// The response a link is receiving: data messages carry no request id, they belong to the
/// last `SegmentData` command.
struct Receiving {
    request: RequestId,
    expected: u64,
    got: u64,
    /// We cancelled it: drop what still comes.
    discard: bool,
}

struct Link {
    swarm: InfoHash,
    remote: PeerId,
    control: mpsc::Sender<Command>,
    uploads: mpsc::Sender<Upload>,
    cancelled: Arc<Mutex<HashSet<protocol::RequestId>>>,
    sender: ChannelSender,
    receiving: Option<Receiving>,
    tasks: Vec<AbortHandle>,
}

struct Upload {
    segment: SegmentId,
    request_id: protocol::RequestId,
    data: Bytes,
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
    banned: HashSet<PeerId>,
    cache: Arc<Mutex<SegmentCache>>,
    /// Shareable segments being fetched from the CDN: announced as loading.
    loading: BTreeSet<(InfoHash, SegmentId)>,
    /// Swarms joined, least recently used first.
    joined: Vec<InfoHash>,
    upload_limiter: Option<Arc<RateLimiter>>,
    /// One upload at a time over every link: the first requester gets the segment at the
    /// full uplink rate and can pass it on, instead of all of them getting it late together.
    upload_turn: Arc<Semaphore>,
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
        mut events: mpsc::Receiver<HubEvent>,
    ) {
        loop {
            let wake = self
                .scheduler
                .next_wakeup(self.now())
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
                Some(joined) = self.transfers.join_next(), if !self.transfers.is_empty() => {
                    match joined {
                        Ok((id, from, result)) => self.http_done(id, from, result),
                        Err(_) => Vec::new(), // aborted on cancel
                    }
                }
                Some(event) = events.recv() => self.on_event(event),
                _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {
                    self.scheduler.poll(self.now())
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
                if let Some(share) = share.filter(|_| self.upload) {
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
                    (self.requests.get_mut(&id), self.links.get(&peer))
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
                    if let Some(r) = &mut link.receiving
                        && r.request == id
                    {
                        r.discard = true;
                    }
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
                if let Some(link) = self.links.get(&peer) {
                    self.banned.insert(link.remote.clone());
                    MeshStats::add(&self.stats.peers_banned, 1);
                }
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
        let result = match result {
            Ok(fetched) => {
                MeshStats::add(&self.stats.bytes_cdn, fetched.bytes.len() as u64);
                pending.data.truncate(from as usize);
                pending.data.extend_from_slice(&fetched.bytes);
                pending.from_cdn |= !fetched.bytes.is_empty();
                pending.final_url = Some(fetched.final_url);
                let expected = pending.request.share.as_ref().and_then(|s| s.hash);
                if pending.from_peers
                    && let Some(hash) = expected
                    && !integrity::verify(&pending.data, &hash)
                {
                    // Peer bytes completed over HTTP do not match: drop them all.
                    MeshStats::add(&self.stats.segments_rejected, 1);
                    pending.data.clear();
                    pending.from_peers = false;
                    pending.peer_bytes = 0;
                    return self.scheduler.handle(now, Input::IntegrityFailed { id });
                }
                Ok(())
            }
            Err(e) => Err(e),
        };
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
        if !trusted || !self.upload {
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
        match event {
            HubEvent::LinkUp {
                swarm,
                remote,
                channel,
            } => self.link_up(swarm, remote, channel),
            HubEvent::Message { link, message } => self.on_message(link, message),
            HubEvent::LinkDown { link, .. } => self.drop_link(link, ""),
            HubEvent::Warning(error) => {
                let _ = self.warnings.try_send(error);
                Vec::new()
            }
            HubEvent::SwarmSize { swarm, peers } => self
                .scheduler
                .handle(self.now(), Input::SwarmSize { swarm, peers }),
        }
    }

    fn link_up(&mut self, swarm: InfoHash, remote: PeerId, channel: PeerChannel) -> Vec<Action> {
        let PeerChannel { sender, events } = channel;
        if self.banned.contains(&remote) || !self.joined.contains(&swarm) {
            tokio::spawn(async move { sender.close().await });
            return Vec::new();
        }
        let peer = self.next_link;
        self.next_link += 1;
        let (control_tx, control_rx) = mpsc::channel(LINK_CONTROL_QUEUE);
        let (upload_tx, upload_rx) = mpsc::channel(LINK_UPLOAD_QUEUE);
        let cancelled = Arc::new(Mutex::new(HashSet::new()));
        let reader = tokio::spawn(read_link(peer, events, self.hub_tx.clone()));
        let writer = tokio::spawn(write_link(
            peer,
            sender.clone(),
            control_rx,
            upload_rx,
            cancelled.clone(),
            self.upload_limiter.clone(),
            self.upload_turn.clone(),
            self.stats.clone(),
            self.hub_tx.clone(),
        ));
        let _ = control_tx.try_send(self.announcement(&swarm));
        self.links.insert(
            peer,
            Link {
                swarm: swarm.clone(),
                remote,
                control: control_tx,
                uploads: upload_tx,
                cancelled,
                sender,
                receiving: None,
                tasks: vec![reader.abort_handle(), writer.abort_handle()],
            },
        );
        self.stats
            .peers
            .store(self.links.len() as u64, Ordering::Relaxed);
        if let Some(s) = &self.signalling {
            s.set_links(self.links.len());
        }
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
        if let Some(s) = &self.signalling {
            s.set_links(self.links.len());
        }
        for pending in self.requests.values_mut() {
            if pending.peer == Some(peer) {
                pending.peer = None;
                pending.end_transfer();
            }
        }
        self.scheduler
            .handle(self.now(), Input::PeerDisconnected { peer })
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

    fn on_message(&mut self, peer: PeerRef, message: Incoming) -> Vec<Action> {
        if !self.links.contains_key(&peer) {
            return Vec::new();
        }
        let now = self.now();
        match message {
            Incoming::Command(Command::SegmentsAnnouncement { loaded, loading }) => {
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
            }) => {
                let link = &self.links[&peer];
                let data = if self.upload {
                    self.cache.lock().expect("cache lock").get(&link.swarm, id)
                } else {
                    None
                };
                let from = byte_from.unwrap_or(0) as usize;
                let queued = match data {
                    Some(data) if from <= data.len() => link
                        .uploads
                        .try_send(Upload {
                            segment: id,
                            request_id,
                            data: data.slice(from..),
                        })
                        .is_ok(),
                    _ => false,
                };
                if !queued
                    && link
                        .control
                        .try_send(Command::SegmentAbsent { id, request_id })
                        .is_err()
                {
                    return self.drop_link(peer, "peer does not keep up");
                }
                Vec::new()
            }
            Incoming::Command(Command::Cancel { request_id, .. }) => {
                self.links[&peer]
                    .cancelled
                    .lock()
                    .expect("cancel lock")
                    .insert(request_id);
                Vec::new()
            }
            Incoming::Command(Command::SegmentData {
                request_id, size, ..
            }) => {
                let id = request_id as RequestId;
                let serving = self.requests.get(&id).is_some_and(|p| p.peer == Some(peer));
                if size > MAX_PEER_SEGMENT_BYTES {
                    return self.drop_link(peer, "segment too large");
                }
                let link = self.links.get_mut(&peer).expect("link checked");
                link.receiving = Some(Receiving {
                    request: id,
                    expected: size,
                    got: 0,
                    discard: !serving,
                });
                if !serving {
                    return Vec::new();
                }
                let held = self.requests[&id].data.len() as u64;
                self.progress(now, id, Some(held + size))
            }
            Incoming::Data(bytes) => {
                let link = self.links.get_mut(&peer).expect("link checked");
                let Some(r) = &mut link.receiving else {
                    return self.drop_link(peer, "data without a segment");
                };
                r.got += bytes.len() as u64;
                if r.got > r.expected {
                    return self.drop_link(peer, "more data than announced");
                }
                if r.discard {
                    return Vec::new();
                }
                let id = r.request;
                let Some(pending) = self.requests.get_mut(&id) else {
                    r.discard = true;
                    return Vec::new();
                };
                pending.data.extend_from_slice(&bytes);
                pending.from_peers = true;
                pending.peer_bytes += bytes.len() as u64;
                self.progress(now, id, None)
            }
            Incoming::Command(Command::SendingCompleted { request_id, .. }) => {
                let id = request_id as RequestId;
                let link = self.links.get_mut(&peer).expect("link checked");
                let Some(r) = link.receiving.take() else {
                    return Vec::new();
                };
                if r.request != id || r.got != r.expected {
                    return self.drop_link(peer, "incomplete segment data");
                }
                if r.discard {
                    return Vec::new();
                }
                let Some(pending) = self.requests.get_mut(&id) else {
                    return Vec::new();
                };
                pending.end_transfer();
                let outcome = match pending.request.share.as_ref().and_then(|s| s.hash) {
                    Some(hash) if !integrity::verify(&pending.data, &hash) => {
                        MeshStats::add(&self.stats.segments_rejected, 1);
                        pending.data.clear();
                        pending.from_peers = false;
                        pending.peer_bytes = 0;
                        PeerOutcome::Corrupt
                    }
                    _ => PeerOutcome::Complete,
                };
                pending.peer = None;
                self.scheduler
                    .handle(now, Input::PeerFinished { id, outcome })
            }
            Incoming::Command(Command::SegmentAbsent { request_id, .. }) => {
                let id = request_id as RequestId;
                match self.requests.get_mut(&id) {
                    Some(pending) if pending.peer == Some(peer) => {
                        pending.peer = None;
                        pending.end_transfer();
                        self.scheduler.handle(
                            now,
                            Input::PeerFinished {
                                id,
                                outcome: PeerOutcome::Absent,
                            },
                        )
                    }
                    _ => Vec::new(),
                }
            }
        }
    }
}

fn close_link(link: Link) {
    for task in &link.tasks {
        task.abort();
    }
    let sender = link.sender;
    tokio::spawn(async move { sender.close().await });
}

/// Decodes a link's messages for the hub; the bounded hub queue holds it back when the hub
/// is busy, and with it the data channel.
async fn read_link(
    link: PeerRef,
    mut events: mpsc::Receiver<ChannelEvent>,
    hub: mpsc::Sender<HubEvent>,
) {
    let mut decoder = protocol::Decoder::new();
    let reason = loop {
        match events.recv().await {
            Some(ChannelEvent::Message(message)) => match decoder.push(message) {
                Ok(Some(message)) => {
                    if hub.send(HubEvent::Message { link, message }).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => break format!("protocol error: {e}"),
            },
            Some(ChannelEvent::Closed { reason }) => break reason,
            None => break "channel closed".to_owned(),
        }
    };
    let _ = hub.send(HubEvent::LinkDown { link, reason }).await;
}

/// Sends a link's commands and uploads, one upload at a time over all links (data messages
/// carry no request id, and `upload_turn` serialises the links), with commands slipped in
/// between data chunks and while waiting for the turn.
#[allow(clippy::too_many_arguments)]
async fn write_link(
    link: PeerRef,
    sender: ChannelSender,
    mut control: mpsc::Receiver<Command>,
    mut uploads: mpsc::Receiver<Upload>,
    cancelled: Arc<Mutex<HashSet<protocol::RequestId>>>,
    limiter: Option<Arc<RateLimiter>>,
    upload_turn: Arc<Semaphore>,
    stats: Arc<MeshStats>,
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
    let ok = 'outer: loop {
        tokio::select! {
            biased;
            command = control.recv() => match command {
                Some(command) => if !send_command(&command).await { break false },
                None => break true,
            },
            upload = uploads.recv() => {
                let Some(upload) = upload else { break true };
                let Upload { segment, request_id, data } = upload;
                if cancelled.lock().expect("cancel lock").remove(&request_id) {
                    continue;
                }
                // Kept across loop turns so the place in the queue is kept.
                let turn = upload_turn.clone().acquire_owned();
                tokio::pin!(turn);
                let _turn = loop {
                    tokio::select! {
                        biased;
                        command = control.recv() => match command {
                            Some(command) => if !send_command(&command).await { break 'outer false },
                            None => break 'outer true,
                        },
                        permit = &mut turn => break permit,
                    }
                };
                if cancelled.lock().expect("cancel lock").remove(&request_id) {
                    continue;
                }
                let header = Command::SegmentData { id: segment, request_id, size: data.len() as u64 };
                if !send_command(&header).await {
                    break false;
                }
                let mut cancelled_midway = false;
                for from in (0..data.len()).step_by(UPLOAD_CHUNK) {
                    let chunk = data.slice(from..(from + UPLOAD_CHUNK).min(data.len()));
                    while let Ok(command) = control.try_recv() {
                        if !send_command(&command).await { break 'outer false }
                    }
                    if cancelled.lock().expect("cancel lock").remove(&request_id) {
                        cancelled_midway = true;
                        break;
                    }
                    if let Some(limiter) = &limiter {
                        limiter.take(chunk.len() as u64).await;
                    }
                    let n = chunk.len() as u64;
                    if sender.send(chunk).await.is_err() {
                        break 'outer false;
                    }
                    MeshStats::add(&stats.bytes_uploaded, n);
                }
                if cancelled_midway {
                    // The requester discards the rest; its next response starts afresh.
                    continue;
                }
                let done = Command::SendingCompleted { id: segment, request_id };
                if !send_command(&done).await {
                    break false;
                }
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

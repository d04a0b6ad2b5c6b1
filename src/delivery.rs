//! The delivery hub of one session: the tokio driver of the sans-IO delivery engine
//! ([`mesh_core::delivery::engine`]). Every fetch (manifest, key, init or media segment) is one
//! [`SegmentRequest`] submitted through a [`Delivery`] handle; the engine decides whether the CDN
//! or a peer serves it and when, and the hub carries out what it says: HTTP transfers, commands
//! and uploads on peer links, joins through signalling, answers to requesters.
//!
//! Tracker signalling runs in its own tasks ([`crate::mesh::signalling`]) and hands the hub each
//! data channel once it is open. The hub never waits on a peer: each link has a reader and a
//! writer task with bounded queues.
//!
//! Hostile peers are held to bounds where their input enters: the reader reads at most
//! [`LINK_COMMANDS_PER_SECOND`] commands and [`LINK_COMMAND_BYTES_PER_SECOND`] command bytes
//! a second (beyond that the channel is not read; a link that keeps its budget spent for
//! [`LINK_FLOOD_GRACE`] is cut as an offence, since the stack below still queues), and passes on
//! at most [`LINK_ANNOUNCEMENTS_PER_SECOND`] announcements (the latest one wins). What is read
//! is judged by the engine.

pub use mesh_core::delivery::engine::{
    DISCOVERY_GRACE, MAX_ANNOUNCED_IDS, MAX_JOINED_SWARMS, MAX_PEER_SEGMENT_BYTES, StatsSnapshot,
    UPLOAD_CHUNK, UPLOAD_SEND_DEADLINE, WARNING_WINDOW,
};

use crate::error::MeshError;
use crate::fetch::{Fetched, HttpConfig, build_client, http_get};
use crate::mesh::guard::{Bans, TokenBucket};
use crate::mesh::protocol::{self, Command, Incoming};
use crate::mesh::signalling::{HubEvent, PeerSlot, Signalling, SignallingConfig};
use crate::mesh::transport::{ChannelEvent, ChannelSender, PeerChannel};
use crate::scheduler::{PeerRef, RequestId, SchedulerConfig, SegmentRequest, ShareKey};
use bytes::Bytes;
use mesh_core::delivery::engine::{self, Engine, EngineConfig, Output};
use mesh_core::delivery::uploads::Upload;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};

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
/// How often a writer looks at what its peer has acknowledged while it waits.
const ACK_POLL: Duration = Duration::from_millis(200);

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

/// Counters of one session, read by the element for `stats` and `mesh-statistics`: the
/// engine's, published by the hub after every step.
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

    fn publish(&self, stats: &StatsSnapshot) {
        let set = |c: &AtomicU64, v: u64| c.store(v, Ordering::Relaxed);
        set(&self.bytes_cdn, stats.bytes_cdn);
        set(&self.bytes_p2p, stats.bytes_p2p);
        set(&self.bytes_uploaded, stats.bytes_uploaded);
        set(&self.segments_cdn, stats.segments_cdn);
        set(&self.segments_p2p, stats.segments_p2p);
        set(&self.segments_rejected, stats.segments_rejected);
        set(&self.peers, stats.peers);
        set(&self.peers_banned, stats.peers_banned);
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
    next_id: Arc<AtomicI64>,
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
        let max_upload_rate = mesh.as_ref().map_or(0, |m| m.max_upload_rate);
        let engine = Engine::new(
            EngineConfig {
                scheduler,
                discovery: signalling.is_some(),
                upload: mesh.as_ref().is_some_and(|m| m.upload),
                max_upload_rate,
                cache_size: mesh.as_ref().map_or(0, |m| m.cache_size),
            },
            bans,
        );
        let hub = Hub {
            engine,
            client,
            timeout: http.timeout,
            started,
            stats,
            warnings,
            replies: HashMap::new(),
            transfers: JoinSet::new(),
            http_aborts: HashMap::new(),
            links: HashMap::new(),
            next_link: 1,
            upload_limiter: (max_upload_rate > 0)
                .then(|| Arc::new(RateLimiter::new(max_upload_rate))),
            signalling,
            hub_tx,
        };
        tokio::spawn(hub.run(job_rx, cancel_rx, withdrawal_rx, hub_rx));
        Ok(Delivery {
            jobs,
            cancels,
            withdrawals,
            next_id: Arc::new(AtomicI64::new(1)),
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

/// The I/O side of one peer link.
struct LinkIo {
    control: mpsc::Sender<Command>,
    /// The upload the writer is to send now, if any.
    orders: watch::Sender<Option<Upload>>,
    sender: ChannelSender,
    tasks: Vec<AbortHandle>,
    /// Its share of the peer budget, given back when the link is dropped.
    _slot: PeerSlot,
}

type HttpResult = (RequestId, u64, Result<Fetched, MeshError>);

/// The hub task: owns the engine and carries out its outputs.
struct Hub {
    engine: Engine,
    client: reqwest::Client,
    timeout: Duration,
    started: Instant,
    stats: Arc<MeshStats>,
    warnings: mpsc::Sender<MeshError>,
    replies: HashMap<RequestId, oneshot::Sender<Result<Fetched, MeshError>>>,
    transfers: JoinSet<HttpResult>,
    http_aborts: HashMap<RequestId, AbortHandle>,
    links: HashMap<PeerRef, LinkIo>,
    next_link: PeerRef,
    upload_limiter: Option<Arc<RateLimiter>>,
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
            let wake = self
                .carry_out()
                .map(|t| tokio::time::Instant::from_std(self.started + t));
            self.stats.publish(&self.engine.stats());
            let input = tokio::select! {
                job = jobs.recv() => match job {
                    Some(Job { id, request, reply }) => {
                        self.replies.insert(id, reply);
                        engine::Input::Submit { id, request }
                    }
                    // Every handle is gone: nobody waits for what is still in flight.
                    None => break,
                },
                Some(id) = cancels.recv() => {
                    self.replies.remove(&id);
                    engine::Input::Cancel { id }
                }
                Some(key) = withdrawals.recv() => engine::Input::Withdraw { key },
                Some(joined) = self.transfers.join_next(), if !self.transfers.is_empty() => {
                    match joined {
                        Ok((id, from, result)) => {
                            self.http_aborts.remove(&id);
                            engine::Input::HttpFinished { id, from, result }
                        }
                        Err(_) => continue, // aborted
                    }
                }
                Some(event) = events.recv() => match self.on_event(event) {
                    Some(input) => input,
                    None => continue,
                },
                _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {
                    self.engine.handle_timeout(self.now());
                    continue;
                }
            };
            self.engine.handle_input(self.now(), input);
        }
        self.transfers.abort_all();
        for (_, link) in self.links.drain() {
            close_link(link);
        }
        self.stats.peers.store(0, Ordering::Relaxed);
    }

    /// Carries out the engine's outputs; returns when it next wants the clock.
    fn carry_out(&mut self) -> Option<Duration> {
        loop {
            match self.engine.poll_output() {
                Output::Timeout(wake) => return wake,
                Output::StartHttp { id, resource, from } => {
                    let (client, timeout) = (self.client.clone(), self.timeout);
                    let handle = self.transfers.spawn(async move {
                        (id, from, http_get(&client, &resource, from, timeout).await)
                    });
                    self.http_aborts.insert(id, handle);
                }
                Output::AbortHttp { id } => {
                    if let Some(handle) = self.http_aborts.remove(&id) {
                        handle.abort();
                    }
                }
                Output::Send { link, command } => {
                    if let Some(io) = self.links.get(&link)
                        && io.control.try_send(command).is_err()
                    {
                        let now = self.now();
                        self.engine
                            .handle_input(now, engine::Input::LinkStalled { link });
                    }
                }
                Output::Upload { link, upload } => {
                    if let Some(io) = self.links.get(&link) {
                        io.orders.send_replace(upload);
                    }
                }
                Output::CloseLink { link } => {
                    if let Some(io) = self.links.remove(&link) {
                        close_link(io);
                    }
                }
                Output::Join { swarm } => {
                    if let Some(signalling) = &self.signalling {
                        signalling.join(swarm);
                    }
                }
                Output::Leave { swarm } => {
                    if let Some(signalling) = &self.signalling {
                        signalling.leave(swarm);
                    }
                }
                Output::Delivered { id, fetched } => {
                    if let Some(reply) = self.replies.remove(&id) {
                        let _ = reply.send(Ok(fetched));
                    }
                }
                Output::Failed { id, error } => {
                    if let Some(reply) = self.replies.remove(&id) {
                        let _ = reply.send(Err(error));
                    }
                }
                Output::Warning(error) => {
                    let _ = self.warnings.try_send(error);
                }
            }
        }
    }

    /// The engine's input for a signalling or link event, if it needs one.
    fn on_event(&mut self, event: HubEvent) -> Option<engine::Input> {
        Some(match event {
            HubEvent::LinkUp {
                swarm,
                remote,
                channel,
                slot,
            } => {
                let PeerChannel {
                    sender,
                    events,
                    remote_addr,
                } = channel;
                let link = self.next_link;
                self.next_link += 1;
                let (control_tx, control_rx) = mpsc::channel(LINK_CONTROL_QUEUE);
                let (orders_tx, orders_rx) = watch::channel(None);
                let reader =
                    tokio::spawn(read_link(link, events, self.hub_tx.clone(), self.started));
                let writer = tokio::spawn(write_link(
                    link,
                    sender.clone(),
                    control_rx,
                    orders_rx,
                    self.upload_limiter.clone(),
                    self.hub_tx.clone(),
                ));
                self.links.insert(
                    link,
                    LinkIo {
                        control: control_tx,
                        orders: orders_tx,
                        sender,
                        tasks: vec![reader.abort_handle(), writer.abort_handle()],
                        _slot: slot,
                    },
                );
                // The engine closes it at once if it refuses the peer.
                engine::Input::LinkUp {
                    link,
                    swarm,
                    remote,
                    address: remote_addr,
                }
            }
            HubEvent::Message { link, message } => engine::Input::Message { link, message },
            HubEvent::Malformed { link, reason } => engine::Input::Malformed { link, reason },
            HubEvent::LinkDown { link, .. } => {
                if let Some(io) = self.links.remove(&link) {
                    close_link(io);
                }
                engine::Input::LinkDown { link }
            }
            HubEvent::UploadProgress { link, request_id } => {
                engine::Input::UploadProgress { link, request_id }
            }
            HubEvent::UploadDone { link, request_id } => {
                engine::Input::UploadDone { link, request_id }
            }
            HubEvent::Uploaded { bytes, .. } => engine::Input::Uploaded { bytes },
            HubEvent::Warning { kind, error } => engine::Input::Warning { kind, error },
            HubEvent::SwarmSize { swarm, peers } => engine::Input::SwarmSize { swarm, peers },
        })
    }
}

fn close_link(link: LinkIo) {
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

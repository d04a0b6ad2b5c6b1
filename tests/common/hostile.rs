//! A hostile rig for the mesh tests and `examples/hostile-bench`: an in-process WebTorrent
//! tracker that relays as a real one does (the crate's own tracker core) and can turn hostile,
//! and hostile peers that join a victim's swarm through it and break the wire protocol's rules.
//!
//! The hostile peer is its own client: it reuses the crate's WebRTC transport and command
//! encoder, but decides itself what to send, so it can lie about sizes, restart headers,
//! stall, flood, send what was never asked for, or stop reading. Hostile peers gather ICE
//! candidates on 127.0.0.2, so that the victim (on 127.0.0.1, with the honest viewers) can ban
//! their address.

#![allow(dead_code)]

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use gstmesh::mesh::protocol::{self, Command, Decoder, Incoming};
use gstmesh::mesh::swarm::{OfferId, PeerId};
use gstmesh::mesh::transport::{
    ChannelEvent, PeerChannel, TransportConfig, answer_offer, make_offer,
};
use mesh_tracker::server::{ConnectionId, ServerOutput, TrackerServer, TrackerServerConfig};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// The address hostile peers gather candidates on: loopback, but not the host's own 127.0.0.1.
pub const HOSTILE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// What the rig's tracker does to the clients that connect to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackerMode {
    /// Relays like a real tracker.
    Relay,
    /// Relays, and sends every client one binary frame of this many bytes when it connects.
    OversizedFrame(usize),
    /// Relays, and sends every client this many frames a second that are not tracker
    /// messages (garbage, failure reasons of 10 KB, relayed offers with 200 candidates), for
    /// as long as it stays connected, at most `seconds`.
    Flood { per_second: u32, seconds: u64 },
}

/// Counters of the rig's tracker.
#[derive(Debug, Default)]
pub struct RigCounters {
    pub connections: AtomicU64,
    pub hostile_frames: AtomicU64,
    pub announces: AtomicU64,
}

struct Shared {
    mode: Mutex<TrackerMode>,
    /// info_hash → peer_ids announced in it.
    swarms: Mutex<HashMap<String, BTreeSet<String>>>,
    counters: RigCounters,
}

/// The rig: its tracker listens on 127.0.0.1; hostile peers run on its runtime.
pub struct Rig {
    pub url: String,
    shared: Arc<Shared>,
    pub runtime: tokio::runtime::Runtime,
}

enum CoreEvent {
    Connected(ConnectionId, mpsc::Sender<Message>),
    Text(ConnectionId, String),
    Gone(ConnectionId),
}

impl Rig {
    pub fn start(mode: TrackerMode) -> Rig {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("rig runtime");
        let shared = Arc::new(Shared {
            mode: Mutex::new(mode),
            swarms: Mutex::new(HashMap::new()),
            counters: RigCounters::default(),
        });
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the rig tracker");
        let url = format!("ws://{}", listener.local_addr().expect("address"));
        let (core_tx, core_rx) = mpsc::channel(1024);
        runtime.spawn(run_core(core_rx, shared.clone()));
        let accept_shared = shared.clone();
        runtime.spawn(async move {
            let mut next = 0u64;
            while let Ok((stream, _)) = listener.accept().await {
                next += 1;
                tokio::spawn(serve(
                    ConnectionId(next),
                    stream,
                    core_tx.clone(),
                    accept_shared.clone(),
                ));
            }
        });
        Rig {
            url,
            shared,
            runtime,
        }
    }

    pub fn set_mode(&self, mode: TrackerMode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    pub fn counters(&self) -> &RigCounters {
        &self.shared.counters
    }

    /// The info_hashes announced so far, each with the peer_ids announced in it.
    pub fn swarms(&self) -> HashMap<String, BTreeSet<String>> {
        self.shared.swarms.lock().unwrap().clone()
    }

    /// Waits until a swarm has an announce, and returns its info_hash.
    pub fn wait_for_swarm(&self, timeout: Duration) -> String {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(hash) = self.swarms().into_keys().next() {
                return hash;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nobody announced to the rig tracker within {timeout:?}");
    }
}

async fn run_core(mut events: mpsc::Receiver<CoreEvent>, shared: Arc<Shared>) {
    let started = Instant::now();
    let mut server = TrackerServer::new(TrackerServerConfig::default(), 7);
    let mut links: HashMap<ConnectionId, mpsc::Sender<Message>> = HashMap::new();
    while let Some(event) = events.recv().await {
        let outputs = match event {
            CoreEvent::Connected(id, tx) => {
                links.insert(id, tx);
                server.connected(id)
            }
            CoreEvent::Text(id, text) => {
                if let Ok(value) = serde_json::from_str::<Value>(&text)
                    && let (Some(hash), Some(peer)) =
                        (value["info_hash"].as_str(), value["peer_id"].as_str())
                {
                    shared.counters.announces.fetch_add(1, Ordering::Relaxed);
                    shared
                        .swarms
                        .lock()
                        .unwrap()
                        .entry(hash.to_owned())
                        .or_default()
                        .insert(peer.to_owned());
                }
                server.message(id, &text, started.elapsed())
            }
            CoreEvent::Gone(id) => {
                links.remove(&id);
                server.disconnected(id)
            }
        };
        for output in outputs {
            match output {
                ServerOutput::Send(id, text) => {
                    if let Some(tx) = links.get(&id) {
                        let _ = tx.try_send(Message::text(text));
                    }
                }
                ServerOutput::Close(id) => {
                    links.remove(&id);
                }
            }
        }
    }
}

/// A frame of the hostile tracker's flood, `n` of them so far.
fn flood_frame(n: u64) -> Message {
    match n % 4 {
        0 => Message::text(format!("{{not json {n}")),
        1 => Message::text(
            json!({"action": "announce", "failure reason": "x".repeat(10_000)}).to_string(),
        ),
        2 => Message::binary(vec![0xa5u8; 4_000]),
        _ => {
            let candidates: String = (0..200)
                .map(|i| {
                    format!(
                        "a=candidate:{i} 1 udp 2130706431 198.51.100.{} {} typ host\r\n",
                        i % 250,
                        1000 + i
                    )
                })
                .collect();
            Message::text(
                json!({
                    "action": "announce", "info_hash": "0123456789abcdef0123",
                    "peer_id": "-XX0000-floodfloodfl", "offer_id": format!("{n:020}"),
                    "offer": {"type": "offer", "sdp": format!("v=0\r\n{candidates}")}
                })
                .to_string(),
            )
        }
    }
}

async fn serve(
    id: ConnectionId,
    stream: TcpStream,
    core: mpsc::Sender<CoreEvent>,
    shared: Arc<Shared>,
) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(256);
    if core.send(CoreEvent::Connected(id, tx)).await.is_err() {
        return;
    }
    let mode = *shared.mode.lock().unwrap();
    let hostile = shared.clone();
    let writer = tokio::spawn(async move {
        match mode {
            TrackerMode::Relay => {}
            TrackerMode::OversizedFrame(bytes) => {
                let _ = sink.send(Message::binary(vec![0x5au8; bytes])).await;
                hostile
                    .counters
                    .hostile_frames
                    .fetch_add(1, Ordering::Relaxed);
            }
            TrackerMode::Flood {
                per_second,
                seconds,
            } => {
                let started = Instant::now();
                let gap = Duration::from_secs_f64(1.0 / per_second.max(1) as f64);
                let mut n = 0u64;
                while started.elapsed() < Duration::from_secs(seconds) {
                    while let Ok(frame) = rx.try_recv() {
                        if sink.send(frame).await.is_err() {
                            return;
                        }
                    }
                    if sink.send(flood_frame(n)).await.is_err() {
                        return;
                    }
                    n += 1;
                    hostile
                        .counters
                        .hostile_frames
                        .fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(gap).await;
                }
            }
        }
        while let Some(frame) = rx.recv().await {
            if sink.send(frame).await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        if let Message::Text(text) = message
            && core
                .send(CoreEvent::Text(id, text.to_string()))
                .await
                .is_err()
        {
            break;
        }
    }
    writer.abort();
    let _ = core.send(CoreEvent::Gone(id)).await;
}

// ---------------------------------------------------------------------------------------------
// Hostile peers

/// How a hostile peer misbehaves on each link it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// Announces the victim's segments; answers each request with `segment data` claiming
    /// the real size plus `extra`, sends the real bytes, then stalls.
    ClaimExtra { extra: u64 },
    /// Answers each request with `segment data`, half the bytes, then `segment data` for the
    /// same request again, and so on.
    HeaderRestart,
    /// Announces the victim's segments and answers nothing: holds the victim's requests.
    Silent,
    /// Asks the victim for what it holds and never reads the answers.
    NoRead,
    /// `cancel` for random request ids, `per_second` of them.
    CancelFlood { per_second: u32 },
    /// Announcements of `ids` segment ids in each list, as fast as the victim reads them.
    AnnounceFlood { ids: usize },
    /// Unsolicited `segment data` headers, `per_second` of them.
    UnsolicitedHeaders { per_second: u32 },
    /// Raw data nobody asked for.
    UnsolicitedData,
    /// A command that does not decode.
    Malformed,
    /// One message of 256 KiB, past the 64 KiB the victim advertises.
    Oversized,
    /// Serves correctly (an honest peer, for comparison).
    Honest,
}

/// What a hostile peer saw.
#[derive(Debug, Default)]
pub struct HostileCounters {
    /// Identities (peer_ids) used.
    pub identities: AtomicU64,
    /// Data channels opened with the victim.
    pub links: AtomicU64,
    /// Links the victim closed.
    pub closed_by_victim: AtomicU64,
    /// Segment requests received from the victim.
    pub requests: AtomicU64,
    /// Bytes of segment data sent.
    pub bytes_sent: AtomicU64,
    /// Bytes of segment data received from the victim.
    pub bytes_received: AtomicU64,
    /// Commands sent.
    pub commands_sent: AtomicU64,
}

pub struct HostileConfig {
    pub tracker: String,
    pub info_hash: String,
    pub attack: Attack,
    /// Identities to use one after the other: a new peer_id on a new tracker connection when
    /// the victim closed the link (or did not link within `link_wait`).
    pub identities: u64,
    pub link_wait: Duration,
    /// The bytes of segment `id` (the test's origin).
    pub segments: Arc<dyn Fn(i64) -> Option<Vec<u8>> + Send + Sync>,
    /// Stop after this long.
    pub duration: Duration,
}

/// A hostile peer running on the rig's runtime.
pub struct HostilePeer {
    pub counters: Arc<HostileCounters>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl HostilePeer {
    pub fn spawn(rig: &Rig, config: HostileConfig) -> HostilePeer {
        let counters = Arc::new(HostileCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let task = rig
            .runtime
            .spawn(run_hostile(config, counters.clone(), stop.clone()));
        HostilePeer {
            counters,
            stop,
            task,
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }

    pub fn get(&self, counter: fn(&HostileCounters) -> &AtomicU64) -> u64 {
        counter(&self.counters).load(Ordering::Relaxed)
    }
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn transport(attack: Attack) -> TransportConfig {
    TransportConfig {
        ice_addresses: vec![HOSTILE_IP],
        max_message_size: if attack == Attack::Oversized {
            256 * 1024
        } else {
            gstmesh::mesh::transport::MAX_MESSAGE_SIZE
        },
        ..Default::default()
    }
}

/// The victim's SDP, made to claim it takes 256 KiB messages.
fn lie_about_max_message_size(sdp: &str) -> String {
    sdp.lines()
        .map(|l| {
            if l.starts_with("a=max-message-size:") {
                "a=max-message-size:262144".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

async fn run_hostile(config: HostileConfig, counters: Arc<HostileCounters>, stop: Arc<AtomicBool>) {
    let config = Arc::new(config);
    let started = Instant::now();
    for _ in 0..config.identities {
        if stop.load(Ordering::Relaxed) || started.elapsed() >= config.duration {
            return;
        }
        counters.identities.fetch_add(1, Ordering::Relaxed);
        let left = config.duration.saturating_sub(started.elapsed());
        let _ = tokio::time::timeout(left, one_identity(&config, &counters)).await;
    }
}

/// One tracker connection with a fresh peer_id: offers to the swarm and answers its offers;
/// attacks on the first link, and returns when that link closes (or none opened in time).
async fn one_identity(config: &Arc<HostileConfig>, counters: &Arc<HostileCounters>) {
    let Ok((ws, _)) = tokio_tungstenite::connect_async(config.tracker.as_str()).await else {
        tokio::time::sleep(Duration::from_millis(500)).await;
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let peer_id = PeerId::random();
    let transport = transport(config.attack);
    let mut offers = HashMap::new();
    let mut local = Vec::new();
    for _ in 0..2 {
        if let Ok((pending, sdp)) = make_offer(&transport).await {
            let id = OfferId::random();
            local.push(json!({"offer_id": id.as_str(), "offer": {"type": "offer", "sdp": sdp}}));
            offers.insert(id.as_str().to_owned(), pending);
        }
    }
    let announce = json!({
        "action": "announce", "info_hash": config.info_hash, "peer_id": peer_id.as_str(),
        "numwant": local.len(), "uploaded": 0, "downloaded": 0, "event": "started",
        "offers": local,
    });
    if sink
        .send(Message::text(announce.to_string()))
        .await
        .is_err()
    {
        return;
    }
    let (links_tx, mut links_rx) = mpsc::channel::<PeerChannel>(4);
    let deadline = tokio::time::Instant::now() + config.link_wait;
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(Message::Text(text))) = frame else { return };
                let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
                let offer_id = value["offer_id"].as_str().unwrap_or_default().to_owned();
                if let Some(sdp) = value["answer"]["sdp"].as_str() {
                    if let Some(pending) = offers.remove(&offer_id) {
                        let sdp = if config.attack == Attack::Oversized {
                            lie_about_max_message_size(sdp)
                        } else {
                            sdp.to_owned()
                        };
                        let links = links_tx.clone();
                        tokio::spawn(async move {
                            if let Ok(channel) = pending.connect(&sdp).await {
                                let _ = links.send(channel).await;
                            }
                        });
                    }
                } else if let (Some(sdp), Some(from)) =
                    (value["offer"]["sdp"].as_str(), value["peer_id"].as_str())
                {
                    let Ok((pending, answer)) = answer_offer(&transport, sdp).await else {
                        continue;
                    };
                    let reply = json!({
                        "action": "announce", "info_hash": config.info_hash,
                        "peer_id": peer_id.as_str(), "to_peer_id": from, "offer_id": offer_id,
                        "answer": {"type": "answer", "sdp": answer},
                    });
                    if sink.send(Message::text(reply.to_string())).await.is_err() {
                        return;
                    }
                    let links = links_tx.clone();
                    tokio::spawn(async move {
                        if let Ok(channel) = pending.connect().await {
                            let _ = links.send(channel).await;
                        }
                    });
                }
            }
            Some(channel) = links_rx.recv() => {
                counters.links.fetch_add(1, Ordering::Relaxed);
                attack(config, counters, channel).await;
                return;
            }
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

async fn send_command(
    channel: &PeerChannel,
    counters: &HostileCounters,
    command: &Command,
) -> bool {
    for part in protocol::encode(command) {
        if channel.sender.send(Bytes::from(part)).await.is_err() {
            return false;
        }
    }
    counters.commands_sent.fetch_add(1, Ordering::Relaxed);
    true
}

async fn send_data(channel: &PeerChannel, counters: &HostileCounters, data: &[u8]) -> bool {
    for chunk in data.chunks(16 * 1024) {
        if channel
            .sender
            .send(Bytes::copy_from_slice(chunk))
            .await
            .is_err()
        {
            return false;
        }
        counters
            .bytes_sent
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    true
}

/// The segment ids to announce: what the victim announced, and the next few.
fn wanted_ids(seen: &BTreeSet<i64>) -> Vec<i64> {
    let Some(&last) = seen.iter().next_back() else {
        return Vec::new();
    };
    let mut ids: Vec<i64> = seen.iter().copied().collect();
    ids.extend(last + 1..=last + 8);
    ids
}

/// Runs the attack on one link until the victim closes it.
async fn attack(
    config: &Arc<HostileConfig>,
    counters: &Arc<HostileCounters>,
    mut channel: PeerChannel,
) {
    let attack = config.attack;
    let mut decoder = Decoder::new();
    let mut seen: BTreeSet<i64> = BTreeSet::new();
    let mut announced: Vec<i64> = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(match attack {
        Attack::CancelFlood { per_second } | Attack::UnsolicitedHeaders { per_second } => {
            (1000 / per_second.max(1) as u64).max(1)
        }
        Attack::AnnounceFlood { .. } => 1,
        Attack::NoRead => 700,
        _ => 100,
    }));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n: i64 = 0;
    let mut asked_victim = false;
    // One-shot misbehaviour right at the start.
    match attack {
        Attack::Malformed => {
            let _ = channel
                .sender
                .send(Bytes::from_static(b"cstr\x09\xff\xffgarbagecend"))
                .await;
        }
        Attack::UnsolicitedData => {
            let _ = channel.sender.send(Bytes::from(vec![0x47u8; 1_000])).await;
        }
        Attack::Oversized => {
            let _ = channel
                .sender
                .send(Bytes::from(vec![0x47u8; 256 * 1024]))
                .await;
        }
        _ => {}
    }
    loop {
        tokio::select! {
            event = channel.events.recv(), if attack != Attack::NoRead || !asked_victim => {
                let message = match event {
                    Some(ChannelEvent::Message(m)) => m,
                    _ => {
                        counters.closed_by_victim.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                match decoder.push(message) {
                    Ok(Some(Incoming::Command(Command::SegmentsAnnouncement { loaded, loading }))) => {
                        seen.extend(loaded);
                        seen.extend(loading);
                    }
                    Ok(Some(Incoming::Command(Command::SegmentRequest { id, request_id, byte_from }))) => {
                        counters.requests.fetch_add(1, Ordering::Relaxed);
                        let Some(data) = (config.segments)(id) else {
                            send_command(&channel, counters, &Command::SegmentAbsent { id, request_id }).await;
                            continue;
                        };
                        let data = &data[(byte_from.unwrap_or(0) as usize).min(data.len())..];
                        let real = data.len() as u64;
                        match attack {
                            Attack::ClaimExtra { extra } => {
                                send_command(&channel, counters, &Command::SegmentData { id, request_id, size: real + extra }).await;
                                send_data(&channel, counters, data).await;
                            }
                            Attack::HeaderRestart => {
                                for _ in 0..3 {
                                    send_command(&channel, counters, &Command::SegmentData { id, request_id, size: real }).await;
                                    send_data(&channel, counters, &data[..data.len() / 2]).await;
                                }
                            }
                            Attack::Honest => {
                                send_command(&channel, counters, &Command::SegmentData { id, request_id, size: real }).await;
                                send_data(&channel, counters, data).await;
                                send_command(&channel, counters, &Command::SendingCompleted { id, request_id }).await;
                            }
                            _ => {}
                        }
                    }
                    Ok(Some(Incoming::Data(d))) => {
                        counters.bytes_received.fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            _ = ticker.tick() => {
                let wanted = wanted_ids(&seen);
                let holds = matches!(attack, Attack::ClaimExtra { .. } | Attack::HeaderRestart | Attack::Silent | Attack::Honest);
                if holds && wanted != announced {
                    announced = wanted.clone();
                    let announcement = Command::SegmentsAnnouncement { loaded: wanted, loading: Vec::new() };
                    if !send_command(&channel, counters, &announcement).await { return; }
                }
                n += 1;
                if attack == Attack::NoRead && !seen.is_empty() {
                    // A new request now and then, and nothing read any more: the victim's
                    // answers pile up until its send buffer is full.
                    asked_victim = true;
                    let ids: Vec<i64> = seen.iter().copied().collect();
                    let id = ids[n as usize % ids.len()];
                    let request = Command::SegmentRequest { id, request_id: n, byte_from: None };
                    if !send_command(&channel, counters, &request).await {
                        counters.closed_by_victim.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                let ok = match attack {
                    Attack::CancelFlood { .. } => {
                        send_command(&channel, counters, &Command::Cancel { id: n, request_id: n.wrapping_mul(7_919) }).await
                    }
                    Attack::UnsolicitedHeaders { .. } => {
                        send_command(&channel, counters, &Command::SegmentData { id: n, request_id: 10_000 + n, size: 100 }).await
                    }
                    Attack::AnnounceFlood { ids } => {
                        let loaded: Vec<i64> = (0..ids as i64).map(|i| i * 3 + n).collect();
                        let loading: Vec<i64> = (0..ids as i64).map(|i| i * 5 + n).collect();
                        send_command(&channel, counters, &Command::SegmentsAnnouncement { loaded, loading }).await
                    }
                    _ => true,
                };
                if !ok {
                    counters.closed_by_victim.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if channel.sender.is_closed() {
                    counters.closed_by_victim.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

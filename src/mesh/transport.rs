//! Peer transport: one WebRTC data channel per peer, over the `webrtc` crate.
//!
//! Signalling is non-trickle, as WebTorrent trackers relay a single offer and a single answer:
//! [`make_offer`] and [`answer_offer`] wait for ICE gathering to complete (bounded by
//! [`TransportConfig::gathering_timeout`]) and return an SDP carrying every candidate.
//!
//! - Offering side: [`make_offer`] → send the offer → [`PendingOffer::connect`] with the answer.
//! - Answering side: [`answer_offer`] → send the answer → [`PendingAnswer::connect`].
//!
//! Both yield a [`PeerChannel`]: an open, reliable, ordered, binary data channel. A task owns
//! the peer connection from then on and closes it when the channel or the connection fails,
//! when [`ChannelSender::close`] is called, or when every [`ChannelSender`] and the event
//! receiver are dropped; [`ChannelEvent::Closed`] is the last event delivered.
//!
//! Memory stays bounded in both directions: [`ChannelSender::send`] waits while the channel
//! holds more than [`TransportConfig::send_buffer_limit`] unacknowledged bytes, and a consumer
//! that stops reading [`PeerChannel::events`] stops the data channel being polled, which
//! closes the SCTP receive window towards the peer.
//!
//! Host candidates are gathered only on [`TransportConfig::ice_addresses`] (UDP); server
//! reflexive and relay candidates only when STUN/TURN servers are configured. Nothing else is
//! contacted: mDNS is off unless [`TransportConfig::mdns`] is set.

use bytes::{Bytes, BytesMut};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::error::Error as RtcError;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceConnectionState, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState,
    RTCSessionDescription, SettingEngineBuilder,
};

/// Label of the data channel we open.
pub const CHANNEL_LABEL: &str = "gst-mesh";

/// The SCTP `max-message-size` this end advertises by default (RFC 8841's default), the
/// largest message [`ChannelSender::send`] accepts and the largest one received: a longer
/// inbound message closes the link while it arrives, before it is reassembled (the vendored
/// rtc-sctp's patch). A peer may negotiate less, in which case a longer send fails.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// The SCTP receive window (a_rwnd): what a peer may have in flight towards us, and so what one
/// link buffers while [`PeerChannel::events`] is not read.
pub const RECEIVE_BUFFER: usize = 1024 * 1024;

/// Capacity of [`PeerChannel::events`].
pub const EVENT_QUEUE_CAPACITY: usize = 64;

/// A TURN server, in the form the ICE layer takes it.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnServer {
    /// `turn:host:port?transport=udp` (or `turns:…?transport=tcp`).
    pub url: String,
    pub username: String,
    pub credential: String,
}

impl fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnServer")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("credential", &"<redacted>")
            .finish()
    }
}

/// Parses `turn://user:pass@host[:port][?transport=udp|tcp]` or `turns://…` (user and password
/// percent-decoded) into a [`TurnServer`]. The port defaults to 3478 (`turn`) or 5349
/// (`turns`), the transport to UDP (`turn`) or TCP (`turns`).
///
/// Note that the `webrtc` crate (0.21) only allocates over plain UDP TURN: `turns:` and
/// `?transport=tcp` servers are accepted here but skipped, with a warning, when gathering.
pub fn parse_turn_server(s: &str) -> Result<TurnServer, TransportError> {
    let invalid = |reason: &str| TransportError::InvalidTurnServer(reason.to_owned());
    let url = url::Url::parse(s.trim()).map_err(|e| invalid(&format!("not a URL ({e})")))?;
    let secure = match url.scheme() {
        "turn" => false,
        "turns" => true,
        _ => return Err(invalid("scheme is neither turn:// nor turns://")),
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => format!("[{a}]"),
        _ => return Err(invalid("no host")),
    };
    if !matches!(url.path(), "" | "/") {
        return Err(invalid("unexpected path"));
    }
    let port = url.port().unwrap_or(if secure { 5349 } else { 3478 });
    let decode = |part: &str, what: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| invalid(&format!("{what} is not UTF-8")))
    };
    let username = decode(url.username(), "user name")?;
    let credential = decode(url.password().unwrap_or(""), "password")?;
    if username.is_empty() || credential.is_empty() {
        return Err(invalid("user name and password are required"));
    }
    let mut transport = if secure { "tcp" } else { "udp" };
    for (key, value) in url.query_pairs() {
        match (key.as_ref(), value.as_ref()) {
            ("transport", "udp") => transport = "udp",
            ("transport", "tcp") => transport = "tcp",
            _ => return Err(invalid("only ?transport=udp|tcp is understood")),
        }
    }
    let scheme = if secure { "turns" } else { "turn" };
    Ok(TurnServer {
        url: format!("{scheme}:{host}:{port}?transport={transport}"),
        username,
        credential,
    })
}

/// How peer connections are set up.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Local addresses to gather UDP host candidates on (an ephemeral port each). Empty means
    /// every interface: the IPv4 and IPv6 wildcards, which the crate expands into one socket
    /// per non-loopback, non-link-local interface address.
    pub ice_addresses: Vec<IpAddr>,
    /// STUN servers, `stun:host:port`.
    pub stun_servers: Vec<String>,
    pub turn_servers: Vec<TurnServer>,
    /// Resolve remote mDNS (`*.local`) candidates. Our own host candidates are always plain
    /// addresses. Off by default: no multicast traffic at all.
    pub mdns: bool,
    /// Cap on non-trickle ICE gathering; on timeout the SDP carries what was gathered.
    pub gathering_timeout: Duration,
    /// Cap on answer applied (or answer sent) → data channel open.
    pub connect_timeout: Duration,
    /// Bytes queued in the data channel (sent but not acknowledged) before
    /// [`ChannelSender::send`] waits.
    pub send_buffer_limit: usize,
    /// The SCTP `max-message-size` advertised, and the largest message sent or received.
    pub max_message_size: usize,
    /// The SCTP receive window.
    pub receive_buffer: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            ice_addresses: Vec::new(),
            stun_servers: Vec::new(),
            turn_servers: Vec::new(),
            mdns: false,
            gathering_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(15),
            send_buffer_limit: 1024 * 1024,
            max_message_size: MAX_MESSAGE_SIZE,
            receive_buffer: RECEIVE_BUFFER,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("invalid TURN server: {0}")]
    InvalidTurnServer(String),
    #[error("invalid session description: {0}")]
    InvalidSdp(String),
    #[error("WebRTC: {0}")]
    WebRtc(String),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("connection closed: {0}")]
    Closed(String),
    #[error("message of {size} bytes is larger than {max} bytes")]
    MessageTooLarge { size: usize, max: usize },
}

impl From<RtcError> for TransportError {
    fn from(e: RtcError) -> Self {
        match e {
            RtcError::ErrDataChannelClosed | RtcError::ErrConnectionClosed => {
                TransportError::Closed(e.to_string())
            }
            e => TransportError::WebRtc(e.to_string()),
        }
    }
}

// -------------------------------------------------------------------------------------------
// Connection events, as reported by the driver

/// Receives the driver's callbacks. They run on the connection's driver task, so each one only
/// records what happened and returns.
struct Signals {
    /// ICE gathering complete.
    gathered: watch::Sender<bool>,
    /// Set once the connection is beyond use: why.
    failure: watch::Sender<Option<String>>,
    /// The first data channel the remote opens (answering side).
    incoming: StdMutex<Option<oneshot::Sender<Arc<dyn DataChannel>>>>,
}

impl Signals {
    fn new() -> (Arc<Signals>, oneshot::Receiver<Arc<dyn DataChannel>>) {
        let (incoming_tx, incoming_rx) = oneshot::channel();
        let signals = Signals {
            gathered: watch::channel(false).0,
            failure: watch::channel(None).0,
            incoming: StdMutex::new(Some(incoming_tx)),
        };
        (Arc::new(signals), incoming_rx)
    }

    fn fail(&self, reason: &str) {
        self.failure.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(reason.to_owned());
                true
            } else {
                false
            }
        });
    }
}

type HandlerFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

// The trait is declared with `#[async_trait]`; these are its methods written out, so this crate
// needs no `async-trait` dependency of its own.
impl PeerConnectionEventHandler for Signals {
    fn on_ice_gathering_state_change<'life0, 'async_trait>(
        &'life0 self,
        state: RTCIceGatheringState,
    ) -> HandlerFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
        Box::pin(std::future::ready(()))
    }

    fn on_ice_connection_state_change<'life0, 'async_trait>(
        &'life0 self,
        state: RTCIceConnectionState,
    ) -> HandlerFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        match state {
            RTCIceConnectionState::Failed => self.fail("ICE failed"),
            RTCIceConnectionState::Disconnected => self.fail("ICE disconnected"),
            RTCIceConnectionState::Closed => self.fail("ICE closed"),
            _ => {}
        }
        Box::pin(std::future::ready(()))
    }

    fn on_connection_state_change<'life0, 'async_trait>(
        &'life0 self,
        state: RTCPeerConnectionState,
    ) -> HandlerFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        match state {
            RTCPeerConnectionState::Failed => self.fail("peer connection failed"),
            RTCPeerConnectionState::Disconnected => self.fail("peer connection disconnected"),
            RTCPeerConnectionState::Closed => self.fail("peer connection closed"),
            _ => {}
        }
        Box::pin(std::future::ready(()))
    }

    fn on_data_channel<'life0, 'async_trait>(
        &'life0 self,
        data_channel: Arc<dyn DataChannel>,
    ) -> HandlerFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let first = self.incoming.lock().ok().and_then(|mut slot| slot.take());
        let extra = match first {
            Some(tx) => tx.send(data_channel).err(),
            None => Some(data_channel),
        };
        // One channel per peer: any further one (or one nobody waits for) is closed.
        Box::pin(async move {
            if let Some(dc) = extra {
                let _ = dc.close().await;
            }
        })
    }
}

// -------------------------------------------------------------------------------------------
// Peer connection ownership

/// Owns a peer connection and makes sure it is closed: explicitly with [`PcGuard::close`], or
/// from `Drop` by spawning the close (dropping a `webrtc` peer connection does not stop it).
struct PcGuard {
    pc: Option<Arc<dyn PeerConnection>>,
    runtime: tokio::runtime::Handle,
}

impl PcGuard {
    fn pc(&self) -> &Arc<dyn PeerConnection> {
        self.pc
            .as_ref()
            .expect("peer connection present until closed")
    }

    async fn close(mut self) {
        if let Some(pc) = &self.pc {
            // If this future is dropped half-way, `Drop` closes again (close is idempotent).
            let _ = pc.close().await;
        }
        self.pc = None;
    }
}

impl Drop for PcGuard {
    fn drop(&mut self) {
        if let Some(pc) = self.pc.take() {
            self.runtime.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

fn sanitize_stun_url(url: &str) -> String {
    // `stun:` URLs take no query (RFC 7064); the ICE layer rejects `?transport=…`.
    url.trim().split('?').next().unwrap_or_default().to_owned()
}

async fn build_peer(
    config: &TransportConfig,
) -> Result<
    (
        PcGuard,
        Arc<Signals>,
        oneshot::Receiver<Arc<dyn DataChannel>>,
    ),
    TransportError,
> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| TransportError::WebRtc("not called within a tokio runtime".to_owned()))?;

    let udp_addrs: Vec<SocketAddr> = if config.ice_addresses.is_empty() {
        vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        ]
    } else {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for ip in &config.ice_addresses {
            let addr = SocketAddr::new(*ip, 0);
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        addrs
    };
    let mut network_types = vec![NetworkType::Udp4];
    if udp_addrs.iter().any(SocketAddr::is_ipv6) {
        network_types.push(NetworkType::Udp6);
    }

    let mut ice_servers: Vec<RTCIceServer> = config
        .stun_servers
        .iter()
        .map(|url| RTCIceServer {
            urls: vec![sanitize_stun_url(url)],
            ..Default::default()
        })
        .collect();
    ice_servers.extend(config.turn_servers.iter().map(|turn| RTCIceServer {
        urls: vec![turn.url.clone()],
        username: turn.username.clone(),
        credential: turn.credential.clone(),
    }));

    let setting_engine = SettingEngineBuilder::new()
        .with_multicast_dns_mode(if config.mdns {
            MulticastDnsMode::QueryOnly
        } else {
            MulticastDnsMode::Disabled
        })
        .with_network_types(network_types)
        .with_sctp_max_message_size(SctpMaxMessageSize::Bounded(
            u32::try_from(config.max_message_size).unwrap_or(u32::MAX),
        ))
        .with_sctp_max_receive_buffer_size(u32::try_from(config.receive_buffer).unwrap_or(u32::MAX))
        .build();

    let (signals, incoming) = Signals::new();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_ice_servers(ice_servers)
                .build(),
        )
        .with_setting_engine(setting_engine)
        .with_handler(signals.clone() as Arc<dyn PeerConnectionEventHandler>)
        .with_udp_addrs(udp_addrs)
        .with_data_channel_send_buffer_limit(config.send_buffer_limit.max(1))
        .build()
        .await?;
    let guard = PcGuard {
        pc: Some(Arc::new(pc) as Arc<dyn PeerConnection>),
        runtime,
    };
    Ok((guard, signals, incoming))
}

/// Waits for gathering to complete (or the timeout) and returns the local SDP.
async fn gathered_sdp(
    pc: &Arc<dyn PeerConnection>,
    signals: &Signals,
    timeout: Duration,
) -> Result<String, TransportError> {
    let mut gathered = signals.gathered.subscribe();
    // On timeout, go on with what was gathered.
    let _ = tokio::time::timeout(timeout, gathered.wait_for(|done| *done)).await;
    let desc = pc
        .local_description()
        .await
        .ok_or_else(|| TransportError::WebRtc("no local description".to_owned()))?;
    Ok(strip_unusable_candidates(&desc.sdp))
}

/// Drops candidates on an unspecified address: a wildcard bound verbatim (no usable interface
/// of that family) yields `0.0.0.0`/`::` host candidates no peer can reach.
fn strip_unusable_candidates(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let unusable = line
            .strip_prefix("a=candidate:")
            .and_then(|c| c.split_whitespace().nth(4))
            .and_then(|addr| addr.parse::<IpAddr>().ok())
            .is_some_and(|ip| ip.is_unspecified());
        if !unusable {
            out.push_str(line);
        }
    }
    out
}

/// Waits for `dc` to open, or for the connection to fail.
async fn wait_open(dc: &Arc<dyn DataChannel>, signals: &Signals) -> Result<(), TransportError> {
    let mut failure = signals.failure.subscribe();
    loop {
        tokio::select! {
            event = dc.poll() => match event {
                Some(DataChannelEvent::OnOpen) => return Ok(()),
                Some(DataChannelEvent::OnClose) | None => {
                    return Err(TransportError::Closed("data channel closed before opening".into()))
                }
                _ => {}
            },
            reason = failure.wait_for(Option::is_some) => {
                let reason = reason.ok().and_then(|r| r.clone()).unwrap_or_default();
                return Err(TransportError::Closed(reason));
            }
        }
    }
}

// -------------------------------------------------------------------------------------------
// Offer / answer

/// Our offer, awaiting the remote answer. Dropping it closes the peer connection.
pub struct PendingOffer {
    guard: PcGuard,
    signals: Arc<Signals>,
    dc: Arc<dyn DataChannel>,
    connect_timeout: Duration,
    max_message_size: usize,
}

impl fmt::Debug for PendingOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingOffer").finish_non_exhaustive()
    }
}

/// Creates a peer connection with our data channel and returns its offer SDP, carrying every
/// candidate gathered within [`TransportConfig::gathering_timeout`].
pub async fn make_offer(
    config: &TransportConfig,
) -> Result<(PendingOffer, String), TransportError> {
    let (guard, signals, _incoming) = build_peer(config).await?;
    let setup = async {
        let pc = guard.pc();
        let init = RTCDataChannelInit {
            ordered: true,
            ..Default::default()
        };
        let dc = pc.create_data_channel(CHANNEL_LABEL, Some(init)).await?;
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let sdp = gathered_sdp(pc, &signals, config.gathering_timeout).await?;
        Ok::<_, TransportError>((dc, sdp))
    };
    match setup.await {
        Ok((dc, sdp)) => Ok((
            PendingOffer {
                guard,
                signals,
                dc,
                connect_timeout: config.connect_timeout,
                max_message_size: config.max_message_size,
            },
            sdp,
        )),
        Err(e) => {
            guard.close().await;
            Err(e)
        }
    }
}

impl PendingOffer {
    /// Applies the remote answer and waits (up to [`TransportConfig::connect_timeout`]) for the
    /// data channel to open. On error the peer connection is closed.
    pub async fn connect(self, answer_sdp: &str) -> Result<PeerChannel, TransportError> {
        let PendingOffer {
            guard,
            signals,
            dc,
            connect_timeout,
            max_message_size,
        } = self;
        let opened = async {
            let answer = RTCSessionDescription::answer(answer_sdp.to_owned())
                .map_err(|e| TransportError::InvalidSdp(e.to_string()))?;
            guard
                .pc()
                .set_remote_description(answer)
                .await
                .map_err(|e| TransportError::InvalidSdp(e.to_string()))?;
            tokio::time::timeout(connect_timeout, wait_open(&dc, &signals))
                .await
                .map_err(|_| TransportError::Timeout("waiting for the data channel to open"))?
        };
        match opened.await {
            Ok(()) => Ok(spawn_channel(guard, signals, dc, max_message_size).await),
            Err(e) => {
                guard.close().await;
                Err(e)
            }
        }
    }

    /// Gives up on this offer, closing the peer connection.
    pub async fn close(self) {
        self.guard.close().await;
    }
}

/// The answering side, its answer sent, awaiting the remote's data channel. Dropping it closes
/// the peer connection.
pub struct PendingAnswer {
    guard: PcGuard,
    signals: Arc<Signals>,
    incoming: oneshot::Receiver<Arc<dyn DataChannel>>,
    connect_timeout: Duration,
    max_message_size: usize,
}

impl fmt::Debug for PendingAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAnswer").finish_non_exhaustive()
    }
}

/// Creates a peer connection answering `offer_sdp` and returns its answer SDP, carrying every
/// candidate gathered within [`TransportConfig::gathering_timeout`].
pub async fn answer_offer(
    config: &TransportConfig,
    offer_sdp: &str,
) -> Result<(PendingAnswer, String), TransportError> {
    let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
        .map_err(|e| TransportError::InvalidSdp(e.to_string()))?;
    let (guard, signals, incoming) = build_peer(config).await?;
    let setup = async {
        let pc = guard.pc();
        pc.set_remote_description(offer)
            .await
            .map_err(|e| TransportError::InvalidSdp(e.to_string()))?;
        let answer = pc.create_answer(None).await?;
        pc.set_local_description(answer).await?;
        gathered_sdp(pc, &signals, config.gathering_timeout).await
    };
    match setup.await {
        Ok(sdp) => Ok((
            PendingAnswer {
                guard,
                signals,
                incoming,
                connect_timeout: config.connect_timeout,
                max_message_size: config.max_message_size,
            },
            sdp,
        )),
        Err(e) => {
            guard.close().await;
            Err(e)
        }
    }
}

impl PendingAnswer {
    /// Waits (up to [`TransportConfig::connect_timeout`]) for the remote's data channel to
    /// open. On error the peer connection is closed.
    pub async fn connect(self) -> Result<PeerChannel, TransportError> {
        let PendingAnswer {
            guard,
            signals,
            incoming,
            connect_timeout,
            max_message_size,
        } = self;
        let opened = async {
            let mut failure = signals.failure.subscribe();
            let dc = tokio::select! {
                dc = incoming => dc.map_err(|_| TransportError::Closed("no data channel".into()))?,
                reason = failure.wait_for(Option::is_some) => {
                    let reason = reason.ok().and_then(|r| r.clone()).unwrap_or_default();
                    return Err(TransportError::Closed(reason));
                }
            };
            wait_open(&dc, &signals).await?;
            Ok(dc)
        };
        let opened = tokio::time::timeout(connect_timeout, opened)
            .await
            .unwrap_or(Err(TransportError::Timeout(
                "waiting for the data channel to open",
            )));
        match opened {
            Ok(dc) => Ok(spawn_channel(guard, signals, dc, max_message_size).await),
            Err(e) => {
                guard.close().await;
                Err(e)
            }
        }
    }

    /// Gives up on this answer, closing the peer connection.
    pub async fn close(self) {
        self.guard.close().await;
    }
}

// -------------------------------------------------------------------------------------------
// The open channel

/// An open, reliable, ordered, binary data channel to one peer.
#[derive(Debug)]
pub struct PeerChannel {
    pub sender: ChannelSender,
    /// Messages from the peer, then one [`ChannelEvent::Closed`].
    pub events: mpsc::Receiver<ChannelEvent>,
    /// Where the peer's packets come from: the remote address of the selected ICE candidate
    /// pair (unlike the addresses in its SDP, not of the peer's choosing).
    pub remote_addr: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    Message(Bytes),
    Closed { reason: String },
}

/// Sends on a [`PeerChannel`]; clones share the channel.
#[derive(Clone)]
pub struct ChannelSender {
    inner: Arc<SenderInner>,
}

struct SenderInner {
    dc: Arc<dyn DataChannel>,
    /// `send(())` asks the owner task to close; all senders gone closes the channel too.
    control: mpsc::Sender<()>,
    /// True once the peer connection is closed.
    done: watch::Receiver<bool>,
    /// Serialises sends, so the buffer limit holds with any number of clones.
    send_lock: tokio::sync::Mutex<()>,
    max_message_size: usize,
}

impl fmt::Debug for ChannelSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelSender")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl ChannelSender {
    /// Sends one binary message (at most [`TransportConfig::max_message_size`] bytes). Waits
    /// while the channel's unacknowledged bytes are at or above the send-buffer limit, so at
    /// most the limit plus one message is ever buffered.
    pub async fn send(&self, message: Bytes) -> Result<(), TransportError> {
        let max = self.inner.max_message_size;
        if message.len() > max {
            return Err(TransportError::MessageTooLarge {
                size: message.len(),
                max,
            });
        }
        if self.is_closed() {
            return Err(TransportError::Closed("channel closed".into()));
        }
        let _serial = self.inner.send_lock.lock().await;
        self.inner
            .dc
            .send(BytesMut::from(message))
            .await
            .map_err(TransportError::from)
    }

    /// Bytes handed to [`send`](Self::send) that the peer has not acknowledged yet (0 once
    /// closed).
    pub async fn buffered_amount(&self) -> usize {
        self.inner.dc.outstanding_bytes().await.unwrap_or(0)
    }

    /// Whether the peer connection is closed.
    pub fn is_closed(&self) -> bool {
        *self.inner.done.borrow()
    }

    /// Closes the peer connection and returns once it is closed. Idempotent.
    pub async fn close(&self) {
        let _ = self.inner.control.try_send(());
        let mut done = self.inner.done.clone();
        let _ = done.wait_for(|closed| *closed).await;
    }
}

/// The remote address of the connection's selected ICE candidate pair.
async fn selected_remote_addr(pc: &Arc<dyn PeerConnection>) -> Option<IpAddr> {
    let ice = pc.sctp().await?.transport().ice_transport();
    let pair = ice.get_selected_candidate_pair().await.ok()??;
    pair.remote().address.parse().ok()
}

async fn spawn_channel(
    guard: PcGuard,
    signals: Arc<Signals>,
    dc: Arc<dyn DataChannel>,
    max_message_size: usize,
) -> PeerChannel {
    let remote_addr = selected_remote_addr(guard.pc()).await;
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE_CAPACITY);
    let (control_tx, control_rx) = mpsc::channel(1);
    let (done_tx, done_rx) = watch::channel(false);
    let sender = ChannelSender {
        inner: Arc::new(SenderInner {
            dc: dc.clone(),
            control: control_tx,
            done: done_rx,
            send_lock: tokio::sync::Mutex::new(()),
            max_message_size,
        }),
    };
    let runtime = guard.runtime.clone();
    runtime.spawn(run_channel(
        guard, signals, dc, events_tx, control_rx, done_tx,
    ));
    PeerChannel {
        sender,
        events: events_rx,
        remote_addr,
    }
}

/// Owns the peer connection of an open channel: forwards messages while the consumer keeps up,
/// and closes the connection when anything ends it.
async fn run_channel(
    guard: PcGuard,
    signals: Arc<Signals>,
    dc: Arc<dyn DataChannel>,
    events_tx: mpsc::Sender<ChannelEvent>,
    mut control_rx: mpsc::Receiver<()>,
    done_tx: watch::Sender<bool>,
) {
    let mut failure = signals.failure.subscribe();
    let mut senders_alive = true;
    let mut receiver_alive = true;
    // A slot in the event queue, taken before the data channel is polled: while the consumer
    // is behind, the data channel is not polled and the peer is throttled by SCTP.
    let mut slot: Option<mpsc::Permit<'_, ChannelEvent>> = None;

    let reason = loop {
        tokio::select! {
            biased;
            control = control_rx.recv(), if senders_alive => match control {
                Some(()) => break "closed locally".to_owned(),
                None => {
                    senders_alive = false;
                    if !receiver_alive {
                        break "all handles dropped".to_owned();
                    }
                }
            },
            reason = failure.wait_for(Option::is_some) => {
                break reason.ok().and_then(|r| r.clone()).unwrap_or_default();
            }
            () = events_tx.closed(), if receiver_alive => {
                receiver_alive = false;
                slot = None;
                if !senders_alive {
                    break "all handles dropped".to_owned();
                }
            }
            permit = events_tx.reserve(), if receiver_alive && slot.is_none() => match permit {
                Ok(permit) => slot = Some(permit),
                Err(_) => receiver_alive = false,
            },
            event = dc.poll(), if slot.is_some() || !receiver_alive => match event {
                Some(DataChannelEvent::OnMessage(message)) => {
                    // Without a receiver, messages are dropped.
                    if let Some(permit) = slot.take() {
                        permit.send(ChannelEvent::Message(message.data.freeze()));
                    }
                }
                Some(DataChannelEvent::OnClose) | None => break "data channel closed".to_owned(),
                _ => {}
            },
        }
    };
    drop(slot);

    guard.close().await;
    done_tx.send_replace(true);
    if receiver_alive {
        // Waits for room, but holds no connection any more.
        let _ = events_tx.send(ChannelEvent::Closed { reason }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    const TEST_TIMEOUT: Duration = Duration::from_secs(60);

    fn loopback() -> TransportConfig {
        TransportConfig {
            ice_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            ..Default::default()
        }
    }

    fn candidate_lines(sdp: &str) -> Vec<&str> {
        sdp.lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .collect()
    }

    /// The UDP ports of the SDP's candidates.
    fn candidate_ports(sdp: &str) -> Vec<u16> {
        candidate_lines(sdp)
            .iter()
            .filter_map(|l| l.split_whitespace().nth(5)?.parse().ok())
            .collect()
    }

    fn assert_loopback_only(sdp: &str) {
        let candidates = candidate_lines(sdp);
        assert!(!candidates.is_empty(), "no candidates in\n{sdp}");
        for c in candidates {
            let fields: Vec<&str> = c.split_whitespace().collect();
            assert_eq!(fields[2].to_ascii_lowercase(), "udp", "{c}");
            assert_eq!(fields[4], "127.0.0.1", "{c}");
            assert_eq!(fields[7], "host", "{c}");
        }
    }

    async fn pair(a: &TransportConfig, b: &TransportConfig) -> (PeerChannel, PeerChannel) {
        let started = Instant::now();
        let (offer, offer_sdp) = make_offer(a).await.expect("offer");
        let offered = started.elapsed();
        assert_loopback_only(&offer_sdp);
        let (answer, answer_sdp) = answer_offer(b, &offer_sdp).await.expect("answer");
        let answered = started.elapsed();
        assert_loopback_only(&answer_sdp);
        let (x, y) = tokio::join!(offer.connect(&answer_sdp), answer.connect());
        eprintln!(
            "make_offer {offered:?}, answer_offer {:?}, connect {:?}",
            answered - offered,
            started.elapsed() - answered
        );
        (x.expect("offer connect"), y.expect("answer connect"))
    }

    /// Deterministic content: message `index`, `len` bytes, starting with the index.
    fn message(index: u32, len: usize) -> Bytes {
        let mut data = Vec::with_capacity(len);
        data.extend_from_slice(&index.to_be_bytes());
        let mut x = index.wrapping_mul(2_654_435_761).wrapping_add(1);
        while data.len() < len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            data.push(x as u8);
        }
        data.truncate(len);
        Bytes::from(data)
    }

    async fn next_message(events: &mut mpsc::Receiver<ChannelEvent>) -> Bytes {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
            Ok(Some(ChannelEvent::Message(m))) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    async fn wait_closed(events: &mut mpsc::Receiver<ChannelEvent>) -> String {
        loop {
            match events.recv().await {
                Some(ChannelEvent::Closed { reason }) => return reason,
                Some(ChannelEvent::Message(_)) => {}
                None => panic!("event stream ended without Closed"),
            }
        }
    }

    /// Whether every port can be bound again, i.e. its socket was released.
    async fn ports_released(ports: &[u16]) -> bool {
        for _ in 0..100 {
            if ports
                .iter()
                .all(|p| std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, *p)).is_ok())
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transfers_4_mib_in_order() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let (a, mut b) = pair(&loopback(), &loopback()).await;
            const LEN: usize = 16_000;
            const TOTAL: usize = 4 * 1024 * 1024;
            let count = TOTAL.div_ceil(LEN) as u32;
            let started = Instant::now();
            let sender = a.sender.clone();
            let sending = tokio::spawn(async move {
                for i in 0..count {
                    sender.send(message(i, LEN)).await.expect("send");
                }
            });
            for i in 0..count {
                assert_eq!(
                    next_message(&mut b.events).await,
                    message(i, LEN),
                    "message {i}"
                );
            }
            let elapsed = started.elapsed();
            sending.await.unwrap();
            let bytes = count as usize * LEN;
            eprintln!(
                "{bytes} bytes in {elapsed:?}: {:.1} MB/s",
                bytes as f64 / elapsed.as_secs_f64() / 1e6
            );

            // The other direction, and the largest message.
            b.sender.send(message(7, MAX_MESSAGE_SIZE)).await.unwrap();
            let mut a_events = a.events;
            assert_eq!(
                next_message(&mut a_events).await,
                message(7, MAX_MESSAGE_SIZE)
            );
            assert!(matches!(
                b.sender.send(message(8, MAX_MESSAGE_SIZE + 1)).await,
                Err(TransportError::MessageTooLarge { .. })
            ));
            a.sender.close().await;
            b.sender.close().await;
        })
        .await
        .expect("test timed out");
    }

    /// A peer that ignores our `max-message-size` (its own limit raised to 256 KiB and our
    /// answer rewritten to claim the same) sends one message of exactly 64 KiB, which arrives,
    /// then one of 64 KiB + 1: our end refuses it while it arrives and the link closes, with
    /// nothing more delivered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_inbound_message_over_64_kib_closes_the_link() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let hostile = TransportConfig {
                max_message_size: 256 * 1024,
                ..loopback()
            };
            let (offer, offer_sdp) = make_offer(&hostile).await.unwrap();
            let (answer, answer_sdp) = answer_offer(&loopback(), &offer_sdp).await.unwrap();
            let advertised = format!("a=max-message-size:{MAX_MESSAGE_SIZE}");
            assert!(answer_sdp.contains(&advertised), "{answer_sdp}");
            let lie = answer_sdp.replace(&advertised, "a=max-message-size:262144");
            let (a, b) = tokio::join!(offer.connect(&lie), answer.connect());
            let (a, mut b) = (a.unwrap(), b.unwrap());
            a.sender.send(message(1, MAX_MESSAGE_SIZE)).await.unwrap();
            assert_eq!(
                next_message(&mut b.events).await,
                message(1, MAX_MESSAGE_SIZE)
            );
            a.sender
                .send(message(2, MAX_MESSAGE_SIZE + 1))
                .await
                .unwrap();
            let event = tokio::time::timeout(Duration::from_secs(20), b.events.recv())
                .await
                .expect("the link stayed open");
            assert!(
                matches!(event, Some(ChannelEvent::Closed { .. })),
                "{event:?}"
            );
            a.sender.close().await;
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn send_waits_at_buffer_limit() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            const LIMIT: usize = 64 * 1024;
            const LEN: usize = 16_000;
            const COUNT: u32 = 800; // 12.8 MB: more than the receiving side can hold
            let sending_config = TransportConfig {
                send_buffer_limit: LIMIT,
                ..loopback()
            };
            let (a, mut b) = pair(&sending_config, &loopback()).await;

            let sent = Arc::new(AtomicUsize::new(0));
            let max_buffered = Arc::new(AtomicUsize::new(0));
            let sender = a.sender.clone();
            let (s, m) = (sent.clone(), max_buffered.clone());
            let sending = tokio::spawn(async move {
                for i in 0..COUNT {
                    sender.send(message(i, LEN)).await.expect("send");
                    s.fetch_add(1, Ordering::SeqCst);
                    m.fetch_max(sender.buffered_amount().await, Ordering::SeqCst);
                }
            });
            let sampler = a.sender.clone();
            let m = max_buffered.clone();
            let sampling = tokio::spawn(async move {
                while !sampler.is_closed() {
                    m.fetch_max(sampler.buffered_amount().await, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });

            // The receiver does not read for a while: the sender must stall.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let stalled_at = sent.load(Ordering::SeqCst);
            eprintln!(
                "sender stalled after {stalled_at} of {COUNT} messages ({} bytes), \
                 buffered {} bytes",
                stalled_at * LEN,
                a.sender.buffered_amount().await
            );
            assert!(stalled_at < COUNT as usize, "send never waited");
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                sent.load(Ordering::SeqCst),
                stalled_at,
                "sender not stalled"
            );

            for i in 0..COUNT {
                assert_eq!(
                    next_message(&mut b.events).await,
                    message(i, LEN),
                    "message {i}"
                );
            }
            sending.await.unwrap();
            let max = max_buffered.load(Ordering::SeqCst);
            eprintln!("max buffered {max} bytes (limit {LIMIT} + message {LEN})");
            assert!(max <= LIMIT + LEN, "buffered {max} bytes");
            a.sender.close().await;
            sampling.await.unwrap();
            b.sender.close().await;
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_one_side_closes_the_other() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let (mut a, mut b) = pair(&loopback(), &loopback()).await;
            a.sender.send(message(1, 100)).await.unwrap();
            let started = Instant::now();
            a.sender.close().await;
            assert!(a.sender.is_closed());
            a.sender.close().await; // idempotent
            assert_eq!(wait_closed(&mut a.events).await, "closed locally");
            assert!(matches!(
                a.sender.send(message(2, 100)).await,
                Err(TransportError::Closed(_))
            ));
            let reason = tokio::time::timeout(Duration::from_secs(10), wait_closed(&mut b.events))
                .await
                .expect("remote close not noticed");
            eprintln!(
                "remote noticed the close after {:?}: {reason}",
                started.elapsed()
            );
            assert!(b.sender.is_closed());
            assert!(b.events.recv().await.is_none());
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_every_handle_closes_the_connection() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let (offer, offer_sdp) = make_offer(&loopback()).await.unwrap();
            let (answer, answer_sdp) = answer_offer(&loopback(), &offer_sdp).await.unwrap();
            let (a, b) = tokio::join!(offer.connect(&answer_sdp), answer.connect());
            let (a, mut b) = (a.unwrap(), b.unwrap());
            // Senders dropped, receiver kept: still open, messages still arrive.
            let a_sender = a.sender.clone();
            drop(a.sender);
            a_sender.send(message(1, 10)).await.unwrap();
            assert_eq!(next_message(&mut b.events).await, message(1, 10));
            drop(a_sender);
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!b.sender.is_closed());
            drop(a.events);
            let reason = tokio::time::timeout(Duration::from_secs(10), wait_closed(&mut b.events))
                .await
                .expect("remote close not noticed");
            eprintln!("remote closed: {reason}");
            assert!(
                ports_released(&candidate_ports(&offer_sdp)).await,
                "offer socket leaked"
            );
            drop(b);
            assert!(
                ports_released(&candidate_ports(&answer_sdp)).await,
                "answer socket leaked"
            );
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_pending_offer_releases_its_socket() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let started = Instant::now();
            let (offer, sdp) = make_offer(&loopback()).await.unwrap();
            eprintln!("make_offer took {:?}", started.elapsed());
            let ports = candidate_ports(&sdp);
            assert!(!ports.is_empty());
            // Bound by the pending offer while it lives.
            assert!(std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, ports[0])).is_err());
            drop(offer);
            assert!(ports_released(&ports).await, "socket leaked");
        })
        .await
        .expect("test timed out");
    }

    /// No address configured: every interface but loopback. Gathering only binds sockets; with
    /// no remote description nothing is sent anywhere.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn all_interfaces_excludes_loopback_and_wildcards() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let (offer, sdp) = make_offer(&TransportConfig::default()).await.unwrap();
            let candidates = candidate_lines(&sdp);
            eprintln!("all-interface candidates: {candidates:#?}");
            for c in candidates {
                let fields: Vec<&str> = c.split_whitespace().collect();
                let ip: IpAddr = fields[4].parse().expect("candidate address");
                assert!(!ip.is_loopback() && !ip.is_unspecified(), "{c}");
                assert_eq!(fields[2].to_ascii_lowercase(), "udp", "{c}");
                assert_eq!(fields[7], "host", "{c}");
            }
            offer.close().await;
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_sdp_is_an_error() {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let config = TransportConfig {
                connect_timeout: Duration::from_secs(2),
                ..loopback()
            };
            let (offer, sdp) = make_offer(&config).await.unwrap();
            let ports = candidate_ports(&sdp);
            let err = offer.connect("this is not SDP").await.unwrap_err();
            eprintln!("garbage answer: {err}");
            assert!(matches!(err, TransportError::InvalidSdp(_)), "{err:?}");
            assert!(ports_released(&ports).await, "socket leaked");

            // Well-formed SDP, but no usable session.
            let (offer, _) = make_offer(&config).await.unwrap();
            let minimal = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
            let err = offer.connect(minimal).await.unwrap_err();
            eprintln!("empty answer: {err}");

            // An offer as the answer.
            let (offer, sdp) = make_offer(&config).await.unwrap();
            let err = offer.connect(&sdp).await.unwrap_err();
            eprintln!("own offer as answer: {err}");

            let err = answer_offer(&config, "garbage").await.unwrap_err();
            assert!(matches!(err, TransportError::InvalidSdp(_)), "{err:?}");
            let err = answer_offer(&config, minimal).await.unwrap_err();
            eprintln!("empty offer: {err}");
        })
        .await
        .expect("test timed out");
    }

    #[test]
    fn parses_turn_servers() {
        let t = parse_turn_server("turn://user:pass@turn.example.org:3479").unwrap();
        assert_eq!(t.url, "turn:turn.example.org:3479?transport=udp");
        assert_eq!(
            (t.username.as_str(), t.credential.as_str()),
            ("user", "pass")
        );

        let t = parse_turn_server("turn://us%40er:p%3Ass%2F@turn.example.org").unwrap();
        assert_eq!(t.url, "turn:turn.example.org:3478?transport=udp");
        assert_eq!(
            (t.username.as_str(), t.credential.as_str()),
            ("us@er", "p:ss/")
        );

        let t = parse_turn_server("turns://u:p@turn.example.org").unwrap();
        assert_eq!(t.url, "turns:turn.example.org:5349?transport=tcp");

        let t = parse_turn_server("turn://u:p@192.0.2.1:3478/?transport=tcp").unwrap();
        assert_eq!(t.url, "turn:192.0.2.1:3478?transport=tcp");

        let t = parse_turn_server("turn://u:p@[2001:db8::1]:3478").unwrap();
        assert_eq!(t.url, "turn:[2001:db8::1]:3478?transport=udp");

        assert!(!format!("{t:?}").contains("credential: \"p\""));

        for bad in [
            "",
            "turn.example.org:3478",
            "stun://u:p@turn.example.org",
            "turn://turn.example.org",
            "turn://user@turn.example.org",
            "turn://:pass@turn.example.org",
            "turn://u:p@",
            "turn://u:p@turn.example.org/path",
            "turn://u:p@turn.example.org?transport=sctp",
            "turn://u:p@turn.example.org:99999",
        ] {
            assert!(
                matches!(
                    parse_turn_server(bad),
                    Err(TransportError::InvalidTurnServer(_))
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn turn_urls_are_accepted_by_the_ice_layer() {
        let t = parse_turn_server("turn://u:p@[2001:db8::1]:3478").unwrap();
        let server = RTCIceServer {
            urls: vec![t.url],
            username: t.username,
            credential: t.credential,
        };
        assert_eq!(server.urls().unwrap()[0].host, "2001:db8::1");
        let t = parse_turn_server("turns://u:p@turn.example.org").unwrap();
        let server = RTCIceServer {
            urls: vec![
                t.url,
                sanitize_stun_url("stun:stun.example.org:3478?transport=udp"),
            ],
            username: t.username,
            credential: t.credential,
        };
        assert_eq!(server.urls().unwrap().len(), 2);
    }

    #[test]
    fn strips_unspecified_candidates() {
        let sdp = "v=0\r\n\
                   a=candidate:1 1 udp 2130706431 0.0.0.0 5000 typ host\r\n\
                   a=candidate:2 1 udp 2130706431 :: 5001 typ host\r\n\
                   a=candidate:3 1 udp 2130706431 192.0.2.1 5002 typ host\r\n\
                   a=end-of-candidates\r\n";
        assert_eq!(
            strip_unusable_candidates(sdp),
            "v=0\r\na=candidate:3 1 udp 2130706431 192.0.2.1 5002 typ host\r\n\
             a=end-of-candidates\r\n"
        );
    }
}

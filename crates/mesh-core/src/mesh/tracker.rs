//! A sans-IO WebTorrent tracker client; the messages are `mesh_proto::tracker`'s.
//!
//! [`TrackerClient`] drives one tracker connection for any number of swarms: inputs (connection
//! events, text messages, ticks, local offers and answers) go in with the current time, and
//! what to do comes out.

pub use mesh_proto::tracker::*;

use super::Time;
use super::swarm::{InfoHash, OfferId, PeerId};
use rand::RngExt;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Client

#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    /// Offers asked for per announce, at most [`MAX_OFFERS_PER_ANNOUNCE`].
    pub offers_per_announce: usize,
    /// Announce interval until the tracker gives one.
    pub default_interval: Duration,
    /// Floor on the tracker's interval.
    pub min_interval: Duration,
    /// An offer with no answer after this long is dropped (bittorrent-tracker's client: 50 s).
    pub offer_timeout: Duration,
    /// How long to wait for requested offers before announcing without them.
    pub offer_gathering_timeout: Duration,
    /// First reconnection delay; it doubles with each failure up to `reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Shorten each reconnection delay by a random 0–25 %, so clients spread out.
    pub reconnect_jitter: bool,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            offers_per_announce: 5,
            default_interval: Duration::from_secs(120),
            min_interval: Duration::from_secs(10),
            offer_timeout: Duration::from_secs(50),
            offer_gathering_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            reconnect_jitter: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TrackerInput {
    /// The WebSocket is open.
    Connected,
    /// The WebSocket closed, or opening it failed.
    Disconnected { reason: String },
    /// A text frame from the tracker.
    Message(String),
    /// Time passed; call at [`TrackerClient::next_wakeup`] at the latest.
    Tick,
    /// Take part in a swarm.
    Join(InfoHash),
    /// Leave a swarm (announces `stopped`).
    Leave(InfoHash),
    /// Announce now with fresh offers, e.g. when more peers are wanted.
    Announce(InfoHash),
    /// Offers made after [`TrackerOutput::NeedOffers`] (any number, even none), or unasked for.
    OffersReady {
        info_hash: InfoHash,
        offers: Vec<LocalOffer>,
    },
    /// The answer to a [`TrackerOutput::RemoteOffer`].
    AnswerReady {
        info_hash: InfoHash,
        to_peer_id: PeerId,
        offer_id: OfferId,
        sdp: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum TrackerOutput {
    /// Send this text frame.
    Send(String),
    /// Make one WebRTC offer per id (non-trickle: wait for ICE gathering, with a cap) and give
    /// them back with [`TrackerInput::OffersReady`].
    NeedOffers {
        info_hash: InfoHash,
        offer_ids: Vec<OfferId>,
    },
    /// A peer's offer: answer it with [`TrackerInput::AnswerReady`], echoing `offer_id`.
    RemoteOffer {
        info_hash: InfoHash,
        remote: RemoteSdp,
    },
    /// The answer to one of our offers.
    RemoteAnswer {
        info_hash: InfoHash,
        remote: RemoteSdp,
    },
    /// This offer will get no answer (it expired, did not fit in an announce, or the connection
    /// went): close its peer connection.
    DropOffer {
        info_hash: InfoHash,
        offer_id: OfferId,
    },
    /// This answer could not be sent: close its peer connection.
    AnswerNotSent {
        info_hash: InfoHash,
        to_peer_id: PeerId,
        offer_id: OfferId,
    },
    /// Swarm counts from an announce response.
    SwarmStats {
        info_hash: InfoHash,
        complete: Option<u64>,
        incomplete: Option<u64>,
    },
    /// Something the user should hear about; never fatal. `kind` groups warnings for rate
    /// limiting.
    Warning { kind: WarningKind, text: String },
    /// Open the connection again at this time, then report [`TrackerInput::Connected`] or
    /// [`TrackerInput::Disconnected`].
    Reconnect { at: Time },
}

/// What a [`TrackerOutput::Warning`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WarningKind {
    /// The tracker cannot be reached or the connection was lost.
    Outage,
    /// A message that is not a valid tracker message.
    InvalidMessage,
    /// The tracker's `failure reason`.
    Failure,
    /// The tracker's `warning message`.
    TrackerWarning,
    /// Our answer would not fit in a message.
    AnswerTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Link {
    /// Not connected; the driver is opening the connection (at start) or will at `reconnect_at`.
    Down { reconnect_at: Option<Time> },
    /// Connected; `confirmed` once a valid message arrived.
    Up { confirmed: bool },
}

#[derive(Debug)]
struct SwarmState {
    /// `started` went out on this connection.
    started: bool,
    interval: Duration,
    last_announce: Option<Time>,
    /// Offers were asked for at this time and have not come back.
    gathering_since: Option<Time>,
    /// Our offers awaiting an answer, with their expiry.
    pending: HashMap<OfferId, Time>,
}

impl SwarmState {
    fn new(interval: Duration) -> Self {
        SwarmState {
            started: false,
            interval,
            last_announce: None,
            gathering_since: None,
            pending: HashMap::new(),
        }
    }

    fn next_announce(&self) -> Option<Time> {
        self.last_announce.map(|t| t + self.interval)
    }
}

/// The sans-IO client of one tracker connection. Every swarm on it uses the same peer id; a
/// new peer id is drawn for each new connection, since aquatic_ws ignores announces for a
/// peer id that an older connection (perhaps not yet seen as closed) still holds.
///
/// The driver opens the connection at start and whenever [`TrackerOutput::Reconnect`] says,
/// and reports the outcome.
#[derive(Debug)]
pub struct TrackerClient {
    config: TrackerConfig,
    peer_id: PeerId,
    link: Link,
    /// Consecutive connection failures since the last confirmed connection.
    failures: u32,
    /// A warning about this outage went out.
    warned: bool,
    swarms: BTreeMap<InfoHash, SwarmState>,
}

impl TrackerClient {
    pub fn new(mut config: TrackerConfig) -> Self {
        config.offers_per_announce = config.offers_per_announce.min(MAX_OFFERS_PER_ANNOUNCE);
        TrackerClient {
            config,
            peer_id: PeerId::random(),
            link: Link::Down { reconnect_at: None },
            failures: 0,
            warned: false,
            swarms: BTreeMap::new(),
        }
    }

    /// The peer id of the current (or next) connection.
    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// The swarms joined.
    pub fn swarms(&self) -> impl Iterator<Item = &InfoHash> {
        self.swarms.keys()
    }

    /// When [`TrackerInput::Tick`] is next needed (or the reconnection is due).
    pub fn next_wakeup(&self) -> Option<Time> {
        match self.link {
            Link::Down { reconnect_at } => reconnect_at,
            Link::Up { .. } => self
                .swarms
                .values()
                .flat_map(|s| {
                    let timer = match s.gathering_since {
                        Some(since) => Some(since + self.config.offer_gathering_timeout),
                        None => s.next_announce(),
                    };
                    s.pending.values().copied().chain(timer)
                })
                .min(),
        }
    }

    pub fn handle(&mut self, now: Time, input: TrackerInput) -> Vec<TrackerOutput> {
        let mut out = Vec::new();
        match input {
            TrackerInput::Connected => self.on_connected(now, &mut out),
            TrackerInput::Disconnected { reason } => self.on_disconnected(now, &reason, &mut out),
            TrackerInput::Message(text) => self.on_message(&text, &mut out),
            TrackerInput::Tick => self.on_tick(now, &mut out),
            TrackerInput::Join(info_hash) => {
                if !self.swarms.contains_key(&info_hash) {
                    let state = SwarmState::new(self.config.default_interval);
                    self.swarms.insert(info_hash.clone(), state);
                    if self.is_connected() {
                        self.request_offers(now, &info_hash, &mut out);
                    }
                }
            }
            TrackerInput::Leave(info_hash) => {
                if let Some(state) = self.swarms.remove(&info_hash) {
                    if self.is_connected() && state.started {
                        let stopped = encode_announce(
                            &info_hash,
                            &self.peer_id,
                            Some(AnnounceEvent::Stopped),
                            &[],
                        );
                        out.push(TrackerOutput::Send(stopped.text));
                    }
                    drop_pending(&info_hash, state.pending.into_keys(), &mut out);
                }
            }
            TrackerInput::Announce(info_hash) => {
                let gathering = self.swarms.get(&info_hash).map(|s| s.gathering_since);
                if self.is_connected() && gathering == Some(None) {
                    self.request_offers(now, &info_hash, &mut out);
                }
            }
            TrackerInput::OffersReady { info_hash, offers } => {
                self.on_offers(now, info_hash, offers, &mut out)
            }
            TrackerInput::AnswerReady {
                info_hash,
                to_peer_id,
                offer_id,
                sdp,
            } => {
                if self.is_connected() && self.swarms.contains_key(&info_hash) {
                    match encode_answer(&info_hash, &self.peer_id, &to_peer_id, &offer_id, &sdp) {
                        Some(text) => {
                            out.push(TrackerOutput::Send(text));
                            return out;
                        }
                        None => out.push(TrackerOutput::Warning {
                            kind: WarningKind::AnswerTooLarge,
                            text: format!(
                                "tracker: answer of {} bytes exceeds the {} KiB message limit",
                                sdp.len(),
                                MAX_MESSAGE_BYTES / 1024
                            ),
                        }),
                    }
                }
                out.push(TrackerOutput::AnswerNotSent {
                    info_hash,
                    to_peer_id,
                    offer_id,
                });
            }
        }
        out
    }

    fn on_connected(&mut self, now: Time, out: &mut Vec<TrackerOutput>) {
        self.link = Link::Up { confirmed: false };
        self.peer_id = PeerId::random();
        let swarms: Vec<InfoHash> = self.swarms.keys().cloned().collect();
        for info_hash in swarms {
            let state = self.swarms.get_mut(&info_hash).expect("swarm exists");
            state.started = false;
            state.gathering_since = None;
            self.request_offers(now, &info_hash, out);
        }
    }

    fn on_disconnected(&mut self, now: Time, reason: &str, out: &mut Vec<TrackerOutput>) {
        let was_up = self.is_connected();
        let delay = self.backoff(self.failures);
        self.failures = self.failures.saturating_add(1);
        let at = now + delay;
        self.link = Link::Down {
            reconnect_at: Some(at),
        };
        for (info_hash, state) in &mut self.swarms {
            state.started = false;
            state.gathering_since = None;
            state.last_announce = None;
            drop_pending(info_hash, state.pending.drain().map(|(id, _)| id), out);
        }
        if !self.warned {
            self.warned = true;
            let what = if was_up {
                "tracker connection lost"
            } else {
                "tracker unreachable"
            };
            out.push(TrackerOutput::Warning {
                kind: WarningKind::Outage,
                text: format!(
                    "{what} ({}); peers already connected stay, retrying in {:.1} s",
                    clip(reason),
                    delay.as_secs_f64()
                ),
            });
        }
        out.push(TrackerOutput::Reconnect { at });
    }

    /// Delay before reconnection attempt `failures` (0-based): `reconnect_min · 2^failures`,
    /// capped at `reconnect_max`, less up to 25 % of jitter.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.min(20);
        let delay = self
            .config
            .reconnect_min
            .saturating_mul(factor)
            .min(self.config.reconnect_max);
        if self.config.reconnect_jitter {
            delay.mul_f64(1.0 - rand::rng().random_range(0.0..0.25))
        } else {
            delay
        }
    }

    fn on_message(&mut self, text: &str, out: &mut Vec<TrackerOutput>) {
        let message = match parse_message(text) {
            Ok(message) => message,
            Err(error) => {
                out.push(TrackerOutput::Warning {
                    kind: WarningKind::InvalidMessage,
                    text: clip(&format!("tracker: {error}")),
                });
                return;
            }
        };
        if let Link::Up { confirmed } = &mut self.link
            && !*confirmed
        {
            *confirmed = true;
            self.failures = 0;
            self.warned = false;
        }
        if message.not_announce {
            return;
        }
        if let Some(reason) = message.failure_reason {
            let reason = clip(&reason);
            out.push(TrackerOutput::Warning {
                kind: WarningKind::Failure,
                text: match &message.info_hash {
                    Some(info_hash) => format!("tracker failure for swarm {info_hash}: {reason}"),
                    None => format!("tracker failure: {reason}"),
                },
            });
            return;
        }
        if let Some(warning) = message.warning_message {
            out.push(TrackerOutput::Warning {
                kind: WarningKind::TrackerWarning,
                text: format!("tracker warning: {}", clip(&warning)),
            });
        }
        let Some(info_hash) = message.info_hash else {
            return;
        };
        let Some(state) = self.swarms.get_mut(&info_hash) else {
            return;
        };
        if let Some(interval) = message.interval {
            state.interval = interval.max(self.config.min_interval);
        }
        if message.complete.is_some() || message.incomplete.is_some() {
            out.push(TrackerOutput::SwarmStats {
                info_hash: info_hash.clone(),
                complete: message.complete,
                incomplete: message.incomplete,
            });
        }
        if let Some(remote) = message.offer
            && remote.peer_id != self.peer_id
        {
            out.push(TrackerOutput::RemoteOffer {
                info_hash: info_hash.clone(),
                remote,
            });
        }
        if let Some(remote) = message.answer
            && remote.peer_id != self.peer_id
            && state.pending.remove(&remote.offer_id).is_some()
        {
            out.push(TrackerOutput::RemoteAnswer { info_hash, remote });
        }
    }

    fn on_tick(&mut self, now: Time, out: &mut Vec<TrackerOutput>) {
        if !self.is_connected() {
            return;
        }
        let mut due = Vec::new();
        let mut give_up = Vec::new();
        for (info_hash, state) in &mut self.swarms {
            let mut expired: Vec<OfferId> = state
                .pending
                .iter()
                .filter(|(_, expiry)| **expiry <= now)
                .map(|(id, _)| id.clone())
                .collect();
            expired.sort();
            for id in &expired {
                state.pending.remove(id);
            }
            drop_pending(info_hash, expired.into_iter(), out);
            match state.gathering_since {
                Some(since) if now >= since + self.config.offer_gathering_timeout => {
                    give_up.push(info_hash.clone())
                }
                None if state.next_announce().is_some_and(|t| now >= t) => {
                    due.push(info_hash.clone())
                }
                _ => {}
            }
        }
        for info_hash in give_up {
            self.announce(now, &info_hash, Vec::new(), out);
        }
        for info_hash in due {
            self.request_offers(now, &info_hash, out);
        }
    }

    /// Asks for offers, or announces at once when none are wanted.
    fn request_offers(&mut self, now: Time, info_hash: &InfoHash, out: &mut Vec<TrackerOutput>) {
        let count = self.config.offers_per_announce;
        if count == 0 {
            self.announce(now, info_hash, Vec::new(), out);
            return;
        }
        if let Some(state) = self.swarms.get_mut(info_hash) {
            state.gathering_since = Some(now);
            out.push(TrackerOutput::NeedOffers {
                info_hash: info_hash.clone(),
                offer_ids: (0..count).map(|_| OfferId::random()).collect(),
            });
        }
    }

    fn on_offers(
        &mut self,
        now: Time,
        info_hash: InfoHash,
        offers: Vec<LocalOffer>,
        out: &mut Vec<TrackerOutput>,
    ) {
        if !self.is_connected() || !self.swarms.contains_key(&info_hash) {
            drop_pending(&info_hash, offers.into_iter().map(|o| o.offer_id), out);
            return;
        }
        self.announce(now, &info_hash, offers, out);
    }

    /// Sends an announce with as many of `offers` as fit; the rest are dropped.
    fn announce(
        &mut self,
        now: Time,
        info_hash: &InfoHash,
        offers: Vec<LocalOffer>,
        out: &mut Vec<TrackerOutput>,
    ) {
        let Some(state) = self.swarms.get_mut(info_hash) else {
            return;
        };
        let event = (!state.started).then_some(AnnounceEvent::Started);
        let encoded = encode_announce(info_hash, &self.peer_id, event, &offers);
        out.push(TrackerOutput::Send(encoded.text));
        state.started = true;
        state.gathering_since = None;
        state.last_announce = Some(now);
        let mut included = encoded.included.into_iter().peekable();
        let mut dropped = Vec::new();
        for (index, offer) in offers.into_iter().enumerate() {
            if included.next_if_eq(&index).is_some() {
                state
                    .pending
                    .insert(offer.offer_id, now + self.config.offer_timeout);
            } else {
                dropped.push(offer.offer_id);
            }
        }
        drop_pending(info_hash, dropped.into_iter(), out);
    }
}

/// Characters of tracker-supplied text kept in a warning.
pub const MAX_WARNING_TEXT: usize = 300;

/// `text`, cut to [`MAX_WARNING_TEXT`] characters.
fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_WARNING_TEXT) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn drop_pending(
    info_hash: &InfoHash,
    offer_ids: impl Iterator<Item = OfferId>,
    out: &mut Vec<TrackerOutput>,
) {
    let mut ids: Vec<OfferId> = offer_ids.collect();
    ids.sort();
    out.extend(ids.into_iter().map(|offer_id| TrackerOutput::DropOffer {
        info_hash: info_hash.clone(),
        offer_id,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const SDP_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n";
    const SDP_ANSWER: &str = "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50001 typ host\r\n";

    fn info_hash(s: &str) -> InfoHash {
        InfoHash::parse(s).unwrap()
    }

    fn peer(s: &str) -> PeerId {
        PeerId::parse(s).unwrap()
    }

    fn offer_id(s: &str) -> OfferId {
        OfferId::parse(s).unwrap()
    }

    fn secs(s: u64) -> Time {
        Duration::from_secs(s)
    }

    fn config() -> TrackerConfig {
        TrackerConfig {
            offers_per_announce: 2,
            reconnect_jitter: false,
            ..TrackerConfig::default()
        }
    }

    const SWARM: &str = "e93f02264a9448c5b150";
    const OTHER: &str = "0123456789abcdef0123";
    const REMOTE: &str = "-PM0203-Ab3dE5gH7jK9";

    fn sent(outputs: &[TrackerOutput]) -> Vec<Value> {
        outputs
            .iter()
            .filter_map(|o| match o {
                TrackerOutput::Send(text) => {
                    assert!(text.len() < MAX_MESSAGE_BYTES);
                    Some(serde_json::from_str(text).unwrap())
                }
                _ => None,
            })
            .collect()
    }

    fn need_offers(outputs: &[TrackerOutput]) -> Vec<OfferId> {
        outputs
            .iter()
            .find_map(|o| match o {
                TrackerOutput::NeedOffers { offer_ids, .. } => Some(offer_ids.clone()),
                _ => None,
            })
            .expect("NeedOffers")
    }

    fn offers(ids: &[OfferId], sdp: &str) -> Vec<LocalOffer> {
        ids.iter()
            .map(|id| LocalOffer {
                offer_id: id.clone(),
                sdp: sdp.into(),
            })
            .collect()
    }

    /// A connected client in swarm SWARM that announced two offers at t=0; returns their ids.
    fn announced() -> (TrackerClient, Vec<OfferId>) {
        let mut client = TrackerClient::new(config());
        client.handle(secs(0), TrackerInput::Join(info_hash(SWARM)));
        let out = client.handle(secs(0), TrackerInput::Connected);
        let ids = need_offers(&out);
        let out = client.handle(
            secs(0),
            TrackerInput::OffersReady {
                info_hash: info_hash(SWARM),
                offers: offers(&ids, SDP_OFFER),
            },
        );
        assert_eq!(sent(&out).len(), 1);
        (client, ids)
    }

    #[test]
    fn announce_encoding_is_exact() {
        let encoded = encode_announce(
            &info_hash(SWARM),
            &peer("-GM0001-aaaaBBBB1234"),
            Some(AnnounceEvent::Started),
            &[LocalOffer {
                offer_id: offer_id("OfferOfferOffer00001"),
                sdp: "v=0\r\na=x\r\n".into(),
            }],
        );
        assert_eq!(
            encoded.text,
            r#"{"action":"announce","info_hash":"e93f02264a9448c5b150","peer_id":"-GM0001-aaaaBBBB1234","numwant":1,"uploaded":0,"downloaded":0,"event":"started","offers":[{"offer_id":"OfferOfferOffer00001","offer":{"type":"offer","sdp":"v=0\r\na=x\r\n"}}]}"#
        );
        assert_eq!(encoded.included, vec![0]);
        let update = encode_announce(&info_hash(SWARM), &peer("-GM0001-aaaaBBBB1234"), None, &[]);
        assert_eq!(
            update.text,
            r#"{"action":"announce","info_hash":"e93f02264a9448c5b150","peer_id":"-GM0001-aaaaBBBB1234","numwant":0,"uploaded":0,"downloaded":0}"#
        );
    }

    #[test]
    fn join_and_connect_announce_started_with_offers() {
        let mut client = TrackerClient::new(config());
        assert_eq!(
            client.handle(secs(0), TrackerInput::Join(info_hash(SWARM))),
            vec![]
        );
        let out = client.handle(secs(1), TrackerInput::Connected);
        let ids = need_offers(&out);
        assert_eq!(ids.len(), 2);
        assert_eq!(client.next_wakeup(), Some(secs(11)));
        let out = client.handle(
            secs(2),
            TrackerInput::OffersReady {
                info_hash: info_hash(SWARM),
                offers: offers(&ids, SDP_OFFER),
            },
        );
        let me = client.peer_id().as_str().to_owned();
        assert_eq!(
            sent(&out),
            vec![json!({
                "action": "announce", "info_hash": SWARM, "peer_id": me, "numwant": 2,
                "uploaded": 0, "downloaded": 0, "event": "started",
                "offers": [
                    {"offer_id": ids[0].as_str(), "offer": {"type": "offer", "sdp": SDP_OFFER}},
                    {"offer_id": ids[1].as_str(), "offer": {"type": "offer", "sdp": SDP_OFFER}},
                ]
            })]
        );
        // Next: the offers expire at 2 + 50 s, the re-announce is due at 2 + 120 s.
        assert_eq!(client.next_wakeup(), Some(secs(52)));
    }

    #[test]
    fn one_peer_id_for_all_swarms_and_a_new_one_per_connection() {
        let mut client = TrackerClient::new(config());
        client.handle(secs(0), TrackerInput::Join(info_hash(SWARM)));
        client.handle(secs(0), TrackerInput::Join(info_hash(OTHER)));
        let out = client.handle(secs(0), TrackerInput::Connected);
        let first_peer_id = client.peer_id().clone();
        let mut peer_ids = Vec::new();
        for o in out {
            if let TrackerOutput::NeedOffers { info_hash, .. } = o {
                let out = client.handle(
                    secs(0),
                    TrackerInput::OffersReady {
                        info_hash,
                        offers: vec![],
                    },
                );
                peer_ids.extend(sent(&out).into_iter().map(|m| m["peer_id"].clone()));
            }
        }
        assert_eq!(peer_ids, vec![json!(first_peer_id.as_str()); 2]);
        client.handle(
            secs(1),
            TrackerInput::Disconnected {
                reason: "closed".into(),
            },
        );
        client.handle(secs(2), TrackerInput::Connected);
        assert_ne!(client.peer_id(), &first_peer_id);
    }

    #[test]
    fn relayed_offer_is_answered_with_ids_echoed() {
        let (mut client, _) = announced();
        // As aquatic_ws relays it; the offer_id has Latin-1 characters, as bittorrent-tracker
        // clients make them.
        let remote_offer_id = "\u{0}\u{ff}\u{e9}OfferFromRemote12";
        let relayed = json!({
            "action": "announce", "peer_id": REMOTE, "info_hash": SWARM,
            "offer": {"type": "offer", "sdp": SDP_OFFER}, "offer_id": remote_offer_id,
        })
        .to_string();
        let out = client.handle(secs(3), TrackerInput::Message(relayed));
        let expected_remote = RemoteSdp {
            peer_id: peer(REMOTE),
            offer_id: offer_id(remote_offer_id),
            sdp: SDP_OFFER.into(),
        };
        assert_eq!(
            out,
            vec![TrackerOutput::RemoteOffer {
                info_hash: info_hash(SWARM),
                remote: expected_remote.clone(),
            }]
        );
        let out = client.handle(
            secs(4),
            TrackerInput::AnswerReady {
                info_hash: info_hash(SWARM),
                to_peer_id: expected_remote.peer_id,
                offer_id: expected_remote.offer_id,
                sdp: SDP_ANSWER.into(),
            },
        );
        assert_eq!(
            sent(&out),
            vec![json!({
                "action": "announce", "info_hash": SWARM, "peer_id": client.peer_id().as_str(),
                "to_peer_id": REMOTE, "offer_id": remote_offer_id,
                "answer": {"type": "answer", "sdp": SDP_ANSWER},
            })]
        );
        // The echo is exact: the raw text holds the same characters.
        let TrackerOutput::Send(text) = &out[0] else {
            panic!()
        };
        assert!(text.contains(r#""offer_id":"\u0000ÿéOfferFromRemote12""#));
    }

    #[test]
    fn answers_match_our_offers_only() {
        let (mut client, ids) = announced();
        let answer = |offer: &str, swarm: &str| {
            json!({
                "action": "announce", "peer_id": REMOTE, "info_hash": swarm,
                "answer": {"type": "answer", "sdp": SDP_ANSWER}, "offer_id": offer,
            })
            .to_string()
        };
        // Unknown offer id: ignored.
        let out = client.handle(
            secs(5),
            TrackerInput::Message(answer("UnknownOfferId000000", SWARM)),
        );
        assert_eq!(out, vec![]);
        // Our offer id but another swarm: ignored.
        let out = client.handle(
            secs(5),
            TrackerInput::Message(answer(ids[0].as_str(), OTHER)),
        );
        assert_eq!(out, vec![]);
        // Ours: delivered once.
        let out = client.handle(
            secs(5),
            TrackerInput::Message(answer(ids[0].as_str(), SWARM)),
        );
        assert_eq!(
            out,
            vec![TrackerOutput::RemoteAnswer {
                info_hash: info_hash(SWARM),
                remote: RemoteSdp {
                    peer_id: peer(REMOTE),
                    offer_id: ids[0].clone(),
                    sdp: SDP_ANSWER.into(),
                },
            }]
        );
        let out = client.handle(
            secs(6),
            TrackerInput::Message(answer(ids[0].as_str(), SWARM)),
        );
        assert_eq!(out, vec![]);
        // Our own offers and answers relayed back to us are ignored.
        let me = client.peer_id().as_str().to_owned();
        let own = json!({
            "action": "announce", "peer_id": me, "info_hash": SWARM,
            "answer": {"type": "answer", "sdp": SDP_ANSWER}, "offer_id": ids[1].as_str(),
        });
        assert_eq!(
            client.handle(secs(6), TrackerInput::Message(own.to_string())),
            vec![]
        );
        // The other offer expires 50 s after the announce.
        assert_eq!(client.handle(secs(49), TrackerInput::Tick), vec![]);
        assert_eq!(
            client.handle(secs(50), TrackerInput::Tick),
            vec![TrackerOutput::DropOffer {
                info_hash: info_hash(SWARM),
                offer_id: ids[1].clone(),
            }]
        );
        let late = answer(ids[1].as_str(), SWARM);
        assert_eq!(client.handle(secs(51), TrackerInput::Message(late)), vec![]);
    }

    #[test]
    fn failure_reason_and_warning_message_become_warnings() {
        let (mut client, _) = announced();
        // bittorrent-tracker, on a request it cannot parse.
        let out = client.handle(
            secs(1),
            TrackerInput::Message(r#"{"failure reason":"invalid info_hash"}"#.into()),
        );
        assert_eq!(
            out,
            vec![TrackerOutput::Warning {
                kind: WarningKind::Failure,
                text: "tracker failure: invalid info_hash".into()
            }]
        );
        // aquatic_ws, on an answer to an offer it no longer knows.
        let msg = json!({
            "failure reason": "Could not find the offer corresponding to your answer. It may have expired.",
            "action": "announce", "info_hash": SWARM,
        });
        let out = client.handle(secs(1), TrackerInput::Message(msg.to_string()));
        assert_eq!(
            out,
            vec![TrackerOutput::Warning {
                kind: WarningKind::Failure,
                text: format!(
                    "tracker failure for swarm {SWARM}: Could not find the offer corresponding \
                     to your answer. It may have expired."
                )
            }]
        );
        let msg = json!({
            "action": "announce", "info_hash": SWARM, "warning message": "slow down",
            "interval": 120,
        });
        let out = client.handle(secs(1), TrackerInput::Message(msg.to_string()));
        assert_eq!(
            out,
            vec![TrackerOutput::Warning {
                kind: WarningKind::TrackerWarning,
                text: "tracker warning: slow down".into()
            }]
        );
        let out = client.handle(secs(1), TrackerInput::Message("{not json".into()));
        assert!(
            matches!(&out[..], [TrackerOutput::Warning { kind: WarningKind::InvalidMessage, text }] if text.starts_with("tracker: invalid"))
        );
        // Scrape responses and messages for swarms we are not in are ignored.
        let scrape = r#"{"action":"scrape","files":{}}"#;
        assert_eq!(
            client.handle(secs(1), TrackerInput::Message(scrape.into())),
            vec![]
        );
        let stranger = json!({"action": "announce", "info_hash": OTHER, "interval": 5,
            "complete": 0, "incomplete": 3});
        assert_eq!(
            client.handle(secs(1), TrackerInput::Message(stranger.to_string())),
            vec![]
        );
    }

    #[test]
    fn interval_is_honoured() {
        let (mut client, ids) = announced();
        // The response to our announce at t=0, as aquatic_ws sends it.
        let response = json!({"action": "announce", "info_hash": SWARM, "complete": 0,
            "incomplete": 4, "interval": 30});
        let out = client.handle(secs(1), TrackerInput::Message(response.to_string()));
        assert_eq!(
            out,
            vec![TrackerOutput::SwarmStats {
                info_hash: info_hash(SWARM),
                complete: Some(0),
                incomplete: Some(4),
            }]
        );
        assert_eq!(client.handle(secs(29), TrackerInput::Tick), vec![]);
        assert_eq!(client.next_wakeup(), Some(secs(30)));
        let out = client.handle(secs(30), TrackerInput::Tick);
        let new_ids = need_offers(&out);
        assert_eq!(out.len(), 1);
        // Offers not ready within 10 s: announce without them (no "started" this time).
        assert_eq!(client.next_wakeup(), Some(secs(40)));
        let out = client.handle(secs(40), TrackerInput::Tick);
        assert_eq!(
            sent(&out),
            vec![json!({"action": "announce", "info_hash": SWARM,
                "peer_id": client.peer_id().as_str(), "numwant": 0, "uploaded": 0,
                "downloaded": 0})]
        );
        // The late offers still go out, in an announce of their own.
        let out = client.handle(
            secs(41),
            TrackerInput::OffersReady {
                info_hash: info_hash(SWARM),
                offers: offers(&new_ids, SDP_OFFER),
            },
        );
        assert_eq!(sent(&out)[0]["numwant"], json!(2));
        // A tiny interval is raised to the 10 s floor: the next announce is due at 41 + 10 s,
        // after the original offers expire at 50 s.
        let response = json!({"action": "announce", "info_hash": SWARM, "interval": 1});
        client.handle(secs(42), TrackerInput::Message(response.to_string()));
        assert_eq!(client.next_wakeup(), Some(secs(50)));
        let out = client.handle(secs(50), TrackerInput::Tick);
        let mut expected: Vec<OfferId> = ids.clone();
        expected.sort();
        let expected: Vec<TrackerOutput> = expected
            .into_iter()
            .map(|offer_id| TrackerOutput::DropOffer {
                info_hash: info_hash(SWARM),
                offer_id,
            })
            .collect();
        assert_eq!(out, expected);
        assert_eq!(client.next_wakeup(), Some(secs(51)));
        let out = client.handle(secs(51), TrackerInput::Tick);
        assert_eq!(need_offers(&out).len(), 2);
        // "min interval" is used when there is no "interval".
        let response = json!({"action": "announce", "info_hash": SWARM, "min interval": 300});
        client.handle(secs(51), TrackerInput::Message(response.to_string()));
        client.handle(
            secs(52),
            TrackerInput::OffersReady {
                info_hash: info_hash(SWARM),
                offers: vec![],
            },
        );
        // The late offers expire at 91 s; the next announce is due at 52 + 300 s.
        assert_eq!(client.next_wakeup(), Some(secs(91)));
        assert_eq!(client.handle(secs(91), TrackerInput::Tick).len(), 2);
        assert_eq!(client.next_wakeup(), Some(secs(352)));
        assert_eq!(client.handle(secs(351), TrackerInput::Tick), vec![]);
        assert_eq!(
            need_offers(&client.handle(secs(352), TrackerInput::Tick)).len(),
            2
        );
    }

    #[test]
    fn reconnect_backoff_sequence() {
        let mut client = TrackerClient::new(TrackerConfig {
            reconnect_min: secs(1),
            reconnect_max: secs(30),
            ..config()
        });
        client.handle(secs(0), TrackerInput::Join(info_hash(SWARM)));
        let mut now = secs(0);
        let mut delays = Vec::new();
        let mut warnings = 0;
        for _ in 0..8 {
            let out = client.handle(
                now,
                TrackerInput::Disconnected {
                    reason: "connection refused".into(),
                },
            );
            for o in out {
                match o {
                    TrackerOutput::Reconnect { at } => {
                        delays.push((at - now).as_secs());
                        assert_eq!(client.next_wakeup(), Some(at));
                        now = at;
                    }
                    TrackerOutput::Warning { kind, text } => {
                        assert_eq!(kind, WarningKind::Outage);
                        assert!(text.starts_with("tracker unreachable (connection refused)"));
                        warnings += 1;
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(warnings, 1, "one warning per outage");
        // Connected but the tracker said nothing valid yet: the backoff keeps growing.
        client.handle(now, TrackerInput::Connected);
        let out = client.handle(
            now,
            TrackerInput::Disconnected {
                reason: "reset".into(),
            },
        );
        assert_eq!(out, vec![TrackerOutput::Reconnect { at: now + secs(30) }]);
        // A valid message confirms the connection: the backoff and the warning reset.
        now += secs(30);
        client.handle(now, TrackerInput::Connected);
        client.handle(
            now,
            TrackerInput::Message(json!({"action": "announce", "info_hash": SWARM}).to_string()),
        );
        let out = client.handle(
            now,
            TrackerInput::Disconnected {
                reason: "EOF".into(),
            },
        );
        assert!(
            matches!(&out[0], TrackerOutput::Warning { kind: WarningKind::Outage, text } if text.starts_with("tracker connection lost (EOF)"))
        );
        assert_eq!(out[1], TrackerOutput::Reconnect { at: now + secs(1) });
    }

    #[test]
    fn jitter_stays_within_a_quarter_below() {
        let mut client = TrackerClient::new(TrackerConfig {
            reconnect_jitter: true,
            ..config()
        });
        for failures in 0..10u32 {
            let d = client.backoff(failures);
            let base = secs(1).saturating_mul(1 << failures).min(secs(60));
            assert!(d <= base && d >= base.mul_f64(0.75), "{d:?} {base:?}");
        }
        let out = client.handle(secs(0), TrackerInput::Disconnected { reason: "x".into() });
        assert!(matches!(out[1], TrackerOutput::Reconnect { at } if at <= secs(1)));
    }

    #[test]
    fn disconnect_drops_pending_offers_and_late_offers() {
        let (mut client, ids) = announced();
        let out = client.handle(secs(5), TrackerInput::Disconnected { reason: "x".into() });
        let dropped: Vec<&OfferId> = out
            .iter()
            .filter_map(|o| match o {
                TrackerOutput::DropOffer { offer_id, .. } => Some(offer_id),
                _ => None,
            })
            .collect();
        let mut expected: Vec<&OfferId> = ids.iter().collect();
        expected.sort();
        assert_eq!(dropped, expected);
        // Offers and answers produced while down go nowhere.
        let late = offer_id("LateOfferLateOffer01");
        let out = client.handle(
            secs(6),
            TrackerInput::OffersReady {
                info_hash: info_hash(SWARM),
                offers: offers(std::slice::from_ref(&late), SDP_OFFER),
            },
        );
        assert_eq!(
            out,
            vec![TrackerOutput::DropOffer {
                info_hash: info_hash(SWARM),
                offer_id: late,
            }]
        );
        let out = client.handle(
            secs(6),
            TrackerInput::AnswerReady {
                info_hash: info_hash(SWARM),
                to_peer_id: peer(REMOTE),
                offer_id: offer_id("RemoteOfferRemote001"),
                sdp: SDP_ANSWER.into(),
            },
        );
        assert!(matches!(&out[..], [TrackerOutput::AnswerNotSent { .. }]));
        // On reconnection every swarm announces "started" again.
        let out = client.handle(secs(7), TrackerInput::Connected);
        let ids = need_offers(&out);
        let out = client.handle(
            secs(7),
            TrackerInput::OffersReady {
                info_hash: info_hash(SWARM),
                offers: offers(&ids, SDP_OFFER),
            },
        );
        assert_eq!(sent(&out)[0]["event"], json!("started"));
    }

    #[test]
    fn leave_announces_stopped() {
        let (mut client, ids) = announced();
        let out = client.handle(secs(3), TrackerInput::Leave(info_hash(SWARM)));
        assert_eq!(
            sent(&out),
            vec![json!({"action": "announce", "info_hash": SWARM,
                "peer_id": client.peer_id().as_str(), "numwant": 0, "uploaded": 0,
                "downloaded": 0, "event": "stopped"})]
        );
        assert_eq!(out.len(), 1 + ids.len());
        assert_eq!(client.swarms().count(), 0);
        assert_eq!(client.next_wakeup(), None);
    }

    #[test]
    fn announce_now_asks_for_offers_once() {
        let (mut client, _) = announced();
        let out = client.handle(secs(3), TrackerInput::Announce(info_hash(SWARM)));
        assert_eq!(need_offers(&out).len(), 2);
        assert_eq!(
            client.handle(secs(4), TrackerInput::Announce(info_hash(SWARM))),
            vec![]
        );
        assert_eq!(
            client.handle(secs(4), TrackerInput::Announce(info_hash(OTHER))),
            vec![]
        );
    }

    #[test]
    fn messages_stay_below_16_kib() {
        // Offers of about 2 960 bytes once encoded: only five fit below 16 KiB; the others
        // are dropped.
        let big_sdp = format!("v=0\r\n{}", "a=candidate:x\r\n".repeat(170));
        let many: Vec<LocalOffer> = (0..12)
            .map(|i| LocalOffer {
                offer_id: offer_id(&format!("Offer{i:015}")),
                sdp: big_sdp.clone(),
            })
            .collect();
        let encoded = encode_announce(&info_hash(SWARM), &peer(REMOTE), None, &many);
        assert!(encoded.text.len() < MAX_MESSAGE_BYTES);
        assert_eq!(encoded.included, vec![0, 1, 2, 3, 4]);
        // Small offers: at most ten.
        let small: Vec<LocalOffer> = (0..12)
            .map(|i| LocalOffer {
                offer_id: offer_id(&format!("Offer{i:015}")),
                sdp: SDP_OFFER.into(),
            })
            .collect();
        let encoded = encode_announce(&info_hash(SWARM), &peer(REMOTE), None, &small);
        assert_eq!(encoded.included, (0..10).collect::<Vec<_>>());
        let v: Value = serde_json::from_str(&encoded.text).unwrap();
        assert_eq!(v["numwant"], json!(10));
        // An offer too big on its own is skipped, later ones still go.
        let mut mixed = small[..3].to_vec();
        mixed[1].sdp = "x".repeat(MAX_MESSAGE_BYTES);
        let encoded = encode_announce(&info_hash(SWARM), &peer(REMOTE), None, &mixed);
        assert_eq!(encoded.included, vec![0, 2]);

        // Through the client: what did not fit comes back as DropOffer.
        let mut client = TrackerClient::new(TrackerConfig {
            offers_per_announce: 10,
            ..config()
        });
        client.handle(secs(0), TrackerInput::Join(info_hash(SWARM)));
        let ids = need_offers(&client.handle(secs(0), TrackerInput::Connected));
        assert_eq!(ids.len(), 10);
        let out = client.handle(
            secs(1),
            TrackerInput::OffersReady {
                info_hash: info_hash(SWARM),
                offers: offers(&ids, &big_sdp),
            },
        );
        assert_eq!(sent(&out)[0]["offers"].as_array().unwrap().len(), 5);
        let dropped = out
            .iter()
            .filter(|o| matches!(o, TrackerOutput::DropOffer { .. }))
            .count();
        assert_eq!(dropped, 5);

        // An answer too big is not sent.
        let huge = "y".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(
            encode_answer(
                &info_hash(SWARM),
                &peer(REMOTE),
                &peer(REMOTE),
                &offer_id("Offer000000000000001"),
                &huge
            ),
            None
        );
        let out = client.handle(
            secs(2),
            TrackerInput::AnswerReady {
                info_hash: info_hash(SWARM),
                to_peer_id: peer(REMOTE),
                offer_id: offer_id("Offer000000000000001"),
                sdp: huge,
            },
        );
        assert!(matches!(
            &out[0],
            TrackerOutput::Warning {
                kind: WarningKind::AnswerTooLarge,
                ..
            }
        ));
        assert!(matches!(&out[1], TrackerOutput::AnswerNotSent { .. }));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn parse_tolerates_and_validates() {
        // bittorrent-tracker's relayed answer, byte for byte as it builds it.
        let text = format!(
            r#"{{"action":"announce","answer":{{"type":"answer","sdp":"v=0\r\n"}},"offer_id":"Offer000000000000001","peer_id":"{REMOTE}","info_hash":"{SWARM}"}}"#
        );
        let m = parse_message(&text).unwrap();
        assert_eq!(m.answer.unwrap().sdp, "v=0\r\n");
        assert_eq!(m.info_hash, Some(info_hash(SWARM)));
        // Ids of the wrong length make the part absent.
        let text = json!({"action": "announce", "info_hash": "short", "peer_id": REMOTE,
            "offer_id": "Offer000000000000001", "offer": {"type": "offer", "sdp": ""}});
        let m = parse_message(&text.to_string()).unwrap();
        assert_eq!((m.info_hash, m.offer.is_some()), (None, true));
        let text = json!({"action": "announce", "info_hash": SWARM, "peer_id": "x",
            "offer_id": "Offer000000000000001", "offer": {"type": "offer", "sdp": ""}});
        assert_eq!(parse_message(&text.to_string()).unwrap().offer, None);
        // Numbers of any JSON form.
        let m = parse_message(r#"{"interval":120.0,"complete":2,"incomplete":-1}"#).unwrap();
        assert_eq!(
            (m.interval, m.complete, m.incomplete),
            (Some(secs(120)), Some(2), None)
        );
        assert!(parse_message("[]").is_err());
    }

    #[test]
    fn recorded_bittorrent_tracker_exchange() {
        // Two clients against bittorrent-tracker 11 on loopback: the frames below are what the
        // server sent (recorded), in reply to the frames these clients encoded.
        let recorded_to_b = [
            r#"{"complete":0,"incomplete":1,"action":"announce","interval":120,"info_hash":"e93f02264a9448c5b150"}"#,
            r#"{"action":"announce","offer":{"type":"offer","sdp":"v=0\r\noffer\r\n"},"offer_id":"OfferOfferOffer00001","peer_id":"-GM0001-AAAAAAAAAAAA","info_hash":"e93f02264a9448c5b150"}"#,
        ];
        let recorded_to_a = [
            r#"{"complete":0,"incomplete":2,"action":"announce","interval":120,"info_hash":"e93f02264a9448c5b150"}"#,
            r#"{"action":"announce","answer":{"type":"answer","sdp":"v=0\r\nanswer\r\n"},"offer_id":"OfferOfferOffer00001","peer_id":"-GM0001-BBBBBBBBBBBB","info_hash":"e93f02264a9448c5b150"}"#,
        ];
        let (mut a, mut b) = (TrackerClient::new(config()), TrackerClient::new(config()));
        for client in [&mut a, &mut b] {
            client.handle(secs(0), TrackerInput::Join(info_hash(SWARM)));
            client.handle(secs(0), TrackerInput::Connected);
        }
        let out = b.handle(
            secs(0),
            TrackerInput::OffersReady {
                info_hash: info_hash(SWARM),
                offers: vec![],
            },
        );
        assert_eq!(sent(&out)[0]["numwant"], json!(0));
        let out = a.handle(
            secs(0),
            TrackerInput::OffersReady {
                info_hash: info_hash(SWARM),
                offers: offers(&[offer_id("OfferOfferOffer00001")], "v=0\r\noffer\r\n"),
            },
        );
        assert_eq!(
            sent(&out)[0]["offers"][0]["offer_id"],
            json!("OfferOfferOffer00001")
        );
        let out = b.handle(secs(0), TrackerInput::Message(recorded_to_b[0].into()));
        assert!(matches!(
            &out[..],
            [TrackerOutput::SwarmStats {
                incomplete: Some(1),
                ..
            }]
        ));
        let out = b.handle(secs(0), TrackerInput::Message(recorded_to_b[1].into()));
        let [TrackerOutput::RemoteOffer { remote, .. }] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(remote.peer_id, peer("-GM0001-AAAAAAAAAAAA"));
        let out = b.handle(
            secs(0),
            TrackerInput::AnswerReady {
                info_hash: info_hash(SWARM),
                to_peer_id: remote.peer_id.clone(),
                offer_id: remote.offer_id.clone(),
                sdp: "v=0\r\nanswer\r\n".into(),
            },
        );
        assert_eq!(sent(&out)[0]["to_peer_id"], json!("-GM0001-AAAAAAAAAAAA"));
        a.handle(secs(0), TrackerInput::Message(recorded_to_a[0].into()));
        let out = a.handle(secs(0), TrackerInput::Message(recorded_to_a[1].into()));
        assert_eq!(
            out,
            vec![TrackerOutput::RemoteAnswer {
                info_hash: info_hash(SWARM),
                remote: RemoteSdp {
                    peer_id: peer("-GM0001-BBBBBBBBBBBB"),
                    offer_id: offer_id("OfferOfferOffer00001"),
                    sdp: "v=0\r\nanswer\r\n".into(),
                },
            }]
        );
    }
}

//! A sans-IO WebTorrent tracker: the core of the `mesh-tracker` binary.
//!
//! It speaks what bittorrent-tracker and aquatic_ws speak (see `docs/tracker-protocol.md`):
//! JSON text frames over WebSocket connections, which the driver owns. Connections are named by
//! an opaque [`ConnectionId`]; the driver reports [`TrackerServer::connected`],
//! [`TrackerServer::message`] and [`TrackerServer::disconnected`], and carries out the
//! [`ServerOutput`]s each returns: frames to send, and connections to close.
//!
//! - An announce names a swarm (`info_hash`) and a peer (`peer_id`), both exactly 20
//!   characters of U+0000..=U+00FF. The peer joins the swarm and gets
//!   `{"action":"announce","interval":120,"info_hash","complete","incomplete"}`.
//! - Each of the first [`MAX_OFFERS`] `offers` goes to a distinct random other peer of the
//!   swarm as `{"action":"announce","info_hash","peer_id":<offerer>,"offer_id","offer"}`.
//! - An announce carrying `answer`, `to_peer_id` and `offer_id` is relayed to the offerer as
//!   `{"action":"announce","info_hash","peer_id":<answerer>,"offer_id","answer"}`, only if that
//!   offer was relayed to the answerer within [`OFFER_MAX_AGE`] (aquatic_ws's rule); it gets
//!   no response of its own (bittorrent-tracker's behaviour).
//! - `event` `stopped` leaves the swarm; `completed` (or `left` = 0) makes the peer a seeder,
//!   counted in `complete`, the others in `incomplete`.
//! - `scrape` gets `{"action":"scrape","files":{<info_hash>:{"complete","incomplete",
//!   "downloaded"}}}`.
//! - Requests the tracker cannot serve get `{"action","failure reason","info_hash"?}`. A frame
//!   over [`MAX_FRAME_BYTES`] or one that is not a JSON object also closes the connection.
//!
//! A peer belongs to the connection it first announced on: as aquatic_ws does, an announce
//! using a peer_id another connection holds in that swarm is refused, and one connection
//! keeps one peer_id per swarm. Disconnecting removes the connection's peers from every swarm.
//!
//! Every collection is bounded ([`TrackerServerConfig`], defaults from the `MAX_*`
//! constants), and [`TrackerServer::expire`], called every few seconds, drops peers that
//! stopped announcing and offers that were never answered. Randomness comes from a seeded
//! generator, so a seed replays the same choices.

type Time = std::time::Duration;
use mesh_proto::ids::{InfoHash, OfferId, PeerId};
use mesh_proto::tracker::{
    AnnounceResponse, Relay, ScrapeFile, ScrapeResponse, Sdp, encode_failure as failure, to_json,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::index;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

/// Frames longer than this many bytes close the connection (aquatic_ws's default
/// `websocket_max_message_size`).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// At most this many offers of one announce are relayed; the others are ignored (aquatic_ws's
/// default `max_offers`).
pub const MAX_OFFERS: usize = 10;

/// The `interval` announced to peers, in seconds (both reference trackers use 120).
pub const ANNOUNCE_INTERVAL_SECS: u64 = 120;

/// Connections served at once; one more is sent a failure and closed.
pub const MAX_CONNECTIONS: usize = 4096;

/// Swarms one connection may be in at once.
pub const MAX_SWARMS_PER_CONNECTION: usize = 256;

/// Swarms tracked at once.
pub const MAX_SWARMS: usize = 65_536;

/// Peers in one swarm; a new peer beyond it is refused (bittorrent-tracker keeps 1000).
pub const MAX_PEERS_PER_SWARM: usize = 1000;

/// Relayed offers remembered for the answer check; past it the oldest are forgotten.
pub const MAX_RELAYED_OFFERS: usize = 65_536;

/// Info hashes answered in one scrape (aquatic_ws's default `max_scrape_torrents`).
pub const MAX_SCRAPE_HASHES: usize = 255;

/// An offer must be answered within this long of being relayed (aquatic_ws's `max_offer_age`).
pub const OFFER_MAX_AGE: Duration = Duration::from_secs(120);

/// A peer that has not announced for this long leaves its swarm (aquatic_ws's
/// `max_peer_age`).
pub const PEER_MAX_AGE: Duration = Duration::from_secs(180);

/// The limits of a [`TrackerServer`]; the default is the `MAX_*` and `*_MAX_AGE` constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerServerConfig {
    pub max_frame_bytes: usize,
    pub max_offers: usize,
    pub announce_interval_secs: u64,
    pub max_connections: usize,
    pub max_swarms_per_connection: usize,
    pub max_swarms: usize,
    pub max_peers_per_swarm: usize,
    pub max_relayed_offers: usize,
    pub max_scrape_hashes: usize,
    pub offer_max_age: Duration,
    pub peer_max_age: Duration,
}

impl Default for TrackerServerConfig {
    fn default() -> Self {
        TrackerServerConfig {
            max_frame_bytes: MAX_FRAME_BYTES,
            max_offers: MAX_OFFERS,
            announce_interval_secs: ANNOUNCE_INTERVAL_SECS,
            max_connections: MAX_CONNECTIONS,
            max_swarms_per_connection: MAX_SWARMS_PER_CONNECTION,
            max_swarms: MAX_SWARMS,
            max_peers_per_swarm: MAX_PEERS_PER_SWARM,
            max_relayed_offers: MAX_RELAYED_OFFERS,
            max_scrape_hashes: MAX_SCRAPE_HASHES,
            offer_max_age: OFFER_MAX_AGE,
            peer_max_age: PEER_MAX_AGE,
        }
    }
}

/// A connection, as the driver names it. Ids must not be reused while the connection is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOutput {
    /// Send this text frame on this connection.
    Send(ConnectionId, String),
    /// Close this connection after sending the frames before this output. The server has
    /// already forgotten it: a later `disconnected` for it does nothing.
    Close(ConnectionId),
}

#[derive(Debug)]
struct Connection {
    /// The swarms this connection is in, with its peer_id in each.
    swarms: BTreeMap<InfoHash, PeerId>,
}

#[derive(Debug)]
struct Peer {
    connection: ConnectionId,
    seeder: bool,
    last_announce: Time,
}

#[derive(Debug, Default)]
struct Swarm {
    /// Ordered, so that a seed gives the same choices.
    peers: BTreeMap<PeerId, Peer>,
    /// `completed` events seen, for scrape.
    downloaded: u64,
}

impl Swarm {
    fn counts(&self) -> (usize, usize) {
        let complete = self.peers.values().filter(|p| p.seeder).count();
        (complete, self.peers.len() - complete)
    }
}

/// An offer relayed from `offerer` under `offer_id` in a swarm.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RelayKey {
    info_hash: InfoHash,
    offerer: PeerId,
    offer_id: OfferId,
}

/// Who the offer went to, and until when an answer is accepted.
#[derive(Debug)]
struct Relayed {
    answerer: PeerId,
    answerer_connection: ConnectionId,
    expires: Time,
    seq: u64,
}

/// The offers relayed and not yet answered, oldest first, at most `capacity`.
#[derive(Debug)]
struct RelayedOffers {
    map: HashMap<RelayKey, Relayed>,
    /// Insertion order. An entry whose `seq` no longer matches the map's was answered or
    /// replaced; it still counts against `capacity` until it reaches the front.
    order: VecDeque<(u64, RelayKey)>,
    next_seq: u64,
    capacity: usize,
}

impl RelayedOffers {
    fn new(capacity: usize) -> Self {
        RelayedOffers {
            map: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            capacity,
        }
    }

    fn insert(&mut self, key: RelayKey, answerer: PeerId, connection: ConnectionId, expires: Time) {
        if self.capacity == 0 {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let relayed = Relayed {
            answerer,
            answerer_connection: connection,
            expires,
            seq,
        };
        self.map.insert(key.clone(), relayed);
        self.order.push_back((seq, key));
        while self.order.len() > self.capacity {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((seq, key)) = self.order.pop_front()
            && self.map.get(&key).is_some_and(|r| r.seq == seq)
        {
            self.map.remove(&key);
        }
    }

    /// Removes and returns the offer, if it has not expired.
    fn take(&mut self, key: &RelayKey, now: Time) -> Option<Relayed> {
        self.map.remove(key).filter(|r| r.expires > now)
    }

    /// Forgets expired offers, and answered ones at the front of the queue.
    fn expire(&mut self, now: Time) {
        while let Some((seq, key)) = self.order.front() {
            let live = self
                .map
                .get(key)
                .is_some_and(|r| r.seq == *seq && r.expires > now);
            if live {
                break;
            }
            self.pop_front();
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Update,
    Completed,
    Stopped,
}

fn parse_event(value: Option<&Value>) -> Option<Event> {
    match value {
        None | Some(Value::Null) => Some(Event::Update),
        Some(Value::String(s)) => match s.as_str() {
            "" | "started" | "update" | "paused" => Some(Event::Update),
            "completed" => Some(Event::Completed),
            "stopped" => Some(Event::Stopped),
            _ => None,
        },
        Some(_) => None,
    }
}

fn str_field<'a>(request: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    request.get(name).and_then(Value::as_str)
}

/// The `sdp` of an `{"type","sdp"}` object.
fn sdp_of(value: Option<&Value>) -> Option<&str> {
    value?.as_object()?.get("sdp")?.as_str()
}

/// A valid offer of an announce.
struct OfferIn<'a> {
    offer_id: OfferId,
    sdp: &'a str,
}

/// The sans-IO tracker. See the module documentation.
#[derive(Debug)]
pub struct TrackerServer {
    config: TrackerServerConfig,
    rng: StdRng,
    connections: HashMap<ConnectionId, Connection>,
    swarms: HashMap<InfoHash, Swarm>,
    relayed: RelayedOffers,
}

impl TrackerServer {
    /// A tracker whose random choices all follow from `seed`.
    pub fn new(config: TrackerServerConfig, seed: u64) -> Self {
        let relayed = RelayedOffers::new(config.max_relayed_offers);
        TrackerServer {
            config,
            rng: StdRng::seed_from_u64(seed),
            connections: HashMap::new(),
            swarms: HashMap::new(),
            relayed,
        }
    }

    pub fn config(&self) -> &TrackerServerConfig {
        &self.config
    }

    /// Connections known.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Swarms with at least one peer.
    pub fn swarm_count(&self) -> usize {
        self.swarms.len()
    }

    /// Peers over all swarms.
    pub fn peer_count(&self) -> usize {
        self.swarms.values().map(|s| s.peers.len()).sum()
    }

    /// Relayed offers still awaiting an answer.
    pub fn relayed_offer_count(&self) -> usize {
        self.relayed.len()
    }

    /// `(complete, incomplete)` of a swarm; `(0, 0)` for one without peers.
    pub fn swarm_counts(&self, info_hash: &InfoHash) -> (usize, usize) {
        self.swarms.get(info_hash).map_or((0, 0), Swarm::counts)
    }

    /// A connection opened. Past [`TrackerServerConfig::max_connections`] it is refused.
    pub fn connected(&mut self, id: ConnectionId) -> Vec<ServerOutput> {
        if self.connections.contains_key(&id) {
            return Vec::new();
        }
        if self.connections.len() >= self.config.max_connections {
            return vec![
                ServerOutput::Send(id, failure("announce", "too many connections", None)),
                ServerOutput::Close(id),
            ];
        }
        self.connections.insert(
            id,
            Connection {
                swarms: BTreeMap::new(),
            },
        );
        Vec::new()
    }

    /// A connection closed: its peers leave every swarm.
    pub fn disconnected(&mut self, id: ConnectionId) -> Vec<ServerOutput> {
        self.forget_connection(id);
        Vec::new()
    }

    /// A text frame arrived on a connection. Frames from unknown connections are ignored.
    pub fn message(&mut self, id: ConnectionId, text: &str, now: Time) -> Vec<ServerOutput> {
        let mut out = Vec::new();
        if !self.connections.contains_key(&id) {
            return out;
        }
        if text.len() > self.config.max_frame_bytes {
            self.close(id, "message too large", &mut out);
            return out;
        }
        let request = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(request)) => request,
            _ => {
                self.close(id, "invalid request: not a JSON object", &mut out);
                return out;
            }
        };
        match str_field(&request, "action") {
            Some("announce") => self.announce(id, &request, now, &mut out),
            Some("scrape") => self.scrape(id, &request, &mut out),
            _ => out.push(ServerOutput::Send(
                id,
                failure("announce", "invalid action", None),
            )),
        }
        out
    }

    /// Drops peers that stopped announcing and offers past their age. Call it every few
    /// seconds.
    pub fn expire(&mut self, now: Time) {
        self.relayed.expire(now);
        let max_age = self.config.peer_max_age;
        let mut gone = Vec::new();
        self.swarms.retain(|info_hash, swarm| {
            swarm.peers.retain(|peer_id, peer| {
                let live = peer.last_announce + max_age > now;
                if !live {
                    gone.push((peer.connection, info_hash.clone(), peer_id.clone()));
                }
                live
            });
            !swarm.peers.is_empty()
        });
        for (connection, info_hash, peer_id) in gone {
            if let Some(connection) = self.connections.get_mut(&connection)
                && connection.swarms.get(&info_hash) == Some(&peer_id)
            {
                connection.swarms.remove(&info_hash);
            }
        }
    }

    fn close(&mut self, id: ConnectionId, reason: &str, out: &mut Vec<ServerOutput>) {
        self.forget_connection(id);
        out.push(ServerOutput::Send(id, failure("announce", reason, None)));
        out.push(ServerOutput::Close(id));
    }

    fn forget_connection(&mut self, id: ConnectionId) {
        let Some(connection) = self.connections.remove(&id) else {
            return;
        };
        for (info_hash, peer_id) in connection.swarms {
            self.remove_peer(&info_hash, &peer_id, id);
        }
    }

    /// Removes the peer from the swarm if `connection` holds it, and the swarm if it empties.
    fn remove_peer(&mut self, info_hash: &InfoHash, peer_id: &PeerId, connection: ConnectionId) {
        if let Some(swarm) = self.swarms.get_mut(info_hash) {
            if swarm
                .peers
                .get(peer_id)
                .is_some_and(|p| p.connection == connection)
            {
                swarm.peers.remove(peer_id);
            }
            if swarm.peers.is_empty() {
                self.swarms.remove(info_hash);
            }
        }
    }

    fn announce(
        &mut self,
        id: ConnectionId,
        request: &Map<String, Value>,
        now: Time,
        out: &mut Vec<ServerOutput>,
    ) {
        let reply = |out: &mut Vec<ServerOutput>, reason: &str, info_hash: Option<&InfoHash>| {
            out.push(ServerOutput::Send(
                id,
                failure("announce", reason, info_hash),
            ))
        };
        let Some(info_hash) = str_field(request, "info_hash").and_then(InfoHash::parse) else {
            return reply(out, "invalid info_hash", None);
        };
        let Some(peer_id) = str_field(request, "peer_id").and_then(PeerId::parse) else {
            return reply(out, "invalid peer_id", Some(&info_hash));
        };
        let Some(event) = parse_event(request.get("event")) else {
            return reply(out, "invalid event", Some(&info_hash));
        };
        let connection = self.connections.get(&id).expect("known connection");
        if connection
            .swarms
            .get(&info_hash)
            .is_some_and(|held| *held != peer_id)
        {
            return reply(
                out,
                "one peer_id per info_hash per connection",
                Some(&info_hash),
            );
        }
        let known = match self
            .swarms
            .get(&info_hash)
            .and_then(|s| s.peers.get(&peer_id))
        {
            Some(peer) if peer.connection != id => {
                return reply(
                    out,
                    "peer_id in use by another connection",
                    Some(&info_hash),
                );
            }
            Some(_) => true,
            None => false,
        };

        if event == Event::Stopped {
            if known {
                self.remove_peer(&info_hash, &peer_id, id);
                let connection = self.connections.get_mut(&id).expect("known connection");
                connection.swarms.remove(&info_hash);
            }
            self.respond(id, &info_hash, out);
            return;
        }

        if !known {
            if connection.swarms.len() >= self.config.max_swarms_per_connection {
                return reply(out, "too many swarms on this connection", Some(&info_hash));
            }
            match self.swarms.get(&info_hash) {
                Some(swarm) if swarm.peers.len() >= self.config.max_peers_per_swarm => {
                    return reply(out, "swarm is full", Some(&info_hash));
                }
                None if self.swarms.len() >= self.config.max_swarms => {
                    return reply(out, "too many swarms", Some(&info_hash));
                }
                _ => {}
            }
            let connection = self.connections.get_mut(&id).expect("known connection");
            connection.swarms.insert(info_hash.clone(), peer_id.clone());
        }
        let left = request.get("left").and_then(Value::as_f64);
        let swarm = self.swarms.entry(info_hash.clone()).or_default();
        let peer = swarm.peers.entry(peer_id.clone()).or_insert(Peer {
            connection: id,
            seeder: false,
            last_announce: now,
        });
        peer.last_announce = now;
        let was_seeder = peer.seeder;
        if event == Event::Completed || left == Some(0.0) {
            peer.seeder = true;
        } else if left.is_some_and(|l| l > 0.0) {
            peer.seeder = false;
        }
        if event == Event::Completed && !was_seeder {
            swarm.downloaded += 1;
        }

        if request.contains_key("answer") {
            self.relay_answer(id, &info_hash, &peer_id, request, now, out);
        } else {
            self.respond(id, &info_hash, out);
        }
        match request.get("offers") {
            None | Some(Value::Null) => {}
            Some(Value::Array(offers)) => {
                self.relay_offers(&info_hash, &peer_id, offers, now, out);
            }
            Some(_) => reply(out, "invalid offers", Some(&info_hash)),
        }
    }

    fn respond(&self, id: ConnectionId, info_hash: &InfoHash, out: &mut Vec<ServerOutput>) {
        let (complete, incomplete) = self.swarm_counts(info_hash);
        out.push(ServerOutput::Send(
            id,
            to_json(&AnnounceResponse {
                action: "announce",
                interval: self.config.announce_interval_secs,
                info_hash: info_hash.as_str(),
                complete,
                incomplete,
            }),
        ));
    }

    /// Sends each valid offer among the first `max_offers` to a distinct random other peer.
    fn relay_offers(
        &mut self,
        info_hash: &InfoHash,
        offerer: &PeerId,
        offers: &[Value],
        now: Time,
        out: &mut Vec<ServerOutput>,
    ) {
        let valid: Vec<OfferIn> = offers
            .iter()
            .take(self.config.max_offers)
            .filter_map(|offer| {
                let offer = offer.as_object()?;
                Some(OfferIn {
                    offer_id: str_field(offer, "offer_id").and_then(OfferId::parse)?,
                    sdp: sdp_of(offer.get("offer"))?,
                })
            })
            .collect();
        let Some(swarm) = self.swarms.get(info_hash) else {
            return;
        };
        let others: Vec<(&PeerId, ConnectionId)> = swarm
            .peers
            .iter()
            .filter(|(peer_id, _)| *peer_id != offerer)
            .map(|(peer_id, peer)| (peer_id, peer.connection))
            .collect();
        let amount = valid.len().min(others.len());
        let chosen = index::sample(&mut self.rng, others.len(), amount);
        for (offer, target) in valid.iter().zip(chosen.iter()) {
            let (answerer, connection) = others[target];
            out.push(ServerOutput::Send(
                connection,
                to_json(&Relay {
                    action: "announce",
                    info_hash: info_hash.as_str(),
                    peer_id: offerer.as_str(),
                    offer_id: offer.offer_id.as_str(),
                    offer: Some(Sdp {
                        kind: "offer",
                        sdp: offer.sdp,
                    }),
                    answer: None,
                }),
            ));
            self.relayed.insert(
                RelayKey {
                    info_hash: info_hash.clone(),
                    offerer: offerer.clone(),
                    offer_id: offer.offer_id.clone(),
                },
                answerer.clone(),
                connection,
                now + self.config.offer_max_age,
            );
        }
    }

    /// Relays an answer to the offerer, if the offer went to this answerer and is not stale.
    fn relay_answer(
        &mut self,
        id: ConnectionId,
        info_hash: &InfoHash,
        answerer: &PeerId,
        request: &Map<String, Value>,
        now: Time,
        out: &mut Vec<ServerOutput>,
    ) {
        let fail = |out: &mut Vec<ServerOutput>, reason: &str| {
            out.push(ServerOutput::Send(
                id,
                failure("announce", reason, Some(info_hash)),
            ))
        };
        let (Some(offerer), Some(offer_id), Some(sdp)) = (
            str_field(request, "to_peer_id").and_then(PeerId::parse),
            str_field(request, "offer_id").and_then(OfferId::parse),
            sdp_of(request.get("answer")),
        ) else {
            return fail(out, "invalid answer");
        };
        let key = RelayKey {
            info_hash: info_hash.clone(),
            offerer,
            offer_id,
        };
        let matches = self.relayed.map.get(&key).is_some_and(|relayed| {
            relayed.answerer == *answerer && relayed.answerer_connection == id
        });
        let relayed = if matches {
            self.relayed.take(&key, now)
        } else {
            None
        };
        let target = self
            .swarms
            .get(info_hash)
            .and_then(|s| s.peers.get(&key.offerer))
            .map(|p| p.connection);
        match (relayed, target) {
            (Some(_), Some(connection)) => out.push(ServerOutput::Send(
                connection,
                to_json(&Relay {
                    action: "announce",
                    info_hash: info_hash.as_str(),
                    peer_id: answerer.as_str(),
                    offer_id: key.offer_id.as_str(),
                    offer: None,
                    answer: Some(Sdp {
                        kind: "answer",
                        sdp,
                    }),
                }),
            )),
            (Some(_), None) => fail(out, "the offerer left the swarm"),
            (None, _) => fail(
                out,
                "no offer with that offer_id was relayed to you, or it expired",
            ),
        }
    }

    fn scrape(&self, id: ConnectionId, request: &Map<String, Value>, out: &mut Vec<ServerOutput>) {
        let hashes: Vec<&str> = match request.get("info_hash") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(values)) => values.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut files = BTreeMap::new();
        for hash in hashes.into_iter().take(self.config.max_scrape_hashes) {
            let Some(info_hash) = InfoHash::parse(hash) else {
                continue;
            };
            let swarm = self.swarms.get(&info_hash);
            let (complete, incomplete) = swarm.map_or((0, 0), Swarm::counts);
            files.insert(
                hash,
                ScrapeFile {
                    complete,
                    incomplete,
                    downloaded: swarm.map_or(0, |s| s.downloaded),
                },
            );
        }
        out.push(ServerOutput::Send(
            id,
            to_json(&ScrapeResponse {
                action: "scrape",
                files,
            }),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::mesh::tracker::{
        LocalOffer, RemoteSdp, TrackerClient, TrackerConfig, TrackerInput, TrackerOutput,
    };
    use serde_json::json;

    const SWARM: &str = "e93f02264a9448c5b150";
    const OTHER: &str = "0123456789abcdef0123";
    const A: &str = "-GM0001-AAAAAAAAAAAA";
    const B: &str = "-GM0001-BBBBBBBBBBBB";
    const C: &str = "-GM0001-CCCCCCCCCCCC";
    const OFFER_1: &str = "OfferOfferOffer00001";
    const SDP_OFFER: &str =
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n";
    const SDP_ANSWER: &str = "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\na=\"quoted\" \u{e9}\r\n";

    fn secs(s: u64) -> Time {
        Duration::from_secs(s)
    }

    fn conn(n: u64) -> ConnectionId {
        ConnectionId(n)
    }

    fn server() -> TrackerServer {
        TrackerServer::new(TrackerServerConfig::default(), 7)
    }

    fn offer_id(n: usize) -> String {
        format!("Offer{n:015}")
    }

    fn announce(peer_id: &str, extra: Value) -> String {
        let mut message = json!({"action": "announce", "info_hash": SWARM, "peer_id": peer_id,
            "numwant": 0, "uploaded": 0, "downloaded": 0});
        for (k, v) in extra.as_object().unwrap() {
            message[k] = v.clone();
        }
        message.to_string()
    }

    fn offers(ids: &[String]) -> Value {
        ids.iter()
            .map(|id| json!({"offer_id": id, "offer": {"type": "offer", "sdp": SDP_OFFER}}))
            .collect()
    }

    fn answer(from: &str, to: &str, offer_id: &str) -> String {
        announce(
            from,
            json!({"to_peer_id": to, "offer_id": offer_id,
                "answer": {"type": "answer", "sdp": SDP_ANSWER}}),
        )
    }

    /// The frames sent, as (connection number, JSON); panics on a Close.
    fn frames(out: &[ServerOutput]) -> Vec<(u64, Value)> {
        out.iter()
            .map(|o| match o {
                ServerOutput::Send(id, text) => (id.0, serde_json::from_str(text).unwrap()),
                ServerOutput::Close(id) => panic!("unexpected close of {id:?}"),
            })
            .collect()
    }

    fn response(complete: usize, incomplete: usize) -> Value {
        json!({"action": "announce", "interval": 120, "info_hash": SWARM,
            "complete": complete, "incomplete": incomplete})
    }

    /// A server with peers on connections 1, 2, … in order, all announced in SWARM.
    fn with_peers(peers: &[&str]) -> TrackerServer {
        let mut s = server();
        for (i, peer) in peers.iter().enumerate() {
            let id = conn(i as u64 + 1);
            assert!(s.connected(id).is_empty());
            let out = s.message(id, &announce(peer, json!({"event": "started"})), secs(0));
            assert_eq!(frames(&out), vec![(id.0, response(0, i + 1))]);
        }
        s
    }

    #[test]
    fn response_text_is_exact() {
        let mut s = server();
        s.connected(conn(1));
        let out = s.message(conn(1), &announce(A, json!({"event": "started"})), secs(0));
        assert_eq!(
            out,
            vec![ServerOutput::Send(
                conn(1),
                format!(
                    r#"{{"action":"announce","interval":120,"info_hash":"{SWARM}","complete":0,"incomplete":1}}"#
                )
            )]
        );
    }

    #[test]
    fn two_peers_offer_and_answer_relay() {
        let mut s = with_peers(&[A, B]);
        // A's offer goes to B, the only other peer, with A's peer_id and the offer_id as sent.
        let out = s.message(
            conn(1),
            &announce(A, json!({"offers": offers(&[OFFER_1.to_string()])})),
            secs(1),
        );
        assert_eq!(
            out[1],
            ServerOutput::Send(
                conn(2),
                format!(
                    r#"{{"action":"announce","info_hash":"{SWARM}","peer_id":"{A}","offer_id":"{OFFER_1}","offer":{{"type":"offer","sdp":{}}}}}"#,
                    serde_json::to_string(SDP_OFFER).unwrap()
                )
            )
        );
        assert_eq!(frames(&out)[0], (1, response(0, 2)));
        assert_eq!(out.len(), 2);
        assert_eq!(s.relayed_offer_count(), 1);
        // B's answer goes to A, echoing the offer_id; the answer gets no response of its own.
        let out = s.message(conn(2), &answer(B, A, OFFER_1), secs(2));
        assert_eq!(
            frames(&out),
            vec![(
                1,
                json!({"action": "announce", "info_hash": SWARM, "peer_id": B,
                    "offer_id": OFFER_1, "answer": {"type": "answer", "sdp": SDP_ANSWER}})
            )]
        );
        assert_eq!(s.relayed_offer_count(), 0);
        // One answer per offer.
        let out = s.message(conn(2), &answer(B, A, OFFER_1), secs(3));
        assert_eq!(frames(&out).len(), 1);
        assert_eq!(frames(&out)[0].0, 2);
        assert!(frames(&out)[0].1["failure reason"].is_string());
    }

    #[test]
    fn three_peers_offers_go_to_distinct_peers() {
        let mut s = with_peers(&[A, B, C]);
        let ids: Vec<String> = (0..5).map(offer_id).collect();
        let out = s.message(
            conn(1),
            &announce(A, json!({"offers": offers(&ids)})),
            secs(1),
        );
        let relayed = frames(&out);
        assert_eq!(relayed[0], (1, response(0, 3)));
        // Two other peers: two offers relayed, to B and C, each once; the rest are unused.
        let mut targets: Vec<u64> = relayed[1..].iter().map(|(to, _)| *to).collect();
        targets.sort();
        assert_eq!(targets, vec![2, 3]);
        for (i, (_, message)) in relayed[1..].iter().enumerate() {
            assert_eq!(message["peer_id"], json!(A));
            assert_eq!(message["offer_id"], json!(ids[i]));
        }
        // Each may answer only the offer it got.
        let offer_to = |to: u64| {
            relayed[1..]
                .iter()
                .find(|(t, _)| *t == to)
                .map(|(_, m)| m["offer_id"].as_str().unwrap().to_string())
                .unwrap()
        };
        let (to_b, to_c) = (offer_to(2), offer_to(3));
        let out = s.message(conn(3), &answer(C, A, &to_b), secs(2));
        assert_eq!(frames(&out)[0].0, 3, "C may not answer B's offer");
        let out = s.message(conn(3), &answer(C, A, &to_c), secs(2));
        assert_eq!(frames(&out)[0].0, 1);
        assert_eq!(frames(&out)[0].1["peer_id"], json!(C));
        assert_eq!(frames(&out)[0].1["offer_id"], json!(to_c));
        let out = s.message(conn(2), &answer(B, A, &to_b), secs(3));
        assert_eq!(frames(&out)[0].1["offer_id"], json!(to_b));
        assert_eq!(frames(&out)[0].0, 1);
    }

    #[test]
    fn seeded_choices_replay() {
        let targets = |seed: u64| {
            let mut s = TrackerServer::new(TrackerServerConfig::default(), seed);
            let peers: Vec<String> = (0..12).map(|i| format!("-GM0001-{i:012}")).collect();
            for (i, peer) in peers.iter().enumerate() {
                s.connected(conn(i as u64));
                s.message(conn(i as u64), &announce(peer, json!({})), secs(0));
            }
            let ids: Vec<String> = (0..3).map(offer_id).collect();
            let out = s.message(
                conn(0),
                &announce(&peers[0], json!({"offers": offers(&ids)})),
                secs(0),
            );
            frames(&out)[1..]
                .iter()
                .map(|(to, _)| *to)
                .collect::<Vec<_>>()
        };
        assert_eq!(targets(1), targets(1));
        assert!((1..20).any(|seed| targets(seed) != targets(0)));
    }

    #[test]
    fn offers_cap_at_ten() {
        let peers: Vec<String> = (0..15).map(|i| format!("-GM0001-{i:012}")).collect();
        let refs: Vec<&str> = peers.iter().map(String::as_str).collect();
        let mut s = with_peers(&refs);
        let ids: Vec<String> = (0..12).map(offer_id).collect();
        let out = s.message(
            conn(1),
            &announce(&peers[0], json!({"offers": offers(&ids)})),
            secs(1),
        );
        let relayed = &frames(&out)[1..];
        assert_eq!(relayed.len(), MAX_OFFERS);
        let mut targets: Vec<u64> = relayed.iter().map(|(to, _)| *to).collect();
        targets.sort();
        targets.dedup();
        assert_eq!(targets.len(), MAX_OFFERS, "distinct peers");
        assert!(!targets.contains(&1), "never to the offerer");
        let sent: Vec<&Value> = relayed.iter().map(|(_, m)| &m["offer_id"]).collect();
        let expected: Vec<Value> = ids[..MAX_OFFERS].iter().map(|id| json!(id)).collect();
        assert_eq!(sent, expected.iter().collect::<Vec<_>>());
        assert_eq!(s.relayed_offer_count(), MAX_OFFERS);
        // Invalid offers are skipped.
        let bad = json!([{"offer_id": "short", "offer": {"sdp": "x"}},
            {"offer_id": offer_id(99), "offer": {"type": "offer"}},
            {"offer_id": offer_id(98), "offer": {"type": "offer", "sdp": "v=0"}}]);
        let out = s.message(
            conn(1),
            &announce(&peers[0], json!({"offers": bad})),
            secs(1),
        );
        assert_eq!(frames(&out).len(), 2);
        assert_eq!(frames(&out)[1].1["offer_id"], json!(offer_id(98)));
    }

    #[test]
    fn answer_needs_a_relayed_offer() {
        let mut s = with_peers(&[A, B, C]);
        let not_relayed = |s: &mut TrackerServer, from: u64, text: String| {
            let out = s.message(conn(from), &text, secs(2));
            let f = frames(&out);
            assert_eq!(f.len(), 1, "{f:?}");
            assert_eq!(f[0].0, from, "nothing relayed: {f:?}");
            assert!(f[0].1["failure reason"].is_string());
            assert_eq!(f[0].1["info_hash"], json!(SWARM));
        };
        // Nothing was offered.
        not_relayed(&mut s, 2, answer(B, A, OFFER_1));
        // A offers to one peer (B or C); the other may not answer it, nor may a wrong id.
        let out = s.message(
            conn(1),
            &announce(A, json!({"offers": offers(&[OFFER_1.to_string()])})),
            secs(1),
        );
        let to = frames(&out)[1].0;
        let (peer, other, other_peer) = if to == 2 { (B, 3, C) } else { (C, 2, B) };
        not_relayed(&mut s, other, answer(other_peer, A, OFFER_1));
        not_relayed(&mut s, to, answer(peer, A, "OfferOfferOffer00002"));
        not_relayed(&mut s, to, answer(peer, C, OFFER_1));
        // Missing fields.
        not_relayed(
            &mut s,
            to,
            announce(peer, json!({"offer_id": OFFER_1, "answer": {"sdp": "x"}})),
        );
        // The right answer still goes through.
        let out = s.message(conn(to), &answer(peer, A, OFFER_1), secs(3));
        assert_eq!(frames(&out)[0].0, 1);
        // Too late: past OFFER_MAX_AGE the offer is forgotten.
        let out = s.message(
            conn(1),
            &announce(
                A,
                json!({"offers": offers(&["OfferOfferOffer00003".into()])}),
            ),
            secs(10),
        );
        let to = frames(&out)[1].0;
        let peer = if to == 2 { B } else { C };
        let late = answer(peer, A, "OfferOfferOffer00003");
        let out = s.message(conn(to), &late, secs(10) + OFFER_MAX_AGE);
        assert_eq!(frames(&out)[0].0, to);
        s.expire(secs(10) + OFFER_MAX_AGE);
        assert_eq!(s.relayed_offer_count(), 0);
    }

    #[test]
    fn answer_to_departed_offerer_fails() {
        let mut s = with_peers(&[A, B]);
        s.message(
            conn(1),
            &announce(A, json!({"offers": offers(&[OFFER_1.to_string()])})),
            secs(1),
        );
        s.disconnected(conn(1));
        let out = s.message(conn(2), &answer(B, A, OFFER_1), secs(2));
        assert_eq!(frames(&out)[0].0, 2);
        assert!(frames(&out)[0].1["failure reason"].is_string());
    }

    #[test]
    fn stopped_leaves_the_swarm() {
        let mut s = with_peers(&[A, B]);
        let out = s.message(conn(1), &announce(A, json!({"event": "stopped"})), secs(1));
        assert_eq!(frames(&out), vec![(1, response(0, 1))]);
        assert_eq!(s.peer_count(), 1);
        // B's offers find no one.
        let out = s.message(
            conn(2),
            &announce(B, json!({"offers": offers(&[OFFER_1.to_string()])})),
            secs(2),
        );
        assert_eq!(frames(&out), vec![(2, response(0, 1))]);
        let out = s.message(conn(2), &announce(B, json!({"event": "stopped"})), secs(3));
        assert_eq!(frames(&out), vec![(2, response(0, 0))]);
        assert_eq!((s.swarm_count(), s.peer_count()), (0, 0));
        // A stopped peer may join again, even with another peer_id.
        let out = s.message(conn(1), &announce(C, json!({})), secs(4));
        assert_eq!(frames(&out), vec![(1, response(0, 1))]);
    }

    #[test]
    fn completed_counts_seeders() {
        let mut s = with_peers(&[A, B]);
        let out = s.message(
            conn(1),
            &announce(A, json!({"event": "completed"})),
            secs(1),
        );
        assert_eq!(frames(&out), vec![(1, response(1, 1))]);
        let out = s.message(conn(2), &announce(B, json!({"left": 0})), secs(1));
        assert_eq!(frames(&out), vec![(2, response(2, 0))]);
        let out = s.message(conn(2), &announce(B, json!({"left": 10})), secs(1));
        assert_eq!(frames(&out), vec![(2, response(1, 1))]);
        s.connected(conn(9));
        let scrape = json!({"action": "scrape", "info_hash": [SWARM, OTHER, "bad"]});
        let out = s.message(conn(9), &scrape.to_string(), secs(1));
        assert_eq!(
            frames(&out),
            vec![(
                9,
                json!({"action": "scrape", "files": {
                    SWARM: {"complete": 1, "incomplete": 1, "downloaded": 1},
                    OTHER: {"complete": 0, "incomplete": 0, "downloaded": 0}}})
            )]
        );
    }

    #[test]
    fn disconnect_cleans_up() {
        let mut s = with_peers(&[A, B]);
        let other = json!({"info_hash": OTHER});
        s.message(conn(1), &announce(A, other.clone()), secs(0));
        s.message(conn(2), &announce(B, other), secs(0));
        assert_eq!((s.swarm_count(), s.peer_count()), (2, 4));
        assert!(s.disconnected(conn(1)).is_empty());
        assert_eq!((s.swarm_count(), s.peer_count()), (2, 2));
        assert_eq!(s.swarm_counts(&InfoHash::parse(SWARM).unwrap()), (0, 1));
        // B's offer cannot reach A any more.
        let out = s.message(
            conn(2),
            &announce(B, json!({"offers": offers(&[OFFER_1.to_string()])})),
            secs(1),
        );
        assert_eq!(frames(&out).len(), 1);
        // Frames from a closed connection are ignored; a second disconnect does nothing.
        assert!(
            s.message(conn(1), &announce(A, json!({})), secs(1))
                .is_empty()
        );
        assert!(s.disconnected(conn(1)).is_empty());
        s.disconnected(conn(2));
        assert_eq!(
            (s.connection_count(), s.swarm_count(), s.peer_count()),
            (0, 0, 0)
        );
        // A's peer_id is free again for a new connection.
        s.connected(conn(3));
        let out = s.message(conn(3), &announce(A, json!({})), secs(2));
        assert_eq!(frames(&out), vec![(3, response(0, 1))]);
    }

    #[test]
    fn bad_requests_get_failures() {
        let mut s = with_peers(&[A]);
        let failure_of = |s: &mut TrackerServer, text: &str| {
            let f = frames(&s.message(conn(1), text, secs(1)));
            assert_eq!(f.len(), 1, "{f:?}");
            f[0].1["failure reason"].as_str().unwrap().to_string()
        };
        for bad in [
            json!("e93f02264a9448c5b15"),
            json!("e93f02264a9448c5b1500"),
            json!(5),
        ] {
            let text = announce(A, json!({"info_hash": bad}));
            assert_eq!(failure_of(&mut s, &text), "invalid info_hash");
        }
        let text = json!({"action": "announce", "peer_id": A}).to_string();
        assert_eq!(failure_of(&mut s, &text), "invalid info_hash");
        // Characters above U+00FF are refused, as aquatic_ws does.
        let text = announce("-GM0001-AAAAAAAAAAA\u{3b1}", json!({}));
        assert_eq!(failure_of(&mut s, &text), "invalid peer_id");
        let text = announce(A, json!({"event": "exploded"}));
        assert_eq!(failure_of(&mut s, &text), "invalid event");
        let text = json!({"action": "hello"}).to_string();
        assert_eq!(failure_of(&mut s, &text), "invalid action");
        // A second peer_id in the same swarm on one connection.
        let text = announce(B, json!({}));
        assert_eq!(
            failure_of(&mut s, &text),
            "one peer_id per info_hash per connection"
        );
        // Another connection using A's peer_id.
        s.connected(conn(2));
        let f = frames(&s.message(conn(2), &announce(A, json!({})), secs(1)));
        assert_eq!(
            f[0].1["failure reason"],
            json!("peer_id in use by another connection")
        );
        assert_eq!(s.peer_count(), 1);
        // None of it cost a connection.
        assert_eq!(s.connection_count(), 2);
    }

    #[test]
    fn violations_close_the_connection() {
        let mut s = with_peers(&[A, B]);
        let out = s.message(conn(1), "not json", secs(1));
        assert_eq!(out.len(), 2);
        assert!(
            matches!(&out[0], ServerOutput::Send(id, t) if *id == conn(1) && t.contains("failure reason"))
        );
        assert_eq!(out[1], ServerOutput::Close(conn(1)));
        assert_eq!((s.connection_count(), s.peer_count()), (1, 1));
        assert_eq!(
            s.message(conn(2), "[1,2]", secs(1))[1],
            ServerOutput::Close(conn(2))
        );
        // Frames over 64 KiB.
        s.connected(conn(3));
        let big = announce(A, json!({"pad": "x".repeat(MAX_FRAME_BYTES)}));
        let out = s.message(conn(3), &big, secs(1));
        assert_eq!(out[1], ServerOutput::Close(conn(3)));
        assert_eq!(s.connection_count(), 0);
        // Exactly 64 KiB is fine.
        s.connected(conn(4));
        let base = announce(A, json!({"pad": ""}));
        let exact = announce(A, json!({"pad": "x".repeat(MAX_FRAME_BYTES - base.len())}));
        assert_eq!(exact.len(), MAX_FRAME_BYTES);
        assert_eq!(frames(&s.message(conn(4), &exact, secs(1))).len(), 1);
    }

    #[test]
    fn limits_hold() {
        let config = TrackerServerConfig {
            max_connections: 3,
            max_swarms_per_connection: 2,
            max_swarms: 3,
            max_peers_per_swarm: 2,
            max_relayed_offers: 3,
            ..TrackerServerConfig::default()
        };
        let mut s = TrackerServer::new(config, 1);
        let hash = |i: usize| format!("{i:020}");
        let join = |s: &mut TrackerServer, c: u64, peer: &str, h: &str| {
            let out = s.message(conn(c), &announce(peer, json!({"info_hash": h})), secs(0));
            frames(&out)[0].1["failure reason"]
                .as_str()
                .map(String::from)
        };
        for c in 1..=3 {
            assert!(s.connected(conn(c)).is_empty());
        }
        assert_eq!(
            s.connected(conn(4)),
            vec![
                ServerOutput::Send(conn(4), failure("announce", "too many connections", None)),
                ServerOutput::Close(conn(4))
            ]
        );
        assert_eq!(join(&mut s, 1, A, &hash(0)), None);
        assert_eq!(join(&mut s, 1, A, &hash(1)), None);
        assert_eq!(
            join(&mut s, 1, A, &hash(2)).as_deref(),
            Some("too many swarms on this connection")
        );
        assert_eq!(join(&mut s, 2, B, &hash(2)), None);
        assert_eq!(
            join(&mut s, 2, B, &hash(3)).as_deref(),
            Some("too many swarms")
        );
        assert_eq!(join(&mut s, 2, B, &hash(0)), None);
        assert_eq!(
            join(&mut s, 3, C, &hash(0)).as_deref(),
            Some("swarm is full")
        );
        s.disconnected(conn(2));
        assert_eq!(join(&mut s, 3, C, &hash(0)), None);
        // Relayed offers: past the cap the oldest are forgotten.
        for i in 0..5 {
            let text = announce(
                A,
                json!({"info_hash": hash(0), "offers": offers(&[offer_id(i)])}),
            );
            let out = s.message(conn(1), &text, secs(i as u64));
            assert_eq!(frames(&out)[1].0, 3);
        }
        assert_eq!(s.relayed_offer_count(), 3);
        let reply = |s: &mut TrackerServer, i: usize| {
            let text = announce(
                C,
                json!({"info_hash": hash(0), "to_peer_id": A, "offer_id": offer_id(i),
                    "answer": {"type": "answer", "sdp": "v=0"}}),
            );
            frames(&s.message(conn(3), &text, secs(6)))[0].0
        };
        assert_eq!(reply(&mut s, 1), 3, "forgotten");
        assert_eq!(reply(&mut s, 4), 1, "remembered");
        assert_eq!(s.relayed_offer_count(), 2);
    }

    #[test]
    fn silent_peers_expire() {
        let mut s = with_peers(&[A, B]);
        s.message(conn(2), &announce(B, json!({})), secs(100));
        s.expire(PEER_MAX_AGE - secs(1));
        assert_eq!(s.peer_count(), 2);
        s.expire(PEER_MAX_AGE);
        assert_eq!(s.peer_count(), 1);
        // A is gone from its connection too: it may join again, under another peer_id.
        let out = s.message(conn(1), &announce(C, json!({})), PEER_MAX_AGE);
        assert_eq!(frames(&out), vec![(1, response(0, 2))]);
        s.expire(secs(100) + PEER_MAX_AGE);
        assert_eq!(s.peer_count(), 1);
        s.expire(secs(1000));
        assert_eq!((s.swarm_count(), s.connection_count()), (0, 2));
    }

    /// Two of our own clients against the server, in memory.
    #[test]
    fn round_trip_with_tracker_clients() {
        let config = TrackerConfig {
            offers_per_announce: 1,
            reconnect_jitter: false,
            ..TrackerConfig::default()
        };
        let info_hash = InfoHash::parse(SWARM).unwrap();
        let mut s = server();
        let mut clients = [
            TrackerClient::new(config.clone()),
            TrackerClient::new(config),
        ];
        let now = secs(0);

        // Routes every Send through the server and returns the other outputs, per client.
        fn route(
            s: &mut TrackerServer,
            clients: &mut [TrackerClient; 2],
            from: usize,
            outputs: Vec<TrackerOutput>,
        ) -> [Vec<TrackerOutput>; 2] {
            let mut seen: [Vec<TrackerOutput>; 2] = [Vec::new(), Vec::new()];
            let mut queue: VecDeque<(usize, TrackerOutput)> =
                outputs.into_iter().map(|o| (from, o)).collect();
            while let Some((who, output)) = queue.pop_front() {
                let TrackerOutput::Send(text) = output else {
                    seen[who].push(output);
                    continue;
                };
                for delivery in s.message(conn(who as u64), &text, secs(0)) {
                    let ServerOutput::Send(to, frame) = delivery else {
                        panic!("closed")
                    };
                    let to = to.0 as usize;
                    let more = clients[to].handle(secs(0), TrackerInput::Message(frame));
                    queue.extend(more.into_iter().map(|o| (to, o)));
                }
            }
            seen
        }

        for (i, client) in clients.iter_mut().enumerate() {
            s.connected(conn(i as u64));
            client.handle(now, TrackerInput::Join(info_hash.clone()));
        }
        // B announces first, without offers.
        let out = clients[1].handle(now, TrackerInput::Connected);
        assert!(matches!(&out[..], [TrackerOutput::NeedOffers { .. }]));
        let out = clients[1].handle(
            now,
            TrackerInput::OffersReady {
                info_hash: info_hash.clone(),
                offers: vec![],
            },
        );
        let seen = route(&mut s, &mut clients, 1, out);
        assert!(matches!(
            &seen[1][..],
            [TrackerOutput::SwarmStats {
                incomplete: Some(1),
                ..
            }]
        ));
        // A announces one offer; B gets it as a RemoteOffer.
        let out = clients[0].handle(now, TrackerInput::Connected);
        let [TrackerOutput::NeedOffers { offer_ids, .. }] = &out[..] else {
            panic!("{out:?}")
        };
        let offer_id = offer_ids[0].clone();
        let out = clients[0].handle(
            now,
            TrackerInput::OffersReady {
                info_hash: info_hash.clone(),
                offers: vec![LocalOffer {
                    offer_id: offer_id.clone(),
                    sdp: SDP_OFFER.into(),
                }],
            },
        );
        let seen = route(&mut s, &mut clients, 0, out);
        let a = clients[0].peer_id().clone();
        let b = clients[1].peer_id().clone();
        assert!(matches!(
            &seen[0][..],
            [TrackerOutput::SwarmStats {
                incomplete: Some(2),
                ..
            }]
        ));
        assert_eq!(
            seen[1],
            vec![TrackerOutput::RemoteOffer {
                info_hash: info_hash.clone(),
                remote: RemoteSdp {
                    peer_id: a.clone(),
                    offer_id: offer_id.clone(),
                    sdp: SDP_OFFER.into(),
                },
            }]
        );
        // B answers; A gets it as a RemoteAnswer with the offer_id echoed.
        let out = clients[1].handle(
            now,
            TrackerInput::AnswerReady {
                info_hash: info_hash.clone(),
                to_peer_id: a,
                offer_id: offer_id.clone(),
                sdp: SDP_ANSWER.into(),
            },
        );
        let seen = route(&mut s, &mut clients, 1, out);
        assert_eq!(seen[1], vec![]);
        assert_eq!(
            seen[0],
            vec![TrackerOutput::RemoteAnswer {
                info_hash: info_hash.clone(),
                remote: RemoteSdp {
                    peer_id: b,
                    offer_id,
                    sdp: SDP_ANSWER.into(),
                },
            }]
        );
        // Leaving: A's stopped announce empties its place in the swarm.
        let out = clients[0].handle(now, TrackerInput::Leave(info_hash.clone()));
        route(&mut s, &mut clients, 0, out);
        assert_eq!(s.swarm_counts(&info_hash), (0, 1));
    }
}

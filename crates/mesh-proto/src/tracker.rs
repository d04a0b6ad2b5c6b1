//! The WebTorrent tracker protocol: JSON text frames over a WebSocket.
//!
//! Messages follow what bittorrent-tracker and aquatic_ws exchange:
//!
//! - announce: `{"action":"announce","info_hash","peer_id","numwant","uploaded","downloaded",
//!   "event"?,"offers":[{"offer_id","offer":{"type":"offer","sdp"}}]?}`;
//! - the tracker relays each offer to one other peer as
//!   `{"action":"announce","info_hash","peer_id","offer_id","offer"}`;
//! - the answer goes back through the tracker as `{"action":"announce","info_hash","peer_id",
//!   "to_peer_id","offer_id","answer":{"type":"answer","sdp"}}`, with the offer_id echoed
//!   exactly, and reaches the offerer without `to_peer_id`;
//! - responses carry `interval`, `complete`, `incomplete`; errors carry `failure reason`.
//!
//! The encoder keeps to the limits of the trackers people run: ids of 20 characters, at most
//! [`MAX_OFFERS_PER_ANNOUNCE`] offers (aquatic_ws's default `max_offers`), and every message
//! below [`MAX_MESSAGE_BYTES`] (aquatic_ws's default `websocket_max_frame_size`); offers that
//! do not fit are left out, never sent in an oversized frame.

use crate::ids::{InfoHash, OfferId, PeerId};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use thiserror::Error;

/// At most this many offers per announce (aquatic_ws relays no more; bittorrent-tracker caps
/// near 82).
pub const MAX_OFFERS_PER_ANNOUNCE: usize = 10;

/// Every encoded message is strictly shorter than this many bytes (aquatic_ws rejects frames
/// above 16 KiB).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

// ---------------------------------------------------------------------------------------------
// Messages

/// The `event` of an announce; none means a periodic update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceEvent {
    Started,
    Stopped,
    Completed,
}

impl AnnounceEvent {
    fn as_str(self) -> &'static str {
        match self {
            AnnounceEvent::Started => "started",
            AnnounceEvent::Stopped => "stopped",
            AnnounceEvent::Completed => "completed",
        }
    }
}

/// A local WebRTC offer: the complete (non-trickle) SDP and the id it goes under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOffer {
    pub offer_id: OfferId,
    pub sdp: String,
}

// Every message of the protocol, as it is written, once for the client and the server. What
// each side reads is parsed leniently (trackers and peers differ): the client reads tracker
// messages with [`parse_message`], the server reads requests field by field.

/// An SDP offer or answer, `{"type","sdp"}`.
#[derive(Debug, Serialize)]
pub struct Sdp<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub sdp: &'a str,
}

/// One offer of an announce.
#[derive(Debug, Serialize)]
pub struct Offer<'a> {
    pub offer_id: &'a str,
    pub offer: Sdp<'a>,
}

/// Peer to tracker: join or stay in a swarm, with offers for other peers.
#[derive(Debug, Serialize)]
pub struct Announce<'a> {
    pub action: &'static str,
    pub info_hash: &'a str,
    pub peer_id: &'a str,
    pub numwant: usize,
    pub uploaded: u64,
    pub downloaded: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub offers: Vec<Offer<'a>>,
}

/// Peer to tracker: the answer to an offer relayed to it.
#[derive(Debug, Serialize)]
pub struct Answer<'a> {
    pub action: &'static str,
    pub info_hash: &'a str,
    pub peer_id: &'a str,
    pub to_peer_id: &'a str,
    pub offer_id: &'a str,
    pub answer: Sdp<'a>,
}

/// Tracker to peer: the response to an announce.
#[derive(Debug, Serialize)]
pub struct AnnounceResponse<'a> {
    pub action: &'static str,
    pub interval: u64,
    pub info_hash: &'a str,
    pub complete: usize,
    pub incomplete: usize,
}

/// Tracker to peer: an offer from `peer_id`, or the answer of `peer_id` to our offer.
#[derive(Debug, Serialize)]
pub struct Relay<'a> {
    pub action: &'static str,
    pub info_hash: &'a str,
    pub peer_id: &'a str,
    pub offer_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offer: Option<Sdp<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<Sdp<'a>>,
}

/// Tracker to peer: a request it cannot serve.
#[derive(Debug, Serialize)]
pub struct Failure<'a> {
    pub action: &'a str,
    #[serde(rename = "failure reason")]
    pub failure_reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info_hash: Option<&'a str>,
}

/// One swarm's counts in a scrape response.
#[derive(Debug, Serialize)]
pub struct ScrapeFile {
    pub complete: usize,
    pub incomplete: usize,
    pub downloaded: u64,
}

/// Tracker to peer: the counts of the swarms asked about.
#[derive(Debug, Serialize)]
pub struct ScrapeResponse<'a> {
    pub action: &'static str,
    pub files: std::collections::BTreeMap<&'a str, ScrapeFile>,
}

/// Encodes a `failure reason` message for `action`.
pub fn encode_failure(action: &str, reason: &str, info_hash: Option<&InfoHash>) -> String {
    to_json(&Failure {
        action,
        failure_reason: reason,
        info_hash: info_hash.map(InfoHash::as_str),
    })
}

/// An encoded announce and which of the given offers it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedAnnounce {
    pub text: String,
    /// Indices into the offers passed in, of those included, in order.
    pub included: Vec<usize>,
}

/// Encodes an announce carrying as many of `offers` as the limits allow: the first ones, in
/// order, at most [`MAX_OFFERS_PER_ANNOUNCE`], skipping any whose addition would take the
/// message to [`MAX_MESSAGE_BYTES`]. `numwant` is the number of offers carried. A `Stopped`
/// announce carries no offers.
pub fn encode_announce(
    info_hash: &InfoHash,
    peer_id: &PeerId,
    event: Option<AnnounceEvent>,
    offers: &[LocalOffer],
) -> EncodedAnnounce {
    let mut message = Announce {
        action: "announce",
        info_hash: info_hash.as_str(),
        peer_id: peer_id.as_str(),
        numwant: 0,
        uploaded: 0,
        downloaded: 0,
        event: event.map(AnnounceEvent::as_str),
        offers: Vec::new(),
    };
    let mut included = Vec::new();
    let mut text = to_json(&message);
    if event != Some(AnnounceEvent::Stopped) {
        for (index, offer) in offers.iter().enumerate() {
            if included.len() == MAX_OFFERS_PER_ANNOUNCE {
                break;
            }
            message.offers.push(Offer {
                offer_id: offer.offer_id.as_str(),
                offer: Sdp {
                    kind: "offer",
                    sdp: &offer.sdp,
                },
            });
            message.numwant = message.offers.len();
            let candidate = to_json(&message);
            if candidate.len() < MAX_MESSAGE_BYTES {
                text = candidate;
                included.push(index);
            } else {
                message.offers.pop();
                message.numwant = message.offers.len();
            }
        }
    }
    EncodedAnnounce { text, included }
}

/// Encodes the answer to a relayed offer, or `None` when it would reach [`MAX_MESSAGE_BYTES`].
pub fn encode_answer(
    info_hash: &InfoHash,
    peer_id: &PeerId,
    to_peer_id: &PeerId,
    offer_id: &OfferId,
    sdp: &str,
) -> Option<String> {
    let text = to_json(&Answer {
        action: "announce",
        info_hash: info_hash.as_str(),
        peer_id: peer_id.as_str(),
        to_peer_id: to_peer_id.as_str(),
        offer_id: offer_id.as_str(),
        answer: Sdp {
            kind: "answer",
            sdp,
        },
    });
    (text.len() < MAX_MESSAGE_BYTES).then_some(text)
}

/// A message as JSON text.
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("tracker messages serialize")
}

#[derive(Deserialize)]
struct SdpIn {
    sdp: String,
}

/// What the client reads of any tracker message: the fields of [`AnnounceResponse`],
/// [`Relay`] and [`Failure`], and the `warning message` and `min interval` other trackers add.
#[derive(Deserialize)]
struct MessageIn {
    action: Option<String>,
    info_hash: Option<String>,
    peer_id: Option<String>,
    offer_id: Option<String>,
    offer: Option<SdpIn>,
    answer: Option<SdpIn>,
    interval: Option<f64>,
    #[serde(rename = "min interval")]
    min_interval: Option<f64>,
    complete: Option<f64>,
    incomplete: Option<f64>,
    #[serde(rename = "failure reason")]
    failure_reason: Option<String>,
    #[serde(rename = "warning message")]
    warning_message: Option<String>,
}

/// An offer or answer relayed by the tracker, from peer `peer_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSdp {
    pub peer_id: PeerId,
    pub offer_id: OfferId,
    pub sdp: String,
}

/// A message from the tracker. One message may carry several parts; trackers send a response,
/// an offer, an answer or a failure as separate messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackerMessage {
    /// `action` is "scrape" (or anything else but "announce" or absent).
    pub not_announce: bool,
    pub info_hash: Option<InfoHash>,
    pub failure_reason: Option<String>,
    pub warning_message: Option<String>,
    /// `interval`, or `min interval` when there is no `interval`.
    pub interval: Option<Duration>,
    pub complete: Option<u64>,
    pub incomplete: Option<u64>,
    pub offer: Option<RemoteSdp>,
    pub answer: Option<RemoteSdp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TrackerError {
    #[error("invalid tracker message: {0}")]
    InvalidJson(String),
}

/// Parses a tracker text message. Ids that are not 20 single-byte characters make the part
/// that carries them absent.
pub fn parse_message(text: &str) -> Result<TrackerMessage, TrackerError> {
    let raw: MessageIn =
        serde_json::from_str(text).map_err(|e| TrackerError::InvalidJson(e.to_string()))?;
    let count = |v: Option<f64>| v.filter(|v| v.is_finite() && *v >= 0.0).map(|v| v as u64);
    let seconds = |v: Option<f64>| {
        v.filter(|v| v.is_finite() && *v > 0.0 && *v < 1e9)
            .map(Duration::from_secs_f64)
    };
    let peer_id = raw.peer_id.as_deref().and_then(PeerId::parse);
    let offer_id = raw.offer_id.as_deref().and_then(OfferId::parse);
    let remote = |sdp: Option<SdpIn>| {
        Some(RemoteSdp {
            peer_id: peer_id.clone()?,
            offer_id: offer_id.clone()?,
            sdp: sdp?.sdp,
        })
    };
    Ok(TrackerMessage {
        not_announce: raw.action.as_deref().is_some_and(|a| a != "announce"),
        info_hash: raw.info_hash.as_deref().and_then(InfoHash::parse),
        failure_reason: raw.failure_reason,
        warning_message: raw.warning_message,
        interval: seconds(raw.interval).or(seconds(raw.min_interval)),
        complete: count(raw.complete),
        incomplete: count(raw.incomplete),
        offer: remote(raw.offer),
        answer: remote(raw.answer),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWARM: &str = "e93f02264a9448c5b150";
    const PEER: &str = "-GM0001-AAAAAAAAAAAA";
    const OFFER: &str = "OfferOfferOffer00001";

    #[test]
    fn what_the_tracker_writes_its_clients_read() {
        let info_hash = InfoHash::parse(SWARM).unwrap();
        let response = to_json(&AnnounceResponse {
            action: "announce",
            interval: 120,
            info_hash: SWARM,
            complete: 2,
            incomplete: 3,
        });
        assert_eq!(
            response,
            r#"{"action":"announce","interval":120,"info_hash":"e93f02264a9448c5b150","complete":2,"incomplete":3}"#
        );
        assert_eq!(
            parse_message(&response).unwrap(),
            TrackerMessage {
                info_hash: Some(info_hash.clone()),
                interval: Some(Duration::from_secs(120)),
                complete: Some(2),
                incomplete: Some(3),
                ..Default::default()
            }
        );
        let relay = to_json(&Relay {
            action: "announce",
            info_hash: SWARM,
            peer_id: PEER,
            offer_id: OFFER,
            offer: Some(Sdp {
                kind: "offer",
                sdp: "v=0\r\n",
            }),
            answer: None,
        });
        assert_eq!(
            parse_message(&relay).unwrap().offer,
            Some(RemoteSdp {
                peer_id: PeerId::parse(PEER).unwrap(),
                offer_id: OfferId::parse(OFFER).unwrap(),
                sdp: "v=0\r\n".into(),
            })
        );
        let failure = encode_failure("announce", "invalid peer_id", Some(&info_hash));
        assert_eq!(
            failure,
            r#"{"action":"announce","failure reason":"invalid peer_id","info_hash":"e93f02264a9448c5b150"}"#
        );
        let parsed = parse_message(&failure).unwrap();
        assert_eq!(parsed.failure_reason.as_deref(), Some("invalid peer_id"));
        assert_eq!(parsed.info_hash, Some(info_hash));
    }
}

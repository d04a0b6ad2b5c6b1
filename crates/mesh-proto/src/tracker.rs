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

#[derive(Serialize)]
struct SdpOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sdp: &'a str,
}

#[derive(Serialize)]
struct OfferOut<'a> {
    offer_id: &'a str,
    offer: SdpOut<'a>,
}

#[derive(Serialize)]
struct AnnounceOut<'a> {
    action: &'static str,
    info_hash: &'a str,
    peer_id: &'a str,
    numwant: usize,
    uploaded: u64,
    downloaded: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    offers: Vec<OfferOut<'a>>,
}

#[derive(Serialize)]
struct AnswerOut<'a> {
    action: &'static str,
    info_hash: &'a str,
    peer_id: &'a str,
    to_peer_id: &'a str,
    offer_id: &'a str,
    answer: SdpOut<'a>,
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
    let mut message = AnnounceOut {
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
            message.offers.push(OfferOut {
                offer_id: offer.offer_id.as_str(),
                offer: SdpOut {
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
    let text = to_json(&AnswerOut {
        action: "announce",
        info_hash: info_hash.as_str(),
        peer_id: peer_id.as_str(),
        to_peer_id: to_peer_id.as_str(),
        offer_id: offer_id.as_str(),
        answer: SdpOut {
            kind: "answer",
            sdp,
        },
    });
    (text.len() < MAX_MESSAGE_BYTES).then_some(text)
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("tracker messages serialize")
}

#[derive(Deserialize)]
struct SdpIn {
    sdp: String,
}

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

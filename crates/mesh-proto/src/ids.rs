//! Ids on the wire: the WebTorrent tracker's 20-character info_hash, peer_id and offer_id, and
//! the segment and request ids of p2p-media-loader's peer protocol.
//!
//! WebTorrent trackers take info_hash, peer_id and offer_id as 20-character strings whose
//! characters are single bytes (U+0000..=U+00FF): bittorrent-tracker checks `length === 20`,
//! aquatic_ws rejects characters above U+00FF. The ids made here are ASCII.

use rand::RngExt;
use std::fmt;

/// A segment id on the wire: the media sequence number (HLS) or segment number (DASH).
///
/// p2p-media-loader carries JavaScript numbers, so ids above 2^53 lose precision in browser
/// peers; the wire format itself is a signed integer of any size.
pub type SegmentId = i64;

/// A request's id: chosen by the requester, unique among its requests to one peer, echoed in
/// every answer. p2p-media-loader picks them at random in 0..1000; meshsrc numbers its own
/// requests from 1, the same ids its scheduler knows them by.
pub type RequestId = i64;

/// Length of info_hash, peer_id and offer_id, in characters.
pub const ID_LEN: usize = 20;

/// The peer_id prefix, in the Azureus style `-XXvvvv-`: "GM" for gst-mesh, then the crate's
/// major and minor version as two digits each.
pub fn peer_id_prefix() -> String {
    let mut parts = env!("CARGO_PKG_VERSION").split('.');
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    format!("-GM{:02}{:02}-", major % 100, minor % 100)
}

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_alphanumeric(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHANUMERIC[rng.random_range(0..ALPHANUMERIC.len())] as char)
        .collect()
}

/// Whether `s` is a valid tracker id: exactly 20 characters, each in U+0000..=U+00FF.
pub fn is_valid_id(s: &str) -> bool {
    s.chars().count() == ID_LEN && s.chars().all(|c| (c as u32) <= 0xff)
}

macro_rules! tracker_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Accepts a tracker-supplied id exactly as given, if it is valid (see
            /// [`is_valid_id`]).
            pub fn parse(s: &str) -> Option<Self> {
                is_valid_id(s).then(|| $name(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

tracker_id!(
    /// A swarm's 20-character info_hash.
    InfoHash
);
tracker_id!(
    /// A 20-character peer id. One per tracker connection, used for all its swarms.
    PeerId
);
tracker_id!(
    /// A 20-character offer id; the answer to an offer echoes it exactly.
    OfferId
);

impl PeerId {
    /// A fresh peer id: the [`peer_id_prefix`] and random alphanumerics.
    pub fn random() -> PeerId {
        let prefix = peer_id_prefix();
        let rest = random_alphanumeric(ID_LEN - prefix.len());
        PeerId(prefix + &rest)
    }
}

impl OfferId {
    /// A fresh offer id of 20 random alphanumerics.
    pub fn random() -> OfferId {
        OfferId(random_alphanumeric(ID_LEN))
    }
}

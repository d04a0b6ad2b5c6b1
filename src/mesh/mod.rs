//! The mesh: plain Rust, no GStreamer types.
//!
//! Sans-IO building blocks (no sockets):
//! - [`protocol`]: the p2p-media-loader 2.x peer wire format (binary commands and framing).
//! - [`integrity`]: PeerTube's `segments-sha256.json` and SHA-256 verification.
//! - [`cache`]: the byte-bounded in-memory segment store peers are served from.
//! - [`guard`]: defences against hostile peers and trackers (bans, rate limits, warnings).
//! - [`swarm`]: swarm identity (info_hash) and peer ids.
//! - [`tracker`]: the WebTorrent tracker protocol messages and a sans-IO client state machine.
//! - [`tracker_server`]: the core of the bundled WebTorrent tracker (`mesh-tracker`).
//!
//! I/O (tokio):
//! - [`transport`]: WebRTC data channels with the `webrtc` crate;
//! - [`signalling`]: tracker WebSocket connections that open peer links for the delivery hub.
//!
//! Time, where it matters, is a [`Time`]: a `Duration` since an arbitrary origin chosen by the
//! driver (the session start), the same convention as the delivery scheduler.

pub mod cache;
pub mod guard;
pub mod integrity;
pub mod protocol;
pub mod signalling;
pub mod swarm;
pub mod tracker;
pub mod tracker_server;
pub mod transport;

/// Monotonic time as an offset from an origin the driver picks.
pub type Time = std::time::Duration;

/// A segment id on the wire: the media sequence number (HLS) or segment number (DASH).
///
/// p2p-media-loader carries JavaScript numbers, so ids above 2^53 lose precision in browser
/// peers; the wire format itself is a signed integer of any size.
pub type SegmentId = i64;

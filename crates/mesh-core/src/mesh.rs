//! The mesh's sans-IO building blocks (no sockets):
//! - [`protocol`]: the p2p-media-loader 2.x peer wire format (from `mesh_proto`).
//! - [`integrity`]: PeerTube's `segments-sha256.json` and SHA-256 verification.
//! - [`cache`]: the byte-bounded in-memory segment store peers are served from.
//! - [`guard`]: defences against hostile peers and trackers (bans, rate limits, warnings).
//! - [`swarm`]: swarm identity (info_hash) and peer ids.
//! - [`tracker`]: the WebTorrent tracker messages and a sans-IO client state machine.
//!
//! Time, where it matters, is a [`Time`]: a `Duration` since an arbitrary origin chosen by the
//! driver (the session start), the same convention as the delivery scheduler.

pub mod cache;
pub mod guard;
pub mod integrity;
pub mod swarm;
pub mod tracker;

pub use mesh_proto::ids::SegmentId;
pub use mesh_proto::peer as protocol;

/// Monotonic time as an offset from an origin the driver picks.
pub type Time = std::time::Duration;

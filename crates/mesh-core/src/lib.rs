//! gst-mesh's sans-IO engine: everything that decides, with time as an input and no sockets,
//! tokio or GStreamer.
//!
//! - [`model`]: the presentation model both manifest formats feed; [`hls`] and [`dash`] parse
//!   into it; [`container`] reads what the model needs from init segments; [`crypto`] decrypts
//!   HLS AES-128; [`abr`] picks variants.
//! - [`playback`]: the track driver's policy: reloads, deadlines, fetch-ahead, hash refetch.
//! - [`scheduler`]: the hybrid CDN/peer scheduler of every segment.
//! - [`delivery`]: the delivery engine and its per-link receive and upload state.
//! - [`mesh`]: the segment cache, integrity, guards, swarm identity and the tracker client.
//! - [`error`]: the error every layer reports.

pub mod abr;
pub mod container;
pub mod crypto;
pub mod dash;
pub mod delivery;
pub mod error;
pub mod hls;
pub mod mesh;
pub mod model;
pub mod playback;
pub mod scheduler;

//! gst-mesh's wire types, shared by the plugin, the tracker server and the tools that test them:
//!
//! - [`ids`]: the tracker's 20-character ids and the peer protocol's segment ids;
//! - [`peer`]: p2p-media-loader 2.x's binary peer commands and their framing;
//! - [`tracker`]: the WebTorrent tracker's JSON messages.
//!
//! Plain data and codecs: no I/O, no clocks, no GStreamer.

pub mod ids;
pub mod peer;
pub mod tracker;

//! gst-mesh: `meshsrc`, an HLS and MPEG-DASH source whose segments come from the CDN or from
//! other viewers over WebRTC data channels, chosen by a hybrid sans-IO scheduler.
//!
//! This crate is the GStreamer element and the tokio drivers that carry the sans-IO engine's
//! inputs and outputs: the delivery hub, the track drivers, HTTP fetches, WebRTC links and
//! tracker connections. What decides lives in `mesh_core`; the wire types in `mesh_proto`.
//! The engine's modules are re-exported here under their own names.

use gst::glib;

pub use mesh_core::{abr, container, crypto, error, hls, model, scheduler};

pub mod dash;
pub mod delivery;
pub mod fetch;
pub mod mesh;
pub mod meshsrc;
pub mod runtime;
pub mod session;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    meshsrc::register(plugin)
}

gst::plugin_define!(
    mesh,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);

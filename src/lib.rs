//! gst-mesh: `meshsrc`, an HLS and MPEG-DASH source whose segments come from the CDN or from
//! other viewers over WebRTC data channels, chosen by a hybrid sans-IO scheduler.
//!
//! Everything but `meshsrc` is plain Rust with no GStreamer types.

use gst::glib;

pub mod abr;
pub mod container;
pub mod crypto;
pub mod dash;
pub mod delivery;
pub mod error;
pub mod fetch;
pub mod hls;
pub mod mesh;
pub mod meshsrc;
pub mod model;
pub mod runtime;
pub mod scheduler;
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

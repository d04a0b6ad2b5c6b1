//! The mesh's I/O (tokio), over the sans-IO blocks of `mesh_core::mesh` re-exported here:
//! - [`transport`]: WebRTC data channels with the `webrtc` crate;
//! - [`signalling`]: tracker WebSocket connections that open peer links for the delivery hub.

pub use mesh_core::mesh::*;

pub mod signalling;
pub mod transport;

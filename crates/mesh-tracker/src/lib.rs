//! The bundled WebTorrent tracker: a sans-IO core ([`server`]) and, in `src/bin`, the
//! `mesh-tracker` binary that drives it over WebSockets. Not linked into the plugin.

pub mod server;

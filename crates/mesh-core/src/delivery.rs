//! Per-link delivery state the plugin's hub drives: what a link receives ([`inbound`]) and
//! what it uploads ([`uploads`]).

pub mod inbound;
pub mod uploads;

//! The delivery engine ([`engine`]) and the per-link state it drives: what a link receives
//! ([`inbound`]) and what it uploads ([`uploads`]).

pub mod engine;
pub mod inbound;
pub mod uploads;

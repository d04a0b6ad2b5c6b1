//! The bodies of the fuzz targets, shared by `fuzz/fuzz_targets/*.rs` (cargo-fuzz, libFuzzer)
//! and `tests/fuzz_properties.rs` (proptest on stable, a fixed number of cases). Each one feeds
//! untrusted bytes to one parser and checks what must hold whatever the input: no panic, and
//! the few invariants named below.

#![allow(dead_code)]

use bytes::Bytes;
use gstmesh::mesh::integrity::SegmentHashes;
use gstmesh::mesh::protocol::{self, Command, Decoder, Incoming};
use gstmesh::mesh::swarm::InfoHash;
use gstmesh::mesh::tracker::{TrackerClient, TrackerConfig, TrackerInput, parse_message};
use std::time::Duration;
use url::Url;

fn sorted(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable();
    v
}

/// Equal up to the order of announced ids, which re-encoding groups by their high bits.
fn same_command(a: &Command, b: &Command) -> bool {
    match (a, b) {
        (
            Command::SegmentsAnnouncement { loaded, loading },
            Command::SegmentsAnnouncement {
                loaded: l2,
                loading: p2,
            },
        ) => {
            sorted(loaded.clone()) == sorted(l2.clone())
                && sorted(loading.clone()) == sorted(p2.clone())
        }
        _ => a == b,
    }
}

/// The wire decoder: `data` is cut into data-channel messages (each a little-endian u16 length,
/// then that many bytes) fed to one [`Decoder`]; and `data` is decoded as one command body. A
/// body that decodes re-encodes to one that decodes to the same command.
pub fn wire_decoder(data: &[u8]) {
    let mut decoder = Decoder::with_max_command_len(64 * 1024);
    let mut rest = data;
    while rest.len() >= 2 {
        let len = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let message = Bytes::copy_from_slice(&rest[2..2 + len]);
        rest = &rest[2 + len..];
        let was_command = protocol::is_command_part(&message);
        match decoder.push(message.clone()) {
            Ok(Some(Incoming::Data(d))) => {
                assert!(!was_command);
                assert_eq!(d, message);
            }
            Ok(_) | Err(_) => assert!(was_command),
        }
    }
    if let Ok(command) = protocol::decode_body(data) {
        let again = protocol::decode_body(&protocol::encode_body(&command))
            .expect("a re-encoded command decodes");
        assert!(
            same_command(&command, &again),
            "{command:?} became {again:?}"
        );
        let mut decoder = Decoder::new();
        let parts = protocol::encode_with_limit(&command, 64);
        let mut decoded = None;
        for part in parts {
            assert!(decoded.is_none());
            decoded = decoder
                .push(Bytes::from(part))
                .expect("own framing decodes");
        }
        match decoded {
            Some(Incoming::Command(c)) => assert!(same_command(&command, &c)),
            other => panic!("{other:?}"),
        }
    }
}

/// The tracker message parser, and the tracker client fed the message while in a swarm.
pub fn tracker_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_message(text);
    let mut client = TrackerClient::new(TrackerConfig::default());
    let swarm = InfoHash::parse("0123456789abcdef0123").expect("info hash");
    client.handle(Duration::ZERO, TrackerInput::Join(swarm));
    client.handle(Duration::ZERO, TrackerInput::Connected);
    for output in client.handle(
        Duration::from_secs(1),
        TrackerInput::Message(text.to_owned()),
    ) {
        if let gstmesh::mesh::tracker::TrackerOutput::Warning { text, .. } = output {
            assert!(text.chars().count() <= 2 * gstmesh::mesh::tracker::MAX_WARNING_TEXT);
        }
    }
    client.handle(Duration::from_secs(200), TrackerInput::Tick);
}

fn base() -> Url {
    Url::parse("http://origin.test/live/master.m3u8").expect("url")
}

/// The HLS parsers: a manifest (master or media playlist) and a media playlist.
pub fn hls_manifest(data: &[u8]) {
    let _ = gstmesh::hls::parse_manifest(&base(), data);
    let _ = gstmesh::hls::parse_media_playlist(&base(), data);
}

/// The DASH parser, and the presentation built from what parses.
pub fn dash_mpd(data: &[u8]) {
    let url = Url::parse("http://origin.test/dash/manifest.mpd").expect("url");
    if let Ok(mpd) = gstmesh::dash::parse_mpd(&url, data) {
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let _ = gstmesh::dash::presentation(&mpd, &gstmesh::dash::DashOptions::default(), now);
    }
}

/// The hash file parser, and lookups in what parses.
pub fn hash_file(data: &[u8]) {
    if let Ok(hashes) = SegmentHashes::parse(data) {
        let url = Url::parse("http://origin.test/live/seg_1.ts").expect("url");
        let _ = hashes.lookup(&url, None);
        let _ = hashes.lookup(&url, Some((0, 1_000)));
        let _ = hashes.lookup(&url, Some((u64::MAX, u64::MAX)));
    }
}

/// The sidx reader; the first 8 bytes are the file offset of the index range.
pub fn sidx(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let offset = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    if let Ok(index) = gstmesh::dash::parse_sidx(offset, &data[8..]) {
        assert!(index.timescale > 0);
        assert!(index.references.iter().all(|(range, _)| range.length > 0));
    }
}

//! The fuzz targets (`fuzz/harness.rs`) as bounded property tests on stable: each parser of
//! untrusted input gets arbitrary bytes, and valid inputs with random edits, a fixed number of
//! cases each. `fuzz/` runs the same bodies under libFuzzer for as long as one likes.

#[path = "../fuzz/harness.rs"]
mod harness;

use proptest::prelude::*;
use proptest::sample::Index;

/// Cases per property.
const CASES: u32 = 256;

/// One of `seeds`, with up to 24 random byte edits (replace, insert, remove).
fn edited(seeds: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    let edits = proptest::collection::vec((any::<Index>(), any::<u8>(), 0u8..3), 0..24);
    (0..seeds.len(), edits).prop_map(move |(seed, edits)| {
        let mut data = seeds[seed].to_vec();
        for (at, byte, op) in edits {
            if data.is_empty() {
                data.push(byte);
                continue;
            }
            let at = at.index(data.len());
            match op {
                0 => data[at] = byte,
                1 => data.insert(at, byte),
                _ => {
                    data.remove(at);
                }
            }
        }
        data
    })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// Framed as `wire_decoder` reads them: a little-endian u16 length, then the message.
const WIRE_SEEDS: &[&[u8]] = &[
    // segment request i=1234567 r=513
    b"\x12\x00cstr\x01\x69\x03\x12\xd6\x87\x72\x02\x02\x01cend",
    // segment data i=100 s=1048576 r=999, then two data messages
    b"\x15\x00cstr\x02\x69\x01\x64\x73\x03\x10\x00\x00\x72\x02\x03\xe7cend\x03\x00abc\x00\x00",
    // announcement l=[1,2,3,256,257] p=[4], split in two parts
    b"\x0c\x00cstr\x00\x6c\x10\x02dend\x10\x00dstr\x01\x03\x01\x02\x03\x02\x01\x02\x00\x01cend",
    // a body decoded whole: cancel i=255 r=1
    b"\x05\x69\x02\x00\xff\x72\x01\x01",
];

const TRACKER_SEEDS: &[&[u8]] = &[
    br#"{"action":"announce","interval":120,"info_hash":"0123456789abcdef0123","complete":3,"incomplete":4}"#,
    br#"{"action":"announce","info_hash":"0123456789abcdef0123","peer_id":"-GM0001-abcdefghijkl","offer_id":"Offer000000000000001","offer":{"type":"offer","sdp":"v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.2 5000 typ host\r\n"}}"#,
    br#"{"failure reason":"invalid info_hash","warning message":"slow down"}"#,
];

const HLS_SEEDS: &[&[u8]] = &[
    b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.0,\nseg_7.ts\n#EXT-X-BYTERANGE:1000@0\n#EXTINF:2.0,\nseg_8.ts\n#EXT-X-ENDLIST\n",
    b"#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"a.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.4d401e\",AUDIO=\"a\"\nlow.m3u8\n",
    b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-KEY:METHOD=AES-128,URI=\"k.bin\",IV=0x000102030405060708090a0b0c0d0e0f\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4,\ns.m4s\n",
];

const DASH_SEEDS: &[&[u8]] = &[
    br#"<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT10S" minBufferTime="PT2S"><Period><AdaptationSet mimeType="video/mp4"><SegmentTemplate timescale="1000" duration="2000" startNumber="1" media="v_$Number$.m4s" initialization="v_init.mp4"/><Representation id="v" bandwidth="500000" width="640" height="360"/></AdaptationSet></Period></MPD>"#,
    br#"<MPD type="dynamic" availabilityStartTime="2023-11-14T22:00:00Z" minimumUpdatePeriod="PT2S" timeShiftBufferDepth="PT30S"><Period start="PT0S"><AdaptationSet contentType="audio" lang="en"><SegmentTemplate timescale="48000" media="a_$Time$.m4s"><SegmentTimeline><S t="0" d="96000" r="-1"/></SegmentTimeline></SegmentTemplate><Representation id="a" bandwidth="64000"/></AdaptationSet></Period></MPD>"#,
];

const HASH_SEEDS: &[&[u8]] = &[
    br#"{"seg_1.ts":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}"#,
    br#"{"video.mp4":{"0-999":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}}"#,
];

/// File offset (8 bytes), then a version-0 sidx box with two references.
const SIDX_SEEDS: &[&[u8]] = &[
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x38sidx\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x03\xe8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x10\x00\x00\x00\x07\xd0\x90\x00\x00\x00\x00\x00\x20\x00\x00\x00\x07\xd0\x90\x00\x00\x00",
];

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn wire_decoder_takes_any_bytes(data in bytes(4096)) {
        harness::wire_decoder(&data);
    }

    #[test]
    fn wire_decoder_takes_edited_commands(data in edited(WIRE_SEEDS)) {
        harness::wire_decoder(&data);
    }

    #[test]
    fn tracker_messages_take_any_bytes(data in bytes(2048)) {
        harness::tracker_message(&data);
    }

    #[test]
    fn tracker_messages_take_edited_messages(data in edited(TRACKER_SEEDS)) {
        harness::tracker_message(&data);
    }

    #[test]
    fn hls_parsers_take_any_bytes(data in bytes(2048)) {
        harness::hls_manifest(&data);
    }

    #[test]
    fn hls_parsers_take_edited_playlists(data in edited(HLS_SEEDS)) {
        harness::hls_manifest(&data);
    }

    #[test]
    fn dash_parser_takes_any_bytes(data in bytes(2048)) {
        harness::dash_mpd(&data);
    }

    #[test]
    fn dash_parser_takes_edited_mpds(data in edited(DASH_SEEDS)) {
        harness::dash_mpd(&data);
    }

    #[test]
    fn hash_file_parser_takes_any_bytes(data in bytes(2048)) {
        harness::hash_file(&data);
    }

    #[test]
    fn hash_file_parser_takes_edited_files(data in edited(HASH_SEEDS)) {
        harness::hash_file(&data);
    }

    #[test]
    fn sidx_reader_takes_any_bytes(data in bytes(512)) {
        harness::sidx(&data);
    }

    #[test]
    fn sidx_reader_takes_edited_boxes(data in edited(SIDX_SEEDS)) {
        harness::sidx(&data);
    }
}

/// The seeds are what they say: each parses, so the edited cases start from valid input.
#[test]
fn the_seeds_are_valid_inputs() {
    use gstmesh::mesh::protocol;
    assert!(protocol::decode_body(WIRE_SEEDS[3]).is_ok());
    for seed in TRACKER_SEEDS {
        assert!(gstmesh::mesh::tracker::parse_message(std::str::from_utf8(seed).unwrap()).is_ok());
    }
    let url = url::Url::parse("http://origin.test/live/x.m3u8").unwrap();
    for seed in HLS_SEEDS {
        assert!(
            gstmesh::hls::parse_manifest(&url, seed).is_ok(),
            "{}",
            String::from_utf8_lossy(seed)
        );
    }
    for seed in DASH_SEEDS {
        assert!(
            gstmesh::dash::parse_mpd(&url, seed).is_ok(),
            "{}",
            String::from_utf8_lossy(seed)
        );
    }
    for seed in HASH_SEEDS {
        assert!(gstmesh::mesh::integrity::SegmentHashes::parse(seed).is_ok());
    }
    let index = gstmesh::dash::parse_sidx(0, &SIDX_SEEDS[0][8..]).expect("sidx seed");
    assert_eq!(index.timescale, 1000);
    assert_eq!(index.references.len(), 2);
}

/// Found by the `dash_mpd` fuzzer: `check_xml` in `src/dash.rs` cut an XML error message with
/// `String::truncate(160)`, which panics when byte 160 falls inside a UTF-8 character (here
/// one of the input's own, echoed in quick-xml's message). Messages are now cut on character
/// boundaries (`error::clipped`).
#[test]
fn dash_parser_survives_an_error_message_cut_inside_a_character() {
    let input = include_bytes!("../fuzz/regressions/dash_mpd/truncate-inside-utf8");
    harness::dash_mpd(input);
}

/// Found by the `hls_manifest` fuzzer: an `EXTINF` of 2.4e36 s is finite, but
/// `Duration::from_secs_f64` panics on it. Durations past a week are now refused with an error
/// naming the tag, and a `HOLD-BACK` or DASH `availabilityTimeOffset` that large is ignored.
#[test]
fn hls_parser_refuses_an_extinf_no_duration_can_hold() {
    let input = include_bytes!("../fuzz/regressions/hls_manifest/extinf-beyond-duration");
    harness::hls_manifest(input);
    let url = url::Url::parse("http://origin.test/live/media.m3u8").unwrap();
    let huge = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:{},\na.ts\n#EXT-X-ENDLIST\n",
        "4".repeat(37)
    );
    let error = gstmesh::hls::parse_media_playlist(&url, huge.as_bytes()).unwrap_err();
    assert!(error.to_string().contains("bad EXTINF duration"), "{error}");
    let week_and_a_second =
        b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:604801,\na.ts\n#EXT-X-ENDLIST\n";
    assert!(gstmesh::hls::parse_media_playlist(&url, week_and_a_second).is_err());
    let a_week = b"#EXTM3U\n#EXT-X-TARGETDURATION:604800\n#EXTINF:604800,\na.ts\n#EXT-X-ENDLIST\n";
    let timeline = gstmesh::hls::parse_media_playlist(&url, a_week).unwrap();
    assert_eq!(
        timeline.segments[0].duration,
        std::time::Duration::from_secs(604_800)
    );
}

//! Just enough of the segment containers to map their time and tell their codecs: the
//! track timescales and sample entries of an ISO-BMFF init section, the first `tfdt` of a
//! fragment, and the stream types of an MPEG-TS program map. Nothing is demuxed; every
//! read is bounded by the bytes given.

use mp4_atom::{Atom, Decode, DecodeMaybe, FourCC, Header, Mdhd, Tfdt, Tfhd, Tkhd};
use std::time::Duration;

/// A track of an ISO-BMFF init section (`moov/trak`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitTrack {
    pub id: u32,
    pub timescale: u32,
    /// The first sample entry's type in `stsd` (`avc1`, `hvc1`, `mp4a`, `wvtt`, …).
    pub sample_entry: [u8; 4],
}

/// The tracks of an ISO-BMFF init section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InitInfo {
    pub tracks: Vec<InitTrack>,
}

/// The boxes directly inside `data`: (type, the whole box, its body). A box cut short ends
/// the walk.
fn boxes(data: &[u8]) -> impl Iterator<Item = (FourCC, &[u8], &[u8])> {
    let mut position = 0usize;
    std::iter::from_fn(move || {
        let mut rest = data.get(position..)?;
        let available = rest.len();
        let header = Header::decode_maybe(&mut rest).ok()??;
        let header_len = available - rest.len();
        let body_len = header.size.unwrap_or(rest.len());
        let total = header_len.checked_add(body_len)?;
        if total > available {
            return None;
        }
        let whole = &data[position..position + total];
        position += total;
        Some((header.kind, whole, &whole[header_len..]))
    })
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<(&'a [u8], &'a [u8])> {
    boxes(data)
        .find(|(k, _, _)| *k == FourCC::new(kind))
        .map(|(_, whole, body)| (whole, body))
}

fn decode<T: Atom>(mut whole: &[u8]) -> Option<T> {
    T::decode(&mut whole).ok()
}

/// Reads the tracks of an init section; None when it has no `moov` with a usable track.
pub fn parse_init(data: &[u8]) -> Option<InitInfo> {
    let (_, moov) = child(data, b"moov")?;
    let mut tracks = Vec::new();
    for (kind, _, trak) in boxes(moov) {
        if kind != FourCC::new(b"trak") {
            continue;
        }
        let Some(tkhd) = child(trak, b"tkhd").and_then(|(w, _)| decode::<Tkhd>(w)) else {
            continue;
        };
        let Some((_, mdia)) = child(trak, b"mdia") else {
            continue;
        };
        let Some(mdhd) = child(mdia, b"mdhd").and_then(|(w, _)| decode::<Mdhd>(w)) else {
            continue;
        };
        if mdhd.timescale == 0 {
            continue;
        }
        let sample_entry = child(mdia, b"minf")
            .and_then(|(_, minf)| child(minf, b"stbl"))
            .and_then(|(_, stbl)| child(stbl, b"stsd"))
            // version and flags, entry count, then the first entry's size and type
            .and_then(|(_, stsd)| stsd.get(12..16))
            .and_then(|t| <[u8; 4]>::try_from(t).ok())
            .unwrap_or(*b"    ");
        tracks.push(InitTrack {
            id: tkhd.track_id,
            timescale: mdhd.timescale,
            sample_entry,
        });
    }
    (!tracks.is_empty()).then_some(InitInfo { tracks })
}

/// The earliest base media decode time (`tfdt`) of the first fragment in `media`, over its
/// track fragments, as a time. None when there is no `moof` with a `tfdt` of a known track.
pub fn first_decode_time(init: &InitInfo, media: &[u8]) -> Option<Duration> {
    let (_, moof) = child(media, b"moof")?;
    boxes(moof)
        .filter(|(kind, _, _)| *kind == FourCC::new(b"traf"))
        .filter_map(|(_, _, traf)| {
            let tfhd = child(traf, b"tfhd").and_then(|(w, _)| decode::<Tfhd>(w))?;
            let tfdt = child(traf, b"tfdt").and_then(|(w, _)| decode::<Tfdt>(w))?;
            let track = init.tracks.iter().find(|t| t.id == tfhd.track_id)?;
            Some(ticks_to_duration(
                tfdt.base_media_decode_time,
                track.timescale,
            ))
        })
        .min()
}

fn ticks_to_duration(ticks: u64, timescale: u32) -> Duration {
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(timescale.max(1));
    Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
}

const TS_PACKET: usize = 188;

/// The elementary stream types of the first program map in an MPEG-TS prefix (H.264 is
/// 0x1b, H.265 0x24, AAC 0x0f, …), in table order. Empty when none is found.
pub fn ts_stream_types(data: &[u8]) -> Vec<u8> {
    let mut pmt_pid = None;
    for packet in data.chunks_exact(TS_PACKET) {
        if packet[0] != 0x47 {
            return Vec::new();
        }
        let pid = (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2]);
        let unit_start = packet[1] & 0x40 != 0;
        let Some(section) = unit_start.then(|| ts_payload(packet)).flatten() else {
            continue;
        };
        // A pointer field, then the section.
        let Some(section) = section
            .first()
            .and_then(|pointer| section.get(1 + usize::from(*pointer)..))
        else {
            continue;
        };
        match (pid, pmt_pid) {
            (0, None) => pmt_pid = pat_program_map_pid(section),
            (pid, Some(pmt)) if pid == pmt => return pmt_stream_types(section),
            _ => {}
        }
    }
    Vec::new()
}

fn ts_payload(packet: &[u8]) -> Option<&[u8]> {
    match (packet[3] >> 4) & 0x3 {
        0x1 => packet.get(4..),
        0x3 => packet.get(5 + usize::from(*packet.get(4)?)..),
        _ => None,
    }
}

/// A PSI section's body between its 8-byte header and its CRC, checked against its length.
fn psi_body(section: &[u8], table_id: u8) -> Option<&[u8]> {
    if *section.first()? != table_id {
        return None;
    }
    let length = usize::from(u16::from(*section.get(1)? & 0x0f) << 8 | u16::from(*section.get(2)?));
    let end = (3 + length).checked_sub(4)?;
    section.get(8..end)
}

fn pat_program_map_pid(section: &[u8]) -> Option<u16> {
    psi_body(section, 0x00)?
        .chunks_exact(4)
        .find(|entry| u16::from_be_bytes([entry[0], entry[1]]) != 0)
        .map(|entry| (u16::from(entry[2] & 0x1f) << 8) | u16::from(entry[3]))
}

fn pmt_stream_types(section: &[u8]) -> Vec<u8> {
    let Some(body) = psi_body(section, 0x02) else {
        return Vec::new();
    };
    let Some(info_length) = body
        .get(2..4)
        .map(|b| usize::from(u16::from(b[0] & 0x0f) << 8 | u16::from(b[1])))
    else {
        return Vec::new();
    };
    let mut rest = body.get(4 + info_length..).unwrap_or_default();
    let mut types = Vec::new();
    while rest.len() >= 5 {
        types.push(rest[0]);
        let es_info = usize::from(u16::from(rest[3] & 0x0f) << 8 | u16::from(rest[4]));
        rest = rest.get(5 + es_info..).unwrap_or_default();
    }
    types
}

/// What an RFC 6381 codec string carries, by its sample entry type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecKind {
    Video,
    Audio,
    Text,
}

/// The kind of a codec by its first four characters, with the sample entry types hls.js
/// knows (its `sampleEntryCodesISO`), so that a CODECS list splits as browsers split it.
pub fn codec_kind(codec: &str) -> Option<CodecKind> {
    const VIDEO: &[&str] = &[
        "avc1", "avc2", "avc3", "avc4", "avcp", "av01", "dav1", "drac", "dva1", "dvav", "dvh1",
        "dvhe", "encv", "hev1", "hvc1", "mjp2", "mp4v", "mvc1", "mvc2", "mvc3", "mvc4", "resv",
        "rv60", "s263", "svc1", "svc2", "vc-1", "vp08", "vp09",
    ];
    const AUDIO: &[&str] = &[
        "a3ds", "ac-3", "ac-4", "alac", "alaw", "dra1", "dts+", "dts-", "dtsc", "dtse", "dtsh",
        "ec-3", "enca", "fLaC", "flac", "FLAC", "g719", "g726", "m4ae", "mha1", "mha2", "mhm1",
        "mhm2", "mlpa", "mp4a", "raw ", "Opus", "opus", "samr", "sawb", "sawp", "sevc", "sqcp",
        "ssmv", "twos", "ulaw",
    ];
    const TEXT: &[&str] = &["stpp", "wvtt"];
    let fourcc = codec.get(..4)?;
    [
        (VIDEO, CodecKind::Video),
        (AUDIO, CodecKind::Audio),
        (TEXT, CodecKind::Text),
    ]
    .into_iter()
    .find(|(list, _)| list.contains(&fourcc))
    .map(|(_, kind)| kind)
}

/// The codec family of an RFC 6381 codec string (`avc1.64001f` → `avc`), as ABR groups
/// variants: a decoder for one member plays every member.
pub fn codec_family(codec: &str) -> Option<&'static str> {
    let codec = codec.trim();
    let (fourcc, rest) = codec.split_once('.').unwrap_or((codec, ""));
    Some(match fourcc {
        "avc1" | "avc3" => "avc",
        "hvc1" | "hev1" => "hevc",
        "dvh1" | "dvhe" => "dolby-vision",
        "vp09" | "vp9" => "vp9",
        "vp08" | "vp8" => "vp8",
        "av01" => "av1",
        "mp4a" if matches!(rest, "69" | "6B" | "6b" | "40.34") => "mp3",
        "mp4a" => "aac",
        "mp3" | ".mp3" => "mp3",
        "ac-3" => "ac3",
        "ec-3" => "eac3",
        "opus" | "Opus" => "opus",
        "flac" | "fLaC" => "flac",
        "wvtt" => "webvtt",
        "stpp" => "ttml",
        _ => return None,
    })
}

/// The codec family of an ISO-BMFF sample entry type.
pub fn sample_entry_family(entry: &[u8; 4]) -> Option<&'static str> {
    codec_family(std::str::from_utf8(entry).ok()?)
}

/// The codec family of an MPEG-TS stream type (ISO/IEC 13818-1 table 2-34, ATSC A/52).
pub fn ts_stream_type_family(stream_type: u8) -> Option<&'static str> {
    Some(match stream_type {
        0x1b => "avc",
        0x24 => "hevc",
        0x0f | 0x11 => "aac",
        0x03 | 0x04 => "mp3",
        0x81 => "ac3",
        0x87 => "eac3",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bmff(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn full(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
        let mut b = vec![version];
        b.extend_from_slice(&flags.to_be_bytes()[1..]);
        b.extend_from_slice(body);
        bmff(kind, &b)
    }

    fn trak(id: u32, timescale: u32, entry: &[u8; 4]) -> Vec<u8> {
        let mut tkhd = vec![0u8; 8]; // creation, modification
        tkhd.extend_from_slice(&id.to_be_bytes());
        tkhd.extend_from_slice(&[0u8; 4]); // reserved
        tkhd.extend_from_slice(&[0u8; 4]); // duration
        tkhd.extend_from_slice(&[0u8; 8]); // reserved
        tkhd.extend_from_slice(&[0u8; 8]); // layer, alternate group, volume, reserved
        for v in [0x10000u32, 0, 0, 0, 0x10000, 0, 0, 0, 0x4000_0000] {
            tkhd.extend_from_slice(&v.to_be_bytes());
        }
        tkhd.extend_from_slice(&[0u8; 8]); // width, height
        let mut mdhd = vec![0u8; 8];
        mdhd.extend_from_slice(&timescale.to_be_bytes());
        mdhd.extend_from_slice(&[0u8; 4]);
        mdhd.extend_from_slice(&[0x55, 0xc4, 0, 0]);
        let mut stsd = 1u32.to_be_bytes().to_vec();
        stsd.extend(bmff(entry, &[0u8; 8]));
        let stbl = bmff(b"stbl", &full(b"stsd", 0, 0, &stsd));
        let minf = bmff(b"minf", &stbl);
        let mut mdia = full(b"mdhd", 0, 0, &mdhd);
        mdia.extend(minf);
        let mut trak = full(b"tkhd", 0, 3, &tkhd);
        trak.extend(bmff(b"mdia", &mdia));
        bmff(b"trak", &trak)
    }

    fn traf(id: u32, decode_time: u64) -> Vec<u8> {
        let mut traf = full(b"tfhd", 0, 0x02_0000, &id.to_be_bytes());
        traf.extend(full(b"tfdt", 1, 0, &decode_time.to_be_bytes()));
        bmff(b"traf", &traf)
    }

    #[test]
    fn init_tracks_and_first_decode_time() {
        let mut moov = trak(1, 90_000, b"avc1");
        moov.extend(trak(2, 48_000, b"mp4a"));
        let mut init = bmff(b"ftyp", b"iso6\0\0\0\0");
        init.extend(bmff(b"moov", &moov));
        let info = parse_init(&init).expect("init");
        assert_eq!(
            info.tracks,
            [
                InitTrack {
                    id: 1,
                    timescale: 90_000,
                    sample_entry: *b"avc1"
                },
                InitTrack {
                    id: 2,
                    timescale: 48_000,
                    sample_entry: *b"mp4a"
                },
            ]
        );
        // 12 s of video, 11.9 s of audio: the earliest counts.
        let mut moof = traf(1, 12 * 90_000);
        moof.extend(traf(2, 571_200));
        let mut media = bmff(b"styp", b"msdh\0\0\0\0");
        media.extend(bmff(b"moof", &moof));
        media.extend(bmff(b"mdat", &[1, 2, 3]));
        assert_eq!(
            first_decode_time(&info, &media),
            Some(Duration::from_millis(11_900))
        );
        // A fragment of a track the init does not describe gives nothing.
        let other = bmff(b"moof", &traf(7, 1));
        assert_eq!(first_decode_time(&info, &other), None);
        // Truncated data never panics.
        for cut in 0..media.len() {
            let _ = first_decode_time(&info, &media[..cut]);
            let _ = parse_init(&init[..cut.min(init.len())]);
        }
    }

    #[test]
    fn program_map_stream_types() {
        fn packet(pid: u16, section: &[u8]) -> Vec<u8> {
            let mut p = vec![0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10, 0x00];
            p.extend_from_slice(section);
            p.resize(TS_PACKET, 0xff);
            p
        }
        fn section(table: u8, body: &[u8]) -> Vec<u8> {
            let length = body.len() + 5 + 4;
            let mut s = vec![
                table,
                0xb0 | (length >> 8) as u8,
                length as u8,
                0,
                1,
                0xc1,
                0,
                0,
            ];
            s.extend_from_slice(body);
            s.extend_from_slice(&[0; 4]); // CRC, not checked
            s
        }
        let pat = section(0x00, &[0x00, 0x01, 0xf0, 0x00]);
        // PCR PID, no program info, then H.265 on 0x100 and AAC on 0x101 (with a descriptor).
        let pmt = section(
            0x02,
            &[
                0xe1, 0x00, 0xf0, 0x00, 0x24, 0xe1, 0x00, 0xf0, 0x00, 0x0f, 0xe1, 0x01, 0xf0, 0x02,
                0x0a, 0x00,
            ],
        );
        let mut ts = packet(0, &pat);
        ts.extend(packet(0x1000, &pmt));
        assert_eq!(ts_stream_types(&ts), [0x24, 0x0f]);
        assert_eq!(ts_stream_types(&ts[..TS_PACKET]), Vec::<u8>::new());
        assert_eq!(
            ts_stream_types(b"not a transport stream at all"),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn families() {
        assert_eq!(codec_family("avc1.64001f"), Some("avc"));
        assert_eq!(codec_family(" hvc1.1.6.L93.90"), Some("hevc"));
        assert_eq!(codec_family("mp4a.40.2"), Some("aac"));
        assert_eq!(codec_family("mp4a.40.34"), Some("mp3"));
        assert_eq!(codec_family("xyz1"), None);
        assert_eq!(sample_entry_family(b"hev1"), Some("hevc"));
        assert_eq!(ts_stream_type_family(0x1b), Some("avc"));
    }
}

//! Swarm identity and tracker ids.
//!
//! One swarm per rendition. HLS swarms are p2p-media-loader 2.3's, so that meshsrc and
//! browsers running hls.js with p2p-media-loader meet: the base (the `swarm-id` property, or
//! the manifest URL without query string), the stream type and a hash of the stream's
//! properties. DASH swarms (p2p-media-loader 2.3 has no DASH integration) use meshsrc's own
//! scheme. `docs/swarm-identity.md` gives both derivations.
//!
//! WebTorrent trackers take info_hash, peer_id and offer_id as 20-character strings whose
//! characters are single bytes (U+0000..=U+00FF): bittorrent-tracker checks `length === 20`,
//! aquatic_ws rejects characters above U+00FF. The ids made here are ASCII.

use crate::container::{CodecKind, codec_kind};
use crate::model::{Rendition, RenditionRole, RenditionSource, TrackKind};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use url::Url;

/// Version tag of meshsrc's own (DASH) swarm names: bump it when peers of different versions
/// must not meet.
pub const SWARM_NAME_VERSION: &str = "gst-mesh-v1";

pub use mesh_proto::ids::{ID_LEN, InfoHash, OfferId, PeerId, is_valid_id, peer_id_prefix};

/// The base all of a presentation's swarms share: `swarm_id` when set and not empty, else the
/// manifest's URL (after redirects) without query string and fragment. p2p-media-loader cuts
/// the response URL at its first `?`; the `url` crate serializes as browsers do.
pub fn swarm_base(manifest_url: &Url, swarm_id: Option<&str>) -> String {
    if let Some(id) = swarm_id.filter(|id| !id.is_empty()) {
        return id.to_owned();
    }
    let mut url = manifest_url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.into()
}

/// The properties p2p-media-loader 2.3 hashes into a stream's short id
/// (`generateStreamShortId`), as its hls.js integration reads them from the manifest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamProperties {
    pub bitrate: u64,
    pub codecs: Option<String>,
    pub width: Option<u64>,
    pub height: Option<u64>,
    pub language: Option<String>,
    pub channels: Option<String>,
    pub name: Option<String>,
    pub frame_rate: Option<f64>,
    pub video_range: Option<String>,
}

/// The codecs of `list` of one kind, as hls.js splits a CODECS attribute.
fn codecs_of_kind(list: &str, kind: CodecKind) -> Option<String> {
    let codecs: Vec<&str> = list
        .split([' ', ','])
        .filter(|c| !c.is_empty() && codec_kind(c) == Some(kind))
        .map(|c| c.split('/').next().unwrap_or(c))
        .collect();
    (!codecs.is_empty()).then(|| codecs.join(","))
}

impl StreamProperties {
    /// An HLS variant (an hls.js level), or a lone media playlist: its BANDWIDTH, and unless
    /// that is 0, the video codecs of its CODECS, RESOLUTION, FRAME-RATE and VIDEO-RANGE.
    pub fn of_variant(rendition: &Rendition) -> Self {
        if rendition.bandwidth == 0 {
            return StreamProperties::default();
        }
        StreamProperties {
            bitrate: rendition.bandwidth,
            codecs: rendition
                .codecs
                .as_deref()
                .and_then(|c| codecs_of_kind(c, CodecKind::Video)),
            width: rendition.resolution.map(|(w, _)| w),
            height: rendition.resolution.map(|(_, h)| h),
            frame_rate: rendition.frame_rate,
            video_range: rendition.video_range.clone(),
            ..Default::default()
        }
    }

    /// An HLS alternate rendition (an hls.js audio track): bitrate 0, its group's codecs,
    /// LANGUAGE, CHANNELS and NAME (or LANGUAGE when NAME is empty).
    pub fn of_alternative(rendition: &Rendition) -> Self {
        let name = rendition
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| rendition.language.clone());
        StreamProperties {
            codecs: rendition.codecs.clone(),
            language: rendition.language.clone(),
            channels: rendition.channels.clone(),
            name,
            ..Default::default()
        }
    }

    /// The string hashed into the short id: nine fields joined by `-`, each normalised as
    /// p2p-media-loader does.
    pub fn preimage(&self) -> String {
        let codecs = self.codecs.as_deref().map_or_else(String::new, |list| {
            let mut codecs: Vec<String> = list
                .split(',')
                .map(|c| decimal_avc1_to_hex(&c.trim().to_lowercase()))
                .collect();
            codecs.sort();
            codecs.join(",")
        });
        let language = match self.language.as_deref() {
            Some(l) if !l.is_empty() && l != "und" => {
                l.chars().take(2).collect::<String>().to_lowercase()
            }
            _ => String::new(),
        };
        let channels = self
            .channels
            .as_deref()
            .map_or("", |c| c.split('/').next().unwrap_or(""));
        let name = self
            .name
            .as_deref()
            .map_or_else(String::new, |n| n.to_lowercase().trim().to_owned());
        let frame_rate = self.frame_rate.map_or_else(String::new, js_number);
        let video_range = self
            .video_range
            .as_deref()
            .map_or_else(String::new, |v| v.to_uppercase().trim().to_owned());
        let number = |n: Option<u64>| n.map_or_else(String::new, |n| n.to_string());
        format!(
            "{}-{codecs}-{}-{}-{language}-{channels}-{name}-{frame_rate}-{video_range}",
            self.bitrate,
            number(self.width),
            number(self.height),
        )
    }

    /// The short id: the standard base64 of the SHA-1 of the preimage.
    pub fn short_id(&self) -> String {
        BASE64.encode(Sha1::digest(self.preimage().as_bytes()))
    }
}

/// `avc1.66.30` → `avc1.42001e`: RFC 4281's decimal form of an AVC codec, in hex, when both
/// numbers are written canonically.
fn decimal_avc1_to_hex(codec: &str) -> String {
    let parts: Vec<&str> = codec.split('.').collect();
    let canonical = |p: &str| p.parse::<u64>().ok().filter(|n| n.to_string() == p);
    match parts.as_slice() {
        [fourcc @ ("avc1" | "avc"), profile, level] => {
            match (canonical(profile), canonical(level)) {
                (Some(p), Some(l)) => format!("{fourcc}.{p:02x}00{l:02x}"),
                _ => codec.to_owned(),
            }
        }
        _ => codec.to_owned(),
    }
}

/// A number as JavaScript's `Number.prototype.toString` writes frame rates: `25`, `29.97`.
fn js_number(value: f64) -> String {
    if !value.is_finite() {
        return String::new();
    }
    if value == 0.0 {
        return "0".into();
    }
    format!("{value}")
}

/// Which of p2p-media-loader's swarms of a presentation a rendition belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    /// HLS variants (hls.js levels).
    Main,
    /// HLS audio renditions (hls.js audio tracks).
    Secondary,
    /// HLS subtitle renditions, which p2p-media-loader does not share: meshsrc peers only.
    Text,
}

impl StreamType {
    fn as_str(self) -> &'static str {
        match self {
            StreamType::Main => "main",
            StreamType::Secondary => "secondary",
            StreamType::Text => "text",
        }
    }
}

/// The identity of a DASH representation within its presentation (p2p-media-loader 2.3 has
/// no DASH integration to meet): `dash:{kind}:{adaptation set index}:{representation id}`.
fn dash_identity(kind: TrackKind, adaptation_set: usize, representation: &str) -> String {
    let kind = match kind {
        TrackKind::Video => "video",
        TrackKind::Audio => "audio",
        TrackKind::Subtitle => "subtitle",
    };
    format!("dash:{kind}:{adaptation_set}:{representation}")
}

/// One swarm: its name and info_hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Swarm {
    pub name: String,
    pub info_hash: InfoHash,
}

impl Swarm {
    /// p2p-media-loader 2.3's swarm (`getStreamSwarmId`, `getStreamHash`):
    /// `v2-{base}-{type}-{short id}`, whose info_hash is the standard base64 of the first 15
    /// bytes of its SHA-1.
    pub fn p2pml(base: &str, stream_type: StreamType, short_id: &str) -> Swarm {
        let name = format!("v2-{base}-{}-{short_id}", stream_type.as_str());
        let digest = Sha1::digest(name.as_bytes());
        // 15 bytes are 20 base64 characters, a valid id.
        let info_hash =
            InfoHash::parse(&BASE64.encode(&digest[..15])).expect("20 ASCII characters");
        Swarm { name, info_hash }
    }

    /// meshsrc's own swarm, for DASH: `gst-mesh-v1`, the base and the identity joined by
    /// newlines; the info_hash is 20 lower-case hex digits of its SHA-256.
    pub fn gst_mesh(base: &str, identity: &str) -> Swarm {
        let name = format!("{SWARM_NAME_VERSION}\n{base}\n{identity}");
        let digest = Sha256::digest(name.as_bytes());
        let info_hash =
            InfoHash::parse(&hex::encode(&digest[..ID_LEN / 2])).expect("20 ASCII characters");
        Swarm { name, info_hash }
    }

    /// The swarm of `rendition` (of a track of kind `kind`) in the presentation whose
    /// manifest was served from `manifest_url`.
    pub fn for_rendition(
        manifest_url: &Url,
        swarm_id: Option<&str>,
        kind: TrackKind,
        rendition: &Rendition,
    ) -> Swarm {
        let base = swarm_base(manifest_url, swarm_id);
        match &rendition.source {
            RenditionSource::HlsMediaPlaylist => {
                let (stream_type, properties) = match (rendition.role, kind) {
                    (RenditionRole::Variant, _) => {
                        (StreamType::Main, StreamProperties::of_variant(rendition))
                    }
                    (RenditionRole::Alternative, TrackKind::Subtitle) => (
                        StreamType::Text,
                        StreamProperties::of_alternative(rendition),
                    ),
                    (RenditionRole::Alternative, _) => (
                        StreamType::Secondary,
                        StreamProperties::of_alternative(rendition),
                    ),
                };
                Swarm::p2pml(&base, stream_type, &properties.short_id())
            }
            RenditionSource::Dash {
                adaptation_set,
                representation,
            } => Swarm::gst_mesh(&base, &dash_identity(kind, *adaptation_set, representation)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn variant(playlist: &str, bandwidth: u64) -> Rendition {
        Rendition {
            id: "v0".into(),
            url: url(playlist),
            source: RenditionSource::HlsMediaPlaylist,
            bandwidth,
            codecs: None,
            resolution: None,
            language: None,
            name: None,
            frame_rate: None,
            video_range: None,
            channels: None,
            role: RenditionRole::Variant,
        }
    }

    fn audio(group_codecs: &str, language: &str, name: &str, channels: &str) -> Rendition {
        Rendition {
            codecs: Some(group_codecs.into()),
            language: Some(language.into()),
            name: Some(name.into()),
            channels: Some(channels.into()),
            role: RenditionRole::Alternative,
            ..variant("http://127.0.0.1:18080/media/a_en/index.m3u8", 0)
        }
    }

    #[test]
    fn base_drops_query_and_fragment() {
        assert_eq!(
            swarm_base(
                &url("HTTPS://CDN.Example:443/live/master.m3u8?token=a#t=1"),
                None
            ),
            "https://cdn.example/live/master.m3u8"
        );
        assert_eq!(
            swarm_base(&url("https://cdn.example/live/master.m3u8?"), Some("")),
            "https://cdn.example/live/master.m3u8"
        );
        assert_eq!(
            swarm_base(
                &url("https://cdn.example/live/master.m3u8"),
                Some("channel-7")
            ),
            "channel-7"
        );
    }

    /// Vectors computed once with p2p-media-loader 2.3.1's own functions
    /// (`generateStreamShortId`, `getStreamSwarmId`, `getStreamHash`) fed by hls.js 1.7.4's
    /// parser on the playlists beside them; headless Chromium announced every one of these
    /// info_hashes to a tracker. Here the playlists go through meshsrc's own parser.
    #[test]
    fn swarms_match_p2p_media_loader_2_3() {
        use crate::hls::{Manifest, parse_manifest};
        let data: serde_json::Value = serde_json::from_str(include_str!(
            "../../../../tests/data/p2pml-2.3/vectors.json"
        ))
        .unwrap();
        let playlist = |name: &str| match name {
            "vod-index.m3u8" => include_str!("../../../../tests/data/p2pml-2.3/vod-index.m3u8"),
            "master-muxed.m3u8" => {
                include_str!("../../../../tests/data/p2pml-2.3/master-muxed.m3u8")
            }
            "master-muxed-vr.m3u8" => {
                include_str!("../../../../tests/data/p2pml-2.3/master-muxed-vr.m3u8")
            }
            "master-altaudio.m3u8" => {
                include_str!("../../../../tests/data/p2pml-2.3/master-altaudio.m3u8")
            }
            other => panic!("no playlist {other}"),
        };
        let mut checked = 0;
        for vector in data["vectors"].as_array().unwrap() {
            let manifest = url(vector["manifest_response_url"].as_str().unwrap());
            let swarm_id = vector["swarm_id"].as_str();
            let body = playlist(vector["playlist"].as_str().unwrap());
            let presentation = match parse_manifest(&manifest, body.as_bytes()).unwrap() {
                Manifest::Master(p) | Manifest::Media(p, _) => p,
            };
            let renditions: Vec<(TrackKind, &Rendition)> = presentation
                .tracks
                .iter()
                .chain(&presentation.alternatives)
                .flat_map(|t| t.renditions.iter().map(move |r| (t.kind, r)))
                .collect();
            let streams = vector["streams"].as_array().unwrap();
            assert_eq!(renditions.len(), streams.len(), "{}", vector["label"]);
            for stream in streams {
                let (kind, rendition) = renditions
                    .iter()
                    .find(|(_, r)| r.url.as_str() == stream["url"].as_str().unwrap())
                    .unwrap_or_else(|| panic!("no rendition for {}", stream["url"]));
                let swarm = Swarm::for_rendition(&manifest, swarm_id, *kind, rendition);
                assert_eq!(swarm.name, stream["swarm"].as_str().unwrap());
                assert_eq!(
                    swarm.info_hash.as_str(),
                    stream["info_hash"].as_str().unwrap(),
                    "{}",
                    stream["preimage"]
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 13);
    }

    #[test]
    fn properties_normalise_as_p2p_media_loader_does() {
        let props = StreamProperties {
            bitrate: 5,
            codecs: Some(" MP4A.40.2,avc1.100.40 ".into()),
            width: Some(0),
            height: None,
            language: Some("und".into()),
            channels: Some("16/JOC".into()),
            name: Some("  Main ".into()),
            frame_rate: Some(29.97),
            video_range: Some(" pq".into()),
        };
        assert_eq!(
            props.preimage(),
            "5-avc1.640028,mp4a.40.2-0---16-main-29.97-PQ"
        );
        // A zero bitrate drops everything else of a variant.
        let mut v = variant("http://h/v.m3u8", 0);
        v.codecs = Some("avc1.4d401e".into());
        v.resolution = Some((640, 360));
        assert_eq!(StreamProperties::of_variant(&v).preimage(), "0--------");
        assert_eq!(decimal_avc1_to_hex("avc1.066.30"), "avc1.066.30");
        assert_eq!(js_number(25.0), "25");
        assert_eq!(js_number(23.976), "23.976");
    }

    #[test]
    fn different_renditions_differ() {
        let m = url("https://cdn.example/live/master.m3u8");
        let hi = variant("https://cdn.example/live/hi.m3u8", 5_000_000);
        let lo = variant("https://cdn.example/live/lo.m3u8", 1_000_000);
        let audio_en = audio("mp4a.40.2", "en", "English", "2");
        let audio_fr = audio("mp4a.40.2", "fr", "Français", "2");
        let dash = |set: usize, rep: &str| Rendition {
            source: RenditionSource::Dash {
                adaptation_set: set,
                representation: rep.into(),
            },
            ..variant("https://cdn.example/live/manifest.mpd", 1_000_000)
        };
        let swarms = [
            Swarm::for_rendition(&m, None, TrackKind::Video, &hi),
            Swarm::for_rendition(&m, None, TrackKind::Video, &lo),
            Swarm::for_rendition(&m, None, TrackKind::Audio, &audio_en),
            Swarm::for_rendition(&m, None, TrackKind::Audio, &audio_fr),
            Swarm::for_rendition(&m, None, TrackKind::Subtitle, &audio_en),
            Swarm::for_rendition(&m, None, TrackKind::Video, &dash(0, "v1")),
            Swarm::for_rendition(&m, None, TrackKind::Video, &dash(0, "v2")),
            Swarm::for_rendition(&m, None, TrackKind::Audio, &dash(1, "v1")),
            Swarm::for_rendition(&m, None, TrackKind::Video, &dash(1, "v1")),
        ];
        for (i, a) in swarms.iter().enumerate() {
            assert!(is_valid_id(a.info_hash.as_str()), "{}", a.info_hash);
            for b in &swarms[i + 1..] {
                assert_ne!(a.info_hash, b.info_hash, "{} vs {}", a.name, b.name);
            }
        }
    }

    #[test]
    fn dash_swarm_vector() {
        // The first 10 bytes of SHA-256("gst-mesh-v1\nchannel-7\ndash:video:0:v1"), in
        // lower-case hex, as docs/swarm-identity.md shows.
        let swarm = Swarm::gst_mesh("channel-7", "dash:video:0:v1");
        let digest = Sha256::digest(b"gst-mesh-v1\nchannel-7\ndash:video:0:v1");
        assert_eq!(swarm.info_hash.as_str(), hex::encode(&digest[..10]));
    }

    #[test]
    fn ids_are_valid_and_distinct() {
        assert_eq!(peer_id_prefix(), "-GM0001-");
        let a = PeerId::random();
        let b = PeerId::random();
        assert!(is_valid_id(a.as_str()) && a.as_str().is_ascii());
        assert!(a.as_str().starts_with("-GM0001-"));
        assert_ne!(a, b);
        let o = OfferId::random();
        assert!(is_valid_id(o.as_str()) && o.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(o, OfferId::random());
    }

    #[test]
    fn id_validation_counts_characters() {
        assert!(is_valid_id("aaaabbbbccccddddeeee"));
        assert!(!is_valid_id("aaaabbbbccccddddeee"));
        assert!(!is_valid_id("aaaabbbbccccddddeeeef"));
        // Latin-1 characters are one byte to trackers (two in UTF-8).
        assert!(is_valid_id("\u{ff}\u{0}aabbbbccccddddeeee"));
        assert!(InfoHash::parse("\u{ff}\u{0}aabbbbccccddddeeee").is_some());
        // Above U+00FF: aquatic_ws rejects it.
        assert!(!is_valid_id("\u{100}aaabbbbccccddddeeee"));
        assert!(PeerId::parse("short").is_none());
    }
}

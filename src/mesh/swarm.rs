//! Swarm identity and tracker ids.
//!
//! One swarm per rendition. Its name joins a base (the manifest URL without query string and
//! fragment, or the `swarm-id` property when set) and the rendition's identity within the
//! presentation; the info_hash is 20 lowercase hex digits of the SHA-256 of that name.
//! `docs/swarm-identity.md` gives the derivation.
//!
//! WebTorrent trackers take info_hash, peer_id and offer_id as 20-character strings whose
//! characters are single bytes (U+0000..=U+00FF): bittorrent-tracker checks `length === 20`,
//! aquatic_ws rejects characters above U+00FF. The ids made here are ASCII.

use crate::model::{Rendition, RenditionSource, TrackKind};
use rand::RngExt;
use sha2::{Digest, Sha256};
use std::fmt;
use url::Url;

/// Length of info_hash, peer_id and offer_id, in characters.
pub const ID_LEN: usize = 20;

/// Version tag of the swarm name: bump it when peers of different versions must not meet.
pub const SWARM_NAME_VERSION: &str = "gst-mesh-v1";

/// The peer_id prefix, in the Azureus style `-XXvvvv-`: "GM" for gst-mesh, then the crate's
/// major and minor version as two digits each.
pub fn peer_id_prefix() -> String {
    let mut parts = env!("CARGO_PKG_VERSION").split('.');
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    format!("-GM{:02}{:02}-", major % 100, minor % 100)
}

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_alphanumeric(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHANUMERIC[rng.random_range(0..ALPHANUMERIC.len())] as char)
        .collect()
}

/// Whether `s` is a valid tracker id: exactly 20 characters, each in U+0000..=U+00FF.
pub fn is_valid_id(s: &str) -> bool {
    s.chars().count() == ID_LEN && s.chars().all(|c| (c as u32) <= 0xff)
}

macro_rules! tracker_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Accepts a tracker-supplied id exactly as given, if it is valid (see
            /// [`is_valid_id`]).
            pub fn parse(s: &str) -> Option<Self> {
                is_valid_id(s).then(|| $name(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

tracker_id!(
    /// A swarm's 20-character info_hash.
    InfoHash
);
tracker_id!(
    /// A 20-character peer id. One per tracker connection, used for all its swarms.
    PeerId
);
tracker_id!(
    /// A 20-character offer id; the answer to an offer echoes it exactly.
    OfferId
);

impl PeerId {
    /// A fresh peer id: the [`peer_id_prefix`] and random alphanumerics.
    pub fn random() -> PeerId {
        let prefix = peer_id_prefix();
        let rest = random_alphanumeric(ID_LEN - prefix.len());
        PeerId(prefix + &rest)
    }
}

impl OfferId {
    /// A fresh offer id of 20 random alphanumerics.
    pub fn random() -> OfferId {
        OfferId(random_alphanumeric(ID_LEN))
    }
}

/// The base all of a presentation's swarms share: `swarm_id` when set and not empty, else the
/// manifest URL without query string and fragment (as the `url` crate normalizes it).
pub fn swarm_base(manifest_url: &Url, swarm_id: Option<&str>) -> String {
    if let Some(id) = swarm_id.filter(|id| !id.is_empty()) {
        return id.to_owned();
    }
    let mut url = manifest_url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.into()
}

/// The identity of a rendition within its presentation, the same for every viewer of the same
/// stream even when their URLs carry different tokens:
///
/// - HLS: `hls:{kind}:{path}:{bandwidth}:{name}`, where `path` is the media playlist's path
///   relative to the manifest's directory when it lies below it (else its absolute path), with
///   no scheme, host, query or fragment; `bandwidth` is the declared BANDWIDTH (0 when not
///   declared) and `name` the NAME of an alternate rendition (empty for variants).
/// - DASH: `dash:{kind}:{adaptation set index}:{representation id}`.
pub fn rendition_identity(manifest_url: &Url, kind: TrackKind, rendition: &Rendition) -> String {
    let kind = kind.pad_prefix();
    match &rendition.source {
        RenditionSource::HlsMediaPlaylist => format!(
            "hls:{kind}:{}:{}:{}",
            relative_path(manifest_url, &rendition.url),
            rendition.bandwidth,
            rendition.name.as_deref().unwrap_or("")
        ),
        RenditionSource::Dash {
            adaptation_set,
            representation,
        } => format!("dash:{kind}:{adaptation_set}:{representation}"),
    }
}

/// `target`'s path relative to the directory of `base`'s path, or its absolute path when it is
/// not below that directory.
fn relative_path(base: &Url, target: &Url) -> String {
    let base_path = base.path();
    let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
    let path = target.path();
    match path.strip_prefix(dir) {
        Some(rest) if !dir.is_empty() => rest.to_owned(),
        _ => path.to_owned(),
    }
}

/// One swarm: its name and info_hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Swarm {
    /// `gst-mesh-v1`, the base and the rendition identity, joined by newlines.
    pub name: String,
    pub info_hash: InfoHash,
}

impl Swarm {
    pub fn new(base: &str, rendition_identity: &str) -> Swarm {
        let name = format!("{SWARM_NAME_VERSION}\n{base}\n{rendition_identity}");
        let digest = Sha256::digest(name.as_bytes());
        let info_hash = InfoHash(hex::encode(&digest[..ID_LEN / 2]));
        Swarm { name, info_hash }
    }

    /// The swarm of `rendition` (of track kind `kind`) in the presentation at `manifest_url`.
    pub fn for_rendition(
        manifest_url: &Url,
        swarm_id: Option<&str>,
        kind: TrackKind,
        rendition: &Rendition,
    ) -> Swarm {
        Swarm::new(
            &swarm_base(manifest_url, swarm_id),
            &rendition_identity(manifest_url, kind, rendition),
        )
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
            swarm_base(&url("https://cdn.example/live/master.m3u8"), Some("")),
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

    #[test]
    fn same_stream_with_different_tokens_meets() {
        let a = url("https://cdn.example/live/master.m3u8?token=alice");
        let b = url("https://cdn.example/live/master.m3u8?token=bob");
        let ra = variant(
            "https://cdn.example/live/720p/index.m3u8?token=alice",
            2_000_000,
        );
        let rb = variant(
            "https://cdn.example/live/720p/index.m3u8?token=bob",
            2_000_000,
        );
        let sa = Swarm::for_rendition(&a, None, TrackKind::Video, &ra);
        let sb = Swarm::for_rendition(&b, None, TrackKind::Video, &rb);
        assert_eq!(sa, sb);
        assert_eq!(
            sa.name,
            "gst-mesh-v1\nhttps://cdn.example/live/master.m3u8\nhls:video:720p/index.m3u8:2000000:"
        );
    }

    #[test]
    fn same_swarm_id_from_different_urls_meets() {
        let a = url("https://edge-1.example/live/master.m3u8?sig=1");
        let b = url("http://edge-2.example:8080/mirror/ch7/master.m3u8");
        let ra = variant("https://edge-1.example/live/hi/index.m3u8?sig=1", 5_000_000);
        let rb = variant(
            "http://edge-2.example:8080/mirror/ch7/hi/index.m3u8",
            5_000_000,
        );
        let sa = Swarm::for_rendition(&a, Some("ch7"), TrackKind::Video, &ra);
        let sb = Swarm::for_rendition(&b, Some("ch7"), TrackKind::Video, &rb);
        assert_eq!(sa.info_hash, sb.info_hash);
        // Without the swarm-id they are different swarms.
        let sa = Swarm::for_rendition(&a, None, TrackKind::Video, &ra);
        let sb = Swarm::for_rendition(&b, None, TrackKind::Video, &rb);
        assert_ne!(sa.info_hash, sb.info_hash);
    }

    #[test]
    fn different_renditions_differ() {
        let m = url("https://cdn.example/live/master.m3u8");
        let hi = variant("https://cdn.example/live/hi.m3u8", 5_000_000);
        let lo = variant("https://cdn.example/live/lo.m3u8", 1_000_000);
        // Same playlist path, told apart only by the query: the bandwidth separates them.
        let q1 = variant("https://cdn.example/live/v.m3u8?q=1", 1_000_000);
        let q2 = variant("https://cdn.example/live/v.m3u8?q=2", 2_000_000);
        let mut audio_en = variant("https://cdn.example/live/audio.m3u8", 0);
        audio_en.name = Some("English".into());
        let mut audio_fr = audio_en.clone();
        audio_fr.name = Some("Français".into());
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
            Swarm::for_rendition(&m, None, TrackKind::Video, &q1),
            Swarm::for_rendition(&m, None, TrackKind::Video, &q2),
            Swarm::for_rendition(&m, None, TrackKind::Audio, &audio_en),
            Swarm::for_rendition(&m, None, TrackKind::Audio, &audio_fr),
            Swarm::for_rendition(&m, None, TrackKind::Video, &dash(0, "v1")),
            Swarm::for_rendition(&m, None, TrackKind::Video, &dash(0, "v2")),
            Swarm::for_rendition(&m, None, TrackKind::Audio, &dash(1, "v1")),
            Swarm::for_rendition(&m, None, TrackKind::Video, &dash(1, "v1")),
        ];
        for (i, a) in swarms.iter().enumerate() {
            assert!(is_valid_id(a.info_hash.as_str()));
            assert!(a.info_hash.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
            for b in &swarms[i + 1..] {
                assert_ne!(a.info_hash, b.info_hash, "{} vs {}", a.name, b.name);
            }
        }
    }

    #[test]
    fn info_hash_vector() {
        // The first 10 bytes of SHA-256("gst-mesh-v1\nchannel-7\nhls:video:hi.m3u8:5000000:"),
        // in lower-case hex. docs/swarm-identity.md shows the same example.
        let swarm = Swarm::new("channel-7", "hls:video:hi.m3u8:5000000:");
        let digest = Sha256::digest(b"gst-mesh-v1\nchannel-7\nhls:video:hi.m3u8:5000000:");
        assert_eq!(swarm.info_hash.as_str(), hex::encode(&digest[..10]));
        assert_eq!(swarm.info_hash.as_str(), INFO_HASH_EXAMPLE);
    }

    const INFO_HASH_EXAMPLE: &str = "e93f02264a9448c5b150";

    #[test]
    fn relative_paths() {
        let m = url("https://h/a/b/master.m3u8");
        assert_eq!(
            relative_path(&m, &url("https://h/a/b/x/y.m3u8")),
            "x/y.m3u8"
        );
        assert_eq!(
            relative_path(&m, &url("https://other/a/b/y.m3u8")),
            "y.m3u8"
        );
        assert_eq!(
            relative_path(&m, &url("https://h/a/c/y.m3u8")),
            "/a/c/y.m3u8"
        );
        assert_eq!(relative_path(&m, &m), "master.m3u8");
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

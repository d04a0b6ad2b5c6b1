//! HLS (RFC 8216) playlists, parsed with m3u8-rs, turned into the presentation model.

use crate::error::MeshError;
use crate::model::{
    ByteRange, Encryption, MediaTimeline, Presentation, Rendition, RenditionRole, RenditionSource,
    Resource, Segment, Track, TrackKind,
};
use m3u8_rs::{
    AlternativeMediaType, KeyMethod, MasterPlaylist, MediaPlaylist, Playlist, VariantStream,
};
use std::time::Duration;
use url::Url;

/// The longest EXTINF or HOLD-BACK taken (a week): a longer EXTINF is an error and a longer
/// HOLD-BACK is ignored, so that sums of durations never overflow.
const MAX_TAG_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a manifest URL turned out to be.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// A master playlist: the tracks and their renditions.
    Master(Presentation),
    /// A media playlist given directly: one track with one rendition, already loaded.
    Media(Presentation, MediaTimeline),
}

fn invalid(url: &Url, reason: impl Into<String>) -> MeshError {
    MeshError::InvalidPlaylist {
        url: url.to_string(),
        reason: reason.into(),
    }
}

/// Parses a manifest body fetched from `url` (the final URL after redirects).
pub fn parse_manifest(url: &Url, body: &[u8]) -> Result<Manifest, MeshError> {
    match parse(url, body)? {
        Playlist::MasterPlaylist(master) => {
            Ok(Manifest::Master(presentation_from_master(url, &master)?))
        }
        Playlist::MediaPlaylist(media) => {
            let timeline = timeline_from_media(url, &media)?;
            let rendition = Rendition {
                id: "main".into(),
                url: url.clone(),
                source: RenditionSource::HlsMediaPlaylist,
                bandwidth: 0,
                codecs: None,
                resolution: None,
                language: None,
                name: None,
                frame_rate: None,
                video_range: None,
                channels: None,
                role: RenditionRole::Variant,
            };
            let track = Track {
                kind: TrackKind::Video,
                id: "main".into(),
                renditions: vec![rendition],
                default_rendition: 0,
                muxed: true,
            };
            Ok(Manifest::Media(
                Presentation {
                    tracks: vec![track],
                    alternatives: Vec::new(),
                },
                timeline,
            ))
        }
    }
}

/// Parses a media playlist body fetched from `url`.
pub fn parse_media_playlist(url: &Url, body: &[u8]) -> Result<MediaTimeline, MeshError> {
    match parse(url, body)? {
        Playlist::MediaPlaylist(media) => timeline_from_media(url, &media),
        Playlist::MasterPlaylist(_) => Err(invalid(
            url,
            "expected a media playlist, got a master playlist",
        )),
    }
}

fn parse(url: &Url, body: &[u8]) -> Result<Playlist, MeshError> {
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if text.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(invalid(url, "the playlist is empty"));
    }
    if !text.trim_ascii_start().starts_with(b"#EXTM3U") {
        let looks_html = text
            .windows(5)
            .take(512)
            .any(|w| w.eq_ignore_ascii_case(b"<html"))
            || text.trim_ascii_start().starts_with(b"<!");
        let reason = if looks_html {
            "got an HTML page, not an M3U8 playlist"
        } else {
            "it does not start with #EXTM3U"
        };
        return Err(invalid(url, reason));
    }
    m3u8_rs::parse_playlist_res(text).map_err(|e| {
        let detail = crate::error::clipped(&format!("{e:?}"), 160);
        invalid(url, format!("parse error: {detail}"))
    })
}

fn resolve(base: &Url, reference: &str, what: &str) -> Result<Url, MeshError> {
    base.join(reference.trim())
        .map_err(|e| invalid(base, format!("bad {what} URI {reference:?}: {e}")))
}

fn codecs_have_video(codecs: &str) -> bool {
    codecs.split(',').map(str::trim).any(|c| {
        [
            "avc1", "avc3", "hvc1", "hev1", "vp09", "vp08", "av01", "dvh1", "dvhe", "mp4v",
        ]
        .iter()
        .any(|p| c.starts_with(p))
    })
}

/// An attribute m3u8-rs does not parse itself, as written.
fn other_attribute(
    attributes: &Option<std::collections::HashMap<String, m3u8_rs::QuotedOrUnquoted>>,
    name: &str,
) -> Option<String> {
    attributes.as_ref()?.get(name).map(|v| v.to_string())
}

/// The codecs of a group's renditions, from the variants that use the group, as hls.js takes
/// them: the audio (or text) codecs in the CODECS of the first variant naming the group, else
/// of the first variant.
fn group_codecs(variants: &[&VariantStream], group: &str, kind: TrackKind) -> Option<String> {
    let group_of = |v: &VariantStream| match kind {
        TrackKind::Subtitle => v.subtitles.clone(),
        _ => v.audio.clone(),
    };
    let variant = variants
        .iter()
        .find(|v| group_of(v).as_deref() == Some(group))
        .or(variants.first())?;
    let wanted = match kind {
        TrackKind::Subtitle => crate::container::CodecKind::Text,
        _ => crate::container::CodecKind::Audio,
    };
    let codecs: Vec<&str> = variant
        .codecs
        .as_deref()?
        .split([' ', ','])
        .filter(|c| !c.is_empty() && crate::container::codec_kind(c) == Some(wanted))
        .map(|c| c.split('/').next().unwrap_or(c))
        .collect();
    (!codecs.is_empty()).then(|| codecs.join(","))
}

fn presentation_from_master(url: &Url, master: &MasterPlaylist) -> Result<Presentation, MeshError> {
    let variants: Vec<_> = master.variants.iter().filter(|v| !v.is_i_frame).collect();
    if variants.is_empty() {
        return Err(invalid(url, "the master playlist lists no variant streams"));
    }
    let mut renditions = Vec::with_capacity(variants.len());
    for (index, variant) in variants.iter().enumerate() {
        renditions.push(Rendition {
            id: format!("v{index}"),
            url: resolve(url, &variant.uri, "variant")?,
            source: RenditionSource::HlsMediaPlaylist,
            // hls.js reads AVERAGE-BANDWIDTH when BANDWIDTH is 0.
            bandwidth: match variant.bandwidth {
                0 => variant.average_bandwidth.unwrap_or(0),
                b => b,
            },
            codecs: variant.codecs.clone(),
            resolution: variant.resolution.map(|r| (r.width, r.height)),
            language: None,
            name: None,
            frame_rate: variant.frame_rate,
            video_range: other_attribute(&variant.other_attributes, "VIDEO-RANGE"),
            channels: None,
            role: RenditionRole::Variant,
        });
    }
    let first = variants[0];
    let has_video =
        first.codecs.as_deref().is_none_or(codecs_have_video) || first.resolution.is_some();
    let mut tracks = vec![Track {
        kind: if has_video {
            TrackKind::Video
        } else {
            TrackKind::Audio
        },
        id: "main".into(),
        renditions,
        default_rendition: 0,
        muxed: true,
    }];

    let mut alternatives = Vec::new();
    for (kind, media_type, group) in [
        (
            TrackKind::Audio,
            AlternativeMediaType::Audio,
            first.audio.as_deref(),
        ),
        (
            TrackKind::Subtitle,
            AlternativeMediaType::Subtitles,
            first.subtitles.as_deref(),
        ),
    ] {
        let Some(group) = group else { continue };
        let members: Vec<_> = master
            .alternatives
            .iter()
            .filter(|m| m.media_type == media_type && m.group_id == group)
            .collect();
        // A rendition without URI is carried in the variant itself (muxed).
        let chosen = members
            .iter()
            .find(|m| m.default)
            .or_else(|| members.iter().find(|m| m.autoselect))
            .or(members.first());
        let Some(chosen) = chosen else { continue };
        let Some(uri) = chosen.uri.as_deref() else {
            continue;
        };
        if kind == TrackKind::Subtitle && !chosen.default && !chosen.autoselect {
            continue;
        }
        let track_of = |member: &m3u8_rs::AlternativeMedia, uri: &str| {
            Ok::<_, MeshError>(Track {
                kind,
                id: member.name.clone(),
                renditions: vec![Rendition {
                    id: format!("{}-{}", kind.pad_prefix(), member.name),
                    url: resolve(url, uri, "rendition")?,
                    source: RenditionSource::HlsMediaPlaylist,
                    bandwidth: 0,
                    codecs: group_codecs(&variants, &member.group_id, kind),
                    resolution: None,
                    language: member.language.clone(),
                    name: Some(member.name.clone()),
                    frame_rate: None,
                    video_range: None,
                    channels: member.channels.clone(),
                    role: RenditionRole::Alternative,
                }],
                default_rendition: 0,
                muxed: false,
            })
        };
        tracks.push(track_of(chosen, uri)?);
        // The other members of the group (other languages) can be selected instead.
        for member in members.iter().filter(|m| !std::ptr::eq(**m, *chosen)) {
            if let Some(uri) = member.uri.as_deref() {
                alternatives.push(track_of(member, uri)?);
            }
        }
        // The variants carry no audio of their own unless a member of the group has no URI.
        if kind == TrackKind::Audio
            && tracks[0].kind == TrackKind::Video
            && members.iter().all(|m| m.uri.is_some())
        {
            tracks[0].muxed = false;
        }
    }
    Ok(Presentation {
        tracks,
        alternatives,
    })
}

fn parse_iv(url: &Url, text: &str) -> Result<[u8; 16], MeshError> {
    let hex = text.trim();
    let hex = hex
        .strip_prefix("0x")
        .or_else(|| hex.strip_prefix("0X"))
        .unwrap_or(hex);
    if hex.len() != 32 || !hex.is_ascii() {
        return Err(invalid(url, format!("IV {text:?} is not 128 bits of hex")));
    }
    let mut iv = [0u8; 16];
    for (i, byte) in iv.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| invalid(url, format!("IV {text:?} is not hex")))?;
    }
    Ok(iv)
}

/// HOLD-BACK / PART-HOLD-BACK from EXT-X-SERVER-CONTROL, if present.
fn server_hold_back(media: &MediaPlaylist) -> Option<Duration> {
    let control = media
        .unknown_tags
        .iter()
        .find(|t| t.tag == "X-SERVER-CONTROL")?;
    let rest = control.rest.as_deref()?;
    rest.split(',').find_map(|attr| {
        let (name, value) = attr.split_once('=')?;
        (name.trim() == "HOLD-BACK")
            .then(|| value.trim().parse::<f64>().ok())
            .flatten()
            .and_then(|v| Duration::try_from_secs_f64(v).ok())
            .filter(|d| *d <= MAX_TAG_DURATION)
    })
}

fn timeline_from_media(url: &Url, media: &MediaPlaylist) -> Result<MediaTimeline, MeshError> {
    if media.i_frames_only {
        return Err(MeshError::Unsupported(
            "I-frame-only playlists cannot be played".into(),
        ));
    }
    let mut segments = Vec::with_capacity(media.segments.len());
    let mut start = Duration::ZERO;
    let mut encryption_key: Option<(Url, Option<[u8; 16]>)> = None;
    let mut init: Option<Resource> = None;
    // Where an EXT-X-BYTERANGE without offset continues, per URI.
    let mut next_offset: Option<(Url, u64)> = None;

    for (index, seg) in media.segments.iter().enumerate() {
        let sequence = media.media_sequence + index as u64;
        // m3u8-rs rejects METHOD=NONE without IV and leaves it as an unknown tag.
        let clears_key = seg.unknown_tags.iter().any(|t| {
            t.tag == "X-KEY"
                && t.rest
                    .as_deref()
                    .is_some_and(|r| r.split(',').any(|a| a.trim() == "METHOD=NONE"))
        });
        if clears_key {
            encryption_key = None;
        }
        if let Some(key) = &seg.key {
            encryption_key = match &key.method {
                KeyMethod::None => None,
                KeyMethod::AES128 => {
                    let key_uri = key
                        .uri
                        .as_deref()
                        .ok_or_else(|| invalid(url, "EXT-X-KEY METHOD=AES-128 without URI"))?;
                    let iv = key.iv.as_deref().map(|iv| parse_iv(url, iv)).transpose()?;
                    Some((resolve(url, key_uri, "key")?, iv))
                }
                other => {
                    return Err(MeshError::Unsupported(format!(
                        "EXT-X-KEY METHOD={other} (only AES-128 is supported)"
                    )));
                }
            };
        }
        if let Some(map) = &seg.map {
            let map_url = resolve(url, &map.uri, "EXT-X-MAP")?;
            let range = map.byte_range.as_ref().map(|r| ByteRange {
                offset: r.offset.unwrap_or(0),
                length: r.length,
            });
            init = Some(Resource {
                url: map_url,
                range,
            });
        }
        let seg_url = resolve(url, &seg.uri, "segment")?;
        let range = match &seg.byte_range {
            None => None,
            Some(r) => {
                let offset = match (r.offset, &next_offset) {
                    (Some(offset), _) => offset,
                    (None, Some((prev_url, end))) if *prev_url == seg_url => *end,
                    (None, _) => {
                        return Err(invalid(
                            url,
                            format!(
                                "EXT-X-BYTERANGE without offset for {} has no preceding range",
                                seg.uri
                            ),
                        ));
                    }
                };
                if r.length == 0 {
                    return Err(invalid(
                        url,
                        format!("empty EXT-X-BYTERANGE for {}", seg.uri),
                    ));
                }
                next_offset = Some((seg_url.clone(), offset + r.length));
                Some(ByteRange {
                    offset,
                    length: r.length,
                })
            }
        };
        let duration = Duration::try_from_secs_f64(seg.duration as f64)
            .ok()
            .filter(|d| *d <= MAX_TAG_DURATION);
        let Some(duration) = duration else {
            return Err(invalid(
                url,
                format!("bad EXTINF duration {} for {}", seg.duration, seg.uri),
            ));
        };
        let encryption = encryption_key.as_ref().map(|(key_url, iv)| Encryption {
            key_url: key_url.clone(),
            iv: iv.unwrap_or_else(|| (sequence as u128).to_be_bytes()),
        });
        segments.push(Segment {
            sequence,
            resource: Resource {
                url: seg_url,
                range,
            },
            duration,
            start,
            discontinuity: seg.discontinuity,
            media_start: None,
            init: init.clone(),
            encryption,
        });
        start += duration;
    }

    let target_duration = Duration::from_secs(media.target_duration.max(1));
    let is_vod = matches!(media.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod));
    let ended = media.end_list || is_vod;
    Ok(MediaTimeline {
        segments,
        target_duration,
        ended,
        is_live: !ended,
        end_list: media.end_list,
        hold_back: server_hold_back(media).unwrap_or(target_duration * 3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("http://origin.test/live/index.m3u8?token=1").unwrap()
    }

    #[test]
    fn media_playlist_carries_keys_maps_and_ranges_forward() {
        let body =
            b"#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n\
#EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"700@0\"\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"../k.key\"\n\
#EXT-X-BYTERANGE:1000@700\n#EXTINF:2.0,\nall.mp4\n\
#EXT-X-BYTERANGE:500\n#EXTINF:1.5,\nall.mp4?x=1\n\
#EXT-X-DISCONTINUITY\n#EXT-X-KEY:METHOD=NONE\n#EXTINF:2,\nseg.m4s\n#EXT-X-ENDLIST\n";
        let tl = parse_media_playlist(&base(), body);
        // all.mp4?x=1 is a different URL than all.mp4, so the offset-less range is an error.
        assert!(
            matches!(tl, Err(MeshError::InvalidPlaylist { .. })),
            "{tl:?}"
        );

        let body = String::from_utf8_lossy(body).replace("all.mp4?x=1", "all.mp4");
        let tl = parse_media_playlist(&base(), body.as_bytes()).unwrap();
        assert!(tl.ended && !tl.is_live);
        assert_eq!(tl.segments.len(), 3);
        let s = &tl.segments;
        assert_eq!(s[0].sequence, 10);
        assert_eq!(
            s[0].resource.range,
            Some(ByteRange {
                offset: 700,
                length: 1000
            })
        );
        assert_eq!(
            s[1].resource.range,
            Some(ByteRange {
                offset: 1700,
                length: 500
            })
        );
        assert_eq!(
            s[0].resource.url.as_str(),
            "http://origin.test/live/all.mp4"
        );
        let init = s[2].init.as_ref().unwrap();
        assert_eq!(init.url.as_str(), "http://origin.test/live/init.mp4");
        assert_eq!(
            init.range,
            Some(ByteRange {
                offset: 0,
                length: 700
            })
        );
        let enc = s[1].encryption.as_ref().unwrap();
        assert_eq!(enc.key_url.as_str(), "http://origin.test/k.key");
        assert_eq!(enc.iv, (11u128).to_be_bytes());
        assert!(s[2].encryption.is_none());
        assert!(s[2].discontinuity && !s[1].discontinuity);
        assert_eq!(s[2].start, Duration::from_secs_f64(3.5));
        assert_eq!(tl.duration(), Duration::from_secs_f64(5.5));
    }

    #[test]
    fn explicit_iv_and_live_start() {
        let mut body = String::from(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:100\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\",IV=0x000102030405060708090A0B0C0D0E0F\n",
        );
        for i in 0..8 {
            body.push_str(&format!("#EXTINF:2.000,\ns{i}.ts\n"));
        }
        let tl = parse_media_playlist(&base(), body.as_bytes()).unwrap();
        assert!(tl.is_live && !tl.ended);
        assert_eq!(tl.segments[3].encryption.as_ref().unwrap().iv[15], 0x0f);
        // 16 s of media, hold-back 6 s: start in the segment that begins at 10 s.
        assert_eq!(tl.live_start_sequence(), Some(105));
    }

    #[test]
    fn master_with_alternate_audio_and_relative_uris() {
        let body = b"#EXTM3U\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"en\",DEFAULT=YES,URI=\"audio/en.m3u8\"\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"fr\",URI=\"audio/fr.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.4d401e,mp4a.40.2\",AUDIO=\"aud\"\nlow/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=2000000,AUDIO=\"aud\"\n/abs/high.m3u8?q=2\n";
        let Manifest::Master(p) = parse_manifest(&base(), body).unwrap() else {
            panic!("not master")
        };
        assert_eq!(p.tracks.len(), 2);
        assert_eq!(p.tracks[0].kind, TrackKind::Video);
        assert!(!p.tracks[0].muxed);
        assert_eq!(
            p.tracks[0].renditions[1].url.as_str(),
            "http://origin.test/abs/high.m3u8?q=2"
        );
        assert_eq!(p.tracks[1].kind, TrackKind::Audio);
        assert_eq!(
            p.tracks[1].renditions[0].url.as_str(),
            "http://origin.test/live/audio/en.m3u8"
        );
        // The other language is an alternative a stream selection can switch to.
        let ids: Vec<(&str, &str)> = p
            .tracks
            .iter()
            .chain(&p.alternatives)
            .map(|t| (t.kind.pad_prefix(), t.id.as_str()))
            .collect();
        assert_eq!(ids, [("video", "main"), ("audio", "en"), ("audio", "fr")]);
        assert_eq!(
            p.alternatives[0].renditions[0].url.as_str(),
            "http://origin.test/live/audio/fr.m3u8"
        );
        assert_eq!(p.alternatives[0].renditions[0].name.as_deref(), Some("fr"));
    }

    #[test]
    fn low_latency_playlists_play_from_their_full_segments() {
        // LL-HLS (RFC 8216bis): parts and hints for players that go for low latency, full
        // segments for the rest. The parts must not become segments, and the trailing
        // parts of the segment still being written and the preload hint are ignored.
        let body = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-VERSION:9\n\
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0,HOLD-BACK=6.0\n\
#EXT-X-PART-INF:PART-TARGET=0.5\n#EXT-X-MEDIA-SEQUENCE:20\n\
#EXT-X-MAP:URI=\"init.mp4\"\n\
#EXT-X-PART:DURATION=1.0,URI=\"s20.mp4\",BYTERANGE=\"100@0\",INDEPENDENT=YES\n\
#EXT-X-PART:DURATION=1.0,URI=\"s20.mp4\",BYTERANGE=\"100@100\"\n\
#EXTINF:2.0,\ns20.mp4\n\
#EXT-X-PART:DURATION=1.0,URI=\"s21.mp4\",BYTERANGE=\"100@0\",INDEPENDENT=YES\n\
#EXT-X-PART:DURATION=1.0,URI=\"s21.mp4\",BYTERANGE=\"100@100\"\n\
#EXTINF:2.0,\ns21.mp4\n\
#EXT-X-PART:DURATION=1.0,URI=\"s22.mp4\",BYTERANGE=\"100@0\",INDEPENDENT=YES\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s22.mp4\",BYTERANGE-START=100\n\
#EXT-X-RENDITION-REPORT:URI=\"../alt/index.m3u8\",LAST-MSN=21,LAST-PART=0\n";
        let tl = parse_media_playlist(&base(), body).unwrap();
        let uris: Vec<&str> = tl.segments.iter().map(|s| s.resource.url.path()).collect();
        assert_eq!(uris, ["/live/s20.mp4", "/live/s21.mp4"]);
        assert!(tl.segments.iter().all(|s| s.resource.range.is_none()));
        assert_eq!(tl.first_sequence(), Some(20));
        assert!(tl.is_live);
        // Standard latency: HOLD-BACK, not PART-HOLD-BACK.
        assert_eq!(tl.hold_back, Duration::from_secs(6));
    }

    #[test]
    fn bad_bodies_are_invalid_playlists() {
        for (body, needle) in [
            (&b""[..], "empty"),
            (b"  \n", "empty"),
            (b"<!DOCTYPE html><html><body>oops</body></html>", "HTML"),
            (b"\x00\x01garbage\xff", "#EXTM3U"),
        ] {
            match parse_manifest(&base(), body) {
                Err(e @ MeshError::InvalidPlaylist { .. }) => {
                    assert!(e.to_string().contains(needle), "{e}");
                    assert!(e.to_string().starts_with("invalid playlist: "), "{e}");
                }
                other => panic!("{body:?} gave {other:?}"),
            }
        }
    }
}

//! The presentation model shared by the HLS and DASH parsers: what tracks exist, which
//! renditions each offers, and the segments of a rendition.

use std::time::Duration;
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Video,
    Audio,
    Subtitle,
}

impl TrackKind {
    pub fn pad_prefix(self) -> &'static str {
        match self {
            TrackKind::Video => "video",
            TrackKind::Audio => "audio",
            TrackKind::Subtitle => "subtitle",
        }
    }
}

/// One encoding of a track (an HLS variant or alternate rendition, a DASH representation).
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    /// Stable identity within the presentation, used for logging and, later, swarm ids.
    pub id: String,
    /// HLS: the media playlist. DASH: the MPD.
    pub url: Url,
    pub source: RenditionSource,
    /// Declared peak bitrate in bits per second; 0 when unknown.
    pub bandwidth: u64,
    pub codecs: Option<String>,
    pub resolution: Option<(u64, u64)>,
    pub language: Option<String>,
    pub name: Option<String>,
    /// HLS FRAME-RATE / DASH @frameRate.
    pub frame_rate: Option<f64>,
    /// HLS VIDEO-RANGE (`SDR`, `PQ`, `HLG`).
    pub video_range: Option<String>,
    /// HLS CHANNELS of an audio rendition, as written (`2`, `16/JOC`).
    pub channels: Option<String>,
    pub role: RenditionRole,
}

/// What a rendition is in its manifest; p2p-media-loader names `main` and `secondary` swarms
/// after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenditionRole {
    /// An HLS variant stream (or a lone media playlist), a DASH video or muxed representation.
    Variant,
    /// An HLS alternate rendition (EXT-X-MEDIA), a DASH audio or text representation.
    Alternative,
}

/// Where a rendition's segment list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenditionSource {
    /// An HLS media playlist at the rendition's URL, reloaded while live.
    HlsMediaPlaylist,
    /// A DASH representation: its AdaptationSet's index among the Period's sets and its id.
    Dash {
        adaptation_set: usize,
        representation: String,
    },
}

/// A track becomes one source pad.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub kind: TrackKind,
    /// Stable identity within the presentation, the base of stream ids: the AdaptationSet's
    /// `@id` (or `#index`) in DASH, the rendition's NAME in HLS (`main` for the variants).
    pub id: String,
    /// The renditions ABR chooses among, in manifest order.
    pub renditions: Vec<Rendition>,
    /// Index into `renditions` to start with when no bitrate hint applies.
    pub default_rendition: usize,
    /// Whether the rendition carries several elementary streams (muxed audio+video).
    pub muxed: bool,
}

impl Track {
    /// Declared bitrates of the renditions, in manifest order, for ABR.
    pub fn bandwidths(&self) -> Vec<u64> {
        self.renditions.iter().map(|r| r.bandwidth).collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Presentation {
    pub tracks: Vec<Track>,
    /// Tracks not played by default that a stream selection can switch a pad to: other
    /// audio languages, further video or text sets. Only kinds that have a track.
    pub alternatives: Vec<Track>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
}

impl ByteRange {
    /// The value of an HTTP `Range` header for this range.
    pub fn header_value(&self) -> String {
        format!("bytes={}-{}", self.offset, self.offset + self.length - 1)
    }
}

/// A resource and optional byte range: the unit every fetch is made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resource {
    pub url: Url,
    pub range: Option<ByteRange>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encryption {
    pub key_url: Url,
    pub iv: [u8; 16],
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Media sequence number (HLS) or segment number (DASH).
    pub sequence: u64,
    pub resource: Resource,
    pub duration: Duration,
    /// Start time on the rendition's timeline (sum of the durations before it).
    pub start: Duration,
    /// Timestamps may not continue from the previous segment.
    pub discontinuity: bool,
    /// Where `start` lies on the media's own timeline (the time its first sample carries),
    /// when the manifest says: DASH's presentation time, presentationTimeOffset included.
    /// HLS leaves it to the segment's own first timestamp.
    pub media_start: Option<Duration>,
    pub init: Option<Resource>,
    pub encryption: Option<Encryption>,
}

/// The segments of one rendition as the latest playlist describes them.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaTimeline {
    pub segments: Vec<Segment>,
    pub target_duration: Duration,
    /// No more segments will be added (VOD, or a live stream that ended).
    pub ended: bool,
    /// Whether segments can ever disappear from the front (live sliding window).
    pub is_live: bool,
    /// HLS EXT-X-ENDLIST (DASH: a static MPD): p2p-media-loader numbers the segments of such
    /// a playlist by position, others by media sequence number.
    pub end_list: bool,
    /// How far behind the live edge playback starts.
    pub hold_back: Duration,
}

impl MediaTimeline {
    pub fn duration(&self) -> Duration {
        self.segments.iter().map(|s| s.duration).sum()
    }

    pub fn first_sequence(&self) -> Option<u64> {
        self.segments.first().map(|s| s.sequence)
    }

    pub fn last_sequence(&self) -> Option<u64> {
        self.segments.last().map(|s| s.sequence)
    }

    pub fn by_sequence(&self, sequence: u64) -> Option<&Segment> {
        let first = self.first_sequence()?;
        let index = sequence.checked_sub(first)? as usize;
        self.segments.get(index).filter(|s| s.sequence == sequence)
    }

    /// The segment containing `time`, or the last one if `time` is past the end.
    pub fn segment_at(&self, time: Duration) -> Option<&Segment> {
        self.segments
            .iter()
            .rev()
            .find(|s| s.start <= time)
            .or(self.segments.first())
    }

    /// Where live playback starts: the segment containing (end − hold-back).
    pub fn live_start_sequence(&self) -> Option<u64> {
        self.live_start_sequence_behind(Duration::ZERO)
    }

    /// Where live playback starts: the hold-back, or `delay` when that is more, behind the
    /// end of the playlist.
    pub fn live_start_sequence_behind(&self, delay: Duration) -> Option<u64> {
        let end = self.segments.last().map(|s| s.start + s.duration)?;
        let target = end.saturating_sub(self.hold_back.max(delay));
        self.segment_at(target).map(|s| s.sequence)
    }
}

//! MPEG-DASH: MPDs parsed with dash-mpd-core, turned into the presentation model.
//!
//! [`parse_mpd`] checks and parses an MPD, [`presentation`] chooses the tracks (first video
//! AdaptationSet, main or first audio AdaptationSet, a text AdaptationSet) and [`timeline`]
//! lists the segments of one representation across every Period at a given wall-clock time.
//! The plugin's `DashSession` keeps the latest MPD of a playback session and refreshes it.
//! Sans-IO: no fetching here.

mod addressing;
mod clock;

pub use addressing::{SegmentIndex, parse_sidx};
pub use clock::{ClockSource, clock_sources, parse_utc_time};

use crate::error::MeshError;
use crate::model::{
    MediaTimeline, Presentation, Rendition, RenditionRole, RenditionSource, Resource, Segment,
    Track, TrackKind,
};
use addressing::{RepSegments, Window};
use chrono::{DateTime, Utc};
use dash_mpd_core::{AdaptationSet, MPD, Period, Representation};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The most segments a live timeline lists (the newest ones), whatever the time-shift buffer.
pub const MAX_LIVE_SEGMENTS: usize = 1000;

/// DASH-specific settings, with dashdemux2's property names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DashOptions {
    /// `max-video-width`: 0 = no limit.
    pub max_video_width: u32,
    /// `max-video-height`: 0 = no limit.
    pub max_video_height: u32,
    /// `max-video-framerate` as (numerator, denominator); a zero numerator = no limit.
    pub max_video_framerate: (u32, u32),
    /// `presentation-delay`: "12s", "2500ms" or "3f" (fragments); used when the MPD has no
    /// suggestedPresentationDelay.
    pub presentation_delay: String,
}

impl Default for DashOptions {
    fn default() -> Self {
        DashOptions {
            max_video_width: 0,
            max_video_height: 0,
            max_video_framerate: (0, 1),
            presentation_delay: "10s".into(),
        }
    }
}

/// A parsed `presentation-delay` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresentationDelay {
    Time(Duration),
    /// A number of fragments of the MPD's maximum segment duration.
    Fragments(u64),
}

/// Parses `presentation-delay` as dashdemux2 does: an integer, optional spaces, then `s`,
/// `ms` or `f`. Anything else (including a bare number) is None, which means no delay.
pub fn parse_presentation_delay(text: &str) -> Option<PresentationDelay> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let value: u64 = text[..digits].parse().ok()?;
    match text[digits..].trim_start().to_ascii_lowercase().as_str() {
        "s" => Some(PresentationDelay::Time(Duration::from_secs(value))),
        "ms" => Some(PresentationDelay::Time(Duration::from_millis(value))),
        "f" => Some(PresentationDelay::Fragments(value)),
        _ => None,
    }
}

pub fn invalid(url: &Url, reason: impl Into<String>) -> MeshError {
    MeshError::InvalidPlaylist {
        url: url.to_string(),
        reason: format!("MPD: {}", reason.into()),
    }
}

/// Whether a manifest body (fetched from `url`) is an MPD rather than an HLS playlist.
pub fn looks_like_mpd(url: &Url, body: &[u8]) -> bool {
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = text.trim_ascii_start();
    if text.starts_with(b"#EXTM3U") {
        return false;
    }
    text.starts_with(b"<?xml")
        || text.starts_with(b"<MPD")
        || url.path().to_ascii_lowercase().ends_with(".mpd")
}

/// A parsed MPD and the URL it came from (after redirects), against which it resolves.
#[derive(Debug, Clone)]
pub struct Mpd {
    pub url: Url,
    pub doc: MPD,
    pub dynamic: bool,
}

/// Checks and parses an MPD body fetched from `url`.
pub fn parse_mpd(url: &Url, body: &[u8]) -> Result<Mpd, MeshError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(invalid(url, "the manifest is empty"));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| invalid(url, format!("the manifest is not UTF-8 text ({e})")))?;
    check_xml(url, text)?;
    let doc = dash_mpd_core::parse(text).map_err(|e| {
        let detail = crate::error::clipped(&e.to_string(), 200);
        invalid(url, format!("cannot parse: {detail}"))
    })?;
    let dynamic = match doc.mpdtype.as_deref().map(str::trim) {
        None | Some("static") => false,
        Some("dynamic") => true,
        Some(other) => return Err(invalid(url, format!("unknown MPD@type {other:?}"))),
    };
    if doc.periods.is_empty() {
        return Err(invalid(url, "the MPD has no Period"));
    }
    if dynamic && doc.availabilityStartTime.is_none() {
        return Err(invalid(url, "dynamic MPD without availabilityStartTime"));
    }
    for period in &doc.periods {
        if let Some(href) = &period.href
            && href != "urn:mpeg:dash:resolve-to-zero:2013"
        {
            return Err(invalid(
                url,
                format!("remote (xlink) Periods are not supported ({href})"),
            ));
        }
    }
    Ok(Mpd {
        url: url.clone(),
        doc,
        dynamic,
    })
}

/// Well-formedness and root element, with reasons a person can act on; the serde parser
/// accepts any root element and reports truncation obscurely.
fn check_xml(url: &Url, text: &str) -> Result<(), MeshError> {
    use quick_xml::events::Event;
    let head = text.trim_start();
    let prefix = head[..head.floor_char_boundary(512)].to_ascii_lowercase();
    if prefix.starts_with("<!doctype html") || prefix.contains("<html") {
        return Err(invalid(url, "got an HTML page, not an MPD"));
    }
    if !head.starts_with('<') {
        return Err(invalid(url, "not XML (it does not start with '<')"));
    }
    let mut reader = quick_xml::Reader::from_str(text);
    let mut open: Vec<String> = Vec::new();
    let mut root_seen = false;
    loop {
        let event = reader.read_event().map_err(|e| {
            let pos = reader.error_position();
            let detail = crate::error::clipped(&e.to_string(), 160);
            if pos as usize >= text.trim_end().len() || detail.contains("end of input") {
                invalid(
                    url,
                    format!("truncated XML (it ends inside a tag): {detail}"),
                )
            } else {
                invalid(url, format!("malformed XML at byte {pos}: {detail}"))
            }
        })?;
        let (element, is_start) = match &event {
            Event::Start(e) => (Some(e), true),
            Event::Empty(e) => (Some(e), false),
            Event::End(_) => {
                open.pop();
                (None, false)
            }
            Event::Eof => break,
            _ => (None, false),
        };
        let Some(element) = element else { continue };
        let name = element.local_name().as_ref().to_string();
        if !root_seen {
            if name != "MPD" {
                return Err(invalid(
                    url,
                    format!("the root element is <{name}>, not <MPD>"),
                ));
            }
            root_seen = true;
        }
        if is_start {
            open.push(name);
        }
    }
    match open.last() {
        _ if !root_seen => Err(invalid(url, "no <MPD> element")),
        Some(unclosed) => Err(invalid(
            url,
            format!("truncated XML: <{unclosed}> is never closed"),
        )),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Periods, adaptation sets and representations
// ---------------------------------------------------------------------------------------------

/// A Period with its start and end on the MPD timeline.
#[derive(Debug, Clone)]
pub(crate) struct PeriodSpan<'a> {
    pub period: &'a Period,
    pub index: usize,
    pub start: Duration,
    pub end: Option<Duration>,
    /// Identity across MPD refreshes.
    pub key: String,
}

pub(crate) fn period_spans(mpd: &MPD) -> Vec<PeriodSpan<'_>> {
    let periods: Vec<&Period> = mpd.periods.iter().filter(|p| p.href.is_none()).collect();
    let mut starts = Vec::with_capacity(periods.len());
    let mut previous: Option<(Duration, Option<Duration>)> = None;
    for period in &periods {
        let start = period
            .start
            .or_else(|| previous.and_then(|(start, duration)| duration.map(|d| start + d)))
            .unwrap_or_default();
        starts.push(start);
        previous = Some((start, period.duration));
    }
    periods
        .iter()
        .enumerate()
        .map(|(index, period)| {
            let start = starts[index];
            let end = starts
                .get(index + 1)
                .copied()
                .or_else(|| period.duration.map(|d| start + d))
                .or(mpd.mediaPresentationDuration)
                .filter(|end| *end >= start);
            PeriodSpan {
                period,
                index,
                start,
                end,
                key: period
                    .id
                    .clone()
                    .unwrap_or_else(|| format!("@{}", start.as_millis())),
            }
        })
        .collect()
}

const ROLE_SCHEME: &str = "urn:mpeg:dash:role:2011";

fn is_audio_codec(codec: &str) -> bool {
    [
        "mp4a", "ac-3", "ec-3", "ac-4", "opus", "Opus", "flac", "fLaC", "vorbis", "dtsc", "dtse",
        "dtsh", "dtsl", "mha1", "mhm1", "mp3", ".mp3",
    ]
    .iter()
    .any(|p| codec.trim().starts_with(p))
}

fn is_video_codec(codec: &str) -> bool {
    [
        "avc1", "avc3", "hvc1", "hev1", "vp09", "vp08", "vp8", "vp9", "av01", "dvh1", "dvhe",
        "mp4v",
    ]
    .iter()
    .any(|p| codec.trim().starts_with(p))
}

fn is_text_codec(codec: &str) -> bool {
    let c = codec.trim();
    c == "wvtt" || c == "tx3g" || c == "c608" || c.starts_with("stpp")
}

/// What kind of track an AdaptationSet is, or None for kinds that are not played (images).
pub(crate) fn classify(set: &AdaptationSet) -> Option<TrackKind> {
    let first = set.representations.first();
    let content_type = set
        .contentType
        .as_deref()
        .or(first.and_then(|r| r.contentType.as_deref()));
    match content_type.map(str::trim) {
        Some("video") => return Some(TrackKind::Video),
        Some("audio") => return Some(TrackKind::Audio),
        Some("text") => return Some(TrackKind::Subtitle),
        Some(_) => return None,
        None => {}
    }
    let mime = set
        .mimeType
        .as_deref()
        .or(first.and_then(|r| r.mimeType.as_deref()))
        .unwrap_or("");
    let codecs = set
        .codecs
        .as_deref()
        .or(first.and_then(|r| r.codecs.as_deref()))
        .unwrap_or("");
    let codec_list: Vec<&str> = codecs.split(',').filter(|c| !c.trim().is_empty()).collect();
    let is_role_subtitle = set.Role.iter().any(|r| {
        matches!(
            r.value.as_deref(),
            Some("subtitle") | Some("caption") | Some("forced-subtitle")
        )
    });
    if mime.starts_with("text/")
        || mime == "application/ttml+xml"
        || codec_list.iter().any(|c| is_text_codec(c))
        || is_role_subtitle
    {
        return Some(TrackKind::Subtitle);
    }
    if codec_list.iter().any(|c| is_video_codec(c)) {
        return Some(TrackKind::Video);
    }
    if mime.starts_with("audio/") || codec_list.iter().any(|c| is_audio_codec(c)) {
        return Some(TrackKind::Audio);
    }
    if mime.starts_with("video/") {
        return Some(TrackKind::Video);
    }
    None
}

fn is_main(set: &AdaptationSet) -> bool {
    set.Role.iter().any(|r| {
        r.schemeIdUri.trim() == ROLE_SCHEME
            && matches!(r.value.as_deref().map(str::trim), Some("main"))
    })
}

/// The AdaptationSet a track of `kind` plays in `period` (index among the Period's sets).
fn default_set(period: &Period, kind: TrackKind) -> Option<usize> {
    let candidates: Vec<usize> = period
        .adaptations
        .iter()
        .enumerate()
        .filter(|(_, a)| classify(a) == Some(kind) && !a.representations.is_empty())
        .map(|(i, _)| i)
        .collect();
    match kind {
        TrackKind::Video => candidates.first().copied(),
        TrackKind::Audio | TrackKind::Subtitle => candidates
            .iter()
            .copied()
            .find(|i| is_main(&period.adaptations[*i]))
            .or(candidates.first().copied()),
    }
}

fn set_language(set: &AdaptationSet) -> Option<String> {
    set.lang
        .clone()
        .or_else(|| set.representations.iter().find_map(|r| r.lang.clone()))
}

/// The id a rendition uses for a representation: its @id, or its position when it has none.
fn representation_key(index: usize, rep: &Representation) -> String {
    rep.id.clone().unwrap_or_else(|| format!("#{index}"))
}

fn parse_frame_rate(text: &str) -> Option<f64> {
    let text = text.trim();
    let (num, den) = match text.split_once('/') {
        Some((n, d)) => (n.trim().parse::<f64>().ok()?, d.trim().parse::<f64>().ok()?),
        None => (text.parse::<f64>().ok()?, 1.0),
    };
    (den > 0.0 && num.is_finite()).then_some(num / den)
}

fn within_video_limits(set: &AdaptationSet, rep: &Representation, opts: &DashOptions) -> bool {
    let width = rep.width.or(set.width);
    let height = rep.height.or(set.height);
    if opts.max_video_width > 0 && width.is_some_and(|w| w > u64::from(opts.max_video_width)) {
        return false;
    }
    if opts.max_video_height > 0 && height.is_some_and(|h| h > u64::from(opts.max_video_height)) {
        return false;
    }
    let (num, den) = opts.max_video_framerate;
    if num > 0 && den > 0 {
        let limit = f64::from(num) / f64::from(den);
        let rate = rep
            .frameRate
            .as_deref()
            .or(set.frameRate.as_deref())
            .and_then(parse_frame_rate);
        if rate.is_some_and(|r| r > limit + 1e-6) {
            return false;
        }
    }
    true
}

fn rendition_of(
    mpd: &Mpd,
    set_index: usize,
    set: &AdaptationSet,
    rep_index: usize,
    rep: &Representation,
) -> Rendition {
    let key = representation_key(rep_index, rep);
    let codecs = rep.codecs.clone().or_else(|| set.codecs.clone());
    Rendition {
        id: format!(
            "{}/{}",
            set.id.clone().unwrap_or_else(|| format!("#{set_index}")),
            key
        ),
        url: mpd.url.clone(),
        source: RenditionSource::Dash {
            adaptation_set: set_index,
            representation: key,
        },
        bandwidth: rep.bandwidth.unwrap_or(0),
        codecs,
        resolution: match (rep.width.or(set.width), rep.height.or(set.height)) {
            (Some(w), Some(h)) => Some((w, h)),
            _ => None,
        },
        language: rep.lang.clone().or_else(|| set.lang.clone()),
        name: set
            .Label
            .first()
            .map(|l| l.content.clone())
            .filter(|l| !l.is_empty()),
        frame_rate: rep
            .frameRate
            .as_deref()
            .or(set.frameRate.as_deref())
            .and_then(parse_frame_rate),
        video_range: None,
        channels: None,
        role: match classify(set) {
            Some(TrackKind::Video) | None => RenditionRole::Variant,
            Some(_) => RenditionRole::Alternative,
        },
    }
}

fn track_of(
    mpd: &Mpd,
    period: &Period,
    set_index: usize,
    kind: TrackKind,
    opts: &DashOptions,
) -> Track {
    let set = &period.adaptations[set_index];
    let mut renditions: Vec<Rendition> = set
        .representations
        .iter()
        .enumerate()
        .filter(|(_, r)| kind != TrackKind::Video || within_video_limits(set, r, opts))
        .map(|(i, r)| rendition_of(mpd, set_index, set, i, r))
        .collect();
    if renditions.is_empty() {
        // Nothing fits the limits: play the smallest one rather than nothing.
        if let Some((i, r)) = set
            .representations
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| (r.width.unwrap_or(0) * r.height.unwrap_or(0), r.bandwidth))
        {
            renditions.push(rendition_of(mpd, set_index, set, i, r));
        }
    }
    let default_rendition = match kind {
        TrackKind::Video => 0,
        // Audio and text do not switch: take the best one.
        _ => renditions
            .iter()
            .enumerate()
            .max_by_key(|(i, r)| (r.bandwidth, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
            .unwrap_or(0),
    };
    let muxed = kind == TrackKind::Video
        && renditions
            .first()
            .and_then(|r| r.codecs.as_deref())
            .is_some_and(|c| c.split(',').any(is_audio_codec) && c.split(',').any(is_video_codec));
    Track {
        kind,
        id: set.id.clone().unwrap_or_else(|| format!("#{set_index}")),
        renditions,
        default_rendition,
        muxed,
    }
}

/// The Period whose AdaptationSets describe the tracks: the first one for a static MPD, the
/// one at the live edge for a dynamic one.
fn presentation_period<'a>(mpd: &'a Mpd, now: DateTime<Utc>) -> Option<PeriodSpan<'a>> {
    let spans = period_spans(&mpd.doc);
    if !mpd.dynamic {
        return spans.into_iter().next();
    }
    let elapsed = live_elapsed(mpd, now).unwrap_or_default();
    let mut chosen = None;
    for span in spans {
        if chosen.is_none() || span.start <= elapsed {
            chosen = Some(span);
        }
    }
    chosen
}

/// Time since availabilityStartTime, or None before it.
fn live_elapsed(mpd: &Mpd, now: DateTime<Utc>) -> Option<Duration> {
    let ast = mpd.doc.availabilityStartTime?;
    (now - ast).to_std().ok()
}

/// The tracks of an MPD: video, audio and subtitle, in that order, as present.
pub fn presentation(
    mpd: &Mpd,
    opts: &DashOptions,
    now: DateTime<Utc>,
) -> Result<Presentation, MeshError> {
    let span = presentation_period(mpd, now).ok_or_else(|| invalid(&mpd.url, "no Period"))?;
    let period = span.period;
    let mut tracks = Vec::new();
    for kind in [TrackKind::Video, TrackKind::Audio, TrackKind::Subtitle] {
        if let Some(index) = default_set(period, kind) {
            tracks.push(track_of(mpd, period, index, kind, opts));
        }
    }
    if !tracks
        .iter()
        .any(|t| matches!(t.kind, TrackKind::Video | TrackKind::Audio))
    {
        return Err(invalid(
            &mpd.url,
            "no audio or video AdaptationSet with a Representation",
        ));
    }
    Ok(Presentation {
        tracks,
        alternatives: alternative_tracks(mpd, opts, now),
    })
}

/// The AdaptationSets of the presentation Period that are not played by default (other audio
/// languages, further video or text sets), as tracks a stream selection can switch to.
pub fn alternative_tracks(mpd: &Mpd, opts: &DashOptions, now: DateTime<Utc>) -> Vec<Track> {
    let Some(span) = presentation_period(mpd, now) else {
        return Vec::new();
    };
    let period = span.period;
    let chosen: Vec<usize> = [TrackKind::Video, TrackKind::Audio, TrackKind::Subtitle]
        .into_iter()
        .filter_map(|kind| default_set(period, kind))
        .collect();
    period
        .adaptations
        .iter()
        .enumerate()
        .filter(|(i, a)| !chosen.contains(i) && !a.representations.is_empty())
        .filter_map(|(i, a)| classify(a).map(|kind| track_of(mpd, period, i, kind, opts)))
        .collect()
}

/// In `period`, the AdaptationSet and Representation that continue `rendition` of a `kind`
/// track: the same set index when it is still of that kind (and language), otherwise the
/// default set; the same representation id, otherwise the nearest bandwidth.
fn select_in_period<'a>(
    period: &'a Period,
    kind: TrackKind,
    rendition: &Rendition,
) -> Option<(usize, &'a AdaptationSet, usize, &'a Representation)> {
    let RenditionSource::Dash {
        adaptation_set,
        representation,
    } = &rendition.source
    else {
        return None;
    };
    let same_language =
        |a: &AdaptationSet| rendition.language.is_none() || set_language(a) == rendition.language;
    let set_index = period
        .adaptations
        .get(*adaptation_set)
        .filter(|a| classify(a) == Some(kind) && same_language(a) && !a.representations.is_empty())
        .map(|_| *adaptation_set)
        .or_else(|| {
            period.adaptations.iter().position(|a| {
                classify(a) == Some(kind)
                    && rendition.language.is_some()
                    && same_language(a)
                    && !a.representations.is_empty()
            })
        })
        .or_else(|| default_set(period, kind))?;
    let set = &period.adaptations[set_index];
    let by_id = set
        .representations
        .iter()
        .enumerate()
        .find(|(i, r)| representation_key(*i, r) == *representation);
    let (rep_index, rep) = by_id.or_else(|| {
        set.representations
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| r.bandwidth.unwrap_or(0).abs_diff(rendition.bandwidth))
    })?;
    Some((set_index, set, rep_index, rep))
}

// ---------------------------------------------------------------------------------------------
// Timelines
// ---------------------------------------------------------------------------------------------

/// Sequence-number offsets per track kind and Period, kept across MPD refreshes so that
/// segment numbers continue from one Period to the next and stay stable while Periods leave
/// the MPD.
#[derive(Debug, Default, Clone)]
pub struct SequenceBases {
    offsets: HashMap<(TrackKind, String), i64>,
}

/// The presentation delay for a dynamic MPD: suggestedPresentationDelay, else the property.
pub fn presentation_delay(mpd: &Mpd, opts: &DashOptions, max_segment: Duration) -> Duration {
    if let Some(delay) = mpd.doc.suggestedPresentationDelay {
        return delay;
    }
    match parse_presentation_delay(&opts.presentation_delay) {
        Some(PresentationDelay::Time(d)) => d,
        Some(PresentationDelay::Fragments(n)) => {
            let fragment = mpd.doc.maxSegmentDuration.unwrap_or(max_segment);
            fragment.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
        }
        None => Duration::ZERO,
    }
}

/// The resolved addressing of the representations a track plays, one per Period.
fn track_periods<'a>(
    mpd: &'a Mpd,
    kind: TrackKind,
    rendition: &Rendition,
) -> Result<Vec<(PeriodSpan<'a>, addressing::RepContext<'a>)>, MeshError> {
    let mut out = Vec::new();
    for span in period_spans(&mpd.doc) {
        let Some((_, set, rep_index, rep)) = select_in_period(span.period, kind, rendition) else {
            continue;
        };
        let ctx = addressing::RepContext::new(mpd, &span, set, rep_index, rep)?;
        out.push((span, ctx));
    }
    if out.is_empty() {
        return Err(invalid(
            &mpd.url,
            format!(
                "no Period has the {} representation {}",
                kind.pad_prefix(),
                rendition.id
            ),
        ));
    }
    Ok(out)
}

/// The segment indexes (sidx byte ranges) that a SegmentBase representation of the track
/// needs before [`timeline`] can list its segments.
pub fn index_resources(
    mpd: &Mpd,
    kind: TrackKind,
    rendition: &Rendition,
) -> Result<Vec<Resource>, MeshError> {
    Ok(track_periods(mpd, kind, rendition)?
        .iter()
        .filter_map(|(_, ctx)| ctx.index_resource())
        .collect())
}

/// The segments of `rendition` across all Periods as of `now` (server time).
///
/// Static MPDs list everything (`ended`). Dynamic MPDs list only segments already available
/// (availabilityStartTime + Period start + segment end ≤ now) and still inside the
/// time-shift buffer, at most [`MAX_LIVE_SEGMENTS`] of them.
pub fn timeline(
    mpd: &Mpd,
    kind: TrackKind,
    rendition: &Rendition,
    now: DateTime<Utc>,
    opts: &DashOptions,
    indexes: &HashMap<Resource, Arc<SegmentIndex>>,
    bases: &mut SequenceBases,
) -> Result<MediaTimeline, MeshError> {
    let periods = track_periods(mpd, kind, rendition)?;
    let elapsed = if mpd.dynamic {
        Some(live_elapsed(mpd, now).unwrap_or_default())
    } else {
        None
    };
    let before_start = mpd.dynamic && live_elapsed(mpd, now).is_none();
    let tsbd = mpd.doc.timeShiftBufferDepth;

    let mut segments: Vec<Segment> = Vec::new();
    let mut previous: Option<(i64, u64)> = None; // (offset, end number) of the previous Period
    let mut all_available = true;
    for (span, ctx) in &periods {
        let window = match elapsed {
            None => Window::everything(),
            Some(_) if before_start => Window::nothing(),
            Some(elapsed) => {
                let ato = ctx.availability_time_offset();
                let rel_now = (elapsed + ato).checked_sub(span.start);
                match rel_now {
                    None => Window::nothing(),
                    Some(rel_now) => Window {
                        available_until: Some(rel_now),
                        keep_from: tsbd
                            .map(|d| (elapsed.saturating_sub(d)).saturating_sub(span.start)),
                    },
                }
            }
        };
        let RepSegments {
            init,
            segments: raw,
            first_number,
            end_number,
            complete,
        } = ctx.segments(span, &window, indexes)?;
        all_available &= complete;
        let key = (kind, span.key.clone());
        let offset = match (bases.offsets.get(&key), previous) {
            (Some(offset), _) => *offset,
            (None, Some((offset, end))) => offset + end as i64 - first_number as i64,
            (None, None) => 0,
        };
        bases.offsets.insert(key, offset);
        previous = end_number.map(|end| (offset, end));
        let mut first_in_period = true;
        for seg in raw {
            let sequence = u64::try_from(seg.number as i64 + offset).unwrap_or(0);
            segments.push(Segment {
                sequence,
                resource: seg.resource,
                duration: seg.duration,
                start: span.start + seg.start,
                discontinuity: first_in_period && span.index > 0 && seg.number == first_number,
                media_start: Some(seg.media_start),
                init: init.clone(),
                encryption: None,
            });
            first_in_period = false;
        }
    }
    // Sequence numbers must be contiguous for the driver; keep the last contiguous run.
    if let Some(cut) = segments
        .windows(2)
        .rposition(|w| w[1].sequence != w[0].sequence + 1)
    {
        segments.drain(..=cut);
    }
    if mpd.dynamic && segments.len() > MAX_LIVE_SEGMENTS {
        segments.drain(..segments.len() - MAX_LIVE_SEGMENTS);
    }
    let max_segment = segments
        .iter()
        .map(|s| s.duration)
        .max()
        .or(mpd.doc.maxSegmentDuration)
        .unwrap_or(Duration::from_secs(2));
    let target_duration = mpd.doc.maxSegmentDuration.unwrap_or(max_segment);
    let ended =
        !mpd.dynamic || (all_available && periods.last().is_some_and(|(s, _)| s.end.is_some()));
    Ok(MediaTimeline {
        segments,
        target_duration,
        ended,
        is_live: mpd.dynamic,
        end_list: !mpd.dynamic,
        hold_back: if mpd.dynamic {
            presentation_delay(mpd, opts, max_segment)
        } else {
            Duration::ZERO
        },
    })
}

/// Where a dynamic MPD is reloaded from: its first MPD.Location, resolved against its URL.
pub fn location(mpd: &Mpd) -> Option<Url> {
    mpd.doc
        .locations
        .first()
        .and_then(|l| mpd.url.join(l.url.trim()).ok())
}

#[cfg(test)]
mod tests;

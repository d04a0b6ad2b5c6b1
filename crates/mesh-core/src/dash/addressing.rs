//! Segment addressing of one Representation in one Period: SegmentTemplate (with or without
//! SegmentTimeline), SegmentList, SegmentBase (sidx) or a single whole file.

use super::{Mpd, PeriodSpan, invalid};
use crate::error::MeshError;
use crate::model::{ByteRange, Resource};
use dash_mpd_core::{
    AdaptationSet, BaseURL, Initialization, Representation, SegmentBase, SegmentList,
    SegmentTemplate, SegmentTimeline,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The most segments one Representation of a static MPD may have in one Period.
const MAX_STATIC_SEGMENTS: u64 = 200_000;

/// Which segments to list, on the Period's timeline (times relative to the Period start).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Only segments ending at or before this time (they are available); None = all.
    pub available_until: Option<Duration>,
    /// Only segments ending at or after this time (still in the time-shift buffer).
    pub keep_from: Option<Duration>,
}

impl Window {
    pub fn everything() -> Window {
        Window {
            available_until: None,
            keep_from: None,
        }
    }

    pub fn nothing() -> Window {
        Window {
            available_until: Some(Duration::ZERO),
            keep_from: Some(Duration::MAX),
        }
    }
}

/// One media segment on the Period's timeline.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawSegment {
    /// $Number$ (or 1 + position for lists and indexes).
    pub number: u64,
    /// Relative to the Period start.
    pub start: Duration,
    /// The segment's start on its media's own timeline (presentationTimeOffset included), the
    /// time its first sample carries.
    pub media_start: Duration,
    pub duration: Duration,
    pub resource: Resource,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RepSegments {
    pub init: Option<Resource>,
    pub segments: Vec<RawSegment>,
    /// The number of the Period's first segment.
    pub first_number: u64,
    /// One past the number of the Period's last segment, when the Period has an end.
    pub end_number: Option<u64>,
    /// Every segment of the Period is listed (its last one is available).
    pub complete: bool,
}

/// A parsed segment index (sidx): absolute byte ranges and durations of the subsegments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    pub timescale: u64,
    pub earliest_presentation_time: u64,
    /// (bytes in the file, duration in `timescale` units)
    pub references: Vec<(ByteRange, u64)>,
}

/// Parses the sidx box in `data`, the bytes of a file from `file_offset` on (the index
/// range). Offsets in the result are absolute in the file.
pub fn parse_sidx(file_offset: u64, data: &[u8]) -> Result<SegmentIndex, String> {
    use mp4_atom::{Atom, Decode, DecodeMaybe, Header, Sidx};
    let mut position = 0usize;
    while position < data.len() {
        let mut rest = &data[position..];
        let available = rest.len();
        let header = match Header::decode_maybe(&mut rest) {
            Ok(Some(header)) => header,
            Ok(None) => break,
            Err(e) => return Err(format!("bad box header: {e}")),
        };
        let header_len = available - rest.len();
        let body_len = header.size.unwrap_or(rest.len());
        let total = header_len
            .checked_add(body_len)
            .filter(|t| *t <= available)
            .ok_or_else(|| format!("the {} box is cut short", header.kind))?;
        if header.kind != Sidx::KIND {
            position += total;
            continue;
        }
        let mut bytes = &data[position..position + total];
        let sidx = Sidx::decode(&mut bytes).map_err(|e| format!("bad sidx box: {e}"))?;
        if sidx.timescale == 0 {
            return Err("sidx timescale is 0".into());
        }
        let overflow = || "sidx offsets run past the largest file size".to_string();
        let mut offset = file_offset
            .checked_add((position + total) as u64)
            .and_then(|o| o.checked_add(sidx.first_offset))
            .ok_or_else(overflow)?;
        let mut references = Vec::with_capacity(sidx.references.len());
        for reference in &sidx.references {
            if reference.reference_type {
                return Err(
                    "hierarchical sidx (references to further sidx boxes) is not supported".into(),
                );
            }
            let length = u64::from(reference.referenced_size);
            if length == 0 {
                return Err("a sidx reference has size 0".into());
            }
            references.push((
                ByteRange { offset, length },
                u64::from(reference.subsegment_duration),
            ));
            offset = offset.checked_add(length).ok_or_else(overflow)?;
        }
        return Ok(SegmentIndex {
            timescale: u64::from(sidx.timescale),
            earliest_presentation_time: sidx.earliest_presentation_time,
            references,
        });
    }
    Err("no sidx box in the index range".into())
}

/// Parses an HTTP-style byte range "first-last" (inclusive).
pub(crate) fn parse_range(text: &str) -> Option<ByteRange> {
    let (first, last) = text.trim().split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    (last >= first).then_some(ByteRange {
        offset: first,
        length: last - first + 1,
    })
}

/// Expands a SegmentTemplate string: `$RepresentationID$`, `$Number$`, `$Bandwidth$`,
/// `$Time$` (the last three with an optional `%0<width>d` format) and `$$`.
pub(crate) fn expand_template(
    template: &str,
    representation_id: &str,
    bandwidth: u64,
    number: Option<u64>,
    time: Option<u64>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let close = after
            .find('$')
            .ok_or_else(|| format!("unterminated $ identifier in {template:?}"))?;
        let identifier = &after[..close];
        rest = &after[close + 1..];
        if identifier.is_empty() {
            out.push('$');
            continue;
        }
        let (name, format) = match identifier.split_once('%') {
            Some((name, format)) => (name, Some(format)),
            None => (identifier, None),
        };
        let value = match name {
            "RepresentationID" => {
                if format.is_some() {
                    return Err(format!(
                        "$RepresentationID$ takes no format in {template:?}"
                    ));
                }
                out.push_str(representation_id);
                continue;
            }
            "Number" => number.ok_or_else(|| format!("$Number$ is not allowed in {template:?}"))?,
            "Time" => time.ok_or_else(|| format!("$Time$ is not allowed in {template:?}"))?,
            "Bandwidth" => bandwidth,
            "SubNumber" => return Err("$SubNumber$ is not supported".into()),
            other => return Err(format!("unknown identifier ${other}$ in {template:?}")),
        };
        match format {
            None => out.push_str(&value.to_string()),
            Some(format) => {
                let spec = format
                    .strip_suffix('d')
                    .or_else(|| format.strip_suffix('i'))
                    .or_else(|| format.strip_suffix('u'))
                    .ok_or_else(|| format!("unsupported format %{format} in {template:?}"))?;
                let width: usize = if spec.is_empty() {
                    0
                } else {
                    spec.trim_start_matches('0')
                        .parse()
                        .ok()
                        .filter(|_| spec.starts_with('0') || !spec.is_empty())
                        .ok_or_else(|| format!("bad format width %{format} in {template:?}"))?
                };
                out.push_str(&format!("{value:0width$}"));
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn first_base(bases: &[BaseURL]) -> Option<&str> {
    bases
        .first()
        .map(|b| b.base.trim())
        .filter(|b| !b.is_empty())
}

/// Copies each named optional attribute from `level` where `merged` has none yet.
macro_rules! inherit {
    ($merged:ident, $level:ident; $($field:ident),* $(,)?) => {
        $( if $merged.$field.is_none() { $merged.$field = $level.$field.clone(); } )*
    };
}

/// A SegmentTemplate whose missing attributes come from the levels above.
fn merge_template(levels: &[Option<&SegmentTemplate>]) -> SegmentTemplate {
    let mut merged = SegmentTemplate::default();
    for level in levels.iter().flatten() {
        inherit!(merged, level; media,
            index,
            initialization,
            startNumber,
            endNumber,
            duration,
            timescale,
            presentationTimeOffset,
            availabilityTimeOffset,
            Initialization,
            representation_index,
            SegmentTimeline
        );
    }
    merged
}

fn merge_list(levels: &[Option<&SegmentList>]) -> SegmentList {
    let mut merged = SegmentList::default();
    for level in levels.iter().flatten() {
        inherit!(merged, level; duration, timescale, href, Initialization, SegmentTimeline);
        if merged.segment_urls.is_empty() {
            merged.segment_urls = level.segment_urls.clone();
        }
    }
    merged
}

fn merge_base(levels: &[Option<&SegmentBase>]) -> SegmentBase {
    let mut merged = SegmentBase::default();
    for level in levels.iter().flatten() {
        inherit!(merged, level; timescale,
            presentationTimeOffset,
            indexRange,
            availabilityTimeOffset,
            Initialization,
            representation_index
        );
    }
    merged
}

#[derive(Debug, Clone)]
enum Addressing {
    Template(SegmentTemplate),
    List(SegmentList),
    Base(SegmentBase),
    /// No segment information: the BaseURL is the whole media file.
    WholeFile,
}

/// A Representation in a Period with its addressing resolved (inheritance and BaseURLs).
#[derive(Debug, Clone)]
pub(crate) struct RepContext<'a> {
    mpd_url: &'a Url,
    representation_id: String,
    bandwidth: u64,
    base: Url,
    addressing: Addressing,
}

/// A run of equal-duration segments on the media timeline (in timescale units).
#[derive(Debug, Clone, Copy)]
struct Run {
    time: u64,
    duration: u64,
    /// None: repeats until the window ends.
    count: Option<u64>,
    number: u64,
}

impl<'a> RepContext<'a> {
    pub fn new(
        mpd: &'a Mpd,
        span: &PeriodSpan<'a>,
        set: &'a AdaptationSet,
        rep_index: usize,
        rep: &'a Representation,
    ) -> Result<RepContext<'a>, MeshError> {
        let url = &mpd.url;
        let mut base = url.clone();
        for level in [
            first_base(&mpd.doc.base_url),
            first_base(&span.period.BaseURL),
            first_base(&set.BaseURL),
            first_base(&rep.BaseURL),
        ]
        .into_iter()
        .flatten()
        {
            base = base
                .join(level)
                .map_err(|e| invalid(url, format!("bad BaseURL {level:?}: {e}")))?;
        }
        let representation_id = rep.id.clone().unwrap_or_else(|| format!("{rep_index}"));
        let period = span.period;
        let has_any = |t: bool, l: bool, b: bool| t || l || b;
        let levels = [
            (
                rep.SegmentTemplate.is_some(),
                rep.SegmentList.is_some(),
                rep.SegmentBase.is_some(),
            ),
            (
                set.SegmentTemplate.is_some(),
                set.SegmentList.is_some(),
                set.SegmentBase.is_some(),
            ),
            (
                period.SegmentTemplate.is_some(),
                period.SegmentList.is_some(),
                period.SegmentBase.is_some(),
            ),
        ];
        let decisive = levels.iter().find(|(t, l, b)| has_any(*t, *l, *b));
        let addressing = match decisive {
            Some((true, _, _)) => Addressing::Template(merge_template(&[
                rep.SegmentTemplate.as_ref(),
                set.SegmentTemplate.as_ref(),
                period.SegmentTemplate.as_ref(),
            ])),
            Some((false, true, _)) => Addressing::List(merge_list(&[
                rep.SegmentList.as_ref(),
                set.SegmentList.as_ref(),
                period.SegmentList.as_ref(),
            ])),
            Some(_) => Addressing::Base(merge_base(&[
                rep.SegmentBase.as_ref(),
                set.SegmentBase.as_ref(),
                period.SegmentBase.as_ref(),
            ])),
            None => {
                if first_base(&rep.BaseURL).is_none() && first_base(&set.BaseURL).is_none() {
                    return Err(invalid(
                        url,
                        format!(
                            "unsupported addressing: Representation {representation_id} has no \
                             SegmentTemplate, SegmentList, SegmentBase or BaseURL"
                        ),
                    ));
                }
                Addressing::WholeFile
            }
        };
        let ctx = RepContext {
            mpd_url: url,
            representation_id,
            bandwidth: rep.bandwidth.unwrap_or(0),
            base,
            addressing,
        };
        ctx.validate()?;
        Ok(ctx)
    }

    fn error(&self, reason: impl Into<String>) -> MeshError {
        invalid(
            self.mpd_url,
            format!(
                "Representation {}: {}",
                self.representation_id,
                reason.into()
            ),
        )
    }

    fn validate(&self) -> Result<(), MeshError> {
        match &self.addressing {
            Addressing::Template(t) => {
                let media = t.media.as_deref().ok_or_else(|| {
                    self.error("unsupported addressing: SegmentTemplate without @media")
                })?;
                if t.SegmentTimeline.is_none() && t.duration.is_none() {
                    return Err(self.error(
                        "unsupported addressing: SegmentTemplate with neither SegmentTimeline \
                         nor @duration",
                    ));
                }
                if t.duration.is_some_and(|d| !d.is_finite() || d <= 0.0) {
                    return Err(self.error("SegmentTemplate@duration must be positive"));
                }
                if t.timescale == Some(0) {
                    return Err(self.error("@timescale is 0"));
                }
                expand_template(media, "", 0, Some(0), Some(0)).map_err(|e| self.error(e))?;
                if let Some(init) = &t.initialization {
                    expand_template(init, "", 0, None, None).map_err(|e| self.error(e))?;
                }
                if let Some(timeline) = &t.SegmentTimeline {
                    check_timeline(timeline).map_err(|e| self.error(e))?;
                }
            }
            Addressing::List(l) => {
                if l.href.is_some() {
                    return Err(self.error("remote (xlink) SegmentLists are not supported"));
                }
                if l.segment_urls.is_empty() {
                    return Err(self.error("SegmentList without SegmentURL"));
                }
                if l.timescale == Some(0) {
                    return Err(self.error("@timescale is 0"));
                }
                if l.segment_urls.len() > 1 && l.duration.is_none() && l.SegmentTimeline.is_none() {
                    return Err(self.error(
                        "SegmentList of several segments with neither @duration nor \
                         SegmentTimeline",
                    ));
                }
                for segment in &l.segment_urls {
                    if let Some(range) = &segment.mediaRange
                        && parse_range(range).is_none()
                    {
                        return Err(self.error(format!("bad mediaRange {range:?}")));
                    }
                }
                if let Some(timeline) = &l.SegmentTimeline {
                    check_timeline(timeline).map_err(|e| self.error(e))?;
                }
            }
            Addressing::Base(b) => {
                if b.timescale == Some(0) {
                    return Err(self.error("@timescale is 0"));
                }
                if let Some(range) = &b.indexRange
                    && parse_range(range).is_none()
                {
                    return Err(self.error(format!("bad indexRange {range:?}")));
                }
            }
            Addressing::WholeFile => {}
        }
        Ok(())
    }

    /// availabilityTimeOffset: segments become available this much earlier.
    pub fn availability_time_offset(&self) -> Duration {
        let ato = match &self.addressing {
            Addressing::Template(t) => t.availabilityTimeOffset,
            Addressing::Base(b) => b.availabilityTimeOffset,
            _ => None,
        };
        // Past a segment's own span the offset means nothing; a day bounds the arithmetic.
        ato.and_then(|a| Duration::try_from_secs_f64(a).ok())
            .filter(|a| *a <= Duration::from_secs(24 * 3600))
            .unwrap_or_default()
    }

    fn join(&self, reference: &str) -> Result<Url, MeshError> {
        self.base
            .join(reference.trim())
            .map_err(|e| self.error(format!("bad URL {reference:?}: {e}")))
    }

    fn initialization(&self, init: Option<&Initialization>) -> Result<Option<Resource>, MeshError> {
        let Some(init) = init else { return Ok(None) };
        let url = match &init.sourceURL {
            Some(source) => self.join(source)?,
            None => self.base.clone(),
        };
        let range = match &init.range {
            Some(text) => Some(
                parse_range(text)
                    .ok_or_else(|| self.error(format!("bad Initialization@range {text:?}")))?,
            ),
            None if init.sourceURL.is_none() => {
                return Err(self.error("Initialization with neither sourceURL nor range"));
            }
            None => None,
        };
        Ok(Some(Resource { url, range }))
    }

    /// The sidx range a SegmentBase needs, if it uses one.
    pub fn index_resource(&self) -> Option<Resource> {
        let Addressing::Base(base) = &self.addressing else {
            return None;
        };
        let index = base.representation_index.as_ref();
        let range = index
            .and_then(|i| i.range.as_deref())
            .or(base.indexRange.as_deref())
            .and_then(parse_range)?;
        let url = match index.and_then(|i| i.sourceURL.as_deref()) {
            Some(source) => self.base.join(source.trim()).ok()?,
            None => self.base.clone(),
        };
        Some(Resource {
            url,
            range: Some(range),
        })
    }

    /// The segments of the Period within `window`.
    pub fn segments(
        &self,
        span: &PeriodSpan<'_>,
        window: &Window,
        indexes: &HashMap<Resource, Arc<SegmentIndex>>,
    ) -> Result<RepSegments, MeshError> {
        let period_duration = span.end.map(|end| end.saturating_sub(span.start));
        match &self.addressing {
            Addressing::Template(t) => self.template_segments(t, period_duration, window),
            Addressing::List(l) => self.list_segments(l, period_duration, window),
            Addressing::Base(b) => self.base_segments(b, period_duration, window, indexes),
            Addressing::WholeFile => {
                let segment = RawSegment {
                    number: 1,
                    start: Duration::ZERO,
                    media_start: Duration::ZERO,
                    duration: period_duration.unwrap_or_default(),
                    resource: Resource {
                        url: self.base.clone(),
                        range: None,
                    },
                };
                Ok(explicit(None, vec![segment], window))
            }
        }
    }

    fn template_segments(
        &self,
        t: &SegmentTemplate,
        period_duration: Option<Duration>,
        window: &Window,
    ) -> Result<RepSegments, MeshError> {
        let media = t.media.as_deref().unwrap_or_default();
        let mut timescale = t.timescale.unwrap_or(1);
        let mut pto = t.presentationTimeOffset.unwrap_or(0);
        let start_number = t.startNumber.unwrap_or(1);
        // $Time$ is reported in the MPD's own units even when fractional durations make us
        // count in finer ones.
        let mut scale = 1u64;
        let runs = match &t.SegmentTimeline {
            Some(timeline) => {
                timeline_runs(timeline, start_number, pto, timescale, period_duration)
            }
            None => {
                let duration = t.duration.unwrap_or(1.0);
                let whole = if duration.fract() == 0.0 {
                    duration as u64
                } else {
                    scale = 1000;
                    (duration * 1000.0).round() as u64
                };
                timescale *= scale;
                pto *= scale;
                let mut count = period_duration.map(|p| {
                    let ticks = to_ticks(p, timescale);
                    ticks.div_ceil(whole.max(1))
                });
                if let Some(end) = t.endNumber {
                    let limit = (end + 1).saturating_sub(start_number);
                    count = Some(count.map_or(limit, |c| c.min(limit)));
                }
                vec![Run {
                    time: pto,
                    duration: whole.max(1),
                    count,
                    number: start_number,
                }]
            }
        };
        let total = runs
            .iter()
            .try_fold(0u64, |sum, run| run.count.map(|c| sum + c));
        let end_number = total.map(|c| start_number + c);
        let limits = TickLimits::new(window, period_duration, timescale, pto);
        if total.is_none() && limits.upper.is_none() {
            return Err(self.error(
                "the number of segments is unbounded (no Period end, \
                 mediaPresentationDuration or SegmentTimeline end)",
            ));
        }
        let mut segments = Vec::new();
        let mut last_included = false;
        for (run_index, run) in runs.iter().enumerate() {
            let Some((mut first, end)) = limits.indexes(run) else {
                last_included = false;
                continue;
            };
            if window.available_until.is_some() {
                // Live without (or with a long) time-shift buffer: only the newest ones.
                first = first.max(end.saturating_sub(super::MAX_LIVE_SEGMENTS as u64));
            }
            if end - first > MAX_STATIC_SEGMENTS + super::MAX_LIVE_SEGMENTS as u64 {
                return Err(self.error("too many segments"));
            }
            for i in first..end {
                let time = run.time + i * run.duration;
                let start = from_ticks(time.saturating_sub(pto), timescale);
                let mut duration = from_ticks(run.duration, timescale);
                if t.SegmentTimeline.is_none()
                    && let Some(p) = period_duration
                {
                    duration = duration.min(p.saturating_sub(start));
                }
                let url = expand_template(
                    media,
                    &self.representation_id,
                    self.bandwidth,
                    Some(run.number + i),
                    Some(time / scale),
                )
                .map_err(|e| self.error(e))?;
                segments.push(RawSegment {
                    number: run.number + i,
                    start,
                    media_start: from_ticks(time, timescale),
                    duration,
                    resource: Resource {
                        url: self.join(&url)?,
                        range: None,
                    },
                });
            }
            last_included = run_index == runs.len() - 1 && run.count.is_some_and(|c| end == c);
        }
        let init = match (&t.initialization, &t.Initialization) {
            (Some(template), _) => {
                let url = expand_template(
                    template,
                    &self.representation_id,
                    self.bandwidth,
                    None,
                    None,
                )
                .map_err(|e| self.error(e))?;
                Some(Resource {
                    url: self.join(&url)?,
                    range: None,
                })
            }
            (None, init) => self.initialization(init.as_ref())?,
        };
        Ok(RepSegments {
            init,
            segments,
            first_number: start_number,
            end_number,
            complete: last_included || (total == Some(0)),
        })
    }

    fn list_segments(
        &self,
        l: &SegmentList,
        period_duration: Option<Duration>,
        window: &Window,
    ) -> Result<RepSegments, MeshError> {
        let timescale = l.timescale.unwrap_or(1);
        let count = l.segment_urls.len() as u64;
        let times: Vec<(u64, u64)> = match (&l.SegmentTimeline, l.duration) {
            (Some(timeline), _) => timeline_runs(timeline, 1, 0, timescale, period_duration)
                .iter()
                .flat_map(|run| {
                    (0..run.count.unwrap_or(count))
                        .map(move |i| (run.time + i * run.duration, run.duration))
                })
                .take(l.segment_urls.len())
                .collect(),
            (None, Some(duration)) => (0..count).map(|i| (i * duration, duration)).collect(),
            (None, None) => vec![(0, period_duration.map_or(0, |p| to_ticks(p, timescale)))],
        };
        let mut segments = Vec::with_capacity(times.len());
        for (index, (segment_url, (time, duration))) in l.segment_urls.iter().zip(times).enumerate()
        {
            let start = from_ticks(time, timescale);
            let mut duration = from_ticks(duration, timescale);
            if l.SegmentTimeline.is_none()
                && let Some(p) = period_duration
            {
                duration = duration.min(p.saturating_sub(start));
            }
            let url = match &segment_url.media {
                Some(media) => self.join(media)?,
                None => self.base.clone(),
            };
            segments.push(RawSegment {
                number: 1 + index as u64,
                start,
                // SegmentList carries no presentationTimeOffset.
                media_start: start,
                duration,
                resource: Resource {
                    url,
                    range: segment_url.mediaRange.as_deref().and_then(parse_range),
                },
            });
        }
        let init = self.initialization(l.Initialization.as_ref())?;
        Ok(explicit(init, segments, window))
    }

    fn base_segments(
        &self,
        b: &SegmentBase,
        period_duration: Option<Duration>,
        window: &Window,
        indexes: &HashMap<Resource, Arc<SegmentIndex>>,
    ) -> Result<RepSegments, MeshError> {
        let index_resource = self.index_resource();
        let init = match (&b.Initialization, &index_resource) {
            (Some(init), _) => self.initialization(Some(init))?,
            // The index sits right after the init section in the same file.
            (None, Some(index)) if index.url == self.base => {
                index.range.filter(|r| r.offset > 0).map(|r| Resource {
                    url: self.base.clone(),
                    range: Some(ByteRange {
                        offset: 0,
                        length: r.offset,
                    }),
                })
            }
            (None, _) => None,
        };
        let Some(index_resource) = index_resource else {
            let segment = RawSegment {
                number: 1,
                start: Duration::ZERO,
                media_start: Duration::ZERO,
                duration: period_duration.unwrap_or_default(),
                resource: Resource {
                    url: self.base.clone(),
                    range: None,
                },
            };
            return Ok(explicit(init, vec![segment], window));
        };
        let index = indexes
            .get(&index_resource)
            .ok_or_else(|| self.error("segment index (sidx) not loaded"))?;
        let pto = from_ticks(
            b.presentationTimeOffset.unwrap_or(0),
            b.timescale.unwrap_or(1),
        );
        let mut time = index.earliest_presentation_time;
        let mut segments = Vec::with_capacity(index.references.len());
        for (i, (range, duration)) in index.references.iter().enumerate() {
            segments.push(RawSegment {
                number: 1 + i as u64,
                start: from_ticks(time, index.timescale).saturating_sub(pto),
                media_start: from_ticks(time, index.timescale),
                duration: from_ticks(*duration, index.timescale),
                resource: Resource {
                    url: self.base.clone(),
                    range: Some(*range),
                },
            });
            time += duration;
        }
        Ok(explicit(init, segments, window))
    }
}

fn check_timeline(timeline: &SegmentTimeline) -> Result<(), String> {
    if timeline.segments.is_empty() {
        return Err("SegmentTimeline without S elements".into());
    }
    for s in &timeline.segments {
        if s.d == 0 {
            return Err("SegmentTimeline S@d is 0".into());
        }
        if s.r.is_some_and(|r| r < -1) {
            return Err(format!(
                "SegmentTimeline S@r={} is invalid",
                s.r.unwrap_or(0)
            ));
        }
    }
    Ok(())
}

/// The runs of a SegmentTimeline: `t` gaps jump, `r` repeats, `r=-1` repeats up to the next
/// S@t, else up to the Period end, else without end (live).
fn timeline_runs(
    timeline: &SegmentTimeline,
    start_number: u64,
    pto: u64,
    timescale: u64,
    period_duration: Option<Duration>,
) -> Vec<Run> {
    let mut runs = Vec::with_capacity(timeline.segments.len());
    let mut time = 0u64;
    let mut number = start_number;
    let period_end = period_duration.map(|p| pto + to_ticks(p, timescale));
    for (i, s) in timeline.segments.iter().enumerate() {
        if let Some(t) = s.t {
            time = t;
        }
        let count = match s.r.unwrap_or(0) {
            r if r >= 0 => Some(r as u64 + 1),
            _ => {
                let next = timeline.segments.get(i + 1).and_then(|n| n.t);
                next.or(period_end)
                    .map(|end| end.saturating_sub(time).div_ceil(s.d))
            }
        };
        runs.push(Run {
            time,
            duration: s.d,
            count,
            number,
        });
        let Some(count) = count else { break };
        time += count * s.d;
        number += count;
    }
    runs
}

fn to_ticks(d: Duration, timescale: u64) -> u64 {
    (d.as_nanos() * u128::from(timescale) / 1_000_000_000).min(u128::from(u64::MAX)) as u64
}

fn from_ticks(ticks: u64, timescale: u64) -> Duration {
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(timescale.max(1));
    Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
}

/// A [`Window`] and the Period end in a representation's timescale (media time).
struct TickLimits {
    /// Segments must start before this.
    period_end: Option<u64>,
    /// Segments must end at or before this.
    available_until: Option<u64>,
    /// Segments must end at or after this.
    keep_from: Option<u64>,
    /// Whether the upper bound is set at all.
    upper: Option<()>,
}

impl TickLimits {
    fn new(window: &Window, period_duration: Option<Duration>, timescale: u64, pto: u64) -> Self {
        let period_end = period_duration.map(|p| pto + to_ticks(p, timescale));
        let available_until = window
            .available_until
            .map(|a| pto.saturating_add(to_ticks(a, timescale)));
        let keep_from = window
            .keep_from
            .map(|k| pto.saturating_add(to_ticks(k, timescale)));
        TickLimits {
            period_end,
            available_until,
            keep_from,
            upper: (period_end.is_some() || available_until.is_some()).then_some(()),
        }
    }

    /// The range of repeat indexes of `run` that pass, or None.
    fn indexes(&self, run: &Run) -> Option<(u64, u64)> {
        let d = run.duration.max(1);
        let mut end = run.count.unwrap_or(u64::MAX);
        if let Some(period_end) = self.period_end {
            end = end.min(period_end.saturating_sub(run.time).div_ceil(d));
        }
        if let Some(until) = self.available_until {
            end = end.min(until.saturating_sub(run.time) / d);
        }
        // Segment i ends at time + (i + 1) d, which must not be before keep_from.
        let first = self.keep_from.map_or(0, |keep| {
            keep.saturating_sub(run.time).div_ceil(d).saturating_sub(1)
        });
        if end == u64::MAX {
            return None;
        }
        (first < end).then_some((first, end))
    }
}

/// Filters an explicit segment list by the window.
fn explicit(init: Option<Resource>, all: Vec<RawSegment>, window: &Window) -> RepSegments {
    let total = all.len() as u64;
    let last_end = all.last().map(|s| s.start + s.duration);
    let segments: Vec<RawSegment> = all
        .into_iter()
        .filter(|s| {
            let end = s.start + s.duration;
            window.available_until.is_none_or(|a| end <= a)
                && window.keep_from.is_none_or(|k| end >= k)
        })
        .collect();
    let complete = match (last_end, window.available_until) {
        (Some(end), Some(until)) => end <= until,
        _ => true,
    };
    RepSegments {
        init,
        segments,
        first_number: 1,
        end_number: Some(1 + total),
        complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_identifiers_and_widths() {
        let e = |t: &str| expand_template(t, "v1", 800_000, Some(42), Some(90_000));
        assert_eq!(e("seg-$Number$.m4s").unwrap(), "seg-42.m4s");
        assert_eq!(e("seg-$Number%05d$.m4s").unwrap(), "seg-00042.m4s");
        assert_eq!(e("$RepresentationID$/$Time$.m4s").unwrap(), "v1/90000.m4s");
        assert_eq!(
            e("$Bandwidth%08d$-$Time%012d$").unwrap(),
            "00800000-000000090000"
        );
        assert_eq!(e("a$$b$Number%d$").unwrap(), "a$b42");
        assert_eq!(e("$Number%1d$").unwrap(), "42");
        assert!(e("$Number").is_err());
        assert!(e("$Foo$").is_err());
        assert!(e("$Number%05x$").is_err());
        assert!(e("$RepresentationID%05d$").is_err());
        assert!(expand_template("init-$Number$.mp4", "v", 1, None, None).is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("806-175526"),
            Some(ByteRange {
                offset: 806,
                length: 174_721
            })
        );
        assert_eq!(parse_range("5-4"), None);
        assert_eq!(parse_range("x-4"), None);
    }

    fn sidx_box(version: u8, first_offset: u64, refs: &[(u32, u32)]) -> Vec<u8> {
        let mut body = vec![version, 0, 0, 0];
        body.extend(1u32.to_be_bytes()); // reference_ID
        body.extend(1000u32.to_be_bytes()); // timescale
        if version == 0 {
            body.extend(500u32.to_be_bytes());
            body.extend((first_offset as u32).to_be_bytes());
        } else {
            body.extend(500u64.to_be_bytes());
            body.extend(first_offset.to_be_bytes());
        }
        body.extend(0u16.to_be_bytes());
        body.extend((refs.len() as u16).to_be_bytes());
        for (size, duration) in refs {
            body.extend(size.to_be_bytes());
            body.extend(duration.to_be_bytes());
            body.extend(0x9000_0000u32.to_be_bytes());
        }
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend(b"sidx");
        out.extend(body);
        out
    }

    #[test]
    fn sidx_gives_absolute_ranges() {
        for version in [0, 1] {
            let sidx = sidx_box(version, 10, &[(100, 2000), (50, 1500)]);
            let index = parse_sidx(800, &sidx).unwrap();
            let start = 800 + sidx.len() as u64 + 10;
            assert_eq!(index.timescale, 1000);
            assert_eq!(index.earliest_presentation_time, 500);
            assert_eq!(
                index.references,
                vec![
                    (
                        ByteRange {
                            offset: start,
                            length: 100
                        },
                        2000
                    ),
                    (
                        ByteRange {
                            offset: start + 100,
                            length: 50
                        },
                        1500
                    )
                ]
            );
        }
        // A styp box before the sidx is skipped.
        let mut data = vec![0, 0, 0, 12, b's', b't', b'y', b'p', 1, 2, 3, 4];
        data.extend(sidx_box(0, 0, &[(7, 1)]));
        let index = parse_sidx(0, &data).unwrap();
        assert_eq!(index.references[0].0.offset, data.len() as u64);
        // Hierarchical, missing and cut short.
        let mut hier = sidx_box(0, 0, &[(7, 1)]);
        let at = hier.len() - 12;
        hier[at] |= 0x80;
        assert!(parse_sidx(0, &hier).unwrap_err().contains("hierarchical"));
        assert!(parse_sidx(0, &[0, 0, 0, 8, b'f', b'r', b'e', b'e']).is_err());
        let whole = sidx_box(0, 0, &[(7, 1)]);
        assert!(parse_sidx(0, &whole[..whole.len() - 3]).is_err());
    }
}

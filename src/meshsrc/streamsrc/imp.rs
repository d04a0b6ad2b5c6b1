use crate::container::{self, InitInfo};
use crate::model::TrackKind;
use crate::runtime::RUNTIME;
use crate::session::{Chunk, PresentationControl, StreamItem, TrackControl, TrackOutput};
use futures::future::{AbortHandle, abortable};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "meshstreamsrc",
        gst::DebugColorFlags::empty(),
        Some("Mesh source pad feeder"),
    )
});

/// What the pad announces before its first buffer, and again when a stream selection
/// switches it to another track.
struct StreamInfo {
    /// The streams of the collection this pad can carry, by `Track::id`.
    streams: HashMap<String, gst::Stream>,
    collection: gst::StreamCollection,
    group_id: gst::GroupId,
    /// Announce the collection downstream and answer the SELECTABLE query: the element
    /// selects among its tracks itself (as adaptivedemux2 does).
    selectable: bool,
    /// Playlist URL, for the caps fallback when typefinding fails.
    uri: String,
    /// Every pad's track: queries answer for the whole presentation.
    presentation: Arc<PresentationControl>,
    kind: TrackKind,
    /// This pad's place in an ordered start.
    turn: Option<usize>,
}

/// What [`StreamSrc::configure`] needs besides the track's output.
pub struct PadStreams {
    pub streams: HashMap<String, gst::Stream>,
    pub collection: gst::StreamCollection,
    pub group_id: gst::GroupId,
    pub selectable: bool,
    pub presentation: Arc<PresentationControl>,
    /// The pad's place in an ordered start (see [`PresentationControl::start_order`]).
    pub turn: Option<usize>,
}

#[derive(Default)]
struct Canceller {
    /// Set between unlock() and unlock_stop(): create() must not block.
    unlocked: bool,
    current: Option<AbortHandle>,
}

#[derive(Default)]
struct Feed {
    items: Option<mpsc::Receiver<StreamItem>>,
    /// The epoch of the latest seek.
    epoch: u64,
    /// The track whose stream was announced last.
    announced: Option<Arc<str>>,
    /// How the media's own time maps to the presentation's (ISO-BMFF only).
    mapping: TimeMapping,
    /// The container of the stream announced last.
    container: Container,
    /// A buffer went out since the pad started (text pads hold their first one back).
    pushed: bool,
    /// The epoch of the last media chunk.
    media_epoch: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Container {
    #[default]
    Other,
    MpegTs,
}

/// A text pad waits this long at most for the other pads' first buffer.
const TEXT_HOLD: Duration = Duration::from_secs(10);

/// A pad waits this long at most for its turn in an ordered start; then it starts as if
/// the start were not ordered.
const START_HOLD: Duration = Duration::from_secs(3);

/// Maps the times fragmented MP4 carries to presentation time, as adaptivedemux2 maps a
/// fragment's internal time: qtdemux outputs the fragments' own timestamps against our
/// segment, so after a discontinuity or a Period whose media time starts again, the segment
/// must start at that media time while its running time continues the presentation's.
#[derive(Default)]
struct TimeMapping {
    /// The init section now in effect, when it is ISO-BMFF.
    init: Option<InitInfo>,
    /// `pts − media time` of the mapping in effect, in nanoseconds; None until the next
    /// media chunk sets one.
    offset: Option<i128>,
    /// The epoch of the last media chunk: a new one (seek, switch) maps afresh.
    epoch: Option<u64>,
    /// The stream-time segment of the last seek (or the start) that mapped segments derive
    /// from.
    presentation: gst::FormattedSegment<gst::ClockTime>,
}

/// Media time that drifts this far from the presentation time without a discontinuity
/// (rounded EXTINF durations, unaligned renditions) is mapped afresh; less is left alone, as
/// a new segment would make running time jump.
const REMAP_DRIFT: Duration = Duration::from_secs(1);

fn nanos(d: Duration) -> i128 {
    d.as_nanos() as i128
}

#[derive(Default)]
pub struct StreamSrc {
    info: Mutex<Option<StreamInfo>>,
    control: Mutex<Option<Arc<TrackControl>>>,
    feed: Mutex<Feed>,
    canceller: Mutex<Canceller>,
    /// The seqnum of the latest seek, carried by every segment event after it.
    seek_seqnum: Mutex<Option<gst::Seqnum>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn clock_time(d: Duration) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(d.as_nanos().min(u64::MAX as u128) as u64)
}

#[glib::object_subclass]
impl ObjectSubclass for StreamSrc {
    const NAME: &'static str = "GstMeshStreamSrc";
    type Type = super::StreamSrc;
    type ParentType = gst_base::PushSrc;
}

impl ObjectImpl for StreamSrc {
    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_format(gst::Format::Time);
        obj.set_automatic_eos(false);
        obj.set_live(false);
        // basesrc starts every stream with a stream-start of its own (no stream, another
        // group id); only the one carrying our stream goes out.
        if let Some(pad) = obj.static_pad("src") {
            let weak = obj.downgrade();
            pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                let Some(gst::PadProbeData::Event(event)) = &info.data else {
                    return gst::PadProbeReturn::Ok;
                };
                match event.view() {
                    // Handled, not Drop: GStreamer 1.22 unrefs dropped items itself.
                    gst::EventView::StreamStart(s) if s.stream().is_none() => {
                        gst::PadProbeReturn::Handled
                    }
                    // Segments after a seek carry its seqnum, on every pad (adaptivedemux2).
                    gst::EventView::Segment(_) => {
                        let seqnum = weak.upgrade().and_then(|o| *lock(&o.imp().seek_seqnum));
                        if let Some(seqnum) = seqnum.filter(|s| *s != event.seqnum()) {
                            let mut event = event.copy();
                            event.make_mut().set_seqnum(seqnum);
                            info.data = Some(gst::PadProbeData::Event(event));
                        }
                        gst::PadProbeReturn::Ok
                    }
                    _ => gst::PadProbeReturn::Ok,
                }
            });
        }
    }
}

impl GstObjectImpl for StreamSrc {}

impl ElementImpl for StreamSrc {
    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &gst::Caps::new_any(),
                )
                .expect("valid pad template"),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl StreamSrc {
    pub(super) fn configure(&self, output: TrackOutput, streams: PadStreams) {
        let uri = output
            .track
            .renditions
            .first()
            .map(|r| r.url.to_string())
            .unwrap_or_default();
        *lock(&self.info) = Some(StreamInfo {
            streams: streams.streams,
            collection: streams.collection,
            group_id: streams.group_id,
            selectable: streams.selectable,
            uri,
            presentation: streams.presentation,
            kind: output.kind,
            turn: streams.turn,
        });
        *lock(&self.control) = Some(output.control);
        lock(&self.feed).items = Some(output.items);
    }

    fn control(&self) -> Option<Arc<TrackControl>> {
        lock(&self.control).clone()
    }

    fn presentation(&self) -> Option<Arc<PresentationControl>> {
        lock(&self.info).as_ref().map(|i| i.presentation.clone())
    }

    /// The seqnum of the seek the element is about to make on this pad.
    pub(crate) fn set_seek_seqnum(&self, seqnum: gst::Seqnum) {
        *lock(&self.seek_seqnum) = Some(seqnum);
    }

    /// Waits for the next item; Err(Flushing) once unlock() is called.
    fn next_item(
        &self,
        items: &mut mpsc::Receiver<StreamItem>,
    ) -> Result<Option<StreamItem>, gst::FlowError> {
        self.block_on_unless_unlocked(items.recv())
    }

    /// Runs `future` to its end on the shared runtime; Err(Flushing) once unlock() is
    /// called, before or while it runs.
    fn block_on_unless_unlocked<F: std::future::Future>(
        &self,
        future: F,
    ) -> Result<F::Output, gst::FlowError> {
        let (future, handle) = abortable(future);
        {
            let mut canceller = lock(&self.canceller);
            if canceller.unlocked {
                return Err(gst::FlowError::Flushing);
            }
            canceller.current = Some(handle);
        }
        let result = RUNTIME.block_on(future);
        lock(&self.canceller).current = None;
        result.map_err(|_| gst::FlowError::Flushing)
    }

    /// Stream-start with the stream of `track`, then caps from its first bytes: at the start
    /// and whenever a stream selection switched the pad to another track.
    fn announce(&self, track: &str, first: &[u8]) -> Result<Container, gst::FlowError> {
        let obj = self.obj();
        let pad = obj.static_pad("src").expect("src pad");
        let info_guard = lock(&self.info);
        let Some(info) = info_guard.as_ref() else {
            return Err(gst::FlowError::NotNegotiated);
        };
        let Some(stream) = info.streams.get(track).cloned() else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Failed,
                ("No stream for track {}", track)
            );
            return Err(gst::FlowError::Error);
        };
        let caps = match gst_base::functions::type_find_helper_for_data(Some(&*obj), first) {
            Ok((caps, _)) => caps,
            Err(_) => caps_from_uri(&info.uri).ok_or_else(|| {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::TypeNotFound,
                    ("Cannot tell the container format of {}", info.uri)
                );
                gst::FlowError::NotNegotiated
            })?,
        };
        let media_type = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        let stream_id = stream
            .stream_id()
            .map(|s| s.to_string())
            .unwrap_or_default();
        gst::debug!(CAT, imp = self, "stream-start {stream_id}, caps {caps}");
        pad.push_event(
            gst::event::StreamStart::builder(&stream_id)
                .stream(stream.clone())
                .group_id(info.group_id)
                .build(),
        );
        if info.selectable {
            // Every track on every pad: decodebin3 never holds a partial collection.
            pad.push_event(gst::event::StreamCollection::new(&info.collection));
        } else if !is_demuxed(&media_type) {
            // Nothing downstream posts a collection for a stream that is not demuxed (text,
            // ADTS), and parsebin (1.22) then never exposes it to selection: not-linked.
            let own = gst::StreamCollection::builder(info.collection.upstream_id().as_deref())
                .stream(stream.clone())
                .build();
            pad.push_event(gst::event::StreamCollection::new(&own));
        }
        // Otherwise none: a demuxer forwards it as its own, and decodebin3, selecting by
        // stream id, would wait for ids that never arrive (not-linked).
        if stream.caps().is_none() {
            stream.set_caps(Some(&caps));
        }
        drop(info_guard);
        let container = if media_type == "video/mpegts" {
            Container::MpegTs
        } else {
            Container::Other
        };
        if pad.current_caps().is_some_and(|c| c == caps) {
            // Same container: the new stream still needs its caps after its stream-start.
            pad.push_event(gst::event::Caps::new(&caps));
            return Ok(container);
        }
        obj.set_caps(&caps)
            .map_err(|_| gst::FlowError::NotNegotiated)?;
        Ok(container)
    }

    /// Holds the pad's first buffer until its turn in an ordered start (at most
    /// [`START_HOLD`]), and a text pad's until another pad has pushed one (see
    /// [`PresentationControl::wait_media_started`], at most [`TEXT_HOLD`]).
    fn hold_first_buffer(&self) -> Result<(), gst::FlowError> {
        let (kind, turn, presentation) = match lock(&self.info).as_ref() {
            Some(info) => (info.kind, info.turn, info.presentation.clone()),
            None => return Ok(()),
        };
        let is_text = kind == TrackKind::Subtitle;
        let turn = turn.filter(|t| *t > 0);
        if !is_text && turn.is_none() {
            return Ok(());
        }
        let obj = self.obj().clone();
        let wait = async move {
            if let (Some(turn), Some(order)) = (turn, presentation.start_order()) {
                let since = std::time::Instant::now();
                match tokio::time::timeout(START_HOLD, order.wait_turn(turn)).await {
                    Ok(()) => {
                        gst::debug!(CAT, obj = obj, "turn {turn} after {:?}", since.elapsed())
                    }
                    Err(_) => {
                        gst::warning!(CAT, obj = obj, "no turn after {START_HOLD:?}: starting")
                    }
                }
            }
            if is_text {
                let _ = tokio::time::timeout(TEXT_HOLD, presentation.wait_media_started()).await;
            }
        };
        self.block_on_unless_unlocked(wait)
    }

    fn buffer_from(&self, chunk: Chunk, pts: Option<Duration>) -> gst::Buffer {
        let mut buffer = gst::Buffer::from_slice(chunk.bytes);
        let buf = buffer.get_mut().expect("new buffer is writable");
        buf.set_pts(pts.map(clock_time));
        buf.set_duration(chunk.duration.map(clock_time));
        if chunk.discont {
            buf.set_flags(gst::BufferFlags::DISCONT);
        }
        buffer
    }
}

/// Whether a demuxer downstream splits this container into streams (and posts their
/// collection).
fn is_demuxed(media_type: &str) -> bool {
    matches!(
        media_type,
        "video/mpegts" | "video/quicktime" | "audio/x-m4a" | "video/webm" | "audio/webm"
    )
}

/// Caps by file extension, for data the typefinders do not recognise.
fn caps_from_uri(uri: &str) -> Option<gst::Caps> {
    let path = uri
        .split(['?', '#'])
        .next()
        .unwrap_or(uri)
        .to_ascii_lowercase();
    let ext = path.rsplit_once('.').map(|(_, e)| e)?;
    Some(match ext {
        "ts" | "m3u8" => gst::Caps::builder("video/mpegts")
            .field("systemstream", true)
            .field("packetsize", 188)
            .build(),
        "mp4" | "m4s" | "m4v" | "m4a" | "cmfv" | "cmfa" => gst::Caps::builder("video/quicktime")
            .field("variant", "iso")
            .build(),
        "aac" => gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4)
            .field("stream-format", "adts")
            .build(),
        "vtt" | "webvtt" => gst::Caps::builder("application/x-subtitle-vtt").build(),
        _ => return None,
    })
}

impl BaseSrcImpl for StreamSrc {
    fn is_seekable(&self) -> bool {
        self.control().is_some_and(|c| c.is_seekable())
    }

    fn do_seek(&self, segment: &mut gst::Segment) -> bool {
        let Some(control) = self.control() else {
            return true;
        };
        if !control.is_seekable() {
            // The initial seek basesrc makes at start, or a live stream: nothing to do.
            return true;
        }
        let Some(segment) = segment.downcast_mut::<gst::ClockTime>() else {
            return false;
        };
        let target = segment.start().unwrap_or(gst::ClockTime::ZERO);
        {
            let feed = lock(&self.feed);
            if feed.epoch == 0 && feed.announced.is_none() && target.is_zero() {
                return true;
            }
        }
        let (epoch, snapped) = control.seek(Duration::from_nanos(target.nseconds()));
        let mut feed = lock(&self.feed);
        feed.epoch = epoch;
        // Output resumes with the segment containing the target. Fragmented MP4 is mapped
        // (see TimeMapping), and downstream clips what comes before the target, as with
        // adaptivedemux2; MPEG-TS, which tsdemux re-bases, starts at the segment's start.
        let start = if feed.mapping.init.is_some() {
            target
        } else {
            clock_time(snapped)
        };
        gst::debug!(CAT, imp = self, "seek to {target}, resuming at {start}");
        segment.set_start(start);
        segment.set_time(start);
        segment.set_position(start);
        feed.mapping.presentation = (*segment).clone();
        feed.mapping.offset = None;
        true
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        // GST_QUERY_SELECTABLE (1.22), read through its structure to keep 1.20 support.
        if query
            .structure()
            .is_some_and(|s| s.name() == "GstQuerySelectable")
        {
            let selectable = lock(&self.info).as_ref().is_some_and(|i| i.selectable);
            if selectable {
                query.structure_mut().set("selectable", true);
            }
            return selectable;
        }
        // Every pad answers for the whole presentation, so that they agree.
        let presentation = self.presentation();
        match query.view_mut() {
            gst::QueryViewMut::Duration(q) if q.format() == gst::Format::Time => {
                match presentation.and_then(|p| p.duration()) {
                    Some(d) => {
                        q.set(clock_time(d));
                        true
                    }
                    None => false,
                }
            }
            gst::QueryViewMut::Position(q) if q.format() == gst::Format::Time => match presentation
            {
                Some(p) => {
                    q.set(clock_time(p.position()));
                    true
                }
                None => false,
            },
            gst::QueryViewMut::Seeking(q) if q.format() == gst::Format::Time => {
                match presentation
                    .filter(|p| p.is_seekable())
                    .and_then(|p| p.duration())
                {
                    Some(d) => q.set(true, gst::ClockTime::ZERO, clock_time(d)),
                    None => q.set(false, gst::ClockTime::NONE, gst::ClockTime::NONE),
                }
                true
            }
            _ => BaseSrcImplExt::parent_query(self, query),
        }
    }

    fn event(&self, event: &gst::Event) -> bool {
        // Selections (decodebin3 forwards them upstream) and seeks (playbin3 sends them up
        // one sink's path) are the element's to handle, for every pad at once. The element
        // seeks each pad through its send_event, which does not come back here.
        if matches!(
            event.type_(),
            gst::EventType::SelectStreams | gst::EventType::Seek
        ) && let Some(parent) = self.obj().parent().and_downcast::<gst::Element>()
        {
            return parent.send_event(event.clone());
        }
        self.parent_event(event)
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        let mut canceller = lock(&self.canceller);
        canceller.unlocked = true;
        if let Some(handle) = canceller.current.take() {
            handle.abort();
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        lock(&self.canceller).unlocked = false;
        Ok(())
    }
}

impl PushSrcImpl for StreamSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let mut feed = lock(&self.feed);
        let Some(mut items) = feed.items.take() else {
            return Err(gst::FlowError::Eos);
        };
        let control = self.control();
        let current = |epoch| control.as_ref().is_none_or(|c| c.is_current(epoch));
        let result = loop {
            let item = match self.next_item(&mut items) {
                Ok(Some(item)) => item,
                Ok(None) => break Err(gst::FlowError::Eos),
                Err(e) => break Err(e),
            };
            match item {
                StreamItem::Eos { epoch } if current(epoch) => break Err(gst::FlowError::Eos),
                StreamItem::Data(chunk) if control.as_ref().is_none_or(|c| c.take(&chunk)) => {
                    if feed.announced.as_ref() != Some(&chunk.track) {
                        match self.announce(&chunk.track, &chunk.bytes) {
                            Ok(container) => feed.container = container,
                            Err(e) => break Err(e),
                        }
                        feed.announced = Some(chunk.track.clone());
                        feed.mapping.init = None;
                    }
                    if !feed.pushed {
                        if let Err(e) = self.hold_first_buffer() {
                            break Err(e);
                        }
                        feed.pushed = true;
                    }
                    let mut pts = self.map_time(&mut feed.mapping, &chunk);
                    let first_of_epoch = chunk.pts.is_some()
                        && feed.media_epoch.replace(chunk.epoch) != Some(chunk.epoch);
                    // tsdemux anchors its timing on the timestamp of a DISCONT buffer and
                    // takes the rest from the stream itself: playlist-rounded timestamps on
                    // every buffer would make its output drift.
                    if feed.container == Container::MpegTs
                        && !(chunk.discont || chunk.timestamps_restart || first_of_epoch)
                    {
                        pts = None;
                    }
                    break Ok(CreateSuccess::NewBuffer(self.buffer_from(chunk, pts)));
                }
                _ => gst::trace!(
                    CAT,
                    imp = self,
                    "dropping an item from before the last seek or switch"
                ),
            }
        };
        feed.items = Some(items);
        result
    }
}

impl StreamSrc {
    /// Keeps the segment downstream in step with the time `chunk` carries, and returns the
    /// timestamp its buffer gets: its media time when mapped, else its presentation time.
    fn map_time(&self, mapping: &mut TimeMapping, chunk: &Chunk) -> Option<Duration> {
        let Some(pts) = chunk.pts else {
            // An init section: a new one may restart the media's timestamps.
            mapping.init = container::parse_init(&chunk.bytes);
            mapping.offset = None;
            return None;
        };
        let media = mapping.init.as_ref().and_then(|init| {
            chunk
                .media_time
                .or_else(|| container::first_decode_time(init, &chunk.bytes))
        });
        let Some(media) = media else {
            // MPEG-TS and the rest: tsdemux re-bases timestamps itself.
            if chunk.timestamps_restart {
                self.restart_segment(chunk.pts);
            }
            return Some(pts);
        };
        let offset = nanos(pts) - nanos(media);
        let remap = mapping.epoch != Some(chunk.epoch)
            || chunk.timestamps_restart
            || mapping
                .offset
                .is_none_or(|o| (o - offset).unsigned_abs() > REMAP_DRIFT.as_nanos());
        mapping.epoch = Some(chunk.epoch);
        if remap {
            mapping.offset = Some(offset);
            self.map_segment(&mapping.presentation, pts, media);
        }
        let mapped = nanos(pts) - mapping.offset.unwrap_or(offset);
        Some(Duration::from_nanos(
            mapped.clamp(0, u64::MAX as i128) as u64
        ))
    }

    /// A segment in which media time `media` plays at presentation time `pts` of
    /// `presentation`, clipped to where the presentation segment starts (a seek target).
    fn map_segment(
        &self,
        presentation: &gst::FormattedSegment<gst::ClockTime>,
        pts: Duration,
        media: Duration,
    ) {
        let pts = clock_time(pts);
        let media = clock_time(media);
        let from = presentation.start().unwrap_or_default().max(pts);
        let skipped = from - pts;
        let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
        segment.set_rate(presentation.rate());
        segment.set_flags(presentation.flags());
        segment.set_start(media + skipped);
        segment.set_position(media + skipped);
        segment.set_time(
            presentation.time().unwrap_or_default()
                + (from - presentation.start().unwrap_or_default()),
        );
        segment.set_base(
            presentation
                .to_running_time(from)
                .unwrap_or(presentation.base().unwrap_or_default()),
        );
        if let Some(stop) = presentation.stop().filter(|stop| *stop > pts) {
            segment.set_stop(media + (stop - pts));
        }
        gst::debug!(
            CAT,
            imp = self,
            "media time {media} plays at {from}: {segment:?}"
        );
        if let Err(e) = self.obj().new_segment(segment.upcast_ref()) {
            gst::warning!(CAT, imp = self, "cannot start a new segment: {e}");
        }
    }

    /// EXT-X-DISCONTINUITY: timestamps restart, so downstream gets a segment starting here.
    fn restart_segment(&self, pts: Option<Duration>) {
        let Some(pts) = pts.map(clock_time) else {
            return;
        };
        let obj = self.obj();
        let current = obj.segment();
        let Some(current) = current.downcast_ref::<gst::ClockTime>() else {
            return;
        };
        let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
        segment.set_rate(current.rate());
        segment.set_base(
            current
                .to_running_time(pts)
                .or(Some(current.base().unwrap_or_default()))
                .unwrap_or_default(),
        );
        segment.set_start(pts);
        segment.set_time(pts);
        segment.set_position(pts);
        if let Err(e) = obj.new_segment(segment.upcast_ref()) {
            gst::warning!(CAT, imp = self, "cannot start a new segment: {e}");
        }
    }
}

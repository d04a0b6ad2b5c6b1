use crate::runtime::RUNTIME;
use crate::session::{Chunk, StreamItem, TrackControl, TrackOutput};
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
}

/// What [`StreamSrc::configure`] needs besides the track's output.
pub struct PadStreams {
    pub streams: HashMap<String, gst::Stream>,
    pub collection: gst::StreamCollection,
    pub group_id: gst::GroupId,
    pub selectable: bool,
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
}

#[derive(Default)]
pub struct StreamSrc {
    info: Mutex<Option<StreamInfo>>,
    control: Mutex<Option<Arc<TrackControl>>>,
    feed: Mutex<Feed>,
    canceller: Mutex<Canceller>,
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
            pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Event(event)) => match event.view() {
                        // Handled, not Drop: GStreamer 1.22 unrefs dropped items itself.
                        gst::EventView::StreamStart(s) if s.stream().is_none() => {
                            gst::PadProbeReturn::Handled
                        }
                        _ => gst::PadProbeReturn::Ok,
                    },
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
        });
        *lock(&self.control) = Some(output.control);
        lock(&self.feed).items = Some(output.items);
    }

    fn control(&self) -> Option<Arc<TrackControl>> {
        lock(&self.control).clone()
    }

    /// Waits for the next item; Err(Flushing) once unlock() is called.
    fn next_item(
        &self,
        items: &mut mpsc::Receiver<StreamItem>,
    ) -> Result<Option<StreamItem>, gst::FlowError> {
        let (future, handle) = abortable(items.recv());
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
    fn announce(&self, track: &str, first: &[u8]) -> Result<(), gst::FlowError> {
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
        let stream_id = stream
            .stream_id()
            .map(|s| s.to_string())
            .unwrap_or_default();
        gst::debug!(CAT, imp = self, "stream-start {stream_id}");
        pad.push_event(
            gst::event::StreamStart::builder(&stream_id)
                .stream(stream.clone())
                .group_id(info.group_id)
                .build(),
        );
        if info.selectable {
            // Every track on every pad: decodebin3 never holds a partial collection.
            pad.push_event(gst::event::StreamCollection::new(&info.collection));
        }
        // Otherwise none: a demuxer forwards it as its own, and decodebin3, selecting by
        // stream id, would wait for ids that never arrive (not-linked).

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
        gst::debug!(CAT, imp = self, "caps {caps}");
        if stream.caps().is_none() {
            stream.set_caps(Some(&caps));
        }
        drop(info_guard);
        if pad.current_caps().is_some_and(|c| c == caps) {
            // Same container: the new stream still needs its caps after its stream-start.
            pad.push_event(gst::event::Caps::new(&caps));
            return Ok(());
        }
        obj.set_caps(&caps)
            .map_err(|_| gst::FlowError::NotNegotiated)?;
        Ok(())
    }

    fn buffer_from(&self, chunk: Chunk) -> gst::Buffer {
        let mut buffer = gst::Buffer::from_slice(chunk.bytes);
        let buf = buffer.get_mut().expect("new buffer is writable");
        buf.set_pts(chunk.pts.map(clock_time));
        buf.set_duration(chunk.duration.map(clock_time));
        if chunk.discont {
            buf.set_flags(gst::BufferFlags::DISCONT);
        }
        buffer
    }
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
        lock(&self.feed).epoch = epoch;
        let snapped = clock_time(snapped);
        gst::debug!(CAT, imp = self, "seek to {target}, resuming at {snapped}");
        // Output resumes at a segment boundary, so the segment starts there.
        segment.set_start(snapped);
        segment.set_time(snapped);
        segment.set_position(snapped);
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
        match query.view_mut() {
            gst::QueryViewMut::Duration(q) if q.format() == gst::Format::Time => {
                match self.control().and_then(|c| c.duration()) {
                    Some(d) => {
                        q.set(clock_time(d));
                        true
                    }
                    None => false,
                }
            }
            gst::QueryViewMut::Seeking(q) if q.format() == gst::Format::Time => {
                let control = self.control();
                match control
                    .as_ref()
                    .and_then(|c| c.duration())
                    .filter(|_| control.as_ref().is_some_and(|c| c.is_seekable()))
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
        // A selection sent upstream (decodebin3 forwards them) is the element's to handle.
        if event.type_() == gst::EventType::SelectStreams
            && let Some(parent) = self.obj().parent().and_downcast::<gst::Element>()
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
                        if let Err(e) = self.announce(&chunk.track, &chunk.bytes) {
                            break Err(e);
                        }
                        feed.announced = Some(chunk.track.clone());
                    }
                    if chunk.timestamps_restart {
                        self.restart_segment(chunk.pts);
                    }
                    break Ok(CreateSuccess::NewBuffer(self.buffer_from(chunk)));
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

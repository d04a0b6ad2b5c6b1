use crate::runtime::RUNTIME;
use crate::session::{Chunk, StreamItem, TrackControl, TrackOutput};
use futures::future::{AbortHandle, abortable};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;
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

/// What the pad announces before its first buffer.
struct StreamInfo {
    stream: gst::Stream,
    group_id: gst::GroupId,
    /// Playlist URL, for the caps fallback when typefinding fails.
    uri: String,
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
    /// Only chunks of this epoch (the latest seek) are output.
    epoch: u64,
    announced: bool,
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
    pub(super) fn configure(
        &self,
        output: TrackOutput,
        stream: gst::Stream,
        group_id: gst::GroupId,
    ) {
        let uri = output
            .track
            .renditions
            .first()
            .map(|r| r.url.to_string())
            .unwrap_or_default();
        *lock(&self.info) = Some(StreamInfo {
            stream,
            group_id,
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

    /// Stream-start with our stream, then caps from the first bytes.
    fn announce(&self, first: &[u8]) -> Result<(), gst::FlowError> {
        let obj = self.obj();
        let pad = obj.static_pad("src").expect("src pad");
        let info_guard = lock(&self.info);
        let Some(info) = info_guard.as_ref() else {
            return Err(gst::FlowError::NotNegotiated);
        };
        let stream_id = pad.stream_id().map(|s| s.to_string()).unwrap_or_else(|| {
            info.stream
                .stream_id()
                .map(|s| s.to_string())
                .unwrap_or_default()
        });
        let stream_start = gst::event::StreamStart::builder(&stream_id)
            .stream(info.stream.clone())
            .group_id(info.group_id)
            .build();
        pad.push_event(stream_start);
        // No stream-collection event on the pad: it carries a container, and the demuxer
        // downstream forwards a sticky collection as its own, so decodebin3 (playbin3) would
        // select stream ids that never arrive and stop the pads with not-linked. The
        // element posts the collection on the bus instead.

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
        info.stream.set_caps(Some(&caps));
        drop(info_guard);
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
            if feed.epoch == 0 && !feed.announced && target.is_zero() {
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
        let result = loop {
            let item = match self.next_item(&mut items) {
                Ok(Some(item)) => item,
                Ok(None) => break Err(gst::FlowError::Eos),
                Err(e) => break Err(e),
            };
            match item {
                StreamItem::Eos { epoch } if epoch == feed.epoch => break Err(gst::FlowError::Eos),
                StreamItem::Data(chunk) if chunk.epoch == feed.epoch => {
                    if !feed.announced {
                        if let Err(e) = self.announce(&chunk.bytes) {
                            break Err(e);
                        }
                        feed.announced = true;
                    }
                    if chunk.timestamps_restart {
                        self.restart_segment(chunk.pts);
                    }
                    if let (Some(pts), Some(control)) = (chunk.pts, self.control()) {
                        control.set_played(pts);
                    }
                    break Ok(CreateSuccess::NewBuffer(self.buffer_from(chunk)));
                }
                _ => gst::trace!(
                    CAT,
                    imp = self,
                    "dropping an item from before the last seek"
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

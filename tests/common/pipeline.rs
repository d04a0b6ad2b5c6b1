//! Pipeline helpers: run `meshsrc` with a fakesink per pad (collecting bytes, caps,
//! buffer flags per pad), and run `playbin3` counting decoded video frames.
//!
//! Bus messages are recorded from a sync handler (so the provenance of ERROR and
//! WARNING messages is computed while the posting element is still in its bin),
//! and every wait is bounded by a timeout.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;

/// One buffer seen on a pad.
#[derive(Clone, Debug)]
pub struct BufRecord {
    /// Offset of the buffer's first byte in `PadOutput::data`.
    pub offset: usize,
    pub size: usize,
    pub flags: gst::BufferFlags,
    pub pts: Option<gst::ClockTime>,
    pub at: Instant,
}

/// Everything that arrived at the sink linked to one meshsrc pad.
#[derive(Clone, Debug, Default)]
pub struct PadOutput {
    pub name: String,
    /// Caps of every CAPS event, in order.
    pub caps: Vec<gst::Caps>,
    /// Concatenated buffer bytes (not reset by flushes; see `flush_marks`).
    pub data: Vec<u8>,
    pub buffers: Vec<BufRecord>,
    /// `data.len()` at each FLUSH_STOP event.
    pub flush_marks: Vec<usize>,
    pub eos: bool,
    pub stream_start: u32,
    /// Stream id of every STREAM_START, and `data.len()` when it arrived.
    pub stream_starts: Vec<(String, usize)>,
}

impl PadOutput {
    /// Bytes received after the last FLUSH_STOP (all bytes if none).
    pub fn data_since_last_flush(&self) -> &[u8] {
        let start = self.flush_marks.last().copied().unwrap_or(0);
        &self.data[start..]
    }
    /// First buffer starting exactly at `offset`.
    pub fn buffer_starting_at(&self, offset: usize) -> Option<&BufRecord> {
        self.buffers.iter().find(|b| b.offset == offset)
    }
    pub fn caps_name(&self) -> Option<String> {
        self.caps
            .first()
            .and_then(|c| c.structure(0))
            .map(|s| s.name().to_string())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgKind {
    Error,
    Warning,
    Info,
}

/// An ERROR/WARNING/INFO message.
#[derive(Clone, Debug)]
pub struct MsgRecord {
    pub kind: MsgKind,
    /// The posting object or one of its ancestors is a `meshsrc`.
    pub from_meshsrc: bool,
    pub src_path: String,
    pub error: glib::Error,
    pub debug: Option<String>,
    pub details: Option<gst::Structure>,
    pub at: Instant,
}

impl MsgRecord {
    pub fn resource(&self) -> Option<gst::ResourceError> {
        self.error.kind::<gst::ResourceError>()
    }
    pub fn stream(&self) -> Option<gst::StreamError> {
        self.error.kind::<gst::StreamError>()
    }
    pub fn describe(&self) -> String {
        format!(
            "{:?} from {} (meshsrc: {}): domain={} code={} msg={:?} debug={:?} details={:?}",
            self.kind,
            self.src_path,
            self.from_meshsrc,
            self.error.domain().as_str(),
            error_code(&self.error),
            self.error.message(),
            self.debug,
            self.details.as_ref().map(|d| d.to_string())
        )
    }
}

fn error_code(e: &glib::Error) -> String {
    if let Some(k) = e.kind::<gst::ResourceError>() {
        format!("ResourceError::{k:?}")
    } else if let Some(k) = e.kind::<gst::StreamError>() {
        format!("StreamError::{k:?}")
    } else if let Some(k) = e.kind::<gst::CoreError>() {
        format!("CoreError::{k:?}")
    } else if let Some(k) = e.kind::<gst::LibraryError>() {
        format!("LibraryError::{k:?}")
    } else {
        "?".into()
    }
}

/// An element message.
#[derive(Clone, Debug)]
pub struct ElementMsg {
    pub from_meshsrc: bool,
    pub src_path: String,
    pub structure: gst::Structure,
    pub at: Instant,
}

/// `mesh-variant-changed` element message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariantChanged {
    pub pad_name: String,
    pub bandwidth: u64,
    pub uri: String,
    pub reason: String,
}

/// A `streams-selected` message.
#[derive(Clone, Debug)]
pub struct StreamsSelectedMsg {
    pub from_meshsrc: bool,
    pub seqnum: gst::Seqnum,
    pub stream_ids: Vec<String>,
}

/// Everything recorded during a run.
#[derive(Clone, Debug, Default)]
pub struct RunState {
    /// `stream-collection` messages: (from meshsrc, collection).
    pub collections: Vec<(bool, gst::StreamCollection)>,
    pub streams_selected: Vec<StreamsSelectedMsg>,
    pub pads: BTreeMap<String, PadOutput>,
    /// Pad names in the order they were added.
    pub pad_order: Vec<String>,
    pub no_more_pads: bool,
    pub errors: Vec<MsgRecord>,
    pub warnings: Vec<MsgRecord>,
    pub infos: Vec<MsgRecord>,
    pub element_msgs: Vec<ElementMsg>,
    pub eos: bool,
    pub eos_at: Option<Instant>,
    pub async_done: u32,
    /// Buffers counted on playbin3 sinks.
    pub video_frames: u64,
    pub audio_buffers: u64,
    /// Factory names of every element added inside the pipeline (playbin3 runs).
    pub elements: Vec<String>,
    /// Failures inside harness callbacks (which must not panic).
    pub harness_errors: Vec<String>,
}

impl RunState {
    pub fn total_bytes(&self) -> usize {
        self.pads.values().map(|p| p.data.len()).sum()
    }
    pub fn errors_text(&self) -> String {
        self.errors
            .iter()
            .chain(self.warnings.iter())
            .map(|m| m.describe())
            .chain(self.harness_errors.iter().map(|e| format!("harness: {e}")))
            .collect::<Vec<_>>()
            .join("\n")
    }
    pub fn variant_changes(&self) -> Vec<VariantChanged> {
        self.element_msgs
            .iter()
            .filter(|m| m.structure.name() == "mesh-variant-changed")
            .map(|m| {
                let s = &m.structure;
                VariantChanged {
                    pad_name: s
                        .get::<String>("pad-name")
                        .unwrap_or_else(|e| panic!("pad-name in {s}: {e}")),
                    bandwidth: s
                        .get::<u64>("bandwidth")
                        .unwrap_or_else(|e| panic!("bandwidth (u64) in {s}: {e}")),
                    uri: s
                        .get::<String>("uri")
                        .unwrap_or_else(|e| panic!("uri in {s}: {e}")),
                    reason: s
                        .get::<String>("reason")
                        .unwrap_or_else(|e| panic!("reason in {s}: {e}")),
                }
            })
            .collect()
    }
}

pub type Shared = Arc<(Mutex<RunState>, Condvar)>;

fn lock(shared: &Shared) -> MutexGuard<'_, RunState> {
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

fn update(shared: &Shared, f: impl FnOnce(&mut RunState)) {
    let mut g = lock(shared);
    f(&mut g);
    drop(g);
    shared.1.notify_all();
}

/// True if `obj` or one of its ancestors was created by the `meshsrc` factory.
fn within_meshsrc(obj: &gst::Object) -> bool {
    let mut cur = Some(obj.clone());
    for _ in 0..64 {
        let Some(o) = cur else { return false };
        if let Some(e) = o.downcast_ref::<gst::Element>()
            && e.factory().is_some_and(|f| f.name() == "meshsrc")
        {
            return true;
        }
        cur = o.parent();
    }
    false
}

fn install_bus_recorder(bus: &gst::Bus, shared: Shared) {
    bus.set_sync_handler(move |_bus, msg| {
        use gst::MessageView;
        let src = msg.src().cloned();
        let src_path = src
            .as_ref()
            .map(|s| s.path_string().to_string())
            .unwrap_or_default();
        let from_meshsrc = src.as_ref().is_some_and(within_meshsrc);
        let now = Instant::now();
        let rec = |kind,
                   error: glib::Error,
                   debug: Option<glib::GString>,
                   details: Option<&gst::StructureRef>| MsgRecord {
            kind,
            from_meshsrc,
            src_path: src_path.clone(),
            error,
            debug: debug.map(|d| d.to_string()),
            details: details.map(|d| d.to_owned()),
            at: now,
        };
        match msg.view() {
            MessageView::Error(e) => {
                let r = rec(MsgKind::Error, e.error(), e.debug(), e.details());
                update(&shared, |s| s.errors.push(r));
            }
            MessageView::Warning(e) => {
                let r = rec(MsgKind::Warning, e.error(), e.debug(), e.details());
                update(&shared, |s| s.warnings.push(r));
            }
            MessageView::Info(e) => {
                let r = rec(MsgKind::Info, e.error(), e.debug(), e.details());
                update(&shared, |s| s.infos.push(r));
            }
            MessageView::Eos(_) => update(&shared, |s| {
                s.eos = true;
                s.eos_at.get_or_insert(now);
            }),
            MessageView::AsyncDone(_) => update(&shared, |s| s.async_done += 1),
            MessageView::StreamCollection(m) => {
                let collection = m.stream_collection();
                update(&shared, |s| s.collections.push((from_meshsrc, collection)));
            }
            MessageView::StreamsSelected(m) => {
                let stream_ids = m
                    .streams()
                    .map(|st| st.stream_id().map(|i| i.to_string()).unwrap_or_default())
                    .collect();
                let record = StreamsSelectedMsg {
                    from_meshsrc,
                    seqnum: msg.seqnum(),
                    stream_ids,
                };
                update(&shared, |s| s.streams_selected.push(record));
            }
            MessageView::Element(e) => {
                if let Some(st) = e.structure() {
                    let m = ElementMsg {
                        from_meshsrc,
                        src_path: src_path.clone(),
                        structure: st.to_owned(),
                        at: now,
                    };
                    update(&shared, |s| s.element_msgs.push(m));
                }
            }
            _ => {}
        }
        gst::BusSyncReply::Drop
    });
}

fn install_data_probe(pad: &gst::Pad, name: String, shared: Shared) {
    pad.add_probe(
        gst::PadProbeType::BUFFER
            | gst::PadProbeType::BUFFER_LIST
            | gst::PadProbeType::EVENT_DOWNSTREAM
            | gst::PadProbeType::EVENT_FLUSH,
        move |_pad, info| {
            let now = Instant::now();
            let push = |out: &mut PadOutput, b: &gst::BufferRef| {
                let map = b.map_readable().expect("map buffer");
                out.buffers.push(BufRecord {
                    offset: out.data.len(),
                    size: map.len(),
                    flags: b.flags(),
                    pts: b.pts(),
                    at: now,
                });
                out.data.extend_from_slice(&map);
            };
            match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => {
                    update(&shared, |s| push(s.pads.get_mut(&name).unwrap(), b))
                }
                Some(gst::PadProbeData::BufferList(l)) => update(&shared, |s| {
                    let out = s.pads.get_mut(&name).unwrap();
                    for b in l.iter() {
                        push(out, b);
                    }
                }),
                Some(gst::PadProbeData::Event(ev)) => {
                    use gst::EventView;
                    match ev.view() {
                        EventView::Caps(c) => {
                            let caps = c.caps_owned();
                            update(&shared, |s| s.pads.get_mut(&name).unwrap().caps.push(caps))
                        }
                        EventView::Eos(_) => {
                            update(&shared, |s| s.pads.get_mut(&name).unwrap().eos = true)
                        }
                        EventView::FlushStop(_) => update(&shared, |s| {
                            let out = s.pads.get_mut(&name).unwrap();
                            let mark = out.data.len();
                            out.flush_marks.push(mark);
                            out.eos = false;
                        }),
                        EventView::StreamStart(e) => {
                            let id = e.stream_id().to_string();
                            update(&shared, |s| {
                                let out = s.pads.get_mut(&name).unwrap();
                                out.stream_start += 1;
                                let at = out.data.len();
                                out.stream_starts.push((id, at));
                            })
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

fn count_probe(pad: &gst::Pad, shared: Shared, video: bool) {
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_pad, info| {
            let n = match &info.data {
                Some(gst::PadProbeData::Buffer(_)) => 1,
                Some(gst::PadProbeData::BufferList(l)) => l.len() as u64,
                _ => 0,
            };
            update(&shared, |s| {
                if video {
                    s.video_frames += n
                } else {
                    s.audio_buffers += n
                }
            });
            gst::PadProbeReturn::Ok
        },
    );
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    Eos,
    Error,
    Timeout,
}

/// `meshsrc` in a pipeline, every src pad linked to its own fakesink.
pub struct MeshRun {
    pub pipeline: gst::Pipeline,
    pub src: gst::Element,
    pub shared: Shared,
    pub created: Instant,
}

impl MeshRun {
    /// `meshsrc location=<location>` (a plain http:// URL).
    pub fn new(location: &str) -> MeshRun {
        Self::with(location, |_| {})
    }

    /// Like `new`, calling `configure` on the element before it is added.
    pub fn with(location: &str, configure: impl FnOnce(&gst::Element)) -> MeshRun {
        super::init();
        let src = gst::ElementFactory::make("meshsrc")
            .property("location", location)
            .build()
            .expect("create meshsrc");
        configure(&src);
        Self::from_element(src, false)
    }

    /// Source created through the URI handler (e.g. `mesh+http://...`).
    pub fn from_uri(uri: &str) -> MeshRun {
        super::init();
        let src = gst::Element::make_from_uri(gst::URIType::Src, uri, None)
            .unwrap_or_else(|e| panic!("make_from_uri({uri}): {e}"));
        Self::from_element(src, false)
    }

    /// Wraps an existing source; `sync` is the fakesinks' `sync` property.
    pub fn from_element(src: gst::Element, sync: bool) -> MeshRun {
        super::init();
        let pipeline = gst::Pipeline::new();
        let shared: Shared = Arc::new((Mutex::new(RunState::default()), Condvar::new()));
        install_bus_recorder(&pipeline.bus().unwrap(), shared.clone());
        pipeline.add(&src).expect("add src");
        let weak_pipeline = pipeline.downgrade();
        let sh = shared.clone();
        src.connect_pad_added(move |_src, pad| {
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            let Some(pipeline) = weak_pipeline.upgrade() else {
                return;
            };
            let name = pad.name().to_string();
            update(&sh, |s| {
                s.pad_order.push(name.clone());
                s.pads.insert(
                    name.clone(),
                    PadOutput {
                        name: name.clone(),
                        ..Default::default()
                    },
                );
            });
            // No panics here: this runs on a GStreamer thread.
            let sink = match gst::ElementFactory::make("fakesink")
                .name(format!("sink_{name}"))
                .property("sync", sync)
                .build()
            {
                Ok(s) => s,
                Err(e) => {
                    update(&sh, |s| s.harness_errors.push(format!("fakesink: {e}")));
                    return;
                }
            };
            if let Err(e) = pipeline.add(&sink) {
                update(&sh, |s| {
                    s.harness_errors.push(format!("add sink for {name}: {e}"))
                });
                return;
            }
            let sinkpad = sink.static_pad("sink").unwrap();
            install_data_probe(&sinkpad, name.clone(), sh.clone());
            let _ = sink.sync_state_with_parent();
            if let Err(e) = pad.link(&sinkpad) {
                update(&sh, |s| {
                    s.harness_errors.push(format!("link {name}: {e:?}"))
                });
            }
        });
        let sh = shared.clone();
        src.connect_no_more_pads(move |_| update(&sh, |s| s.no_more_pads = true));
        MeshRun {
            pipeline,
            src,
            shared,
            created: Instant::now(),
        }
    }

    /// Sets the pipeline to PLAYING. State-change failures are not fatal: the
    /// ERROR message is recorded and can be waited for.
    pub fn play(&self) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        self.pipeline.set_state(gst::State::Playing)
    }

    pub fn pause(&self) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        self.pipeline.set_state(gst::State::Paused)
    }

    pub fn state(&self) -> MutexGuard<'_, RunState> {
        lock(&self.shared)
    }

    pub fn snapshot(&self) -> RunState {
        self.state().clone()
    }

    /// Waits (bounded) until `pred` holds. Returns whether it did.
    pub fn wait_until(&self, timeout: Duration, pred: impl FnMut(&RunState) -> bool) -> bool {
        wait_until(&self.shared, timeout, pred)
    }

    /// Waits for EOS or an ERROR.
    pub fn wait_done(&self, timeout: Duration) -> Done {
        self.wait_until(timeout, |s| s.eos || !s.errors.is_empty());
        let s = self.state();
        if !s.errors.is_empty() {
            Done::Error
        } else if s.eos {
            Done::Eos
        } else {
            Done::Timeout
        }
    }

    /// Plays to EOS (asserting no ERROR and no timeout) and returns the state.
    pub fn run_to_eos(&self, timeout: Duration) -> RunState {
        let _ = self.play();
        let done = self.wait_done(timeout);
        let s = self.snapshot();
        assert!(
            s.harness_errors.is_empty(),
            "harness: {:?}",
            s.harness_errors
        );
        assert_eq!(
            done,
            Done::Eos,
            "expected EOS within {timeout:?}; pads={:?} bytes={} messages:\n{}",
            s.pad_order,
            s.total_bytes(),
            s.errors_text()
        );
        s
    }

    /// Plays and waits for the first ERROR (asserting it arrives within `timeout`).
    pub fn run_to_error(&self, timeout: Duration) -> RunState {
        let _ = self.play();
        let done = self.wait_done(timeout);
        let s = self.snapshot();
        assert_eq!(
            done,
            Done::Error,
            "expected an ERROR within {timeout:?}; eos={} pads={:?} bytes={} messages:\n{}",
            s.eos,
            s.pad_order,
            s.total_bytes(),
            s.errors_text()
        );
        s
    }

    /// Output of a pad (panics with the list of pads if missing).
    pub fn pad(&self, name: &str) -> PadOutput {
        let s = self.state();
        s.pads
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no pad {name}; pads: {:?}", s.pad_order))
    }

    pub fn stop(&self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Drop for MeshRun {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

pub fn wait_until(
    shared: &Shared,
    timeout: Duration,
    mut pred: impl FnMut(&RunState) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut g = lock(shared);
    loop {
        if pred(&g) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        g = shared
            .1
            .wait_timeout(g, (deadline - now).min(Duration::from_millis(200)))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Result of a playbin3 run.
#[derive(Clone, Debug)]
pub struct PlaybinResult {
    pub done: Done,
    pub state: RunState,
    pub elapsed: Duration,
}

impl PlaybinResult {
    pub fn video_frames(&self) -> u64 {
        self.state.video_frames
    }
}

/// Runs `playbin3 uri=<uri>` with fakesinks (sync=false), counting decoded video
/// frames (buffers reaching the video sink). `setup` is called for every element
/// added anywhere inside playbin3 (e.g. to configure hlsdemux2 or meshsrc).
pub fn run_playbin3(
    uri: &str,
    timeout: Duration,
    setup: impl Fn(&gst::Element) + Send + Sync + 'static,
) -> PlaybinResult {
    run_playbin3_until(uri, timeout, setup, || false)
}

/// Like [`run_playbin3`], and once `stop()` turns true (a live stream whose end is never
/// announced), sends EOS to the pipeline, as a user stopping it, so that every element
/// drains what it holds before the frames are counted.
pub fn run_playbin3_until(
    uri: &str,
    timeout: Duration,
    setup: impl Fn(&gst::Element) + Send + Sync + 'static,
    stop: impl Fn() -> bool,
) -> PlaybinResult {
    super::init();
    let shared: Shared = Arc::new((Mutex::new(RunState::default()), Condvar::new()));
    let vsink = gst::ElementFactory::make("fakesink")
        .name("vsink")
        .property("sync", false)
        .build()
        .unwrap();
    let asink = gst::ElementFactory::make("fakesink")
        .name("asink")
        .property("sync", false)
        .build()
        .unwrap();
    let tsink = gst::ElementFactory::make("fakesink")
        .name("tsink")
        .property("sync", false)
        .build()
        .unwrap();
    count_probe(&vsink.static_pad("sink").unwrap(), shared.clone(), true);
    count_probe(&asink.static_pad("sink").unwrap(), shared.clone(), false);
    let playbin = gst::ElementFactory::make("playbin3")
        .property("uri", uri)
        .property("video-sink", &vsink)
        .property("audio-sink", &asink)
        .property("text-sink", &tsink)
        .build()
        .expect("playbin3");
    install_bus_recorder(&playbin.bus().unwrap(), shared.clone());
    let sh = shared.clone();
    playbin
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .connect_deep_element_added(move |_bin, _sub, element| {
            if let Some(f) = element.factory() {
                let name = f.name().to_string();
                update(&sh, |s| s.elements.push(name));
            }
            setup(element);
        });
    let start = Instant::now();
    let _ = playbin.set_state(gst::State::Playing);
    let deadline = start + timeout;
    let mut stopped = false;
    while Instant::now() < deadline {
        let slice = (deadline - Instant::now()).min(Duration::from_millis(200));
        if wait_until(&shared, slice, |s| s.eos || !s.errors.is_empty()) {
            break;
        }
        if !stopped && stop() {
            stopped = true;
            playbin.send_event(gst::event::Eos::new());
        }
    }
    let _ = playbin.set_state(gst::State::Null);
    let state = lock(&shared).clone();
    let done = if !state.errors.is_empty() {
        Done::Error
    } else if state.eos {
        Done::Eos
    } else {
        Done::Timeout
    };
    PlaybinResult {
        done,
        state,
        elapsed: start.elapsed(),
    }
}

/// Asserts byte equality with a compact diagnostic (lengths, first mismatch, and
/// which expected segment it falls in).
pub fn assert_bytes_eq(what: &str, got: &[u8], expected: &[u8], seg_sizes: Option<&[usize]>) {
    if got == expected {
        return;
    }
    let first = got
        .iter()
        .zip(expected.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(expected.len()));
    let locate = |off: usize| -> String {
        let Some(sizes) = seg_sizes else {
            return String::new();
        };
        let mut acc = 0;
        for (i, s) in sizes.iter().enumerate() {
            if off < acc + s {
                return format!(" (expected part #{i} at +{})", off - acc);
            }
            acc += s;
        }
        " (past the end of expected)".into()
    };
    panic!(
        "{what}: output differs from expected: got {} bytes, expected {} bytes; first difference at offset {}{}",
        got.len(),
        expected.len(),
        first,
        locate(first)
    );
}

/// Sizes of the parts of an ExpectedMedia (init if any, then each segment), for
/// `assert_bytes_eq` diagnostics.
pub fn part_sizes(e: &super::fixtures::ExpectedMedia, from: usize) -> Vec<usize> {
    let mut v = Vec::new();
    if let Some(i) = &e.init {
        v.push(i.len());
    }
    v.extend(e.segments[from..].iter().map(|s| s.len()));
    v
}

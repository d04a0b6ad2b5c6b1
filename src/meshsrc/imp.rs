use super::streamsrc::{PadStreams, StreamSrc};
use crate::abr::AbrConfig;
use crate::dash::DashOptions;
use crate::delivery::{MeshConfig, StatsSnapshot};
use crate::error::MeshError;
use crate::fetch::HttpConfig;
use crate::mesh::signalling::SignallingConfig;
use crate::mesh::tracker::TrackerConfig;
use crate::mesh::transport::{TransportConfig, parse_turn_server};
use crate::model::{Rendition, Track, TrackKind};
use crate::runtime::RUNTIME;
use crate::scheduler::SchedulerConfig;
use crate::session::{
    CodecSupport, MeshSessionConfig, PresentationControl, Session, SessionConfig, SessionEvent,
    Snap, StartOrder, TrackControl, TrackOutput,
};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use url::Url;

mod errors;
mod selection;
mod settings;
mod streams;

use selection::*;
pub use settings::Integrity;
use settings::*;
use streams::*;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "meshsrc",
        gst::DebugColorFlags::empty(),
        Some("Mesh HLS source"),
    )
});

const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// A pad the bin exposes and the internal source behind it.
struct Output {
    src: StreamSrc,
    ghost: gst::GhostPad,
    kind: TrackKind,
    control: Arc<TrackControl>,
    /// `Track::id` of the track the pad plays, or switches to after a stream selection.
    track: String,
}

#[derive(Default)]
enum State {
    #[default]
    Stopped,
    Running {
        /// Distinguishes this run's events from a previous run's stragglers.
        generation: u64,
        _session: Session,
        events: tokio::task::JoinHandle<()>,
        stats_ticker: tokio::task::JoinHandle<()>,
        outputs: Vec<Output>,
        selection: Option<Selection>,
        /// Every pad's track, for seeks of the whole presentation.
        presentation: Arc<PresentationControl>,
        /// The seqnum of the last seek done: the same seek arriving on another pad is
        /// done once.
        last_seek: Option<gst::Seqnum>,
        /// Not-linked stops the element only when every pad is not linked.
        flows: Arc<NotLinked>,
        /// Orders the pads' start under playbin3 (GStreamer 1.22).
        start_watch: Option<streams::StartWatch>,
    },
}

#[derive(Default)]
pub struct MeshSrc {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    generation: Mutex<u64>,
}

#[glib::object_subclass]
impl ObjectSubclass for MeshSrc {
    const NAME: &'static str = "GstMeshSrc";
    type Type = super::MeshSrc;
    type ParentType = gst::Bin;
    type Interfaces = (gst::URIHandler,);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ObjectImpl for MeshSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("location")
                    .nick("Location")
                    .blurb("URL of the HLS master or media playlist (http or https)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("connection-bitrate")
                    .nick("Connection bitrate")
                    .blurb("Network connection speed to use in bits per second (0 = measure it)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecFloat::builder("bandwidth-target-ratio")
                    .nick("Ratio of target bandwidth / available bandwidth")
                    .blurb("Limit of the available bitrate to use when switching to alternates")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_BANDWIDTH_TARGET_RATIO)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("min-bitrate")
                    .nick("Minimum Bitrate")
                    .blurb("Minimum bitrate to use when switching to alternates (bits/s)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-bitrate")
                    .nick("Maximum Bitrate")
                    .blurb("Maximum bitrate to use when switching to alternates (bits/s, 0 = no limit)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("start-bitrate")
                    .nick("Starting Bitrate")
                    .blurb("Initial bitrate to use to choose the first alternate (0 = the playlist's first variant)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("max-buffering-time")
                    .nick("Maximum buffering time")
                    .blurb("How far ahead of playback segments are fetched, in nanoseconds")
                    .minimum(1_000_000_000)
                    .default_value(DEFAULT_MAX_BUFFERING_TIME)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("max-retries")
                    .nick("Maximum retries")
                    .blurb("Retries with backoff of a failed request (5xx, timeout, refused) before giving up")
                    .minimum(0)
                    .maximum(20)
                    .default_value(DEFAULT_MAX_RETRIES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("timeout")
                    .nick("Timeout")
                    .blurb("Per-request timeout in seconds")
                    .minimum(1)
                    .maximum(3600)
                    .default_value(DEFAULT_TIMEOUT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("user-agent")
                    .nick("User-Agent")
                    .blurb("Value of the User-Agent HTTP request header")
                    .default_value(Some(Settings::default().user_agent.as_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-video-width")
                    .nick("Max video width")
                    .blurb("Max video width to select (0 = no maximum) (DASH)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-video-height")
                    .nick("Max video height")
                    .blurb("Max video height to select (0 = no maximum) (DASH)")
                    .mutable_ready()
                    .build(),
                gst::ParamSpecFraction::builder("max-video-framerate")
                    .nick("Max video framerate")
                    .blurb("Max video framerate to select (0/1 = no maximum) (DASH)")
                    .minimum(gst::Fraction::new(0, 1))
                    .maximum(gst::Fraction::new(i32::MAX, 1))
                    .default_value(gst::Fraction::new(0, 1))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("presentation-delay")
                    .nick("Presentation delay")
                    .blurb("Live playback delay behind the edge when the MPD suggests none, e.g. \"12s\", \"2500ms\", \"3f\" (fragments) (DASH)")
                    .default_value(Some(DashOptions::default().presentation_delay.as_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("tracker")
                    .nick("Tracker")
                    .blurb("WebTorrent tracker URLs (ws:// or wss://), comma-separated, to find peers; empty = CDN only")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("swarm-id")
                    .nick("Swarm ID")
                    .blurb("Replaces the manifest URL (without query) as the base of swarm identities, so viewers of the same stream from different URLs meet")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("segment-hashes")
                    .nick("Segment hashes")
                    .blurb("URL of the origin's segments-sha256.json (PeerTube format) that peer data is verified against")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("integrity", Integrity::Required)
                    .nick("Integrity")
                    .blurb("required: download from peers only what a published hash verifies; off: accept unverified peer data")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("ice-address")
                    .nick("ICE addresses")
                    .blurb("Local IP addresses to gather WebRTC host candidates on, comma-separated; empty = all")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("stun-server")
                    .nick("STUN server")
                    .blurb("STUN server as stun://host:port; empty = none")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("turn-server")
                    .nick("TURN server")
                    .blurb("TURN server as turn(s)://username:password@host:port; empty = none")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-peers")
                    .nick("Maximum peers")
                    .blurb("Peer connections at most, over all renditions")
                    .maximum(200)
                    .default_value(DEFAULT_MAX_PEERS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("upload")
                    .nick("Upload")
                    .blurb("Serve segments to peers")
                    .default_value(true)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("max-upload-rate")
                    .nick("Maximum upload rate")
                    .blurb("Upload cap in bytes per second (0 = unlimited)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("cache-size")
                    .nick("Cache size")
                    .blurb("Bytes of segments kept in memory to serve peers")
                    .default_value(DEFAULT_CACHE_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("live-delay")
                    .nick("Live delay")
                    .blurb("Start live playback at least this far behind the edge, in nanoseconds, to give peers time (0 = the playlist's hold-back)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("codec-preference")
                    .nick("Codec preference")
                    .blurb("Codec families to prefer when the variants use several, most wanted first, e.g. \"hevc,avc\"; empty = the first variant's that can be decoded")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Mesh statistics: bytes-cdn, bytes-p2p, bytes-uploaded, segments-cdn, segments-p2p, segments-rejected, peers, peers-banned")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = lock(&self.settings);
        match pspec.name() {
            "location" => {
                let location: Option<String> = value.get().expect("type checked upstream");
                gst::debug!(CAT, imp = self, "location: {location:?}");
                settings.location = location;
            }
            "connection-bitrate" => {
                settings.connection_bitrate = value.get().expect("type checked upstream")
            }
            "bandwidth-target-ratio" => {
                settings.bandwidth_target_ratio = value.get().expect("type checked upstream")
            }
            "min-bitrate" => settings.min_bitrate = value.get().expect("type checked upstream"),
            "max-bitrate" => settings.max_bitrate = value.get().expect("type checked upstream"),
            "start-bitrate" => settings.start_bitrate = value.get().expect("type checked upstream"),
            "max-buffering-time" => {
                settings.max_buffering_time = value.get().expect("type checked upstream")
            }
            "max-retries" => settings.max_retries = value.get().expect("type checked upstream"),
            "timeout" => settings.timeout = value.get().expect("type checked upstream"),
            "user-agent" => {
                settings.user_agent = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_default();
            }
            "max-video-width" => {
                settings.dash.max_video_width = value.get().expect("type checked upstream")
            }
            "max-video-height" => {
                settings.dash.max_video_height = value.get().expect("type checked upstream")
            }
            "max-video-framerate" => {
                let rate: gst::Fraction = value.get().expect("type checked upstream");
                settings.dash.max_video_framerate =
                    (rate.numer().max(0) as u32, rate.denom().max(1) as u32);
            }
            "presentation-delay" => {
                settings.dash.presentation_delay = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_default();
            }
            "tracker" | "swarm-id" | "segment-hashes" | "ice-address" | "stun-server"
            | "turn-server" | "codec-preference" => {
                let text = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_default();
                let slot = match pspec.name() {
                    "tracker" => &mut settings.tracker,
                    "swarm-id" => &mut settings.swarm_id,
                    "segment-hashes" => &mut settings.segment_hashes,
                    "ice-address" => &mut settings.ice_address,
                    "stun-server" => &mut settings.stun_server,
                    "codec-preference" => &mut settings.codec_preference,
                    _ => &mut settings.turn_server,
                };
                *slot = text;
            }
            "integrity" => settings.integrity = value.get().expect("type checked upstream"),
            "max-peers" => settings.max_peers = value.get().expect("type checked upstream"),
            "upload" => settings.upload = value.get().expect("type checked upstream"),
            "max-upload-rate" => {
                settings.max_upload_rate = value.get().expect("type checked upstream")
            }
            "cache-size" => settings.cache_size = value.get().expect("type checked upstream"),
            "live-delay" => settings.live_delay = value.get().expect("type checked upstream"),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = lock(&self.settings);
        match pspec.name() {
            "location" => settings.location.to_value(),
            "connection-bitrate" => settings.connection_bitrate.to_value(),
            "bandwidth-target-ratio" => settings.bandwidth_target_ratio.to_value(),
            "min-bitrate" => settings.min_bitrate.to_value(),
            "max-bitrate" => settings.max_bitrate.to_value(),
            "start-bitrate" => settings.start_bitrate.to_value(),
            "max-buffering-time" => settings.max_buffering_time.to_value(),
            "max-retries" => settings.max_retries.to_value(),
            "timeout" => settings.timeout.to_value(),
            "user-agent" => settings.user_agent.to_value(),
            "max-video-width" => settings.dash.max_video_width.to_value(),
            "max-video-height" => settings.dash.max_video_height.to_value(),
            "max-video-framerate" => {
                let (numer, denom) = settings.dash.max_video_framerate;
                gst::Fraction::new(
                    numer.min(i32::MAX as u32) as i32,
                    denom.clamp(1, i32::MAX as u32) as i32,
                )
                .to_value()
            }
            "presentation-delay" => settings.dash.presentation_delay.to_value(),
            "tracker" => settings.tracker.to_value(),
            "swarm-id" => settings.swarm_id.to_value(),
            "segment-hashes" => settings.segment_hashes.to_value(),
            "integrity" => settings.integrity.to_value(),
            "ice-address" => settings.ice_address.to_value(),
            "stun-server" => settings.stun_server.to_value(),
            "turn-server" => settings.turn_server.to_value(),
            "max-peers" => settings.max_peers.to_value(),
            "upload" => settings.upload.to_value(),
            "max-upload-rate" => settings.max_upload_rate.to_value(),
            "cache-size" => settings.cache_size.to_value(),
            "live-delay" => settings.live_delay.to_value(),
            "codec-preference" => settings.codec_preference.to_value(),
            "stats" => {
                drop(settings);
                stats_structure(&self.stats()).to_value()
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_suppressed_flags(gst::ElementFlags::SOURCE | gst::ElementFlags::SINK);
        obj.set_element_flags(gst::ElementFlags::SOURCE);
    }
}

impl GstObjectImpl for MeshSrc {}

impl ElementImpl for MeshSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Mesh adaptive streaming source",
                "Source/Network/Adaptive",
                "Plays HLS and MPEG-DASH streams, one pad per rendition carrying its container bytes, with segments from the CDN or from other viewers over WebRTC",
                "gst-mesh developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            ["video_%02u", "audio_%02u", "subtitle_%02u"]
                .into_iter()
                .map(|name| {
                    gst::PadTemplate::new(
                        name,
                        gst::PadDirection::Src,
                        gst::PadPresence::Sometimes,
                        &gst::Caps::new_any(),
                    )
                    .expect("valid pad template")
                })
                .collect()
        });
        TEMPLATES.as_ref()
    }

    fn send_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::SelectStreams(select) => {
                let ids: Vec<String> = select.streams().iter().map(|s| s.to_string()).collect();
                self.select_streams(&ids, event.seqnum())
            }
            gst::EventView::Seek(_) => self.seek(&event),
            _ => self.parent_send_event(event),
        }
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            self.start()?;
        }
        let result = self.parent_change_state(transition);
        if matches!(transition, gst::StateChange::PausedToReady) || result.is_err() {
            self.stop();
        }
        result
    }
}

impl BinImpl for MeshSrc {}

impl URIHandlerImpl for MeshSrc {
    const URI_TYPE: gst::URIType = gst::URIType::Src;

    fn protocols() -> &'static [&'static str] {
        &["mesh+http", "mesh+https"]
    }

    fn uri(&self) -> Option<String> {
        lock(&self.settings)
            .location
            .as_ref()
            .map(|l| format!("mesh+{l}"))
    }

    fn set_uri(&self, uri: &str) -> Result<(), glib::Error> {
        let location = uri
            .strip_prefix("mesh+")
            .filter(|l| l.starts_with("http://") || l.starts_with("https://"))
            .ok_or_else(|| {
                glib::Error::new(
                    gst::URIError::UnsupportedProtocol,
                    &format!("{uri}: expected mesh+http:// or mesh+https://"),
                )
            })?;
        Url::parse(location)
            .map_err(|e| glib::Error::new(gst::URIError::BadUri, &format!("{uri}: {e}")))?;
        lock(&self.settings).location = Some(location.to_string());
        Ok(())
    }
}

impl MeshSrc {
    fn start(&self) -> Result<(), gst::StateChangeError> {
        let config = lock(&self.settings).session_config().map_err(|e| {
            self.post_mesh_error(&e);
            gst::StateChangeError
        })?;
        gst::info!(CAT, imp = self, "starting {}", config.location);
        let generation = {
            let mut g = lock(&self.generation);
            *g += 1;
            *g
        };
        let (tx, mut rx) = mpsc::channel(16);
        let session = Session::start(RUNTIME.handle(), config, tx);
        let weak = self.obj().downgrade();
        let events = RUNTIME.spawn(async move {
            while let Some(event) = rx.recv().await {
                let Some(obj) = weak.upgrade() else { break };
                obj.imp().handle_event(generation, event);
            }
        });
        let weak = self.obj().downgrade();
        let stats_ticker = RUNTIME.spawn(async move {
            let mut ticker = tokio::time::interval(STATS_INTERVAL);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(obj) = weak.upgrade() else { break };
                obj.imp().post_statistics();
            }
        });
        *lock(&self.state) = State::Running {
            generation,
            _session: session,
            events,
            stats_ticker,
            outputs: Vec::new(),
            selection: None,
            presentation: Arc::default(),
            last_seek: None,
            flows: Arc::default(),
            start_watch: None,
        };
        Ok(())
    }

    fn stop(&self) {
        let State::Running {
            events,
            stats_ticker,
            outputs,
            _session,
            ..
        } = std::mem::take(&mut *lock(&self.state))
        else {
            return;
        };
        events.abort();
        stats_ticker.abort();
        drop(_session);
        let obj = self.obj();
        for output in outputs {
            let _ = output.src.set_state(gst::State::Null);
            let _ = output.ghost.set_active(false);
            let _ = obj.remove_pad(&output.ghost);
            let _ = obj.remove(&output.src);
        }
    }

    fn is_current(&self, generation: u64) -> bool {
        matches!(&*lock(&self.state), State::Running { generation: g, .. } if *g == generation)
    }

    fn handle_event(&self, generation: u64, event: SessionEvent) {
        if !self.is_current(generation) {
            return;
        }
        match event {
            SessionEvent::Tracks {
                outputs,
                alternatives,
            } => self.expose(generation, outputs, alternatives),
            SessionEvent::RenditionChanged {
                track,
                rendition,
                reason,
            } => {
                let pad_name = match &*lock(&self.state) {
                    State::Running { outputs, .. } => {
                        outputs.get(track).map(|o| o.ghost.name().to_string())
                    }
                    State::Stopped => None,
                };
                self.post_variant_changed(&pad_name.unwrap_or_default(), &rendition, reason);
            }
            SessionEvent::Warning(e @ (MeshError::Tracker { .. } | MeshError::Mesh(_))) => {
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::OpenRead,
                    ("{}", e),
                    ["{:?}", e]
                );
            }
            SessionEvent::Warning(e) => {
                gst::element_imp_warning!(self, gst::ResourceError::Read, ("{}", e), ["{:?}", e]);
            }
            SessionEvent::Error(e) => self.post_mesh_error(&e),
        }
    }

    fn stats(&self) -> StatsSnapshot {
        match &*lock(&self.state) {
            State::Running { _session, .. } => _session.stats(),
            State::Stopped => StatsSnapshot::default(),
        }
    }

    /// Posts the `mesh-statistics` element message.
    fn post_statistics(&self) {
        let structure = stats_structure(&self.stats());
        gst::debug!(CAT, imp = self, "{structure}");
        let obj = self.obj();
        let _ = obj.post_message(gst::message::Element::builder(structure).src(&*obj).build());
    }

    /// Posts the statistics once every pad has passed EOS.
    fn post_statistics_at_eos(&self, ghosts: &[gst::GhostPad]) {
        let remaining = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(ghosts.len()));
        for ghost in ghosts {
            let remaining = remaining.clone();
            let weak = self.obj().downgrade();
            ghost.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                if let Some(gst::PadProbeData::Event(event)) = &info.data
                    && event.type_() == gst::EventType::Eos
                    && remaining.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1
                    && let Some(obj) = weak.upgrade()
                {
                    obj.imp().post_statistics();
                }
                gst::PadProbeReturn::Ok
            });
        }
    }

    fn post_variant_changed(&self, pad_name: &str, rendition: &Rendition, reason: &str) {
        let structure = gst::Structure::builder("mesh-variant-changed")
            .field("pad-name", pad_name)
            .field("bandwidth", rendition.bandwidth)
            .field("uri", rendition.url.as_str())
            .field("reason", reason)
            .build();
        gst::info!(CAT, imp = self, "{structure}");
        let obj = self.obj();
        let _ = obj.post_message(gst::message::Element::builder(structure).src(&*obj).build());
    }

    /// Seeks every pad to one position, as adaptivedemux2 does: whichever pad the seek came
    /// up (or the element itself), each pad flushes and restarts with the seek's seqnum, and
    /// the same seek arriving again on another pad is done once. KEY_UNIT and SNAP flags snap
    /// the target to a segment start of the video track; the other tracks align to it.
    fn seek(&self, event: &gst::Event) -> bool {
        let gst::EventView::Seek(seek) = event.view() else {
            return false;
        };
        let seqnum = event.seqnum();
        let (rate, flags, start_type, start, stop_type, stop) = seek.get();
        if start.format() != gst::Format::Time || rate <= 0.0 {
            gst::debug!(
                CAT,
                imp = self,
                "refusing a seek at rate {rate} in {:?}",
                start.format()
            );
            return false;
        }
        let (srcs, target) = {
            let mut state = lock(&self.state);
            let State::Running {
                outputs,
                presentation,
                last_seek,
                ..
            } = &mut *state
            else {
                return false;
            };
            if *last_seek == Some(seqnum) {
                return true;
            }
            if outputs.is_empty() || !presentation.is_seekable() {
                gst::debug!(CAT, imp = self, "not seekable (live, or not started)");
                return false;
            }
            let requested = match (start_type, start.value()) {
                (gst::SeekType::Set, v) if v >= 0 => Duration::from_nanos(v as u64),
                (gst::SeekType::End, v) => presentation
                    .duration()
                    .unwrap_or_default()
                    .saturating_sub(Duration::from_nanos(v.unsigned_abs())),
                _ => presentation.position(),
            };
            let snap = if flags.contains(gst::SeekFlags::SNAP_NEAREST) {
                Some(Snap::Nearest)
            } else if flags.contains(gst::SeekFlags::SNAP_AFTER) {
                Some(Snap::After)
            } else if flags.intersects(gst::SeekFlags::KEY_UNIT | gst::SeekFlags::SNAP_BEFORE) {
                Some(Snap::Before)
            } else {
                None
            };
            let target = match snap {
                Some(snap) => presentation.snap(requested, snap),
                None => requested,
            };
            *last_seek = Some(seqnum);
            let srcs: Vec<StreamSrc> = outputs.iter().map(|o| o.src.clone()).collect();
            (srcs, target)
        };
        gst::info!(
            CAT,
            imp = self,
            "seek {seqnum:?} to {target:?} on {} pads",
            srcs.len()
        );
        // Each pad seeks to the one target: snapping is done.
        let pad_flags = flags
            - (gst::SeekFlags::KEY_UNIT
                | gst::SeekFlags::SNAP_BEFORE
                | gst::SeekFlags::SNAP_AFTER
                | gst::SeekFlags::SNAP_NEAREST);
        let target_time = gst::ClockTime::from_nseconds(target.as_nanos() as u64);
        let stop_time = match stop {
            gst::GenericFormattedValue::Time(t) => t,
            _ => None,
        };
        // Every pad stops before any restarts, as adaptivedemux2 does: downstream elements
        // that follow several of the streams (decodebin3, playsink) see one flush, not a
        // flush of one stream while the others still play.
        if flags.contains(gst::SeekFlags::FLUSH) {
            for src in &srcs {
                if let Some(pad) = src.static_pad("src") {
                    pad.push_event(gst::event::FlushStart::builder().seqnum(seqnum).build());
                }
            }
        }
        let mut done = true;
        for src in srcs {
            let pad_seek = gst::event::Seek::builder(
                rate,
                pad_flags,
                gst::SeekType::Set,
                target_time,
                stop_type,
                stop_time,
            )
            .seqnum(seqnum)
            .build();
            src.imp().set_seek_seqnum(seqnum);
            done &= src.send_event(pad_seek);
        }
        done
    }
}

fn stats_structure(stats: &StatsSnapshot) -> gst::Structure {
    gst::Structure::builder("mesh-statistics")
        .field("bytes-cdn", stats.bytes_cdn)
        .field("bytes-p2p", stats.bytes_p2p)
        .field("bytes-uploaded", stats.bytes_uploaded)
        .field("segments-cdn", stats.segments_cdn)
        .field("segments-p2p", stats.segments_p2p)
        .field("segments-rejected", stats.segments_rejected)
        .field("peers", stats.peers)
        .field("peers-banned", stats.peers_banned)
        .build()
}

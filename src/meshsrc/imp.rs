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
    Snap, TrackControl, TrackOutput,
};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use url::Url;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "meshsrc",
        gst::DebugColorFlags::empty(),
        Some("Mesh HLS source"),
    )
});

const DEFAULT_BANDWIDTH_TARGET_RATIO: f32 = 0.8;
const DEFAULT_MAX_BUFFERING_TIME: u64 = 30 * 1_000_000_000;
const DEFAULT_MAX_RETRIES: i32 = 3;
const DEFAULT_TIMEOUT: u32 = 15;
const DEFAULT_MAX_PEERS: u32 = 10;
// About 14 live segments of 2 s at 2.3 Mbit/s: enough for peers near the edge, small
// enough for set-top boxes.
const DEFAULT_CACHE_SIZE: u64 = 8 * 1024 * 1024;
const STATS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstMeshIntegrity")]
pub enum Integrity {
    #[default]
    #[enum_value(
        name = "Required: peer data must match the origin's published SHA-256",
        nick = "required"
    )]
    Required = 0,
    #[enum_value(name = "Off: accept unverified peer data", nick = "off")]
    Off = 1,
}

#[derive(Debug, Clone)]
struct Settings {
    location: Option<String>,
    connection_bitrate: u32,
    bandwidth_target_ratio: f32,
    min_bitrate: u32,
    max_bitrate: u32,
    start_bitrate: u32,
    max_buffering_time: u64,
    max_retries: i32,
    timeout: u32,
    user_agent: String,
    /// max-video-width/height/framerate and presentation-delay (DASH).
    dash: DashOptions,
    tracker: String,
    swarm_id: String,
    segment_hashes: String,
    integrity: Integrity,
    ice_address: String,
    stun_server: String,
    turn_server: String,
    max_peers: u32,
    upload: bool,
    max_upload_rate: u64,
    cache_size: u64,
    live_delay: u64,
    /// Codec families to prefer, most wanted first.
    codec_preference: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            location: None,
            connection_bitrate: 0,
            bandwidth_target_ratio: DEFAULT_BANDWIDTH_TARGET_RATIO,
            min_bitrate: 0,
            max_bitrate: 0,
            start_bitrate: 0,
            max_buffering_time: DEFAULT_MAX_BUFFERING_TIME,
            max_retries: DEFAULT_MAX_RETRIES,
            timeout: DEFAULT_TIMEOUT,
            user_agent: HttpConfig::default().user_agent,
            dash: DashOptions::default(),
            tracker: String::new(),
            swarm_id: String::new(),
            segment_hashes: String::new(),
            integrity: Integrity::Required,
            ice_address: String::new(),
            stun_server: String::new(),
            turn_server: String::new(),
            max_peers: DEFAULT_MAX_PEERS,
            upload: true,
            max_upload_rate: 0,
            cache_size: DEFAULT_CACHE_SIZE,
            live_delay: 0,
            codec_preference: String::new(),
        }
    }
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl Settings {
    fn session_config(&self) -> Result<SessionConfig, MeshError> {
        let location = self.location.clone().unwrap_or_default();
        let invalid = |reason: &str| MeshError::InvalidLocation {
            location: location.clone(),
            reason: reason.into(),
        };
        if location.is_empty() {
            return Err(invalid("no location set"));
        }
        let url = Url::parse(&location).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("only http and https manifests are supported"));
        }
        Ok(SessionConfig {
            location: url,
            abr: AbrConfig {
                connection_bitrate: self.connection_bitrate.into(),
                bandwidth_target_ratio: self.bandwidth_target_ratio.into(),
                min_bitrate: self.min_bitrate.into(),
                max_bitrate: self.max_bitrate.into(),
                start_bitrate: self.start_bitrate.into(),
            },
            http: HttpConfig {
                timeout: Duration::from_secs(self.timeout.max(1).into()),
                user_agent: self.user_agent.clone(),
            },
            scheduler: SchedulerConfig {
                max_retries: self.max_retries.max(0) as u32,
                ..SchedulerConfig::default()
            },
            max_buffering: Duration::from_nanos(self.max_buffering_time),
            dash: self.dash.clone(),
            live_delay: Duration::from_nanos(self.live_delay),
            mesh: self.mesh_config()?,
            codec_preference: split_list(&self.codec_preference)
                .map(str::to_ascii_lowercase)
                .collect(),
            codec_support: CodecSupport::new(decoder_exists),
        })
    }

    /// The mesh settings; None without a tracker (CDN only).
    fn mesh_config(&self) -> Result<Option<MeshSessionConfig>, MeshError> {
        let setting = |name: &str, value: &str, reason: String| MeshError::InvalidLocation {
            location: format!("{name}={value}"),
            reason,
        };
        let mut trackers = Vec::new();
        for t in split_list(&self.tracker) {
            let url = Url::parse(t).map_err(|e| setting("tracker", t, e.to_string()))?;
            if !matches!(url.scheme(), "ws" | "wss") {
                return Err(setting(
                    "tracker",
                    t,
                    "trackers are ws:// or wss:// URLs".into(),
                ));
            }
            trackers.push(url);
        }
        if trackers.is_empty() {
            return Ok(None);
        }
        let mut transport = TransportConfig::default();
        for a in split_list(&self.ice_address) {
            let ip = a
                .parse()
                .map_err(|e: std::net::AddrParseError| setting("ice-address", a, e.to_string()))?;
            transport.ice_addresses.push(ip);
        }
        for s in split_list(&self.stun_server) {
            let host = s
                .strip_prefix("stun://")
                .or_else(|| s.strip_prefix("stun:"))
                .ok_or_else(|| setting("stun-server", s, "expected stun://host:port".into()))?;
            transport.stun_servers.push(format!("stun:{host}"));
        }
        for t in split_list(&self.turn_server) {
            let turn =
                parse_turn_server(t).map_err(|e| setting("turn-server", t, e.to_string()))?;
            transport.turn_servers.push(turn);
        }
        let segment_hashes = match self.segment_hashes.trim() {
            "" => None,
            h => Some(Url::parse(h).map_err(|e| setting("segment-hashes", h, e.to_string()))?),
        };
        let swarm_id = Some(self.swarm_id.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(Some(MeshSessionConfig {
            delivery: MeshConfig {
                signalling: SignallingConfig {
                    trackers,
                    transport,
                    tracker: TrackerConfig::default(),
                    max_peers: self.max_peers as usize,
                },
                upload: self.upload,
                max_upload_rate: self.max_upload_rate,
                cache_size: self.cache_size.min(usize::MAX as u64) as usize,
            },
            swarm_id,
            segment_hashes,
            integrity_required: self.integrity == Integrity::Required,
        }))
    }
}

/// A pad the bin exposes and the internal source behind it.
struct Output {
    src: StreamSrc,
    ghost: gst::GhostPad,
    kind: TrackKind,
    control: Arc<TrackControl>,
    /// `Track::id` of the track the pad plays, or switches to after a stream selection.
    track: String,
}

/// A track of the stream collection.
struct Choice {
    stream: gst::Stream,
    track: Track,
}

/// The stream collection and the stream selection (GST_EVENT_SELECT_STREAMS).
struct Selection {
    collection: gst::StreamCollection,
    /// Every stream of the collection.
    choices: Vec<Choice>,
    /// The last select-streams event handled.
    seqnum: Option<gst::Seqnum>,
    /// A selection whose pads have not all started their new streams yet.
    pending: Option<PendingSelection>,
}

struct PendingSelection {
    seqnum: gst::Seqnum,
    /// Indexes into the outputs of the pads still to start their new stream.
    waiting: Vec<usize>,
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

    /// Adds one internal source and ghost pad per track, posts the stream collection (every
    /// track, the alternatives included) and the initial selection, then signals
    /// no-more-pads.
    fn expose(&self, generation: u64, tracks: Vec<TrackOutput>, alternatives: Vec<Track>) {
        let obj = self.obj();
        let group_id = gst::GroupId::next();
        let location = lock(&self.settings).location.clone().unwrap_or_default();
        let id_base = stream_id_base(&location);

        // The collection: each pad's track, then the tracks a selection can switch it to.
        let mut choices = Vec::new();
        for t in &tracks {
            choices.push(Choice {
                stream: stream_of(&id_base, &t.track, t.initial_rendition, true),
                track: t.track.clone(),
            });
            for alt in alternatives.iter().filter(|a| a.kind == t.kind) {
                if choices
                    .iter()
                    .any(|c| c.track.kind == alt.kind && c.track.id == alt.id)
                {
                    continue;
                }
                choices.push(Choice {
                    stream: stream_of(&id_base, alt, alt.default_rendition, false),
                    track: alt.clone(),
                });
            }
        }
        let collection = gst::StreamCollection::builder(Some(&location))
            .streams(choices.iter().map(|c| c.stream.clone()))
            .build();
        // Several pads of one stream each: answer decodebin3's SELECTABLE query and put the
        // whole collection on every pad, as adaptivedemux2 does. Otherwise GStreamer 1.22's
        // decodebin3 selects each pad's stream as its collection arrives, and playbin3, on a
        // late streams-selected of the first alone, unlinks the other's output (not-linked).
        let selectable = tracks.len() > 1 && tracks.iter().all(|t| !t.track.muxed);

        let presentation = Arc::new(PresentationControl::new(
            tracks.iter().map(|t| (t.kind, t.control.clone())).collect(),
        ));
        let flows = match &*lock(&self.state) {
            State::Running { flows, .. } => flows.clone(),
            State::Stopped => return,
        };
        let mut counters = [0u32; 3];
        let mut outputs = Vec::new();
        let mut initial_choices = Vec::new();
        for track in tracks {
            let slot = match track.kind {
                TrackKind::Video => 0,
                TrackKind::Audio => 1,
                TrackKind::Subtitle => 2,
            };
            let name = format!("{}_{:02}", track.kind.pad_prefix(), counters[slot]);
            counters[slot] += 1;
            if let Some(rendition) = track.track.renditions.get(track.initial_rendition) {
                initial_choices.push((name.clone(), rendition.clone()));
            }
            let streams = choices
                .iter()
                .filter(|c| c.track.kind == track.kind)
                .map(|c| (c.track.id.clone(), c.stream.clone()))
                .collect();
            let kind = track.kind;
            let control = track.control.clone();
            let track_id = track.track.id.clone();
            let src = StreamSrc::new(
                &format!("{name}-src"),
                track,
                PadStreams {
                    streams,
                    collection: collection.clone(),
                    group_id,
                    selectable,
                    presentation: presentation.clone(),
                },
            );
            let templ = obj
                .pad_template(&format!("{}_%02u", kind.pad_prefix()))
                .expect("template exists");
            let pad_flows = flows.clone();
            let pad_presentation = presentation.clone();
            let slot = flows.add_pad();
            let ghost = gst::GhostPad::builder_from_template(&templ)
                .name(name.as_str())
                .proxy_pad_chain_function(move |pad, parent, buffer| {
                    let result = gst::ProxyPad::chain_default(pad, parent, buffer);
                    if kind != TrackKind::Subtitle {
                        pad_presentation.mark_media_started();
                    }
                    pad_flows.combine(slot, result)
                })
                .build();
            outputs.push(Output {
                src,
                ghost,
                kind,
                control,
                track: track_id,
            });
        }
        let selected: Vec<gst::Stream> = outputs
            .iter()
            .filter_map(|o| stream_for(&choices, o))
            .collect();
        // Register the outputs first so stop() removes them even if we are interrupted here.
        let ghosts: Vec<gst::GhostPad> = outputs.iter().map(|o| o.ghost.clone()).collect();
        let srcs: Vec<StreamSrc> = outputs.iter().map(|o| o.src.clone()).collect();
        {
            let mut state = lock(&self.state);
            match &mut *state {
                State::Running {
                    generation: g,
                    outputs: slot,
                    selection,
                    presentation: slot_presentation,
                    ..
                } if *g == generation => {
                    slot.extend(outputs);
                    *slot_presentation = presentation;
                    *selection = Some(Selection {
                        collection: collection.clone(),
                        choices,
                        seqnum: None,
                        pending: None,
                    });
                }
                _ => return,
            }
        }
        for (index, (src, ghost)) in srcs.iter().zip(&ghosts).enumerate() {
            let target = src.static_pad("src").expect("push sources have a src pad");
            let exposed = obj
                .add(src)
                .and_then(|_| ghost.set_target(Some(&target)))
                .and_then(|_| ghost.set_active(true))
                .and_then(|_| obj.add_pad(ghost));
            if let Err(e) = exposed {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Pad,
                    ("Cannot expose pad {}: {}", ghost.name(), e)
                );
                return;
            }
            self.watch_stream_starts(&target, index);
        }
        let _ = obj.post_message(
            gst::message::StreamCollection::builder(&collection)
                .src(&*obj)
                .build(),
        );
        // The default selection, as adaptivedemux2 announces it.
        let _ = obj.post_message(
            gst::message::StreamsSelected::builder(&collection)
                .streams(selected)
                .src(&*obj)
                .build(),
        );
        // Posted before any pad runs, so it always precedes the data.
        for (pad_name, rendition) in &initial_choices {
            self.post_variant_changed(pad_name, rendition, "initial");
        }
        self.post_statistics_at_eos(&ghosts);
        for src in &srcs {
            let _ = src.sync_state_with_parent();
        }
        obj.no_more_pads();
    }

    /// Handles GST_EVENT_SELECT_STREAMS as adaptivedemux2 does: unknown stream ids refuse
    /// the whole selection; each pad switches to the selected stream of its kind from the
    /// segment after the one it last output, and `streams-selected` follows once every
    /// switched pad has started its new stream. A kind left out keeps its stream (the pads
    /// are fixed once exposed); of several streams of one kind the first one counts.
    fn select_streams(&self, ids: &[String], seqnum: gst::Seqnum) -> bool {
        let mut switches = Vec::new();
        let ready = {
            let mut state = lock(&self.state);
            let State::Running {
                outputs,
                selection: Some(selection),
                ..
            } = &mut *state
            else {
                gst::warning!(
                    CAT,
                    imp = self,
                    "select-streams before the stream collection"
                );
                return false;
            };
            if selection.seqnum == Some(seqnum) {
                return true;
            }
            let mut chosen = Vec::new();
            for id in ids {
                let Some(choice) = selection
                    .choices
                    .iter()
                    .find(|c| c.stream.stream_id().is_some_and(|s| s.as_str() == id))
                else {
                    gst::warning!(CAT, imp = self, "select-streams: unknown stream id {id:?}");
                    return false;
                };
                chosen.push(choice);
            }
            selection.seqnum = Some(seqnum);
            let mut waiting = Vec::new();
            for (index, output) in outputs.iter_mut().enumerate() {
                let mut of_kind = chosen.iter().filter(|c| c.track.kind == output.kind);
                let Some(choice) = of_kind.next() else {
                    continue;
                };
                if of_kind.next().is_some() {
                    gst::info!(
                        CAT,
                        imp = self,
                        "{} plays one stream: {:?}",
                        output.ghost.name(),
                        choice.stream.stream_id()
                    );
                }
                if choice.track.id == output.track {
                    continue;
                }
                gst::info!(
                    CAT,
                    imp = self,
                    "{} switches to {:?}",
                    output.ghost.name(),
                    choice.stream.stream_id()
                );
                output.track = choice.track.id.clone();
                switches.push((output.control.clone(), choice.track.clone()));
                // A pad past EOS starts the new stream only after a seek back.
                let eos = output
                    .src
                    .static_pad("src")
                    .is_some_and(|p| p.pad_flags().contains(gst::PadFlags::EOS));
                if !eos {
                    waiting.push(index);
                }
            }
            if waiting.is_empty() {
                selection.pending = None;
                Some(streams_selected(&self.obj(), selection, outputs, seqnum))
            } else {
                selection.pending = Some(PendingSelection { seqnum, waiting });
                None
            }
        };
        for (control, track) in switches {
            control.switch_track(track);
        }
        if let Some(message) = ready {
            let _ = self.obj().post_message(message);
        }
        true
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

    /// Completes a pending selection when a switched pad starts its new stream.
    fn watch_stream_starts(&self, pad: &gst::Pad, index: usize) {
        let weak = self.obj().downgrade();
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(event)) = &info.data
                && let gst::EventView::StreamStart(start) = event.view()
                && let Some(obj) = weak.upgrade()
            {
                obj.imp().stream_started(index, start.stream_id());
            }
            gst::PadProbeReturn::Ok
        });
    }

    fn stream_started(&self, index: usize, stream_id: &str) {
        let message = {
            let mut state = lock(&self.state);
            let State::Running {
                outputs,
                selection: Some(selection),
                ..
            } = &mut *state
            else {
                return;
            };
            let Some(pending) = &mut selection.pending else {
                return;
            };
            let expected = outputs
                .get(index)
                .and_then(|o| stream_for(&selection.choices, o));
            if expected.and_then(|s| s.stream_id()).as_deref() != Some(stream_id) {
                return;
            }
            pending.waiting.retain(|i| *i != index);
            if !pending.waiting.is_empty() {
                return;
            }
            let seqnum = pending.seqnum;
            selection.pending = None;
            streams_selected(&self.obj(), selection, outputs, seqnum)
        };
        let _ = self.obj().post_message(message);
    }

    fn post_mesh_error(&self, e: &MeshError) {
        gst::warning!(CAT, imp = self, "error: {e}");
        let details = |status: u16, url: &str| {
            gst::Structure::builder("mesh-error-details")
                .field("http-status-code", status as u32)
                .field("uri", url)
                .build()
        };
        match e {
            MeshError::HttpStatus { url, status } => {
                let details = details(*status, url);
                match status {
                    404 | 410 => {
                        gst::element_imp_error!(self, gst::ResourceError::NotFound, ("{}", e), ["{:?}", e], details: details)
                    }
                    401 | 403 => {
                        gst::element_imp_error!(self, gst::ResourceError::NotAuthorized, ("{}", e), ["{:?}", e], details: details)
                    }
                    _ => {
                        gst::element_imp_error!(self, gst::ResourceError::OpenRead, ("{}", e), ["{:?}", e], details: details)
                    }
                }
            }
            MeshError::Connect { .. } => {
                gst::element_imp_error!(self, gst::ResourceError::OpenRead, ("{}", e), ["{:?}", e])
            }
            MeshError::Timeout { .. } | MeshError::Read { .. } => {
                gst::element_imp_error!(self, gst::ResourceError::Read, ("{}", e), ["{:?}", e])
            }
            MeshError::InvalidPlaylist { .. } => {
                gst::element_imp_error!(self, gst::StreamError::Decode, ("{}", e), ["{:?}", e])
            }
            MeshError::Key { .. } | MeshError::Decrypt { .. } => {
                gst::element_imp_error!(self, gst::StreamError::Decrypt, ("{}", e), ["{:?}", e])
            }
            MeshError::Unsupported(_) => {
                gst::element_imp_error!(self, gst::StreamError::Format, ("{}", e), ["{:?}", e])
            }
            MeshError::NoDecoder { .. } => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::CodecNotFound,
                    ("{}", e),
                    ["{:?}", e]
                )
            }
            MeshError::Tracker { .. } | MeshError::Mesh(_) => {
                gst::element_imp_error!(self, gst::ResourceError::Failed, ("{}", e), ["{:?}", e])
            }
            MeshError::InvalidLocation { .. } => {
                gst::element_imp_error!(self, gst::ResourceError::Settings, ("{}", e), ["{:?}", e])
            }
        }
    }
}

/// Which pads' last push found nobody linked downstream, so that one pad nobody links (a text
/// track under playbin3, audio under `meshsrc ! decodebin`) never stops the others, as
/// adaptivedemux2's flow combiner does. Only not-linked is combined: each pad has its own
/// streaming thread, so a flushing or ended pad stops itself alone.
#[derive(Debug, Default)]
struct NotLinked {
    pads: Mutex<Vec<bool>>,
}

impl NotLinked {
    /// A slot for one more pad.
    fn add_pad(&self) -> usize {
        let mut pads = lock(&self.pads);
        pads.push(false);
        pads.len() - 1
    }

    fn combine(
        &self,
        slot: usize,
        result: Result<gst::FlowSuccess, gst::FlowError>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let not_linked = result == Err(gst::FlowError::NotLinked);
        let mut pads = lock(&self.pads);
        if let Some(p) = pads.get_mut(slot) {
            *p = not_linked;
        }
        if not_linked && pads.iter().any(|p| !p) {
            return Ok(gst::FlowSuccess::Ok);
        }
        result
    }
}

/// The stream of the track `output` plays (or switches to).
fn stream_for(choices: &[Choice], output: &Output) -> Option<gst::Stream> {
    choices
        .iter()
        .find(|c| c.track.kind == output.kind && c.track.id == output.track)
        .map(|c| c.stream.clone())
}

/// `streams-selected` for the streams the pads now play, answering select-streams `seqnum`.
fn streams_selected(
    src: &super::MeshSrc,
    selection: &Selection,
    outputs: &[Output],
    seqnum: gst::Seqnum,
) -> gst::Message {
    let streams: Vec<gst::Stream> = outputs
        .iter()
        .filter_map(|o| stream_for(&selection.choices, o))
        .collect();
    gst::message::StreamsSelected::builder(&selection.collection)
        .streams(streams)
        .seqnum(seqnum)
        .src(src)
        .build()
}

/// The common part of this presentation's stream ids: the SHA-256 of the manifest URL, as
/// `gst_pad_create_stream_id()` does with a source's URI, so ids are the same every run.
fn stream_id_base(location: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(location.as_bytes()))
}

/// The collection's stream for `track`: type, flags, caps from its codec when there is one,
/// and language and name tags.
fn stream_of(id_base: &str, track: &Track, rendition: usize, selected: bool) -> gst::Stream {
    let stream_type = match track.kind {
        TrackKind::Video if track.muxed => gst::StreamType::VIDEO | gst::StreamType::AUDIO,
        TrackKind::Video => gst::StreamType::VIDEO,
        TrackKind::Audio => gst::StreamType::AUDIO,
        TrackKind::Subtitle => gst::StreamType::TEXT,
    };
    let mut flags = gst::StreamFlags::empty();
    if selected {
        flags |= gst::StreamFlags::SELECT;
    }
    if track.kind == TrackKind::Subtitle {
        flags |= gst::StreamFlags::SPARSE;
    }
    let rendition = track.renditions.get(rendition).or(track.renditions.first());
    let caps = rendition
        .and_then(|r| r.codecs.as_deref())
        .and_then(codec_caps);
    let id = format!("{id_base}/{}-{}", track.kind.pad_prefix(), track.id);
    let stream = gst::Stream::new(Some(&id), caps.as_ref(), stream_type, flags);
    let mut tags = gst::TagList::new();
    {
        let tags = tags.get_mut().expect("new tag list is writable");
        if let Some(lang) = rendition.and_then(|r| r.language.as_deref()) {
            let primary = lang.split(['-', '_']).next().unwrap_or(lang);
            if (2..=3).contains(&primary.len()) && primary.chars().all(|c| c.is_ascii_alphabetic())
            {
                let code = primary.to_ascii_lowercase();
                tags.add::<gst::tags::LanguageCode>(&code.as_str(), gst::TagMergeMode::Replace);
            }
            if !lang.eq_ignore_ascii_case(primary) || primary.len() > 3 {
                tags.add::<gst::tags::LanguageName>(&lang, gst::TagMergeMode::Replace);
            }
        }
        if let Some(name) = rendition.and_then(|r| r.name.as_deref()) {
            tags.add::<gst::tags::Title>(&name, gst::TagMergeMode::Replace);
        }
    }
    if tags.n_tags() > 0 {
        stream.set_tags(Some(&tags));
    }
    stream
}

/// Whether the registry has a decoder for a codec family (`avc`, `aac`, …); families it
/// cannot name caps for (text) count as decodable.
fn decoder_exists(family: &str) -> bool {
    let caps = match family {
        "avc" => gst::Caps::new_empty_simple("video/x-h264"),
        "hevc" | "dolby-vision" => gst::Caps::new_empty_simple("video/x-h265"),
        "vp9" => gst::Caps::new_empty_simple("video/x-vp9"),
        "vp8" => gst::Caps::new_empty_simple("video/x-vp8"),
        "av1" => gst::Caps::new_empty_simple("video/x-av1"),
        "aac" => gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .build(),
        "mp3" => gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 1i32)
            .field("layer", 3i32)
            .build(),
        "ac3" => gst::Caps::new_empty_simple("audio/x-ac3"),
        "eac3" => gst::Caps::new_empty_simple("audio/x-eac3"),
        "opus" => gst::Caps::new_empty_simple("audio/x-opus"),
        "flac" => gst::Caps::new_empty_simple("audio/x-flac"),
        _ => return true,
    };
    gst::ElementFactory::factories_with_type(gst::ElementFactoryType::DECODER, gst::Rank::MARGINAL)
        .iter()
        .any(|f| f.can_sink_any_caps(&caps))
}

/// Elementary caps for a single RFC 6381 codec string, as dashdemux2 gives its tracks;
/// None for lists (muxed content) and unknown codecs.
fn codec_caps(codecs: &str) -> Option<gst::Caps> {
    let mut list = codecs.split(',').map(str::trim).filter(|c| !c.is_empty());
    let codec = list.next()?;
    if list.next().is_some() {
        return None;
    }
    let (fourcc, rest) = codec.split_once('.').unwrap_or((codec, ""));
    let caps = match fourcc {
        "avc1" | "avc3" => gst::Caps::builder("video/x-h264")
            .field(
                "stream-format",
                if fourcc == "avc1" { "avc" } else { "avc3" },
            )
            .field("alignment", "au")
            .build(),
        "hvc1" | "hev1" => gst::Caps::builder("video/x-h265")
            .field("stream-format", fourcc)
            .field("alignment", "au")
            .build(),
        "vp09" => gst::Caps::new_empty_simple("video/x-vp9"),
        "vp08" | "vp8" => gst::Caps::new_empty_simple("video/x-vp8"),
        "av01" => gst::Caps::new_empty_simple("video/x-av1"),
        "mp4a" if matches!(rest, "69" | "6B" | "6b" | "40.34") => gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 1i32)
            .field("layer", 3i32)
            .build(),
        "mp4a" => gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .build(),
        "mp3" => gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 1i32)
            .field("layer", 3i32)
            .build(),
        "ac-3" => gst::Caps::new_empty_simple("audio/x-ac3"),
        "ec-3" => gst::Caps::new_empty_simple("audio/x-eac3"),
        "opus" | "Opus" => gst::Caps::new_empty_simple("audio/x-opus"),
        "flac" | "fLaC" => gst::Caps::new_empty_simple("audio/x-flac"),
        "wvtt" => gst::Caps::new_empty_simple("application/x-subtitle-vtt"),
        "stpp" => gst::Caps::new_empty_simple("application/ttml+xml"),
        _ => return None,
    };
    Some(caps)
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

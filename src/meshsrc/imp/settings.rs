//! The element's settings: property defaults, the values set, and the session
//! configuration they make.

use super::*;

pub(super) const DEFAULT_BANDWIDTH_TARGET_RATIO: f32 = 0.8;
pub(super) const DEFAULT_MAX_BUFFERING_TIME: u64 = 30 * 1_000_000_000;
pub(super) const DEFAULT_MAX_RETRIES: i32 = 3;
pub(super) const DEFAULT_TIMEOUT: u32 = 15;
pub(super) const DEFAULT_MAX_PEERS: u32 = 10;
// About 14 live segments of 2 s at 2.3 Mbit/s: enough for peers near the edge, small
// enough for set-top boxes.
pub(super) const DEFAULT_CACHE_SIZE: u64 = 8 * 1024 * 1024;

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
pub(super) struct Settings {
    pub(super) location: Option<String>,
    pub(super) connection_bitrate: u32,
    pub(super) bandwidth_target_ratio: f32,
    pub(super) min_bitrate: u32,
    pub(super) max_bitrate: u32,
    pub(super) start_bitrate: u32,
    pub(super) max_buffering_time: u64,
    pub(super) max_retries: i32,
    pub(super) timeout: u32,
    pub(super) user_agent: String,
    /// max-video-width/height/framerate and presentation-delay (DASH).
    pub(super) dash: DashOptions,
    pub(super) tracker: String,
    pub(super) swarm_id: String,
    pub(super) segment_hashes: String,
    pub(super) integrity: Integrity,
    pub(super) ice_address: String,
    pub(super) stun_server: String,
    pub(super) turn_server: String,
    pub(super) max_peers: u32,
    pub(super) upload: bool,
    pub(super) max_upload_rate: u64,
    pub(super) cache_size: u64,
    pub(super) live_delay: u64,
    /// Codec families to prefer, most wanted first.
    pub(super) codec_preference: String,
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

pub(super) fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl Settings {
    pub(super) fn session_config(&self) -> Result<SessionConfig, MeshError> {
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
    pub(super) fn mesh_config(&self) -> Result<Option<MeshSessionConfig>, MeshError> {
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

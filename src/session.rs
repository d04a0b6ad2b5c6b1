//! A playback session: loads the manifest, then runs one driver task per track that chooses
//! renditions, follows live playlists and hands whole segments to the GStreamer glue through
//! bounded channels. No GStreamer types here.

use crate::abr::{self, AbrConfig, ThroughputEstimator};
use crate::crypto;
use crate::dash;
use crate::delivery::{Delivery, MeshConfig, MeshStats, StatsSnapshot};
use crate::error::MeshError;
use crate::fetch::{Fetched, HttpConfig};
use crate::hls::{self, Manifest};
use crate::mesh::integrity::{SegmentHashes, Sha256Hash};
use crate::mesh::swarm::Swarm;
use crate::model::{
    ByteRange, Encryption, MediaTimeline, Rendition, RenditionSource, Resource, Segment, Track,
    TrackKind,
};
use crate::scheduler::{SchedulerConfig, SegmentRequest, Share, ShareKey};
use bytes::Bytes;
use mesh_core::playback::{
    self as playback, Deadlines, HashRefetch, MAX_FAILED_RELOADS, ReloadFailure, Reloads,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use url::Url;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub location: Url,
    pub abr: AbrConfig,
    pub http: HttpConfig,
    pub scheduler: SchedulerConfig,
    /// How far ahead of the playback position segments are fetched.
    pub max_buffering: Duration,
    /// DASH representation limits and live presentation delay.
    pub dash: dash::DashOptions,
    /// Live playback starts at least this far behind the edge (when more than the playlist's
    /// hold-back), to give peers time.
    pub live_delay: Duration,
    /// Peer-to-peer delivery; None for CDN only.
    pub mesh: Option<MeshSessionConfig>,
    /// Codec families to prefer when the variants use several (`hevc`, `avc`, …).
    pub codec_preference: Vec<String>,
    pub codec_support: CodecSupport,
}

/// Tells whether a codec family (`avc`, `aac`, …) can be decoded here; the glue asks the
/// GStreamer registry.
#[derive(Clone)]
pub struct CodecSupport(Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl CodecSupport {
    pub fn new(decodes: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        CodecSupport(Arc::new(decodes))
    }

    pub fn decodes(&self, family: &str) -> bool {
        (self.0)(family)
    }
}

impl Default for CodecSupport {
    fn default() -> Self {
        CodecSupport::new(|_| true)
    }
}

impl std::fmt::Debug for CodecSupport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodecSupport")
    }
}

#[derive(Debug, Clone)]
pub struct MeshSessionConfig {
    pub delivery: MeshConfig,
    /// Replaces the manifest URL as the base of swarm identities.
    pub swarm_id: Option<String>,
    /// URL of the origin's `segments-sha256.json`.
    pub segment_hashes: Option<Url>,
    /// Peer data must match a published hash.
    pub integrity_required: bool,
}

/// A whole segment (or init section) for one track, or the end of the track.
#[derive(Debug, Clone)]
pub enum StreamItem {
    Data(Chunk),
    Eos { epoch: u64 },
}

#[derive(Debug, Clone)]
pub struct Chunk {
    /// Items from before the latest seek carry an older epoch and are dropped.
    pub epoch: u64,
    pub bytes: Bytes,
    /// Presentation time of the segment's first byte; None for init sections.
    pub pts: Option<Duration>,
    pub duration: Option<Duration>,
    /// Data does not follow on from the previous chunk (seek, switch, skipped segment).
    pub discont: bool,
    /// Timestamps restart (EXT-X-DISCONTINUITY): downstream needs a new segment.
    pub timestamps_restart: bool,
    /// The time the media's first sample carries at `pts`, when the manifest says (DASH);
    /// otherwise the glue reads it from the segment.
    pub media_time: Option<Duration>,
    pub sequence: Option<u64>,
    /// [`Track::id`] of the track the bytes belong to; it changes when a stream selection
    /// switches the pad to another track.
    pub track: Arc<str>,
}

#[derive(Debug)]
pub enum SessionEvent {
    /// The tracks to expose, in manifest order, and the tracks a stream selection can switch
    /// them to. Sent once.
    Tracks {
        outputs: Vec<TrackOutput>,
        alternatives: Vec<Track>,
    },
    RenditionChanged {
        track: usize,
        rendition: Box<Rendition>,
        reason: &'static str,
    },
    Warning(MeshError),
    Error(MeshError),
}

#[derive(Debug)]
pub struct TrackOutput {
    pub kind: TrackKind,
    pub track: Track,
    /// Index of the rendition the track starts with.
    pub initial_rendition: usize,
    pub items: mpsc::Receiver<StreamItem>,
    pub control: Arc<TrackControl>,
}

/// Shared between a track's driver and its pad: seeks, playback position and timeline facts.
#[derive(Debug, Default)]
pub struct TrackControl {
    state: Mutex<ControlState>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct ControlState {
    epoch: u64,
    pending_seek: Option<Duration>,
    /// The track a stream selection switches to.
    pending_switch: Option<Track>,
    /// The last media chunk the pad took; cleared by a seek.
    taken: Option<Taken>,
    /// Start times of the current rendition's segments (VOD), for snapping seeks.
    segment_starts: Vec<Duration>,
    duration: Option<Duration>,
    is_live: bool,
    /// Presentation time of the newest chunk the pad has taken.
    played: Duration,
}

/// A media chunk the pad took, where a track switch continues from.
#[derive(Debug, Clone, Copy)]
struct Taken {
    epoch: u64,
    sequence: u64,
    end_pts: Duration,
}

impl TrackControl {
    fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Restarts output at the segment containing `target`. Returns the new epoch and the
    /// start of that segment, where output will resume.
    pub fn seek(&self, target: Duration) -> (u64, Duration) {
        let mut state = self.lock();
        state.epoch += 1;
        state.pending_seek = Some(target);
        let snapped = state
            .segment_starts
            .iter()
            .rev()
            .find(|s| **s <= target)
            .copied()
            .unwrap_or_default();
        state.played = snapped;
        state.taken = None;
        let epoch = state.epoch;
        drop(state);
        self.changed.notify_waiters();
        (epoch, snapped)
    }

    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Total duration for VOD, None for live or before the playlist loaded.
    pub fn duration(&self) -> Option<Duration> {
        let state = self.lock();
        if state.is_live { None } else { state.duration }
    }

    pub fn is_seekable(&self) -> bool {
        let state = self.lock();
        !state.is_live && state.duration.is_some()
    }

    /// Switches the pad to `track` (a stream selection): output continues with its segment
    /// that follows the last one the pad took, and what was queued for the old track is
    /// dropped. Returns the new epoch.
    pub fn switch_track(&self, track: Track) -> u64 {
        let mut state = self.lock();
        state.epoch += 1;
        state.pending_switch = Some(track);
        let epoch = state.epoch;
        drop(state);
        self.changed.notify_waiters();
        epoch
    }

    /// Whether the pad outputs items of `epoch` (the latest seek or switch).
    pub fn is_current(&self, epoch: u64) -> bool {
        self.lock().epoch == epoch
    }

    /// Called by the pad for each chunk: false when the chunk is from before the latest seek
    /// or switch and must be dropped. Otherwise it counts as played, in one step with the
    /// check so that a switch never misses a chunk that still goes out.
    pub fn take(&self, chunk: &Chunk) -> bool {
        let mut state = self.lock();
        if chunk.epoch != state.epoch {
            return false;
        }
        if let Some(pts) = chunk.pts {
            state.played = pts;
            if let Some(sequence) = chunk.sequence {
                state.taken = Some(Taken {
                    epoch: chunk.epoch,
                    sequence,
                    end_pts: pts + chunk.duration.unwrap_or_default(),
                });
            }
        }
        drop(state);
        self.changed.notify_waiters();
        true
    }

    fn take_switch(&self) -> Option<(u64, Track)> {
        let mut state = self.lock();
        state.pending_switch.take().map(|t| (state.epoch, t))
    }

    fn taken(&self) -> Option<Taken> {
        self.lock().taken
    }

    /// Presentation time of the newest chunk the pad has taken (or where a seek resumes).
    pub fn played(&self) -> Duration {
        self.lock().played
    }

    fn take_seek(&self) -> Option<(u64, Duration)> {
        let mut state = self.lock();
        state.pending_seek.take().map(|t| (state.epoch, t))
    }

    fn set_timeline(&self, timeline: &MediaTimeline) {
        let mut state = self.lock();
        state.is_live = timeline.is_live;
        state.duration = Some(timeline.duration());
        state.segment_starts = timeline.segments.iter().map(|s| s.start).collect();
    }
}

/// How a key-unit seek snaps its target to a segment start of the reference track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snap {
    /// The segment containing the target (its start is at or before it).
    Before,
    /// The first segment starting at or after the target.
    After,
    /// Whichever segment start is nearer.
    Nearest,
}

/// Pads that push their first buffers one after another: a pad starts once the player
/// has set up the outputs of the pads before it (see meshsrc's `StartWatch`).
#[derive(Debug)]
pub struct StartOrder {
    /// The pads in the order.
    pads: usize,
    progress: tokio::sync::watch::Sender<StartProgress>,
}

#[derive(Debug, Default, Clone, Copy)]
struct StartProgress {
    /// Pads allowed to start after the first.
    released: usize,
    /// Decoded outputs the player has exposed.
    exposed: usize,
    /// The element stopped: nothing waits any more.
    stopped: bool,
}

impl StartOrder {
    pub fn new(pads: usize) -> Self {
        StartOrder {
            pads,
            progress: tokio::sync::watch::Sender::new(StartProgress::default()),
        }
    }

    /// Waits until the pad at `turn` in the order may push its first buffer.
    pub async fn wait_turn(&self, turn: usize) {
        let mut progress = self.progress.subscribe();
        let _ = progress.wait_for(|p| p.stopped || p.released >= turn).await;
    }

    /// The player exposed one more decoded output.
    pub fn output_exposed(&self) {
        self.progress.send_modify(|p| p.exposed += 1);
    }

    /// Lets the next pad start, if one waits; returns the number of outputs exposed so
    /// far, which its output will exceed.
    pub fn release_next(&self) -> Option<usize> {
        let mut exposed = None;
        self.progress.send_if_modified(|p| {
            if p.stopped || p.released + 1 >= self.pads {
                return false;
            }
            p.released += 1;
            exposed = Some(p.exposed);
            true
        });
        exposed
    }

    /// Waits until more than `seen` outputs are exposed, or the element stopped.
    pub async fn wait_exposed_beyond(&self, seen: usize) {
        let mut progress = self.progress.subscribe();
        let _ = progress.wait_for(|p| p.stopped || p.exposed > seen).await;
    }

    pub fn stop(&self) {
        self.progress.send_modify(|p| p.stopped = true);
    }
}

/// The tracks of one presentation seen together, so that every pad answers position,
/// duration and seeking queries alike and one seek moves them all.
#[derive(Debug, Default)]
pub struct PresentationControl {
    /// Every track's control, in pad order; the first video track is the reference.
    tracks: Vec<(TrackKind, Arc<TrackControl>)>,
    /// A pad other than text has pushed its first buffer.
    media_started: std::sync::atomic::AtomicBool,
    started: Notify,
    /// When the pads start one after another.
    start_order: Option<Arc<StartOrder>>,
}

impl PresentationControl {
    pub fn new(
        tracks: Vec<(TrackKind, Arc<TrackControl>)>,
        start_order: Option<Arc<StartOrder>>,
    ) -> Self {
        PresentationControl {
            tracks,
            start_order,
            ..Default::default()
        }
    }

    pub fn start_order(&self) -> Option<&StartOrder> {
        self.start_order.as_deref()
    }

    /// Called once a pad other than text has pushed a buffer downstream.
    pub fn mark_media_started(&self) {
        use std::sync::atomic::Ordering;
        if !self.media_started.swap(true, Ordering::AcqRel) {
            self.started.notify_waiters();
        }
    }

    /// Waits until a pad other than text has pushed a buffer; at once when there is none.
    /// playbin3 (1.22) takes a text stream that starts first for a subtitle file and fails
    /// with "Can't play a text file without video".
    pub async fn wait_media_started(&self) {
        use std::sync::atomic::Ordering;
        if !self
            .tracks
            .iter()
            .any(|(kind, _)| *kind != TrackKind::Subtitle)
        {
            return;
        }
        loop {
            let notified = self.started.notified();
            if self.media_started.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// The track key-unit seeks snap to: the first video track, else the first one.
    fn reference(&self) -> Option<&TrackControl> {
        self.tracks
            .iter()
            .find(|(kind, _)| *kind == TrackKind::Video)
            .or(self.tracks.first())
            .map(|(_, c)| c.as_ref())
    }

    /// VOD: the longest track. None for live or before every playlist loaded.
    pub fn duration(&self) -> Option<Duration> {
        self.tracks
            .iter()
            .map(|(_, c)| c.duration())
            .try_fold(Duration::ZERO, |longest, d| d.map(|d| longest.max(d)))
            .filter(|_| !self.tracks.is_empty())
    }

    pub fn is_seekable(&self) -> bool {
        !self.tracks.is_empty() && self.tracks.iter().all(|(_, c)| c.is_seekable())
    }

    /// Where playback is: the earliest of the non-text tracks' newest output.
    pub fn position(&self) -> Duration {
        self.tracks
            .iter()
            .filter(|(kind, _)| *kind != TrackKind::Subtitle)
            .map(|(_, c)| c.played())
            .min()
            .unwrap_or_default()
    }

    /// `target` moved to a segment start of the reference track.
    pub fn snap(&self, target: Duration, snap: Snap) -> Duration {
        let Some(reference) = self.reference() else {
            return target;
        };
        let starts = reference.lock().segment_starts.clone();
        let before = starts.iter().rev().find(|s| **s <= target).copied();
        let after = starts.iter().find(|s| **s >= target).copied();
        match (snap, before, after) {
            (Snap::After, _, Some(after)) => after,
            (Snap::Nearest, Some(before), Some(after)) => {
                if target - before <= after - target {
                    before
                } else {
                    after
                }
            }
            (_, Some(before), _) => before,
            (_, None, after) => after.unwrap_or(target),
        }
    }
}

/// A running session; dropping it stops every task.
pub struct Session {
    tasks: JoinSet<()>,
    stats: Arc<MeshStats>,
}

impl Session {
    /// Starts the session on `runtime`. Events arrive on `events` until the session ends.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        config: SessionConfig,
        events: mpsc::Sender<SessionEvent>,
    ) -> Session {
        let mut tasks = JoinSet::new();
        let stats = Arc::new(MeshStats::default());
        tasks.spawn_on(run(config, events, stats.clone()), runtime);
        Session { tasks, stats }
    }

    /// Where the bytes came from so far, and the peers.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

struct Context {
    delivery: Delivery,
    config: SessionConfig,
    events: mpsc::Sender<SessionEvent>,
    keys: tokio::sync::Mutex<HashMap<Url, [u8; 16]>>,
    /// The MPD and its live state when the manifest is DASH.
    dash: std::sync::OnceLock<dash::DashSession>,
    hashes: tokio::sync::Mutex<HashSource>,
    /// The manifest's URL after redirects, the base of swarm identities (as browsers see it).
    manifest_url: std::sync::OnceLock<Url>,
}

/// The published segment hashes, refetched (at most every [`HASHES_REFETCH`]) when a live
/// segment is missing from them.
#[derive(Default)]
struct HashSource {
    hashes: Option<SegmentHashes>,
    refetch: HashRefetch,
    warned: bool,
}

async fn run(config: SessionConfig, events: mpsc::Sender<SessionEvent>, stats: Arc<MeshStats>) {
    let (warnings, mut warning_rx) = mpsc::channel(16);
    let mesh = config.mesh.as_ref().map(|m| m.delivery.clone());
    let mut scheduler = config.scheduler;
    scheduler.seed = rand::random();
    let delivery = match Delivery::spawn(scheduler, config.http.clone(), mesh, stats, warnings) {
        Ok(d) => d,
        Err(e) => {
            let _ = events.send(SessionEvent::Error(e)).await;
            return;
        }
    };
    let forward = events.clone();
    tokio::spawn(async move {
        while let Some(warning) = warning_rx.recv().await {
            if forward.send(SessionEvent::Warning(warning)).await.is_err() {
                break;
            }
        }
    });
    if let Some(mesh) = &config.mesh
        && !mesh.delivery.signalling.trackers.is_empty()
        && mesh.integrity_required
        && mesh.segment_hashes.is_none()
    {
        let reason = "integrity=required and no segment-hashes: segments are not downloaded \
                      from peers (uploading to them stays on)";
        let _ = events
            .send(SessionEvent::Warning(MeshError::Mesh(reason.into())))
            .await;
    }
    let ctx = Arc::new(Context {
        delivery,
        config,
        events,
        keys: Default::default(),
        dash: Default::default(),
        hashes: Default::default(),
        manifest_url: Default::default(),
    });
    if let Err(e) = run_tracks(&ctx).await {
        let _ = ctx.events.send(SessionEvent::Error(e)).await;
    }
}

async fn run_tracks(ctx: &Arc<Context>) -> Result<(), MeshError> {
    let manifest_url = ctx.config.location.clone();
    let fetched = fetch_now(
        ctx,
        Resource {
            url: manifest_url,
            range: None,
        },
    )
    .await?;
    let _ = ctx.manifest_url.set(fetched.final_url.clone());
    let (presentation, preloaded) = if dash::looks_like_mpd(&fetched.final_url, &fetched.bytes) {
        let (session, presentation) = dash::DashSession::start(
            &ctx.delivery,
            &fetched.final_url,
            &fetched.bytes,
            ctx.config.dash.clone(),
        )
        .await?;
        let _ = ctx.dash.set(session);
        (presentation, None)
    } else {
        match hls::parse_manifest(&fetched.final_url, &fetched.bytes)? {
            Manifest::Master(p) => (p, None),
            Manifest::Media(p, timeline) => (p, Some(timeline)),
        }
    };

    let mut presentation = presentation;
    if let Some(main) = presentation.tracks.first_mut() {
        keep_one_codec_group(ctx, main).await?;
    }
    let alternatives = presentation.alternatives;
    let mut outputs = Vec::new();
    let mut pending = Vec::new();
    let mut preloaded = preloaded;
    for (index, track) in presentation.tracks.into_iter().enumerate() {
        // Two whole segments in flight to the pad; max-buffering bounds the rest.
        let (tx, rx) = mpsc::channel(2);
        let control = Arc::new(TrackControl::default());
        // Only the main track adapts; the element announces this choice with the pads.
        let initial_rendition = if index == 0 {
            ctx.config
                .abr
                .initial(&track.bandwidths(), track.default_rendition)
        } else {
            track.default_rendition
        };
        let mut driver = TrackDriver::new(ctx.clone(), index, track.clone(), tx, control.clone());
        driver.rendition = initial_rendition;
        pending.push((driver, preloaded.take()));
        outputs.push(TrackOutput {
            kind: track.kind,
            track,
            initial_rendition,
            items: rx,
            control,
        });
    }
    // The pads must exist before any driver reports on them.
    ctx.events
        .send(SessionEvent::Tracks {
            outputs,
            alternatives,
        })
        .await
        .map_err(|_| MeshError::Unsupported("element went away".into()))?;
    let mut drivers = JoinSet::new();
    for (driver, initial) in pending {
        drivers.spawn(driver.run(initial));
    }
    while let Some(joined) = drivers.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) if e.is_panic() => {
                return Err(MeshError::Unsupported(format!(
                    "internal error in a track driver: {e}"
                )));
            }
            Err(_) => {}
        }
    }
    Ok(())
}

/// Keeps the renditions of one codec group in the track's ladder, so ABR never switches
/// codecs under a decoder: the preferred group with a decoder, else the first that has one.
async fn keep_one_codec_group(ctx: &Context, track: &mut Track) -> Result<(), MeshError> {
    let families = futures::future::join_all(track.renditions.iter().map(|r| async {
        match r.codecs.as_deref() {
            Some(codecs) => abr::families_of_codecs(codecs),
            // Only ladders can mix codecs: a lone rendition is not probed.
            None if track.renditions.len() > 1 && r.source == RenditionSource::HlsMediaPlaylist => {
                probe_families(ctx, r).await
            }
            None => Vec::new(),
        }
    }))
    .await;
    let groups = abr::codec_groups(&families);
    let chosen = abr::choose_codec_group(&groups, &ctx.config.codec_preference, |family| {
        ctx.config.codec_support.decodes(family)
    })
    .map_err(|codecs| MeshError::NoDecoder { codecs })?;
    let keep = &groups[chosen].renditions;
    if keep.len() == track.renditions.len() {
        return Ok(());
    }
    track.default_rendition = keep
        .iter()
        .position(|i| *i == track.default_rendition)
        .unwrap_or(0);
    track.renditions = keep.iter().map(|i| track.renditions[*i].clone()).collect();
    Ok(())
}

/// How much of a segment is read to find an MPEG-TS program map.
const PROBE_BYTES: u64 = 64 * 1024;

/// The codec families of a rendition without CODECS, from its first segment: the sample
/// entries of its init section, or the stream types of its MPEG-TS program map. Empty when
/// they cannot be told.
async fn probe_families(ctx: &Context, rendition: &Rendition) -> Vec<String> {
    let probe = async {
        let playlist = fetch_url(ctx, &rendition.url).await.ok()?;
        let timeline = hls::parse_media_playlist(&playlist.final_url, &playlist.bytes).ok()?;
        let first = timeline.segments.first()?;
        let mut families: Vec<String> = match &first.init {
            Some(init) => {
                let init = fetch_now(ctx, init.clone()).await.ok()?;
                crate::container::parse_init(&init.bytes)?
                    .tracks
                    .iter()
                    .filter_map(|t| crate::container::sample_entry_family(&t.sample_entry))
                    .map(str::to_owned)
                    .collect()
            }
            None => {
                let range = match first.resource.range {
                    Some(r) => ByteRange {
                        offset: r.offset,
                        length: r.length.min(PROBE_BYTES),
                    },
                    None => ByteRange {
                        offset: 0,
                        length: PROBE_BYTES,
                    },
                };
                let resource = Resource {
                    url: first.resource.url.clone(),
                    range: Some(range),
                };
                // A segment shorter than the probe fails the ranged fetch: it is small
                // enough to fetch whole.
                let head = match fetch_now(ctx, resource).await {
                    Ok(head) => head,
                    Err(_) => fetch_now(ctx, first.resource.clone()).await.ok()?,
                };
                crate::container::ts_stream_types(&head.bytes)
                    .into_iter()
                    .filter_map(crate::container::ts_stream_type_family)
                    .map(str::to_owned)
                    .collect()
            }
        };
        families.sort();
        families.dedup();
        Some(families)
    };
    probe.await.unwrap_or_default()
}

/// Fetches something needed right away (manifest, playlist, key).
async fn fetch_now(ctx: &Context, resource: Resource) -> Result<Fetched, MeshError> {
    ctx.delivery
        .fetch(SegmentRequest {
            resource,
            deadline: None,
            retry_not_found: false,
            share: None,
        })
        .await
}

/// Fetches a whole file needed right away (manifest, playlist, key, hash file).
async fn fetch_url(ctx: &Context, url: &Url) -> Result<Fetched, MeshError> {
    let resource = Resource {
        url: url.clone(),
        range: None,
    };
    fetch_now(ctx, resource).await
}

/// Segments of a live mesh session requested ahead of the one being delivered, so each waits
/// for peers from when it is known rather than from when the one before it is done (bounded
/// by `max-buffering-time` too). Three is the playlist's usual hold-back.
pub use mesh_core::playback::LIVE_FETCH_AHEAD;

struct TrackDriver {
    ctx: Arc<Context>,
    index: usize,
    track: Track,
    out: mpsc::Sender<StreamItem>,
    control: Arc<TrackControl>,
    rendition: usize,
    estimator: ThroughputEstimator,
    /// When segments are due; live pts 0 is needed at its origin.
    deadlines: Deadlines,
    epoch: u64,
    last_init: Option<Resource>,
    discont: bool,
    timestamps_restart: bool,
    /// `(sequence, pts)` of the first segment delivered since the latest seek or switch.
    epoch_start: Option<(u64, Duration)>,
    /// `track.id`, shared by every chunk.
    track_id: Arc<str>,
    /// The mesh ids of the rendition's segments.
    ids: SegmentIds,
    /// Live segments requested ahead, by ascending sequence.
    ahead: VecDeque<Ahead>,
}

/// A segment fetch started ahead of its turn; cancelled when dropped unclaimed.
struct Ahead {
    sequence: u64,
    resource: Resource,
    task: tokio::task::JoinHandle<Result<Fetched, MeshError>>,
    /// The task's outcome, once awaited.
    result: Option<Result<Fetched, MeshError>>,
}

impl Ahead {
    fn is_for(&self, segment: &Segment) -> bool {
        self.sequence == segment.sequence && self.resource == segment.resource
    }

    async fn outcome(&mut self) -> Result<Fetched, MeshError> {
        match self.result.take() {
            Some(result) => result,
            None => joined((&mut self.task).await, &self.resource),
        }
    }
}

fn joined(
    result: Result<Result<Fetched, MeshError>, tokio::task::JoinError>,
    resource: &Resource,
) -> Result<Fetched, MeshError> {
    result.unwrap_or_else(|e| {
        Err(MeshError::Read {
            url: resource.url.to_string(),
            reason: format!("segment fetch stopped: {e}"),
        })
    })
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why delivering a segment ended early.
enum Interrupted {
    Seek,
    Fatal(MeshError),
}

impl TrackDriver {
    fn new(
        ctx: Arc<Context>,
        index: usize,
        track: Track,
        out: mpsc::Sender<StreamItem>,
        control: Arc<TrackControl>,
    ) -> Self {
        TrackDriver {
            ctx,
            index,
            track_id: Arc::from(track.id.as_str()),
            track,
            out,
            control,
            rendition: 0,
            estimator: ThroughputEstimator::default(),
            deadlines: Deadlines::default(),
            epoch: 0,
            last_init: None,
            discont: true,
            timestamps_restart: false,
            epoch_start: None,
            ahead: VecDeque::new(),
            ids: SegmentIds::default(),
        }
    }

    /// Takes a (re)loaded timeline as the current one.
    async fn adopt_timeline(&mut self, timeline: &MediaTimeline) {
        self.control.set_timeline(timeline);
        let rendition = &self.track.renditions[self.rendition];
        if rendition.source != RenditionSource::HlsMediaPlaylist {
            return;
        }
        let withheld = self.ids.update(&rendition.url, timeline);
        if withheld.is_empty() {
            return;
        }
        // What this peer holds or loads under those ids is no longer served or announced.
        if let Some(swarm) = self.swarm() {
            for segment in withheld {
                let key = ShareKey {
                    swarm: swarm.info_hash.clone(),
                    segment,
                };
                self.ctx.delivery.withdraw(key).await;
            }
        }
    }

    /// The swarm of the current rendition, with the mesh on.
    fn swarm(&self) -> Option<Swarm> {
        let mesh = self.ctx.config.mesh.as_ref()?;
        Some(Swarm::for_rendition(
            self.ctx
                .manifest_url
                .get()
                .unwrap_or(&self.ctx.config.location),
            mesh.swarm_id.as_deref(),
            self.track.kind,
            &self.track.renditions[self.rendition],
        ))
    }

    /// The segment's id in the mesh, and whether another segment may have it at honest peers
    /// (see [`SegmentIds`]).
    fn mesh_segment_id(&self, segment: &Segment) -> Option<(crate::mesh::SegmentId, bool)> {
        match self.track.renditions[self.rendition].source {
            RenditionSource::HlsMediaPlaylist => {
                let id = self.ids.id(segment.sequence)?;
                Some((id, self.ids.is_withheld(id)))
            }
            // DASH: the segment number.
            RenditionSource::Dash { .. } => Some((i64::try_from(segment.sequence).ok()?, false)),
        }
    }

    /// The rendition's current segment list: a (re)loaded HLS media playlist or DASH timeline.
    async fn load_timeline(&self) -> Result<MediaTimeline, MeshError> {
        let rendition = &self.track.renditions[self.rendition];
        match &rendition.source {
            RenditionSource::HlsMediaPlaylist => {
                let resource = Resource {
                    url: rendition.url.clone(),
                    range: None,
                };
                let fetched = fetch_now(&self.ctx, resource).await?;
                hls::parse_media_playlist(&fetched.final_url, &fetched.bytes)
            }
            RenditionSource::Dash { .. } => match self.ctx.dash.get() {
                Some(session) => {
                    session
                        .timeline(&self.ctx.delivery, self.track.kind, rendition)
                        .await
                }
                None => Err(MeshError::Unsupported(
                    "a DASH rendition without an MPD".into(),
                )),
            },
        }
    }

    async fn announce_rendition(&self, reason: &'static str) {
        let rendition = Box::new(self.track.renditions[self.rendition].clone());
        let _ = self
            .ctx
            .events
            .send(SessionEvent::RenditionChanged {
                track: self.index,
                rendition,
                reason,
            })
            .await;
    }

    /// Runs `fut` unless a seek comes first.
    async fn unless_seek<T>(&self, fut: impl Future<Output = T>) -> Result<T, Interrupted> {
        unless_seek(&self.control, self.epoch, fut).await
    }

    async fn send(&self, item: StreamItem) -> Result<(), MeshError> {
        match self.unless_seek(self.out.send(item)).await {
            Ok(Ok(())) | Err(Interrupted::Seek) => Ok(()),
            Err(Interrupted::Fatal(e)) => Err(e),
            Ok(Err(_)) => Err(MeshError::Unsupported("pad went away".into())),
        }
    }

    async fn run(mut self, preloaded: Option<MediaTimeline>) -> Result<(), MeshError> {
        let mut bandwidths = self.track.bandwidths();
        let mut timeline = match preloaded {
            Some(t) => t,
            None => self.load_timeline().await?,
        };
        self.adopt_timeline(&timeline).await;
        let mut next_sequence = if timeline.is_live {
            timeline.live_start_sequence_behind(self.ctx.config.live_delay)
        } else {
            timeline.first_sequence()
        };
        let mut next_pts = if timeline.is_live {
            Duration::ZERO
        } else {
            next_sequence
                .and_then(|s| timeline.by_sequence(s))
                .map(|s| s.start)
                .unwrap_or_default()
        };
        let mut reloads = Reloads::new(self.ctx.delivery.now());

        loop {
            if let Some((epoch, track)) = self.control.take_switch() {
                let previous_epoch = std::mem::replace(&mut self.epoch, epoch);
                (next_sequence, next_pts) = self
                    .switch_track(
                        track,
                        previous_epoch,
                        &mut timeline,
                        next_sequence,
                        next_pts,
                    )
                    .await;
                bandwidths = self.track.bandwidths();
            }
            if let Some((epoch, target)) = self.control.take_seek() {
                self.epoch = epoch;
                if let Some(seg) = timeline.segment_at(target) {
                    next_sequence = Some(seg.sequence);
                    next_pts = seg.start;
                }
                self.last_init = None;
                self.discont = true;
                self.epoch_start = None;
                self.ahead.clear();
            }

            let Some(sequence) = next_sequence else {
                // An empty playlist: only live ones can grow.
                if !timeline.is_live {
                    return Err(MeshError::InvalidPlaylist {
                        url: self.track.renditions[self.rendition].url.to_string(),
                        reason: "the media playlist has no segments".into(),
                    });
                }
                self.wait_reload(&mut timeline, &mut reloads).await?;
                next_sequence = timeline.live_start_sequence_behind(self.ctx.config.live_delay);
                continue;
            };

            let segment = match timeline.by_sequence(sequence) {
                Some(seg) => seg.clone(),
                None if timeline
                    .first_sequence()
                    .is_some_and(|first| sequence < first) =>
                {
                    let first = timeline.first_sequence().unwrap_or(sequence);
                    let _ = self
                        .ctx
                        .events
                        .send(SessionEvent::Warning(MeshError::Read {
                            url: self.track.renditions[self.rendition].url.to_string(),
                            reason: format!(
                                "fell behind the live window: segments {sequence}..{first} are gone"
                            ),
                        }))
                        .await;
                    next_sequence = Some(first);
                    self.discont = true;
                    continue;
                }
                None if timeline.ended => {
                    self.send(StreamItem::Eos { epoch: self.epoch }).await?;
                    // Stay alive for a seek back into a VOD stream.
                    let _ = self.unless_seek(std::future::pending::<()>()).await;
                    continue;
                }
                None => {
                    self.wait_reload(&mut timeline, &mut reloads).await?;
                    continue;
                }
            };

            if self
                .unless_seek(self.wait_for_room(next_pts))
                .await
                .is_err()
            {
                continue;
            }

            self.epoch_start.get_or_insert((sequence, next_pts));
            match self
                .fetch_ahead_and_wait(&mut timeline, &mut reloads, &segment, next_pts)
                .await
            {
                Ok(()) => {}
                Err(Interrupted::Seek) => continue,
                Err(Interrupted::Fatal(e)) => return Err(e),
            }
            match self
                .deliver_segment(&segment, next_pts, timeline.is_live)
                .await
            {
                Ok(()) => {}
                Err(Interrupted::Seek) => continue,
                Err(Interrupted::Fatal(e)) => return Err(e),
            }
            next_sequence = Some(sequence + 1);
            next_pts += segment.duration;

            if self.index == 0 && bandwidths.len() > 1 {
                let wanted = self
                    .ctx
                    .config
                    .abr
                    .next(&bandwidths, self.rendition, &self.estimator);
                if wanted != self.rendition {
                    let previous = self.rendition;
                    self.rendition = wanted;
                    match self.load_timeline().await {
                        Ok(t) => {
                            timeline = t;
                            self.adopt_timeline(&timeline).await;
                            self.discont = true;
                            self.last_init = None;
                            self.ahead.clear();
                            self.announce_rendition("abr").await;
                        }
                        Err(e) => {
                            self.rendition = previous;
                            self.warn(e).await;
                        }
                    }
                }
            }
        }
    }

    async fn warn(&self, error: MeshError) {
        let _ = self.ctx.events.send(SessionEvent::Warning(error)).await;
    }

    /// Replaces the track (a stream selection) and returns where output continues in the new
    /// timeline: the segment that follows the last one the pad took, or where the pad's
    /// output of `previous_epoch` began. The old track plays on if the new one cannot load.
    async fn switch_track(
        &mut self,
        track: Track,
        previous_epoch: u64,
        timeline: &mut MediaTimeline,
        next_sequence: Option<u64>,
        next_pts: Duration,
    ) -> (Option<u64>, Duration) {
        let point = match self.control.taken().filter(|t| t.epoch == previous_epoch) {
            Some(t) => Some((t.sequence + 1, t.end_pts)),
            None => self.epoch_start.or(next_sequence.map(|s| (s, next_pts))),
        };
        // The switch point on the timeline: the start of `sequence`, else the end of the one
        // before, else by the pts of the driver's next segment.
        let point = point.map(|(sequence, pts)| {
            let time = timeline
                .by_sequence(sequence)
                .map(|s| s.start)
                .or_else(|| {
                    let before = timeline.by_sequence(sequence.checked_sub(1)?)?;
                    Some(before.start + before.duration)
                })
                .or_else(|| {
                    let anchor = timeline.by_sequence(next_sequence?)?;
                    (anchor.start + pts).checked_sub(next_pts)
                })
                .unwrap_or(pts);
            (sequence, pts, time)
        });
        let previous = (std::mem::replace(&mut self.track, track), self.rendition);
        let bandwidths = self.track.bandwidths();
        self.rendition = if self.index == 0 && bandwidths.len() > 1 {
            self.ctx
                .config
                .abr
                .next(&bandwidths, self.track.default_rendition, &self.estimator)
        } else {
            self.track.default_rendition
        };
        match self.load_timeline().await {
            Ok(fresh) => {
                *timeline = fresh;
                self.track_id = Arc::from(self.track.id.as_str());
                self.announce_rendition("select-streams").await;
            }
            Err(e) => {
                (self.track, self.rendition) = previous;
                self.warn(e).await;
            }
        }
        self.adopt_timeline(timeline).await;
        self.last_init = None;
        self.discont = true;
        self.epoch_start = None;
        self.ahead.clear();
        let Some((sequence, pts, time)) = point else {
            // Nothing positioned yet (an empty live playlist): start as usual.
            return (None, next_pts);
        };
        let hls_live = timeline.is_live
            && matches!(
                self.track.renditions[self.rendition].source,
                RenditionSource::HlsMediaPlaylist
            );
        if hls_live {
            // Live HLS playlists start their timelines at their own windows: renditions
            // line up by media sequence number.
            return (Some(sequence), pts);
        }
        resume_at(timeline, time, pts)
    }

    /// Waits until the playlist is due for reload (RFC 8216 §6.3.4) and reloads it.
    async fn wait_reload(
        &mut self,
        timeline: &mut MediaTimeline,
        reloads: &mut Reloads,
    ) -> Result<(), MeshError> {
        let due = self.reload_due(timeline, reloads);
        if self
            .unless_seek(tokio::time::sleep_until(due.into()))
            .await
            .is_err()
        {
            return Ok(());
        }
        reloads.started(self.ctx.delivery.now());
        match self.load_timeline().await {
            Ok(fresh) => {
                reloads.succeeded(
                    fresh.last_sequence() != timeline.last_sequence()
                        || fresh.ended != timeline.ended,
                );
                *timeline = fresh;
                self.adopt_timeline(timeline).await;
                Ok(())
            }
            Err(e) => match reloads.failed() {
                ReloadFailure::GiveUp => Err(e),
                ReloadFailure::Retry(failed) => {
                    self.warn(MeshError::Read {
                        url: self.track.renditions[self.rendition].url.to_string(),
                        reason: format!(
                            "playlist reload failed ({failed}/{MAX_FAILED_RELOADS}): {e}"
                        ),
                    })
                    .await;
                    Ok(())
                }
            },
        }
    }

    /// When the playlist is next reloaded, as an instant.
    fn reload_due(&self, timeline: &MediaTimeline, reloads: &Reloads) -> Instant {
        let last = timeline.segments.last().map(|s| s.duration);
        self.ctx.delivery.started() + reloads.due(last, timeline.target_duration)
    }

    /// Live mesh: starts `current` and the segments after it ([`Self::fetch_ahead`]); then,
    /// while `current` is still being fetched, keeps reloading the playlist on schedule and
    /// starts the segments it newly lists, so none has to wait for the one before it to
    /// finish before it can wait for peers. hlsdemux2 also updates live playlists apart from
    /// its downloads.
    async fn fetch_ahead_and_wait(
        &mut self,
        timeline: &mut MediaTimeline,
        reloads: &mut Reloads,
        current: &Segment,
        pts: Duration,
    ) -> Result<(), Interrupted> {
        loop {
            let started = self
                .unless_seek(self.fetch_ahead(timeline, current, pts))
                .await?;
            self.ahead.extend(started);
            self.ahead.make_contiguous().sort_by_key(|a| a.sequence);
            let due = self.reload_due(timeline, reloads);
            let Some(ahead) = self.ahead.iter_mut().find(|a| a.is_for(current)) else {
                return Ok(());
            };
            if ahead.result.is_some() {
                return Ok(());
            }
            let finished = unless_seek(&self.control, self.epoch, async {
                tokio::select! {
                    result = &mut ahead.task => Some(result),
                    _ = tokio::time::sleep_until(due.into()) => None,
                }
            })
            .await?;
            if let Some(result) = finished {
                ahead.result = Some(joined(result, &ahead.resource));
                return Ok(());
            }
            self.wait_reload(timeline, reloads)
                .await
                .map_err(Interrupted::Fatal)?;
        }
    }

    /// Holds fetching back to `max-buffering-time` ahead of what the pad has taken.
    async fn wait_for_room(&self, pts: Duration) {
        loop {
            let changed = self.control.changed.notified();
            if pts <= self.control.played() + self.ctx.config.max_buffering {
                return;
            }
            changed.await;
        }
    }

    /// Fetches init (when it changed), the segment and its key, and sends them on.
    async fn deliver_segment(
        &mut self,
        segment: &Segment,
        pts: Duration,
        live: bool,
    ) -> Result<(), Interrupted> {
        let control = self.control.clone();
        let result =
            unless_seek(&control, self.epoch, self.fetch_segment(segment, pts, live)).await?;
        let (init, media) = match result {
            Ok(parts) => parts,
            Err(e) if live => {
                self.warn(MeshError::Read {
                    url: segment.resource.url.to_string(),
                    reason: format!("skipping live segment {}: {e}", segment.sequence),
                })
                .await;
                self.discont = true;
                return Ok(());
            }
            Err(e) => return Err(Interrupted::Fatal(e)),
        };
        if let Some(init) = init {
            let chunk = Chunk {
                epoch: self.epoch,
                bytes: init,
                pts: None,
                duration: None,
                discont: self.discont,
                timestamps_restart: false,
                media_time: None,
                sequence: None,
                track: self.track_id.clone(),
            };
            self.discont = false;
            if self.send(StreamItem::Data(chunk)).await.is_err() {
                return Ok(());
            }
            self.last_init = segment.init.clone();
        }
        let chunk = Chunk {
            epoch: self.epoch,
            bytes: media,
            pts: Some(pts),
            duration: Some(segment.duration),
            discont: std::mem::take(&mut self.discont) || segment.discontinuity,
            timestamps_restart: std::mem::take(&mut self.timestamps_restart)
                || segment.discontinuity,
            media_time: segment.media_start,
            sequence: Some(segment.sequence),
            track: self.track_id.clone(),
        };
        let _ = self.send(StreamItem::Data(chunk)).await;
        Ok(())
    }

    async fn fetch_segment(
        &mut self,
        segment: &Segment,
        pts: Duration,
        live: bool,
    ) -> Result<(Option<Bytes>, Bytes), MeshError> {
        let init = match &segment.init {
            Some(init) if self.last_init.as_ref() != Some(init) => {
                Some(fetch_now(&self.ctx, init.clone()).await?.bytes)
            }
            _ => None,
        };
        let fetched = match self.claim_ahead(segment) {
            Some(mut ahead) => ahead.outcome().await?,
            None => {
                let now = self.ctx.delivery.now();
                let deadline = if live {
                    // Real-time playback from the live starting point, whatever the sink's sync.
                    self.deadlines.live(now, pts)
                } else {
                    Deadlines::vod(now, pts, self.control.played())
                };
                let request = self.segment_request(segment, deadline, live).await;
                self.ctx.delivery.fetch(request).await?
            }
        };
        self.estimator
            .record(fetched.bytes.len() as u64, fetched.elapsed);
        let media = match &segment.encryption {
            None => fetched.bytes,
            Some(enc) => {
                self.decrypt(enc, &fetched.bytes, &segment.resource.url)
                    .await?
            }
        };
        // An init section under an AES-128 key is encrypted too (RFC 8216 §4.3.2.5); m3u8-rs
        // loses the tag order, so tell by whether it parses as ISO-BMFF.
        let init = match (init, &segment.encryption) {
            (Some(init), Some(enc)) if !looks_like_bmff(&init) => {
                Some(self.decrypt(enc, &init, &segment.resource.url).await?)
            }
            (init, _) => init,
        };
        Ok((init, media))
    }

    /// The fetch of `segment` started ahead, if any; drops (cancels) the ones it passed by.
    fn claim_ahead(&mut self, segment: &Segment) -> Option<Ahead> {
        while let Some(front) = self.ahead.front() {
            if front.sequence > segment.sequence {
                return None;
            }
            let ahead = self.ahead.pop_front()?;
            if ahead.is_for(segment) {
                return Some(ahead);
            }
        }
        None
    }

    /// Starts fetching `current` (at `pts`) and the live segments after it that the playlist
    /// already lists, up to [`LIVE_FETCH_AHEAD`] and `max-buffering-time`, each with its own
    /// deadline, so they wait for peers while `current` does. Only with the mesh: the CDN
    /// alone gains nothing from it.
    async fn fetch_ahead(
        &self,
        timeline: &MediaTimeline,
        current: &Segment,
        pts: Duration,
    ) -> Vec<Ahead> {
        let mut started = Vec::new();
        // The deadline origin is fixed by the first segment, which is fetched alone.
        let (Some(origin), true, Some(_)) = (
            self.deadlines.live_origin(),
            timeline.is_live,
            self.ctx.config.mesh.as_ref(),
        ) else {
            return started;
        };
        let room = self.control.played() + self.ctx.config.max_buffering;
        let duration_of = |sequence| timeline.by_sequence(sequence).map(|s| s.duration);
        for ahead in playback::fetch_ahead(
            current.sequence,
            LIVE_FETCH_AHEAD,
            pts,
            origin,
            room,
            duration_of,
        ) {
            let Some(segment) = timeline.by_sequence(ahead.sequence) else {
                continue;
            };
            if self.ahead.iter().any(|a| a.is_for(segment)) {
                continue;
            }
            let request = self.segment_request(segment, ahead.deadline, true).await;
            let ctx = self.ctx.clone();
            started.push(Ahead {
                sequence: segment.sequence,
                resource: segment.resource.clone(),
                task: tokio::spawn(async move { ctx.delivery.fetch(request).await }),
                result: None,
            });
        }
        started
    }

    async fn segment_request(
        &self,
        segment: &Segment,
        deadline: Duration,
        live: bool,
    ) -> SegmentRequest {
        SegmentRequest {
            resource: segment.resource.clone(),
            deadline: Some(deadline),
            retry_not_found: live,
            share: self.share(segment, live).await,
        }
    }

    /// How the mesh shares this segment: its swarm, id and published hash.
    async fn share(&self, segment: &Segment, live: bool) -> Option<Share> {
        let mesh = self.ctx.config.mesh.as_ref()?;
        let swarm = self.swarm()?;
        let (id, id_ambiguous) = self.mesh_segment_id(segment)?;
        let hash = self.segment_hash(mesh, &segment.resource, live).await;
        Some(Share {
            key: ShareKey {
                swarm: swarm.info_hash,
                segment: id,
            },
            // Data under an ambiguous id may be another segment's: only a hash can tell.
            from_peers: hash.is_some() || (!mesh.integrity_required && !id_ambiguous),
            id_ambiguous,
            hash,
        })
    }

    async fn segment_hash(
        &self,
        mesh: &MeshSessionConfig,
        resource: &Resource,
        live: bool,
    ) -> Option<Sha256Hash> {
        let url = mesh.segment_hashes.as_ref()?;
        let range = resource.range.map(|r| (r.offset, r.length));
        let mut source = self.ctx.hashes.lock().await;
        if let Some(hash) = source
            .hashes
            .as_ref()
            .and_then(|h| h.lookup(&resource.url, range))
        {
            return Some(hash);
        }
        let now = self.ctx.delivery.now();
        if !source.refetch.due(now, source.hashes.is_some(), live) {
            return None;
        }
        source.refetch.started(now);
        // Fetch without the lock, so the other tracks never wait on the origin for it.
        drop(source);
        let fetched = fetch_url(&self.ctx, url).await.and_then(|f| {
            SegmentHashes::parse(&f.bytes).map_err(|e| MeshError::Mesh(format!("{url}: {e}")))
        });
        let mut source = self.ctx.hashes.lock().await;
        match fetched {
            Ok(hashes) => {
                let hash = hashes.lookup(&resource.url, range);
                source.hashes = Some(hashes);
                hash
            }
            Err(e) => {
                if !std::mem::replace(&mut source.warned, true) {
                    drop(source);
                    self.warn(MeshError::Mesh(format!(
                        "segment hashes unavailable, peers cannot be verified: {e}"
                    )))
                    .await;
                }
                None
            }
        }
    }

    /// AES-128-CBC plaintext of `data`, fetched from `url`, with the session's cached key.
    async fn decrypt(&self, enc: &Encryption, data: &[u8], url: &Url) -> Result<Bytes, MeshError> {
        let key = self.key(&enc.key_url).await?;
        let mut plain = data.to_vec();
        let len = crypto::decrypt_segment(&key, &enc.iv, &mut plain).map_err(|reason| {
            MeshError::Decrypt {
                url: url.to_string(),
                reason,
            }
        })?;
        plain.truncate(len);
        Ok(Bytes::from(plain))
    }

    /// The AES key for `url`, fetched from the origin once per session.
    async fn key(&self, url: &Url) -> Result<[u8; 16], MeshError> {
        if let Some(key) = self.ctx.keys.lock().await.get(url) {
            return Ok(*key);
        }
        let fetched = fetch_url(&self.ctx, url)
            .await
            .map_err(|e| MeshError::Key {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let key = crypto::key_from_bytes(&fetched.bytes).map_err(|reason| MeshError::Key {
            url: url.to_string(),
            reason,
        })?;
        self.ctx.keys.lock().await.insert(url.clone(), key);
        Ok(key)
    }
}

/// The mesh ids of one HLS rendition's segments, as p2p-media-loader's hls.js integration
/// gives them: a segment first seen while the playlist is live is known by its media sequence
/// number, one first seen in a playlist with EXT-X-ENDLIST by its 0-based position in it, and
/// an id once given never changes. So when a sliding live playlist ends, the segments its last
/// reload appends get the ids of their positions, which older segments may have had as
/// sequence numbers: peers then ask for one meaning the other. Such ids are withheld: while
/// the playlist slides, the live ids a last reload could give again, and any id given twice.
/// This peer never serves or announces a withheld id, as a page would take whatever it is sent;
/// it still takes the segment from peers against its published hash, and a mismatch there is
/// no proof of a lie (the peer may mean the other segment).
#[derive(Debug, Default)]
struct SegmentIds {
    /// The playlist the ids belong to; another one starts afresh.
    playlist: Option<Url>,
    /// The ids of the segments the playlist lists.
    by_sequence: BTreeMap<u64, crate::mesh::SegmentId>,
    /// The lowest and highest ids given by media sequence number.
    live_ids: Option<(crate::mesh::SegmentId, crate::mesh::SegmentId)>,
    /// Positions a last reload could give: at most the longest playlist plus two.
    risky: BTreeSet<crate::mesh::SegmentId>,
    /// Ids never served: a subset of `risky` and of the positions given after EXT-X-ENDLIST.
    withheld: BTreeSet<crate::mesh::SegmentId>,
}

impl SegmentIds {
    /// How many segments the reload that ends a live playlist is taken to append at most.
    const LAST_RELOAD_APPENDS: u64 = 3;

    /// Follows a (re)loaded playlist; returns the ids withheld from now on.
    fn update(&mut self, playlist: &Url, timeline: &MediaTimeline) -> Vec<crate::mesh::SegmentId> {
        if self.playlist.as_ref() != Some(playlist) {
            *self = SegmentIds {
                playlist: Some(playlist.clone()),
                ..Default::default()
            };
        }
        let before = self.withheld.clone();
        let first = timeline.first_sequence().unwrap_or(u64::MAX);
        self.by_sequence = self.by_sequence.split_off(&first);
        let len = timeline.segments.len() as u64;
        if !timeline.end_list && first > 0 {
            // Were this the last reload, the segments it appends would take these positions.
            let positions = len.saturating_sub(Self::LAST_RELOAD_APPENDS)..=len + 1;
            for id in positions.filter_map(|id| i64::try_from(id).ok()) {
                self.risky.insert(id);
                if self.given_live(id) {
                    self.withheld.insert(id);
                }
            }
        }
        for (index, segment) in timeline.segments.iter().enumerate() {
            if self.by_sequence.contains_key(&segment.sequence) {
                continue;
            }
            let id = if timeline.end_list {
                index as u64
            } else {
                segment.sequence
            };
            let id = i64::try_from(id).unwrap_or(i64::MAX);
            if timeline.end_list {
                if self.given_live(id) {
                    self.withheld.insert(id);
                }
            } else {
                self.live_ids = Some(
                    self.live_ids
                        .map_or((id, id), |(low, high)| (low.min(id), high.max(id))),
                );
                if self.risky.contains(&id) {
                    self.withheld.insert(id);
                }
            }
            self.by_sequence.insert(segment.sequence, id);
        }
        self.withheld.difference(&before).copied().collect()
    }

    /// Whether a segment may have had this id by its media sequence number.
    fn given_live(&self, id: crate::mesh::SegmentId) -> bool {
        self.live_ids
            .is_some_and(|(low, high)| (low..=high).contains(&id))
    }

    /// The id of a listed segment.
    fn id(&self, sequence: u64) -> Option<crate::mesh::SegmentId> {
        self.by_sequence.get(&sequence).copied()
    }

    fn is_withheld(&self, id: crate::mesh::SegmentId) -> bool {
        self.withheld.contains(&id)
    }

    /// The id of a listed segment that this peer serves.
    #[cfg(test)]
    fn served(&self, sequence: u64) -> Option<crate::mesh::SegmentId> {
        self.id(sequence).filter(|&id| !self.is_withheld(id))
    }
}

/// Runs `fut` unless the track's epoch moves on from `epoch` (a seek) first.
async fn unless_seek<T>(
    control: &TrackControl,
    epoch: u64,
    fut: impl Future<Output = T>,
) -> Result<T, Interrupted> {
    let changed = control.changed.notified();
    tokio::pin!(changed, fut);
    loop {
        if control.epoch() != epoch {
            return Err(Interrupted::Seek);
        }
        tokio::select! {
            biased;
            _ = &mut changed => {
                changed.set(control.changed.notified());
            }
            v = &mut fut => return Ok(v),
        }
    }
}

/// Segments of different tracks rarely end at exactly the same time: a segment that ends
/// within this of the switch point counts as already played.
const SWITCH_TOLERANCE: Duration = Duration::from_millis(100);

/// The segment of `timeline` to continue with after time `time` (pts `pts`), and its pts.
fn resume_at(timeline: &MediaTimeline, time: Duration, pts: Duration) -> (Option<u64>, Duration) {
    match timeline
        .segments
        .iter()
        .find(|s| s.start + s.duration > time + SWITCH_TOLERANCE)
    {
        Some(seg) => (Some(seg.sequence), (pts + seg.start).saturating_sub(time)),
        // Past the end: VOD ends, live waits for the segment.
        None => (timeline.last_sequence().map(|s| s + 1), pts),
    }
}

/// An ISO-BMFF init section starts with a box header whose type is ASCII.
fn looks_like_bmff(data: &[u8]) -> bool {
    data.len() >= 8 && data[4..8].iter().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three pads: the second starts once the first's output asked, the third once the
    /// second's did; each output waits for the next one to be exposed; stopping frees all.
    #[tokio::test]
    async fn pads_start_in_order_and_outputs_wait_for_the_next() {
        use futures::FutureExt;
        let order = StartOrder::new(3);
        assert!(order.wait_turn(0).now_or_never().is_some());
        assert!(order.wait_turn(1).now_or_never().is_none());
        order.output_exposed();
        assert_eq!(order.release_next(), Some(1));
        assert!(order.wait_turn(1).now_or_never().is_some());
        assert!(order.wait_turn(2).now_or_never().is_none());
        assert!(order.wait_exposed_beyond(1).now_or_never().is_none());
        order.output_exposed();
        assert!(order.wait_exposed_beyond(1).now_or_never().is_some());
        assert_eq!(order.release_next(), Some(2));
        assert!(order.wait_turn(2).now_or_never().is_some());
        order.output_exposed();
        // Every pad has started: later outputs wait for nothing.
        assert_eq!(order.release_next(), None);
        let stopped = StartOrder::new(2);
        stopped.stop();
        assert!(stopped.wait_turn(1).now_or_never().is_some());
        assert!(stopped.wait_exposed_beyond(5).now_or_never().is_some());
        assert_eq!(stopped.release_next(), None);
    }

    fn timeline(starts_ms: &[u64], duration_ms: u64) -> MediaTimeline {
        let url = Url::parse("http://origin.test/a.m4s").unwrap();
        MediaTimeline {
            segments: starts_ms
                .iter()
                .enumerate()
                .map(|(i, start)| Segment {
                    sequence: 10 + i as u64,
                    resource: Resource {
                        url: url.clone(),
                        range: None,
                    },
                    duration: Duration::from_millis(duration_ms),
                    start: Duration::from_millis(*start),
                    discontinuity: false,
                    media_start: None,
                    init: None,
                    encryption: None,
                })
                .collect(),
            target_duration: Duration::from_millis(duration_ms),
            ended: true,
            is_live: false,
            end_list: true,
            hold_back: Duration::ZERO,
        }
    }

    fn playlist(first: u64, count: usize, end_list: bool) -> MediaTimeline {
        let mut t = timeline(&vec![0; count], 2000);
        for (i, s) in t.segments.iter_mut().enumerate() {
            s.sequence = first + i as u64;
        }
        t.end_list = end_list;
        t
    }

    #[test]
    fn segment_ids_follow_p2p_media_loader_and_never_reuse_an_id() {
        let url = Url::parse("http://origin.test/live.m3u8").unwrap();
        // VOD with EXT-X-MEDIA-SEQUENCE:100: by position.
        let mut ids = SegmentIds::default();
        assert!(ids.update(&url, &playlist(100, 5, true)).is_empty());
        assert_eq!((ids.served(100), ids.served(104)), (Some(0), Some(4)));
        // Live: by media sequence number, kept as the window slides. The positions a last
        // reload could give (2..=6) are no live ids here.
        let mut ids = SegmentIds::default();
        assert!(ids.update(&url, &playlist(10, 5, false)).is_empty());
        assert!(ids.update(&url, &playlist(11, 5, false)).is_empty());
        assert_eq!(
            (ids.served(10), ids.served(11), ids.served(15)),
            (None, Some(11), Some(15))
        );
        // EXT-X-ENDLIST with one more segment, 16, at position 4 of 12..=16: p2p-media-loader
        // gives it id 4, which no segment here had.
        assert!(ids.update(&url, &playlist(12, 5, true)).is_empty());
        assert_eq!((ids.served(12), ids.served(16)), (Some(12), Some(4)));

        // A young stream: 0..=13 listed, then the window slides. Were the next reload the last,
        // the segments it appends would get ids 11..=15, which segments 11..=15 have: those
        // are withheld as soon as the window slides, and as they appear.
        let mut ids = SegmentIds::default();
        assert!(ids.update(&url, &playlist(0, 14, false)).is_empty());
        assert_eq!(ids.served(13), Some(13));
        assert_eq!(
            ids.update(&url, &playlist(1, 14, false)),
            vec![11, 12, 13, 14]
        );
        assert_eq!(ids.update(&url, &playlist(2, 14, false)), vec![15]);
        assert_eq!(
            (ids.served(10), ids.served(13), ids.served(16)),
            (Some(10), None, None)
        );
        for first in 3..12 {
            assert!(ids.update(&url, &playlist(first, 14, false)).is_empty());
        }
        assert_eq!((ids.served(16), ids.served(24)), (Some(16), Some(24)));
        // It ends: segment 25 is at position 13, an id segment 13 had. Neither is shared.
        assert!(ids.update(&url, &playlist(12, 14, true)).is_empty());
        assert_eq!(
            (ids.served(13), ids.served(25), ids.served(24)),
            (None, None, Some(24))
        );

        // A last reload that appends more than foreseen: the id given twice is withheld then.
        let mut ids = SegmentIds::default();
        ids.update(&url, &playlist(0, 6, false));
        assert_eq!(ids.update(&url, &playlist(1, 6, true)), vec![5]);
        assert_eq!(
            (ids.served(6), ids.served(5), ids.served(4)),
            (None, None, Some(4))
        );

        // Another rendition starts afresh.
        let other = Url::parse("http://origin.test/other.m3u8").unwrap();
        assert!(ids.update(&other, &playlist(100, 3, false)).is_empty());
        assert_eq!(ids.served(100), Some(100));
    }

    #[test]
    fn a_switch_resumes_with_the_segment_after_the_switch_point() {
        let ms = Duration::from_millis;
        // Boundaries line up: the segment starting at the switch point.
        let t = timeline(&[0, 2000, 4000, 6000], 2000);
        assert_eq!(resume_at(&t, ms(4000), ms(4000)), (Some(12), ms(4000)));
        // A segment ending just after the switch point counts as played.
        let t = timeline(&[0, 2005, 4010, 6015], 2005);
        assert_eq!(resume_at(&t, ms(4000), ms(4000)), (Some(12), ms(4010)));
        // A switch point inside a segment repeats its beginning; pts follow its start.
        assert_eq!(resume_at(&t, ms(3000), ms(5000)), (Some(11), ms(4005)));
        // Past the end: the sequence after the last, so VOD ends.
        assert_eq!(resume_at(&t, ms(8000), ms(8000)), (Some(14), ms(8000)));
    }
}

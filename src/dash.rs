//! The DASH state of a playback session ([`DashSession`]): the latest MPD, refreshed for
//! dynamic MPDs through the delivery hub, and the local clock corrected with UTCTiming. The
//! parsing and addressing it uses are sans-IO, in `mesh_core::dash`.

pub use mesh_core::dash::*;

use crate::delivery::Delivery;
use crate::error::MeshError;
use crate::fetch::Fetched;
use crate::model::{MediaTimeline, Presentation, Rendition, Resource, Track, TrackKind};
use crate::scheduler::SegmentRequest;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use url::Url;

/// How often the clock is synchronised again with the UTCTiming source.
const CLOCK_RESYNC: Duration = Duration::from_secs(600);
// ---------------------------------------------------------------------------------------------
// Session state
// ---------------------------------------------------------------------------------------------

struct State {
    mpd: Arc<Mpd>,
    /// Where the MPD is reloaded from (MPD.Location, else the final manifest URL).
    reload_url: Url,
    fetched_at: Instant,
    /// Server time minus local time, in nanoseconds.
    clock_offset: i64,
    clock_synced_at: Option<Instant>,
    indexes: HashMap<Resource, Arc<SegmentIndex>>,
    bases: SequenceBases,
}

/// The DASH state of a playback session: the latest MPD, its fetch time, the clock offset,
/// the parsed segment indexes and the sequence bases. Shared by the track drivers.
pub struct DashSession {
    opts: DashOptions,
    state: tokio::sync::Mutex<State>,
}

async fn fetch(delivery: &Delivery, resource: Resource) -> Result<Fetched, MeshError> {
    delivery
        .fetch(SegmentRequest {
            resource,
            deadline: None,
            retry_not_found: false,
            share: None,
        })
        .await
}

fn wall_clock(offset_nanos: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from(SystemTime::now()) + chrono::Duration::nanoseconds(offset_nanos)
}

impl DashSession {
    /// Parses the MPD fetched from `url` (final URL) and chooses the tracks.
    pub async fn start(
        delivery: &Delivery,
        url: &Url,
        body: &[u8],
        opts: DashOptions,
    ) -> Result<(DashSession, Presentation), MeshError> {
        let mpd = parse_mpd(url, body)?;
        let reload_url = location(&mpd).unwrap_or_else(|| url.clone());
        let mut state = State {
            mpd: Arc::new(mpd),
            reload_url,
            fetched_at: Instant::now(),
            clock_offset: 0,
            clock_synced_at: None,
            indexes: HashMap::new(),
            bases: SequenceBases::default(),
        };
        if state.mpd.dynamic {
            sync_clock(delivery, &mut state).await;
        }
        let presentation = presentation(&state.mpd, &opts, wall_clock(state.clock_offset))?;
        Ok((
            DashSession {
                opts,
                state: tokio::sync::Mutex::new(state),
            },
            presentation,
        ))
    }

    /// The latest MPD, for listing alternative AdaptationSets.
    pub async fn mpd(&self) -> Arc<Mpd> {
        self.state.lock().await.mpd.clone()
    }

    /// The AdaptationSets not played by default, as tracks a stream selection can switch
    /// to (see [`alternative_tracks`]); their renditions work with [`DashSession::timeline`].
    pub async fn alternative_tracks(&self) -> Vec<Track> {
        let state = self.state.lock().await;
        alternative_tracks(&state.mpd, &self.opts, wall_clock(state.clock_offset))
    }

    pub fn options(&self) -> &DashOptions {
        &self.opts
    }

    /// The current segment list of `rendition`. A dynamic MPD is fetched again only once its
    /// minimumUpdatePeriod has passed; otherwise availability is recomputed from the clock.
    pub async fn timeline(
        &self,
        delivery: &Delivery,
        kind: TrackKind,
        rendition: &Rendition,
    ) -> Result<MediaTimeline, MeshError> {
        let mut state = self.state.lock().await;
        if state.mpd.dynamic
            && let Some(period) = state.mpd.doc.minimumUpdatePeriod
            && state.fetched_at.elapsed() >= period
        {
            self.refresh(delivery, &mut state).await?;
        }
        let mpd = state.mpd.clone();
        for resource in index_resources(&mpd, kind, rendition)? {
            if state.indexes.contains_key(&resource) {
                continue;
            }
            let fetched = fetch(delivery, resource.clone()).await?;
            let offset = resource.range.map_or(0, |r| r.offset);
            let index = parse_sidx(offset, &fetched.bytes).map_err(|reason| {
                invalid(
                    &resource.url,
                    format!("bad segment index (sidx) at {offset}: {reason}"),
                )
            })?;
            state.indexes.insert(resource, Arc::new(index));
        }
        let now = wall_clock(state.clock_offset);
        let State { indexes, bases, .. } = &mut *state;
        timeline(&mpd, kind, rendition, now, &self.opts, indexes, bases)
    }

    async fn refresh(&self, delivery: &Delivery, state: &mut State) -> Result<(), MeshError> {
        let fetched = fetch(
            delivery,
            Resource {
                url: state.reload_url.clone(),
                range: None,
            },
        )
        .await;
        // Whatever the outcome, wait a full update period before trying again.
        state.fetched_at = Instant::now();
        let fetched = fetched?;
        let mpd = parse_mpd(&fetched.final_url, &fetched.bytes)?;
        if let Some(next) = location(&mpd) {
            state.reload_url = next;
        }
        state.mpd = Arc::new(mpd);
        if state.mpd.dynamic
            && state
                .clock_synced_at
                .is_none_or(|at| at.elapsed() >= CLOCK_RESYNC)
        {
            sync_clock(delivery, state).await;
        }
        Ok(())
    }
}

/// Sets the clock offset from the MPD's first usable UTCTiming; keeps the local clock when
/// there is none or none answers.
async fn sync_clock(delivery: &Delivery, state: &mut State) {
    for source in clock_sources(&state.mpd) {
        let offset = match source {
            ClockSource::Direct(server) => {
                let local = DateTime::<Utc>::from(SystemTime::now());
                Some(server - local)
            }
            ClockSource::Fetch(url) => {
                let sent = SystemTime::now();
                let started = Instant::now();
                let answer = fetch(delivery, Resource { url, range: None }).await;
                let Ok(fetched) = answer else { continue };
                let Ok(text) = std::str::from_utf8(&fetched.bytes) else {
                    continue;
                };
                let Ok(server) = parse_utc_time(text) else {
                    continue;
                };
                // The server read its clock about half-way through the exchange.
                let local = DateTime::<Utc>::from(sent + started.elapsed() / 2);
                Some(server - local)
            }
        };
        if let Some(offset) = offset.and_then(|o| o.num_nanoseconds()) {
            state.clock_offset = offset;
            state.clock_synced_at = Some(Instant::now());
            return;
        }
    }
}

//! HTTP delivery: a reqwest (rustls) client driven by the sans-IO [`Scheduler`].
//!
//! Every fetch (manifest, key, init or media segment) is one [`SegmentRequest`] submitted to a
//! [`Delivery`] service task; the scheduler decides when and from where it is served.

use crate::error::MeshError;
use crate::model::Resource;
use crate::scheduler::{Action, Input, RequestId, Scheduler, SchedulerConfig, SegmentRequest};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Per-request timeout, from sending the request to the last body byte.
    pub timeout: Duration,
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(15),
            user_agent: concat!("gst-mesh/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Bytes,
    /// The URL after redirects: relative references resolve against it.
    pub final_url: Url,
    /// Time from request to the last byte, for throughput estimates.
    pub elapsed: Duration,
}

pub fn build_client(config: &HttpConfig) -> Result<reqwest::Client, MeshError> {
    reqwest::Client::builder()
        .user_agent(config.user_agent.clone())
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(8)
        .build()
        .map_err(|e| MeshError::Unsupported(format!("cannot create HTTP client: {e}")))
}

fn classify(url: &Url, error: reqwest::Error, timeout: Duration) -> MeshError {
    let url = url.to_string();
    if error.is_timeout() {
        MeshError::Timeout { url, timeout }
    } else if error.is_connect() {
        let mut reason = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(&error);
        while let Some(e) = source {
            reason = e.to_string();
            source = e.source();
        }
        MeshError::Connect { url, reason }
    } else {
        MeshError::Read {
            url,
            reason: error.to_string(),
        }
    }
}

/// One HTTP GET of a resource, honouring its byte range.
pub async fn http_get(
    client: &reqwest::Client,
    resource: &Resource,
    timeout: Duration,
) -> Result<Fetched, MeshError> {
    let started = Instant::now();
    let url = &resource.url;
    let mut request = client.get(url.clone());
    if let Some(range) = resource.range {
        request = request.header(reqwest::header::RANGE, range.header_value());
    }
    let response = request
        .send()
        .await
        .map_err(|e| classify(url, e, timeout))?;
    let status = response.status();
    if !status.is_success() {
        return Err(MeshError::HttpStatus {
            url: url.to_string(),
            status: status.as_u16(),
        });
    }
    let final_url = response.url().clone();
    let partial = status == reqwest::StatusCode::PARTIAL_CONTENT;
    let mut bytes = response
        .bytes()
        .await
        .map_err(|e| classify(url, e, timeout))?;
    if let Some(range) = resource.range {
        if !partial {
            // The server ignored Range and sent the whole file: cut the range out.
            let end = range.offset + range.length;
            if (bytes.len() as u64) < end {
                return Err(MeshError::Read {
                    url: url.to_string(),
                    reason: format!("file has {} bytes, range ends at {end}", bytes.len()),
                });
            }
            bytes = bytes.slice(range.offset as usize..end as usize);
        } else if bytes.len() as u64 != range.length {
            return Err(MeshError::Read {
                url: url.to_string(),
                reason: format!("asked for {} bytes, got {}", range.length, bytes.len()),
            });
        }
    }
    Ok(Fetched {
        bytes,
        final_url,
        elapsed: started.elapsed(),
    })
}

struct Job {
    id: RequestId,
    request: SegmentRequest,
    reply: oneshot::Sender<Result<Fetched, MeshError>>,
}

/// Handle to the delivery service of one session. Cheap to clone.
#[derive(Clone)]
pub struct Delivery {
    jobs: mpsc::Sender<Job>,
    cancels: mpsc::UnboundedSender<RequestId>,
    next_id: Arc<AtomicU64>,
    started: Instant,
}

/// Tells the service when a requester stops waiting (seek, shutdown).
struct CancelOnDrop<'a> {
    id: RequestId,
    cancels: &'a mpsc::UnboundedSender<RequestId>,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.cancels.send(self.id);
        }
    }
}

impl Delivery {
    /// Spawns the service on the current tokio runtime; it ends when every handle is dropped.
    pub fn spawn(scheduler: SchedulerConfig, http: HttpConfig) -> Result<Delivery, MeshError> {
        let client = build_client(&http)?;
        let (jobs, job_rx) = mpsc::channel(64);
        let (cancels, cancel_rx) = mpsc::unbounded_channel();
        let started = Instant::now();
        tokio::spawn(serve(
            job_rx,
            cancel_rx,
            Scheduler::new(scheduler),
            client,
            http.timeout,
            started,
        ));
        Ok(Delivery {
            jobs,
            cancels,
            next_id: Arc::new(AtomicU64::new(1)),
            started,
        })
    }

    /// Session time now, the scheduler's clock.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    pub async fn fetch(&self, request: SegmentRequest) -> Result<Fetched, MeshError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let url = request.resource.url.to_string();
        let (reply, result) = oneshot::channel();
        let gone = || MeshError::Read {
            url: url.clone(),
            reason: "delivery service stopped".into(),
        };
        self.jobs
            .send(Job { id, request, reply })
            .await
            .map_err(|_| gone())?;
        let mut guard = CancelOnDrop {
            id,
            cancels: &self.cancels,
            armed: true,
        };
        let outcome = result.await.map_err(|_| gone())?;
        guard.armed = false;
        outcome
    }
}

async fn serve(
    mut jobs: mpsc::Receiver<Job>,
    mut cancels: mpsc::UnboundedReceiver<RequestId>,
    mut scheduler: Scheduler,
    client: reqwest::Client,
    timeout: Duration,
    started: Instant,
) {
    let mut waiting: HashMap<RequestId, (Resource, oneshot::Sender<Result<Fetched, MeshError>>)> =
        HashMap::new();
    let mut fetched: HashMap<RequestId, Fetched> = HashMap::new();
    let mut transfers: JoinSet<(RequestId, Result<Fetched, MeshError>)> = JoinSet::new();
    let mut aborts: HashMap<RequestId, AbortHandle> = HashMap::new();
    let mut jobs_open = true;
    loop {
        let wake = scheduler
            .next_wakeup()
            .map(|t| tokio::time::Instant::from_std(started + t));
        let actions = tokio::select! {
            job = jobs.recv(), if jobs_open => match job {
                Some(Job { id, request, reply }) => {
                    waiting.insert(id, (request.resource.clone(), reply));
                    scheduler.handle(started.elapsed(), Input::Submit { id, request })
                }
                None => { jobs_open = false; Vec::new() }
            },
            Some(id) = cancels.recv() => {
                waiting.remove(&id);
                fetched.remove(&id);
                scheduler.handle(started.elapsed(), Input::Cancel { id })
            }
            Some(joined) = transfers.join_next(), if !transfers.is_empty() => match joined {
                Ok((id, result)) => {
                    aborts.remove(&id);
                    let result = result.map(|f| {
                        if waiting.contains_key(&id) {
                            fetched.insert(id, f);
                        }
                    });
                    scheduler.handle(started.elapsed(), Input::HttpFinished { id, result })
                }
                Err(_) => Vec::new(), // aborted on cancel
            },
            _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {
                scheduler.poll(started.elapsed())
            }
            else => break,
        };
        for action in actions {
            match action {
                Action::StartHttp { id, .. } => {
                    let Some((resource, _)) = waiting.get(&id) else {
                        continue;
                    };
                    let (client, resource) = (client.clone(), resource.clone());
                    let handle = transfers
                        .spawn(async move { (id, http_get(&client, &resource, timeout).await) });
                    aborts.insert(id, handle);
                }
                Action::AbortHttp { id } => {
                    if let Some(handle) = aborts.remove(&id) {
                        handle.abort();
                    }
                }
                Action::Deliver { id } => {
                    if let (Some((_, reply)), Some(f)) = (waiting.remove(&id), fetched.remove(&id))
                    {
                        let _ = reply.send(Ok(f));
                    }
                }
                Action::Fail { id, error } => {
                    if let Some((_, reply)) = waiting.remove(&id) {
                        let _ = reply.send(Err(error));
                    }
                }
            }
        }
        if !jobs_open {
            // Every handle is gone: nobody waits for what is still in flight.
            transfers.abort_all();
            break;
        }
    }
}

//! The sans-IO delivery scheduler: it decides who serves each segment request and when.
//!
//! Time is an input (a `Duration` since the session started) and decisions are the output, so
//! the same code runs under tokio and in simulation. Today the only source is the CDN (HTTP);
//! the scheduler owns the concurrency cap, the deadline order and the retry policy.

use crate::error::MeshError;
use crate::model::Resource;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub type RequestId = u64;

/// Scheduler time: elapsed since the session started.
pub type Time = Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRequest {
    pub resource: Resource,
    /// When the bytes are needed; None for requests that are needed now (manifests, keys).
    pub deadline: Option<Time>,
    /// Live segments may 404 briefly while the origin catches up: retry those too.
    pub retry_not_found: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub max_http_transfers: usize,
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_http_transfers: 4,
            max_retries: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Submit {
        id: RequestId,
        request: SegmentRequest,
    },
    /// The requester no longer wants the result.
    Cancel { id: RequestId },
    /// An HTTP transfer the scheduler started has ended.
    HttpFinished {
        id: RequestId,
        result: Result<(), MeshError>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Fetch the request's resource over HTTP (attempt 0 is the first try).
    StartHttp { id: RequestId, attempt: u32 },
    /// Abort the running transfer of a cancelled request.
    AbortHttp { id: RequestId },
    /// Hand the fetched bytes to the requester.
    Deliver { id: RequestId },
    /// Give up and report the error to the requester.
    Fail { id: RequestId, error: MeshError },
}

#[derive(Debug)]
enum Phase {
    Queued,
    Running,
    RetryAt(Time),
}

#[derive(Debug)]
struct Entry {
    request: SegmentRequest,
    attempt: u32,
    phase: Phase,
}

#[derive(Debug, Default)]
pub struct Scheduler {
    config: SchedulerConfig,
    entries: BTreeMap<RequestId, Entry>,
    running: BTreeSet<RequestId>,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        Scheduler {
            config,
            entries: BTreeMap::new(),
            running: BTreeSet::new(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.running.len()
    }

    pub fn pending(&self) -> usize {
        self.entries.len()
    }

    pub fn handle(&mut self, now: Time, input: Input) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::Submit { id, request } => {
                self.entries.insert(
                    id,
                    Entry {
                        request,
                        attempt: 0,
                        phase: Phase::Queued,
                    },
                );
            }
            Input::Cancel { id } => {
                if self.entries.remove(&id).is_some() && self.running.remove(&id) {
                    actions.push(Action::AbortHttp { id });
                }
            }
            Input::HttpFinished { id, result } => {
                self.running.remove(&id);
                if let Some(entry) = self.entries.get_mut(&id) {
                    match result {
                        Ok(()) => {
                            self.entries.remove(&id);
                            actions.push(Action::Deliver { id });
                        }
                        Err(error)
                            if entry.attempt < self.config.max_retries
                                && error.is_transient(entry.request.retry_not_found) =>
                        {
                            let backoff = self
                                .config
                                .initial_backoff
                                .saturating_mul(1 << entry.attempt.min(16))
                                .min(self.config.max_backoff);
                            entry.attempt += 1;
                            entry.phase = Phase::RetryAt(now + backoff);
                        }
                        Err(error) => {
                            self.entries.remove(&id);
                            actions.push(Action::Fail { id, error });
                        }
                    }
                }
            }
        }
        self.start_due(now, &mut actions);
        actions
    }

    /// Acts on timers that are due.
    pub fn poll(&mut self, now: Time) -> Vec<Action> {
        let mut actions = Vec::new();
        self.start_due(now, &mut actions);
        actions
    }

    /// When `poll` next has something to do, if ever.
    pub fn next_wakeup(&self) -> Option<Time> {
        self.entries
            .values()
            .filter_map(|e| match e.phase {
                Phase::RetryAt(t) => Some(t),
                _ => None,
            })
            .min()
    }

    /// Starts the most urgent ready requests while HTTP slots are free.
    fn start_due(&mut self, now: Time, actions: &mut Vec<Action>) {
        while self.running.len() < self.config.max_http_transfers {
            let next = self
                .entries
                .iter()
                .filter(|(_, e)| match e.phase {
                    Phase::Queued => true,
                    Phase::RetryAt(t) => t <= now,
                    Phase::Running => false,
                })
                // Requests without deadline are needed now; then earliest deadline; then FIFO.
                .min_by_key(|(id, e)| (e.request.deadline.unwrap_or(Duration::ZERO), **id))
                .map(|(id, _)| *id);
            let Some(id) = next else { break };
            let entry = self.entries.get_mut(&id).expect("entry just found");
            entry.phase = Phase::Running;
            self.running.insert(id);
            actions.push(Action::StartHttp {
                id,
                attempt: entry.attempt,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    fn request(deadline_s: Option<u64>) -> SegmentRequest {
        SegmentRequest {
            resource: Resource {
                url: Url::parse("http://cdn.test/s.ts").unwrap(),
                range: None,
            },
            deadline: deadline_s.map(Duration::from_secs),
            retry_not_found: false,
        }
    }

    fn http_error(status: u16) -> MeshError {
        MeshError::HttpStatus {
            url: "http://cdn.test/s.ts".into(),
            status,
        }
    }

    const T0: Time = Duration::ZERO;

    #[test]
    fn caps_concurrency_and_orders_by_deadline() {
        let mut s = Scheduler::new(SchedulerConfig {
            max_http_transfers: 2,
            ..Default::default()
        });
        assert_eq!(
            s.handle(
                T0,
                Input::Submit {
                    id: 1,
                    request: request(Some(30))
                }
            ),
            vec![Action::StartHttp { id: 1, attempt: 0 }]
        );
        assert_eq!(
            s.handle(
                T0,
                Input::Submit {
                    id: 2,
                    request: request(Some(20))
                }
            ),
            vec![Action::StartHttp { id: 2, attempt: 0 }]
        );
        assert!(
            s.handle(
                T0,
                Input::Submit {
                    id: 3,
                    request: request(Some(50))
                }
            )
            .is_empty()
        );
        assert!(
            s.handle(
                T0,
                Input::Submit {
                    id: 4,
                    request: request(Some(10))
                }
            )
            .is_empty()
        );
        assert_eq!(s.in_flight(), 2);
        let a = s.handle(
            T0,
            Input::HttpFinished {
                id: 1,
                result: Ok(()),
            },
        );
        assert_eq!(
            a,
            vec![
                Action::Deliver { id: 1 },
                Action::StartHttp { id: 4, attempt: 0 }
            ]
        );
        let a = s.handle(T0, Input::Cancel { id: 3 });
        assert!(a.is_empty());
        assert_eq!(s.pending(), 2);
    }

    #[test]
    fn retries_transient_errors_with_exponential_backoff_then_fails() {
        let mut s = Scheduler::new(SchedulerConfig::default());
        s.handle(
            T0,
            Input::Submit {
                id: 7,
                request: request(None),
            },
        );
        let mut now = T0;
        let mut waits = Vec::new();
        for attempt in 1..=3 {
            assert!(
                s.handle(
                    now,
                    Input::HttpFinished {
                        id: 7,
                        result: Err(http_error(503))
                    }
                )
                .is_empty()
            );
            let wake = s.next_wakeup().unwrap();
            waits.push(wake - now);
            assert!(s.poll(wake - Duration::from_millis(1)).is_empty());
            assert_eq!(s.poll(wake), vec![Action::StartHttp { id: 7, attempt }]);
            now = wake;
        }
        assert_eq!(waits, [250, 500, 1000].map(Duration::from_millis));
        let a = s.handle(
            now,
            Input::HttpFinished {
                id: 7,
                result: Err(http_error(503)),
            },
        );
        assert_eq!(
            a,
            vec![Action::Fail {
                id: 7,
                error: http_error(503)
            }]
        );
        assert_eq!(s.pending(), 0);
        assert_eq!(s.next_wakeup(), None);
    }

    #[test]
    fn not_found_is_final_unless_asked_to_retry() {
        let mut s = Scheduler::new(SchedulerConfig::default());
        s.handle(
            T0,
            Input::Submit {
                id: 1,
                request: request(None),
            },
        );
        let a = s.handle(
            T0,
            Input::HttpFinished {
                id: 1,
                result: Err(http_error(404)),
            },
        );
        assert_eq!(
            a,
            vec![Action::Fail {
                id: 1,
                error: http_error(404)
            }]
        );

        let live = SegmentRequest {
            retry_not_found: true,
            ..request(Some(4))
        };
        s.handle(
            T0,
            Input::Submit {
                id: 2,
                request: live,
            },
        );
        assert!(
            s.handle(
                T0,
                Input::HttpFinished {
                    id: 2,
                    result: Err(http_error(404))
                }
            )
            .is_empty()
        );
        assert_eq!(s.next_wakeup(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn cancelling_a_running_transfer_aborts_it_and_frees_the_slot() {
        let mut s = Scheduler::new(SchedulerConfig {
            max_http_transfers: 1,
            ..Default::default()
        });
        s.handle(
            T0,
            Input::Submit {
                id: 1,
                request: request(Some(1)),
            },
        );
        s.handle(
            T0,
            Input::Submit {
                id: 2,
                request: request(Some(2)),
            },
        );
        let a = s.handle(T0, Input::Cancel { id: 1 });
        assert_eq!(
            a,
            vec![
                Action::AbortHttp { id: 1 },
                Action::StartHttp { id: 2, attempt: 0 }
            ]
        );
        // A late completion of the aborted transfer is ignored.
        assert!(
            s.handle(
                T0,
                Input::HttpFinished {
                    id: 1,
                    result: Ok(())
                }
            )
            .is_empty()
        );
    }
}

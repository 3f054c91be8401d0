//! Load generation: one task per connection, spread over the runtime's
//! workers by tokio. Each task does its own connection's I/O (HTTP/1.1 in
//! the exchange itself, HTTP/2 by polling hyper's connection future: no
//! second task to wake per request), keeps up to `streams` requests in flight, takes
//! tickets from the shared [`Schedule`] and records into its own [`Stats`];
//! the run merges them when every task has finished. Nothing on the request
//! path takes a lock.

use std::sync::Arc;

use futures_util::{stream::FuturesUnordered, StreamExt};
use tokio::time::{Duration, Instant};

use super::{
    args::BenchConfig,
    client::{Driver, Sender, Target},
    h1,
    progress::Progress,
    schedule::{Schedule, Ticket},
    stats::{Failure, Live, Outcome, Stats},
    BenchError,
};

/// The merged records of one run.
#[derive(Debug)]
pub(super) struct RunOutput {
    /// Everything recorded.
    pub(super) stats: Stats,
    /// From the end of warm-up to the last recorded completion.
    pub(super) elapsed: Duration,
    /// How long a `--duration` run sends for; requests in flight then run to
    /// their end (their whole latency counts), so `elapsed` can be longer.
    pub(super) planned: Option<Duration>,
}

/// Runs the load `config` describes and merges what the connections recorded.
pub(super) async fn run(config: &BenchConfig) -> Result<RunOutput, BenchError> {
    config.validate()?;
    let target = Arc::new(Target::new(config).await?);
    // Connect everything before the clock starts; failures are retried (and
    // counted) when the connection takes its first ticket.
    let conns: Vec<Option<(Sender, Driver)>> =
        futures_util::future::join_all((0..config.connections).map(|_| target.connect()))
            .await
            .into_iter()
            .map(Result::ok)
            .collect();
    let schedule = Arc::new(Schedule::new(config, Instant::now()));
    let lives: Vec<Arc<Live>> = (0..config.connections).map(|_| Arc::default()).collect();
    let progress = Progress::start(config, lives.clone(), schedule.measure_start());
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(&lives)
        .map(|(conn, live)| {
            let worker = Connection {
                target: Arc::clone(&target),
                schedule: Arc::clone(&schedule),
                live: Arc::clone(live),
                slots: config.per_connection(),
                stats: Stats::new(),
            };
            tokio::spawn(worker.run(conn))
        })
        .collect();
    let mut stats = Stats::new();
    for task in tasks {
        match task.await {
            Ok(s) => stats.merge(&s),
            Err(e) => return Err(BenchError::Worker(e.to_string())),
        }
    }
    progress.finish();
    let measure_start = schedule.measure_start();
    let end = stats.last.unwrap_or_else(Instant::now).max(measure_start);
    Ok(RunOutput {
        stats,
        elapsed: end - measure_start,
        planned: schedule.end().map(|planned| planned - measure_start),
    })
}

/// One connection's task.
struct Connection {
    target: Arc<Target>,
    schedule: Arc<Schedule>,
    live: Arc<Live>,
    slots: usize,
    stats: Stats,
}

/// What one request future yields.
type Done = (Option<Sender>, Outcome, Ticket, Instant, Instant);

impl Connection {
    async fn run(mut self, mut conn: Option<(Sender, Driver)>) -> Stats {
        let mut pending = None;
        loop {
            let (sender, driver) = match conn.take() {
                Some(c) => c,
                None => {
                    // A (re)connect consumes a ticket, so refused connections
                    // count as failed requests and the run still ends.
                    let Some(ticket) = self.schedule.next(Instant::now()) else {
                        return self.stats;
                    };
                    if let Some(due) = ticket.due {
                        tokio::time::sleep_until(due).await;
                    }
                    match self.target.connect().await {
                        Ok(c) => {
                            pending = Some(ticket);
                            c
                        }
                        Err(failure) => {
                            let now = Instant::now();
                            self.record(ticket, Outcome::Failed(failure), now, now);
                            continue;
                        }
                    }
                }
            };
            let over = match sender {
                Sender::H1(conn) => self.drive_h1(conn, pending.take()).await,
                Sender::H2(_) => self.drive(sender, driver, pending.take()).await,
            };
            if over {
                return self.stats;
            }
        }
    }

    /// Sends requests on one connection until the run is over (true) or the
    /// connection is unusable (false).
    async fn drive(
        &mut self,
        sender: Sender,
        mut driver: Driver,
        mut pending: Option<Ticket>,
    ) -> bool {
        let h2 = sender.stream().is_some();
        // HTTP/1.1: the idle sender; HTTP/2: the handle streams are cloned from.
        let mut idle = Some(sender);
        let mut driver_live = true;
        let mut over = false;
        let mut inflight = FuturesUnordered::new();
        loop {
            while !over && inflight.len() < self.slots {
                let Some(sender) = idle.as_ref().filter(|s| !s.is_closed()) else {
                    break;
                };
                let sender = match sender.stream() {
                    Some(stream) => stream,
                    None => match idle.take() {
                        Some(s) => s,
                        None => break,
                    },
                };
                let ticket = match pending
                    .take()
                    .or_else(|| self.schedule.next(Instant::now()))
                {
                    Some(t) => t,
                    None => {
                        over = true;
                        break;
                    }
                };
                inflight.push(one(Arc::clone(&self.target), ticket, sender));
            }
            if inflight.is_empty() {
                return over;
            }
            tokio::select! {
                biased;
                Some((back, outcome, ticket, origin, done)) = inflight.next() => {
                    self.record(ticket, outcome, origin, done);
                    if !h2 {
                        idle = back;
                    }
                }
                () = &mut driver, if driver_live => driver_live = false,
            }
        }
    }

    /// HTTP/1.1: one request at a time, so no in-flight set and no
    /// per-request timers: the connection's two timers only ever move
    /// forward, which tokio does without touching its timer wheel.
    async fn drive_h1(&mut self, mut conn: h1::Conn, mut pending: Option<Ticket>) -> bool {
        let far = Instant::now() + Duration::from_secs(365 * 86_400);
        let deadline = tokio::time::sleep_until(far);
        let due_timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(deadline, due_timer);
        loop {
            if conn.is_closed() {
                return false;
            }
            let Some(ticket) = pending
                .take()
                .or_else(|| self.schedule.next(Instant::now()))
            else {
                return true;
            };
            let picked = Instant::now();
            let origin = match ticket.due {
                Some(due) if due > picked => {
                    due_timer.as_mut().reset(due);
                    due_timer.as_mut().await;
                    Instant::now()
                }
                Some(due) => due,
                None => picked,
            };
            deadline
                .as_mut()
                .reset(Instant::now() + self.target.timeout());
            let result = tokio::select! {
                biased;
                r = self.target.h1_exchange(&mut conn) => r,
                () = &mut deadline => Err(Failure::Timeout),
            };
            let done = Instant::now();
            match result {
                Ok(outcome) => self.record(ticket, outcome, origin, done),
                Err(failure) => {
                    self.record(ticket, Outcome::Failed(failure), origin, done);
                    return false;
                }
            }
        }
    }

    fn record(&mut self, ticket: Ticket, outcome: Outcome, origin: Instant, done: Instant) {
        if ticket.record {
            let sent = match outcome {
                Outcome::Failed(Failure::Connect) => 0,
                _ => self.target.body_len(),
            };
            let error = self.stats.record(outcome, done - origin, done, sent);
            if self.schedule.end().is_some_and(|end| done > end) {
                self.stats.late += 1;
            }
            self.live.add(error);
        }
    }
}

/// One request: waits until it is due (open loop), sends, reads the response.
/// Latency origin: the due time when the request is late (queued behind busy
/// connections: coordinated-omission correction), else the actual send time
/// (an idle connection's timer lag is the harness's, not the server's).
async fn one(target: Arc<Target>, ticket: Ticket, sender: Sender) -> Done {
    let picked = Instant::now();
    let origin = match ticket.due {
        Some(due) if due > picked => {
            tokio::time::sleep_until(due).await;
            Instant::now()
        }
        Some(due) => due,
        None => picked,
    };
    let (back, outcome) = target.send(sender).await;
    (back, outcome, ticket, origin, Instant::now())
}

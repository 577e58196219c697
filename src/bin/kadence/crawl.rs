//! The accelerated client's crawl as the example node shows it: the status the node's events
//! tell, progress lines, the wait before a one-shot command, and what the command reports.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kadence::{CrawlMerge, CrawlProgress, CrawlStats, Event, QueryStats};
use serde_json::json;

use crate::driver::Handle;
use crate::progress;
use crate::units::format_duration;

/// The default bound on the crawl a one-shot `--accelerated` command waits for: the public
/// network (some 10,000 servers at the crawler's 50 new peers a second) takes about 4 minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A finished crawl.
#[derive(Debug, Clone)]
pub struct Finished {
    pub stats: CrawlStats,
    pub merge: CrawlMerge,
    /// Peers in the full table after it.
    pub peers: usize,
}

/// What a node's crawl events told so far.
#[derive(Debug, Clone, Default)]
pub struct CrawlStatus {
    /// Crawls finished since the node started.
    pub finished: u32,
    /// The crawl under way, if one is, and where it is.
    pub running: Option<CrawlProgress>,
    /// The last crawl that finished.
    pub last: Option<Finished>,
}

impl CrawlStatus {
    /// Takes a crawl event into account; false for any other event (nothing changed).
    pub fn update(&mut self, event: &Event) -> bool {
        match event {
            Event::CrawlStarted { seeds } => {
                self.running = Some(CrawlProgress {
                    found: *seeds,
                    queued: *seeds,
                    ..CrawlProgress::default()
                });
            }
            Event::CrawlProgress(progress) => self.running = Some(*progress),
            Event::CrawlFinished {
                stats,
                merge,
                peers,
                ..
            } => {
                self.running = None;
                self.finished += 1;
                self.last = Some(Finished {
                    stats: *stats,
                    merge: *merge,
                    peers: *peers,
                });
            }
            _ => return false,
        }
        true
    }
}

/// One line of a crawl's progress.
pub fn progress_line(progress: &CrawlProgress) -> String {
    format!(
        "crawl: {} peers found, {} contacted, {} reachable, {} requests",
        progress.found,
        progress.contacted(),
        progress.reachable,
        progress.requests
    )
}

/// A crawl's progress as JSON.
pub fn progress_json(progress: &CrawlProgress) -> serde_json::Value {
    json!({
        "found": progress.found,
        "contacted": progress.contacted(),
        "reachable": progress.reachable,
        "requests": progress.requests,
    })
}

/// A finished crawl as JSON.
pub fn finished_json(finished: &Finished) -> serde_json::Value {
    json!({
        "ms": finished.stats.duration.as_millis() as u64,
        "peers": finished.peers,
        "new": finished.merge.inserted,
        "removed": finished.merge.removed,
        "requests": finished.stats.requests,
        "failed": finished.stats.failed,
    })
}

/// The line that ends a crawl.
pub fn finished_line(finished: &Finished) -> String {
    format!(
        "crawl finished in {:.1?}: full routing table of {} peers ({} new, {} removed), {} \
         requests ({} failed)",
        finished.stats.duration,
        finished.peers,
        finished.merge.inserted,
        finished.merge.removed,
        finished.stats.requests,
        finished.stats.failed
    )
}

/// How the crawl before a one-shot command went.
#[derive(Debug, Clone)]
pub struct CrawlWait {
    /// The crawl, if it finished within the bound.
    pub finished: Option<Finished>,
    /// How long the command waited for it.
    pub waited: Duration,
}

/// The bar of a crawl a one-shot command waits for: peers contacted of those found so far
/// (the total grows as the crawl learns of more).
pub const CRAWL_BAR: &str =
    "{bar:30} {pos}/{len} peers crawled ({elapsed}, at most {msg}, --crawl-timeout)";

/// Waits until `node`'s first crawl finished, or `bound` passed, showing its progress as a bar
/// on stderr (stdout keeps the command's output, which may be JSON); a line says when it
/// starts and how it ended.
pub async fn wait_for_crawl(node: &Handle, bound: Duration, json: bool) -> CrawlWait {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + bound;
    let mut status = node.crawl.clone();
    eprintln!(
        "crawling the network before the command (at most {}, --crawl-timeout)",
        format_duration(bound)
    );
    let bar = progress::bar(0, json, CRAWL_BAR);
    bar.set_message(format_duration(bound));
    loop {
        let now = status.borrow_and_update().clone();
        if let Some(finished) = now.last {
            bar.finish_and_clear();
            eprintln!("{}", finished_line(&finished));
            return CrawlWait {
                finished: Some(finished),
                waited: start.elapsed(),
            };
        }
        if let Some(progress) = now.running {
            bar.set_length(progress.found as u64);
            bar.set_position(progress.contacted() as u64);
        }
        // A closed channel (the node's task ended) is a crawl that will not finish either.
        if !matches!(
            tokio::time::timeout_at(deadline, status.changed()).await,
            Ok(Ok(()))
        ) {
            break;
        }
    }
    bar.finish_and_clear();
    let progress = status.borrow().running.unwrap_or_default();
    eprintln!(
        "crawl not finished after {} ({} peers found, {} contacted): running the command \
         anyway, with the iterative lookup",
        format_duration(bound),
        progress.found,
        progress.contacted()
    );
    CrawlWait {
        finished: None,
        waited: start.elapsed(),
    }
}

/// Starts a new crawl on `node` (after the one under way, if any) and waits until it finished,
/// at most `bound`: the crawl a node starts on its own may have run before the network was
/// complete.
pub async fn crawl_again(node: &Handle, bound: Duration) -> Option<Finished> {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let seen = Arc::new(Mutex::new((0, false)));
        let before = node.crawl.clone();
        let write = seen.clone();
        node.run(bound, move |swarm| {
            // Read in the node's own task, where its events update the status: no crawl can
            // finish between this reading and the start.
            let finished = before.borrow().finished;
            *write.lock().unwrap() = (finished, swarm.behaviour_mut().dht.start_crawl());
            None
        })
        .await;
        let (before, started) = *seen.lock().unwrap();
        let mut status = node.crawl.clone();
        let done = tokio::time::timeout_at(deadline, status.wait_for(|s| s.finished > before))
            .await
            .ok()?
            .ok()?
            .last
            .clone();
        // Not started: one was under way, which has finished now; start ours.
        if started {
            return done;
        }
    }
}

/// What `--accelerated` adds to a one-shot command's output: whether its lookups started from
/// the full table, and its time.
#[derive(Debug)]
pub struct Acceleration {
    crawl: CrawlWait,
    /// When the command's operations started (after the crawl).
    start: Instant,
    lookups: usize,
    accelerated: usize,
}

impl Acceleration {
    pub fn new(crawl: CrawlWait) -> Self {
        Self {
            crawl,
            start: Instant::now(),
            lookups: 0,
            accelerated: 0,
        }
    }

    /// An operation of the command finished.
    pub fn record(&mut self, stats: &QueryStats) {
        self.note(stats.accelerated);
    }

    /// An operation whose lookups the node ran itself (the provide sweep): `accelerated`
    /// is whether the full table served them.
    pub fn note(&mut self, accelerated: bool) {
        self.lookups += 1;
        self.accelerated += usize::from(accelerated);
    }

    /// Whether every lookup of the command started from the full table.
    pub fn accelerated(&self) -> bool {
        self.lookups > 0 && self.accelerated == self.lookups
    }

    /// Adds `accelerated`, `ms` (the operations' time, the crawl aside) and `crawl` (finished,
    /// and its peers, requests and time, or how long it was waited for) to a JSON object.
    pub fn add_json(&self, object: &mut serde_json::Value) {
        object["accelerated"] = json!(self.accelerated());
        object["ms"] = json!(self.start.elapsed().as_millis() as u64);
        object["crawl"] = match &self.crawl.finished {
            // The crawl's own time (it may have finished while the node was joining).
            Some(f) => json!({
                "finished": true,
                "peers": f.peers,
                "requests": f.stats.requests,
                "ms": f.stats.duration.as_millis() as u64,
            }),
            // How long the command waited for it.
            None => json!({"finished": false, "ms": self.crawl.waited.as_millis() as u64}),
        };
    }

    /// The human form: one line.
    pub fn line(&self) -> String {
        let how = match (&self.crawl.finished, self.accelerated()) {
            (Some(f), true) => format!("yes, from the full routing table of {} peers", f.peers),
            (Some(_), false) => format!(
                "no: {} of {} lookups from the full table, the others iterative (the table \
                 does not serve every key)",
                self.accelerated, self.lookups
            ),
            (None, true) => "yes: the crawl finished after the bound, before the lookups".into(),
            (None, false) => "no: the crawl did not finish in time, iterative lookup".into(),
        };
        format!("accelerated: {how}; {:.1?}", self.start.elapsed())
    }
}

/// Records an operation's stats when the command runs `--accelerated`.
pub fn record(acceleration: &mut Option<Acceleration>, stats: &QueryStats) {
    if let Some(a) = acceleration {
        a.record(stats);
    }
}

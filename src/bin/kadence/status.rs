//! `serve`'s status line: what the node holds and how its background work goes, every
//! `--status-interval`; and the signals that stop it.

use std::time::Duration;

use kadence::{Event, SweepStatus};
use serde_json::json;

use crate::crawl::CrawlStatus;
use crate::units::format_duration;

/// What the events told since the node started, beside what the behaviour can be asked.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Regions with keys the sweep reprovided.
    pub regions: u64,
    /// Regions the sweep went through, with keys due or not.
    pub checked: u64,
    /// Keys those regions announced, and their ADD_PROVIDER messages written.
    pub keys: u64,
    pub messages: u64,
}

impl Tracker {
    /// Takes a sweep event into account.
    pub fn update(&mut self, event: &Event) {
        if let Event::RegionReprovided(report) = event {
            self.checked += 1;
            if report.keys > 0 {
                self.regions += 1;
                self.keys += report.keys as u64;
                self.messages += report.messages as u64;
            }
        }
    }
}

/// One status report.
#[derive(Debug)]
pub struct Status {
    /// Peers in the k-bucket routing table.
    pub peers: usize,
    /// Value records in the store.
    pub records: u64,
    /// Keys with provider records in the store.
    pub provider_keys: u64,
    /// Keys this node provides (`None`: the store could not say).
    pub provided: Option<u64>,
    /// Regions with keys reprovided, the keys and messages they announced, from the events.
    pub regions: u64,
    pub checked: u64,
    pub keys: u64,
    pub messages: u64,
    /// Where the sweep stands: how late, how long regions take, the workers it needs.
    pub sweep: SweepStatus,
    /// `Some` when the accelerated client runs: whether lookups use the full table, its size.
    pub accelerated: Option<(bool, usize)>,
    pub crawl: CrawlStatus,
}

impl Status {
    fn sweep_text(&self) -> String {
        let sweep = &self.sweep;
        let secs = |d: Duration| format_duration(Duration::from_secs(d.as_secs()));
        let mut text = if sweep.waiting > 0 && !sweep.behind.is_zero() {
            format!(
                "sweep behind by {} with {} of {} regions waiting",
                secs(sweep.behind),
                sweep.waiting,
                sweep.regions
            )
        } else {
            format!("sweep on schedule, {} regions", sweep.regions)
        };
        text.push_str(&format!(", {} swept", self.regions));
        if let Some(took) = sweep.region_time {
            text.push_str(&format!(", {} per region", secs(took)));
        }
        if !sweep.overdue.is_zero() {
            text.push_str(&format!(", last keys overdue by {}", secs(sweep.overdue)));
        }
        if let Some(needed) = sweep.workers_needed {
            text.push_str(&format!(
                "; cannot keep up: use --reprovide-workers {needed} (now {})",
                sweep.workers
            ));
        }
        text
    }

    /// The line, for people.
    pub fn line(&self) -> String {
        let provided = self
            .provided
            .map_or_else(|| "?".to_string(), |n| n.to_string());
        let mut line = format!(
            "status: {} peers, {} records, {} provider keys, {provided} provided keys ({})",
            self.peers,
            self.records,
            self.provider_keys,
            self.sweep_text()
        );
        if let Some((accelerated, full)) = self.accelerated {
            let crawl = match &self.crawl.running {
                Some(p) => format!("crawling: {} of {} peers contacted", p.contacted(), p.found),
                None => format!("{} crawls done", self.crawl.finished),
            };
            let state = if accelerated { "yes" } else { "not yet" };
            line.push_str(&format!(
                ", accelerated: {state} (full table of {full} peers, {crawl})"
            ));
        }
        line
    }

    /// The object, for scripts (`event` is added by the caller).
    pub fn json(&self) -> serde_json::Value {
        let mut object = json!({
            "peers": self.peers,
            "records": self.records,
            "provider_keys": self.provider_keys,
            "provided_keys": self.provided,
            "regions_reprovided": self.regions,
            "reprovide_regions_checked": self.checked,
            "keys_reprovided": self.keys,
            "reprovide_messages": self.messages,
            "keys_announced": self.sweep.keys_announced,
            "announcements_written": self.sweep.messages,
            "reprovide_regions_running": self.sweep.running,
            "reprovide_regions": self.sweep.regions,
            "reprovide_regions_waiting": self.sweep.waiting,
            "reprovide_behind_seconds": self.sweep.behind.as_secs_f64(),
            "reprovide_overdue_seconds": self.sweep.overdue.as_secs_f64(),
            "reprovide_region_seconds": self.sweep.region_time.map(|d| d.as_secs_f64()),
            "reprovide_workers": self.sweep.workers,
            "reprovide_workers_needed": self.sweep.workers_needed,
        });
        if let Some((accelerated, full)) = self.accelerated {
            object["accelerated"] = json!(accelerated);
            object["full_table_peers"] = json!(full);
            object["crawls_finished"] = json!(self.crawl.finished);
            object["crawl_running"] = self
                .crawl
                .running
                .map_or(serde_json::Value::Null, |p| crate::crawl::progress_json(&p));
        }
        object
    }
}

/// Ctrl-C and SIGTERM, listened for from the start: a signal that arrives while the node
/// handles an event is kept until it is asked again (a `ctrl_c()` made anew each time round
/// the loop would miss it, and the node would ignore the signal for good).
pub struct Shutdown {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Starts listening.
    pub fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next signal; its name.
    pub async fn signalled(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            // On other systems tokio's ctrl_c keeps its own registration between calls.
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            peers: 3,
            records: 1,
            provider_keys: 2,
            provided: Some(200),
            regions: 0,
            checked: 0,
            keys: 0,
            messages: 0,
            sweep: SweepStatus {
                regions: 1,
                running: 0,
                waiting: 0,
                behind: Duration::ZERO,
                workers: 4,
                region_time: None,
                workers_needed: None,
                overdue: Duration::ZERO,
                keys_announced: 0,
                messages: 0,
            },
            accelerated: None,
            crawl: CrawlStatus::default(),
        }
    }

    #[test]
    fn the_line_says_what_the_node_holds() {
        let line = status().line();
        assert_eq!(
            line,
            "status: 3 peers, 1 records, 2 provider keys, 200 provided keys \
             (sweep on schedule, 1 regions, 0 swept)"
        );
        let mut late = status();
        late.sweep.behind = Duration::from_secs(90);
        late.sweep.waiting = 3;
        late.sweep.regions = 8;
        late.sweep.region_time = Some(Duration::from_secs(600));
        late.sweep.workers_needed = Some(6);
        late.regions = 4;
        late.accelerated = Some((true, 9));
        let line = late.line();
        assert!(
            line.contains("sweep behind by 1m30s with 3 of 8 regions waiting, 4 swept"),
            "{line}"
        );
        assert!(
            line.contains("cannot keep up: use --reprovide-workers 6 (now 4)"),
            "{line}"
        );
        assert!(
            line.contains("accelerated: yes (full table of 9 peers"),
            "{line}"
        );
        let json = late.json();
        assert_eq!(json["reprovide_behind_seconds"], 90.0);
        assert_eq!(json["reprovide_workers_needed"], 6);
        assert_eq!(json["full_table_peers"], 9);
    }
}

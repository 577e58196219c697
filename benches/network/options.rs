//! The bench's command line, the networks it selects, and the names it gives a run: the
//! command that reproduces it and a label for the files it writes.

use std::time::Duration;

use crate::churn::Churn;

/// The usage line, printed when an argument is wrong.
const USAGE: &str = "cargo bench --bench network -- [--nodes N] [--lookups L] [--provides P] \
[--seed S] [--settle SECS] [--idle-timeout SECS] [--cold] [--alpha A | --alpha-all A] \
[--only kadence-accel,kadence,kad,kad10,kadence-beta] [--kad-lookups L] \
[--churn gone:SHARE|silent:SHARE] [--churn-wait SECS] [--crawl-timeout SECS] [--no-recrawl] \
[--crawl-batch B]";

/// kadence's requests in flight per lookup unless told otherwise: its default, go's.
const KADENCE_ALPHA: usize = 10;
/// rust-libp2p's idle-connection timeout is 10 s ("cold" in issue 15); this bench ran with 60 s
/// before it had the option, and keeps that default so that its earlier tables still hold.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Accelerated nodes that run their second crawl at once (see `crawl.rs`).
const CRAWL_BATCH: usize = 10;

/// One network the bench can build.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Kind {
    #[default]
    Kadence,
    /// libp2p-kad with its defaults (alpha 3), or with `--alpha-all`.
    KadDefault,
    /// libp2p-kad with alpha = 10, like the Go peers, whatever `--alpha-all` says.
    KadAlpha10,
    /// kadence with `LookupFinish::BetaAnswered`, the rule go-libp2p-kad-dht ends lookups by.
    KadenceBetaFinish,
    /// kadence as `Kadence`, with the accelerated client on (`Config::accelerated()`): its
    /// operations start once every node's crawl finished (see `crawl.rs`).
    KadenceAccel,
}

impl Kind {
    /// Every network, in the order they run (and columns appear) by default. The accelerated
    /// client is not among them: it runs when `--only` names it.
    pub const ALL: [Kind; 4] = [
        Kind::Kadence,
        Kind::KadDefault,
        Kind::KadAlpha10,
        Kind::KadenceBetaFinish,
    ];

    /// Every network `--only` can name.
    const NAMED: [Kind; 5] = [
        Kind::KadenceAccel,
        Kind::Kadence,
        Kind::KadDefault,
        Kind::KadAlpha10,
        Kind::KadenceBetaFinish,
    ];

    /// Its name on the command line.
    pub fn flag(self) -> &'static str {
        match self {
            Kind::Kadence => "kadence",
            Kind::KadDefault => "kad",
            Kind::KadAlpha10 => "kad10",
            Kind::KadenceBetaFinish => "kadence-beta",
            Kind::KadenceAccel => "kadence-accel",
        }
    }

    pub fn is_kadence(self) -> bool {
        matches!(
            self,
            Kind::Kadence | Kind::KadenceBetaFinish | Kind::KadenceAccel
        )
    }

    /// Whether its nodes run the accelerated client.
    pub fn is_accelerated(self) -> bool {
        self == Kind::KadenceAccel
    }

    /// Requests in flight per lookup that the run sets, `None` where the implementation's own
    /// default stays (libp2p-kad's is 3).
    pub fn alpha(self, options: &Options) -> Option<usize> {
        match self {
            Kind::Kadence | Kind::KadenceBetaFinish | Kind::KadenceAccel => Some(
                options
                    .alpha_all
                    .or(options.kadence_alpha)
                    .unwrap_or(KADENCE_ALPHA),
            ),
            Kind::KadDefault => options.alpha_all,
            Kind::KadAlpha10 => Some(10),
        }
    }

    /// Its name in the table, with the alpha it runs at when that is not its default.
    pub fn name(self, options: &Options) -> String {
        let alpha = self.alpha(options);
        let tuned = |base: &str| match alpha {
            Some(a) if a != KADENCE_ALPHA => format!("{base} (alpha = {a})"),
            _ => base.to_string(),
        };
        match self {
            Kind::Kadence => tuned("kadence"),
            Kind::KadenceAccel => tuned("kadence (accelerated)"),
            Kind::KadenceBetaFinish => match alpha {
                Some(a) if a != KADENCE_ALPHA => format!("kadence (go's finish rule, alpha = {a})"),
                _ => "kadence (go's finish rule)".into(),
            },
            Kind::KadDefault => match alpha {
                Some(a) => format!("libp2p-kad (alpha = {a})"),
                None => "libp2p-kad (defaults)".into(),
            },
            Kind::KadAlpha10 => "libp2p-kad (alpha = 10)".into(),
        }
    }
}

/// Everything the command line sets.
#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: usize,
    pub lookups: usize,
    pub provides: usize,
    pub seed: u64,
    /// Wait after the bootstrap, before anything is measured.
    pub settle: Duration,
    /// The idle-connection timeout of every swarm (`--idle-timeout`): 10 s is rust-libp2p's
    /// default ("cold" in issue 15), 600 s keeps what a node opened ("warm").
    pub idle_timeout: Duration,
    /// `--cold`: close every connection once the tables settled.
    pub close_all: bool,
    /// `--alpha`: kadence's requests in flight, libp2p-kad unchanged.
    pub kadence_alpha: Option<usize>,
    /// `--alpha-all`: every network's requests in flight (but the alpha-10 one's).
    pub alpha_all: Option<usize>,
    /// The networks to run, in this order.
    pub only: Vec<Kind>,
    /// Whether `--only` chose them (it then goes into the command and the label).
    pub only_given: bool,
    /// `--kad-lookups`: libp2p-kad's networks run only the first this many of the lookups.
    pub kad_lookups: Option<usize>,
    pub churn: Option<Churn>,
    /// Wait after the churn, before the lookups, so that table maintenance can act.
    pub churn_wait: Duration,
    /// `--crawl-timeout`: the longest wait for the accelerated nodes' crawls, each of them;
    /// `None` for the default, which grows with the network (see `crawl.rs`).
    pub crawl_timeout: Option<Duration>,
    /// `--no-recrawl`: measure only the first crawl (the one that ran beside the bootstrap),
    /// not a second one started once the network is quiet.
    pub no_recrawl: bool,
    /// `--crawl-batch`: nodes that run their second crawl at once.
    pub crawl_batch: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 200,
            lookups: 300,
            provides: 30,
            seed: 1,
            settle: Duration::from_secs(2),
            idle_timeout: IDLE_TIMEOUT,
            close_all: false,
            kadence_alpha: None,
            alpha_all: None,
            only: Kind::ALL.to_vec(),
            only_given: false,
            kad_lookups: None,
            churn: None,
            churn_wait: Duration::ZERO,
            crawl_timeout: None,
            no_recrawl: false,
            crawl_batch: CRAWL_BATCH,
        }
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: Option<&String>) -> Result<T, String> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{flag} takes a number"))
}

impl Options {
    /// Parses the arguments after the program name; `--bench`, which `cargo bench` adds, is
    /// ignored.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Options::default();
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let secs = |v: Option<&String>| number::<u64>(flag, v).map(Duration::from_secs);
            match flag.as_str() {
                "--bench" => {}
                "--nodes" => o.nodes = number(flag, args.next())?,
                "--lookups" => o.lookups = number(flag, args.next())?,
                "--provides" => o.provides = number(flag, args.next())?,
                "--seed" => o.seed = number(flag, args.next())?,
                "--settle" => o.settle = secs(args.next())?,
                "--idle-timeout" => o.idle_timeout = secs(args.next())?,
                "--cold" => o.close_all = true,
                "--alpha" => o.kadence_alpha = Some(number(flag, args.next())?),
                "--alpha-all" => o.alpha_all = Some(number(flag, args.next())?),
                "--kad-lookups" => o.kad_lookups = Some(number(flag, args.next())?),
                "--churn-wait" => o.churn_wait = secs(args.next())?,
                "--crawl-timeout" => o.crawl_timeout = Some(secs(args.next())?),
                "--no-recrawl" => o.no_recrawl = true,
                "--crawl-batch" => o.crawl_batch = number(flag, args.next())?,
                "--churn" => {
                    let value = args
                        .next()
                        .ok_or("--churn takes gone:SHARE or silent:SHARE")?;
                    o.churn = Some(Churn::parse(value)?);
                }
                "--only" => {
                    let list = args.next().ok_or("--only takes a list of networks")?;
                    o.only = list
                        .split(',')
                        .map(|name| {
                            Kind::NAMED
                                .into_iter()
                                .find(|k| k.flag() == name)
                                .ok_or_else(|| format!("--only: no network named {name:?}"))
                        })
                        .collect::<Result<_, _>>()?;
                    o.only_given = true;
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        o.check()?;
        Ok(o)
    }

    fn check(&self) -> Result<(), String> {
        if self.kadence_alpha.is_some() && self.alpha_all.is_some() {
            return Err("--alpha and --alpha-all exclude each other".into());
        }
        if self.alpha_all == Some(0) || self.kadence_alpha == Some(0) {
            return Err("alpha must be at least 1".into());
        }
        if self.only.is_empty() {
            return Err("--only names no network".into());
        }
        let live = self.nodes - self.churn.map_or(0, |c| c.count(self.nodes));
        if live < 4 {
            return Err(format!(
                "{} nodes leave {live} live: need at least 4",
                self.nodes
            ));
        }
        Ok(())
    }

    /// The usage line, for errors.
    pub fn usage() -> &'static str {
        USAGE
    }

    /// The lookups a network runs: all of them, or the first `--kad-lookups` for libp2p-kad.
    pub fn lookups_for(&self, kind: Kind) -> usize {
        match self.kad_lookups {
            Some(l) if !kind.is_kadence() => l.min(self.lookups),
            _ => self.lookups,
        }
    }

    /// The command that repeats this run.
    pub fn command(&self) -> String {
        let mut c = format!(
            "cargo bench --bench network -- --nodes {} --lookups {} --provides {} --seed {} \
             --settle {} --idle-timeout {}",
            self.nodes,
            self.lookups,
            self.provides,
            self.seed,
            self.settle.as_secs(),
            self.idle_timeout.as_secs()
        );
        if self.only_given {
            let names: Vec<&str> = self.only.iter().map(|k| k.flag()).collect();
            c += &format!(" --only {}", names.join(","));
        }
        if self.close_all {
            c += " --cold";
        }
        if let Some(a) = self.kadence_alpha {
            c += &format!(" --alpha {a}");
        }
        if let Some(a) = self.alpha_all {
            c += &format!(" --alpha-all {a}");
        }
        if let Some(l) = self.kad_lookups {
            c += &format!(" --kad-lookups {l}");
        }
        if let Some(churn) = self.churn {
            c += &format!(" --churn {churn}");
        }
        if !self.churn_wait.is_zero() {
            c += &format!(" --churn-wait {}", self.churn_wait.as_secs());
        }
        if let Some(t) = self.crawl_timeout {
            c += &format!(" --crawl-timeout {}", t.as_secs());
        }
        if self.no_recrawl {
            c += " --no-recrawl";
        }
        if self.crawl_batch != CRAWL_BATCH {
            c += &format!(" --crawl-batch {}", self.crawl_batch);
        }
        c
    }

    /// A file-name label that says the configuration, e.g. `n200-idle10s-alpha3-silent25`.
    pub fn label(&self) -> String {
        let mut l = format!("n{}-idle{}s", self.nodes, self.idle_timeout.as_secs());
        if self.close_all {
            l += "-closed";
        }
        if let Some(a) = self.alpha_all {
            l += &format!("-alpha{a}");
        }
        if let Some(a) = self.kadence_alpha {
            l += &format!("-kadence-alpha{a}");
        }
        if let Some(churn) = self.churn {
            l += &format!("-{}{:.0}", churn.mode.name(), churn.share * 100.0);
            if !self.churn_wait.is_zero() {
                l += &format!("-wait{}s", self.churn_wait.as_secs());
            }
        }
        if let Some(k) = self.kad_lookups {
            l += &format!("-kad-lookups{k}");
        }
        if self.no_recrawl {
            l += "-no-recrawl";
        }
        if self.crawl_batch != CRAWL_BATCH {
            l += &format!("-crawl-batch{}", self.crawl_batch);
        }
        if self.only_given {
            let names: Vec<&str> = self.only.iter().map(|k| k.flag()).collect();
            l += &format!("-{}", names.join("+"));
        }
        if (self.lookups, self.provides, self.seed) != (300, 30, 1) {
            l += &format!("-l{}-p{}-s{}", self.lookups, self.provides, self.seed);
        }
        l
    }

    /// The configuration, for the JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "nodes": self.nodes,
            "lookups": self.lookups,
            "provides": self.provides,
            "seed": self.seed,
            "settle_s": self.settle.as_secs(),
            "idle_timeout_s": self.idle_timeout.as_secs(),
            "close_all_connections": self.close_all,
            "kadence_alpha": self.kadence_alpha,
            "alpha_all": self.alpha_all,
            "networks": self.only.iter().map(|k| k.flag()).collect::<Vec<_>>(),
            "kad_lookups": self.kad_lookups,
            "churn": self.churn.map(|c| serde_json::json!({
                "mode": c.mode.name(),
                "share": c.share,
                "nodes": c.count(self.nodes),
            })),
            "churn_wait_s": self.churn_wait.as_secs(),
            "crawl_timeout_s": self.crawl_timeout.map(|t| t.as_secs()),
            "recrawl": !self.no_recrawl,
            "crawl_batch": self.crawl_batch,
        })
    }
}

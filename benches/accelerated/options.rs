//! The bench's command line, and the command that reproduces a run.

/// The command line.
pub struct Options {
    pub nodes: usize,
    pub keys: usize,
    pub oneshot_keys: usize,
    pub in_flight: usize,
    pub delay_ms: u64,
    pub seed: u64,
    pub skip_provide: bool,
    pub skip_restart: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Self {
            nodes: 200,
            keys: 100_000,
            oneshot_keys: 10_000,
            in_flight: 50,
            delay_ms: 20,
            seed: 16,
            skip_provide: false,
            skip_restart: false,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut number = |name: &str| -> Result<u64, String> {
                it.next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("{name} needs a number"))
            };
            match arg.as_str() {
                "--nodes" => o.nodes = number(arg)? as usize,
                "--keys" => o.keys = number(arg)? as usize,
                "--oneshot-keys" => o.oneshot_keys = number(arg)? as usize,
                "--in-flight" => o.in_flight = number(arg)?.max(1) as usize,
                "--delay-ms" => o.delay_ms = number(arg)?,
                "--seed" => o.seed = number(arg)?,
                "--skip-provide" => o.skip_provide = true,
                "--skip-restart" => o.skip_restart = true,
                // cargo bench passes this to every bench target.
                "--bench" => {}
                other => return Err(format!("unknown argument {other}")),
            }
        }
        // k peers for every table, and room for the bootstrap draws.
        if o.nodes < 24 {
            return Err("--nodes must be at least 24".into());
        }
        Ok(o)
    }

    pub fn command(&self) -> String {
        let mut c = format!(
            "cargo bench --bench accelerated -- --nodes {} --keys {} --oneshot-keys {} \
             --in-flight {} --delay-ms {} --seed {}",
            self.nodes, self.keys, self.oneshot_keys, self.in_flight, self.delay_ms, self.seed
        );
        if self.skip_provide {
            c += " --skip-provide";
        }
        if self.skip_restart {
            c += " --skip-restart";
        }
        c
    }
}

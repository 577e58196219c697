//! Progress bars for long work, on stderr so that stdout keeps the command's output.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` steps drawn with `template` (indicatif's template language). Hidden with
/// `--json` and when stderr is no terminal: scripts and logs read stderr line by line, and a
/// redrawn bar there is noise.
pub fn bar(len: u64, json: bool, template: &str) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    // The templates are this crate's constants; a bad one falls back to a plain bar rather
    // than stopping a command that has already done its work.
    let style = ProgressStyle::with_template(template).unwrap_or_else(|e| {
        tracing::warn!(%e, template, "bad progress template");
        ProgressStyle::default_bar()
    });
    bar.set_style(style.progress_chars("=> "));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_output_has_no_bar() {
        assert!(bar(10, true, "{bar} {pos}/{len}").is_hidden());
    }

    #[test]
    fn the_templates_in_use_parse() {
        for template in [
            crate::oneshot::PROVIDE_BAR,
            crate::testnet::OPERATIONS_BAR,
            crate::crawl::CRAWL_BAR,
        ] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }
}

//! The progress-bar style of long-running subcommands (indicatif; drawn on stderr, and only
//! when stderr is a terminal).

use indicatif::ProgressStyle;

/// A bar style with the given colours, as wide as the terminal allows; falls back to the
/// default style (the template is a constant, so that never happens).
pub fn style(bar: &str) -> ProgressStyle {
    let template =
        format!("{{prefix:<22}} {{wide_bar:.{bar}}} {{human_pos:>7}}/{{human_len:7}} {{msg:<11}}");
    ProgressStyle::with_template(&template)
        .map(|s| s.progress_chars("█▉▊▋▌▍▎▏ "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

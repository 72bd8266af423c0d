//! Progress shown on a terminal while bytes or frames go to a board (nothing is drawn when stderr is not
//! a terminal, so logs and pipes stay clean).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for bytes sent to a board: count, rate and time left.
pub fn bytes_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("a valid progress template"),
    );
    bar
}

/// Moves `bar` to `done` of `total` (the total is known only once the flash starts).
pub fn update(bar: &ProgressBar, done: u64, total: u64) {
    bar.set_length(total);
    bar.set_position(done);
}

/// A spinner whose message is a stream's running status line.
pub fn status_line() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("a valid progress template"));
    bar
}

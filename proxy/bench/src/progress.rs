//! The live progress bar (indicatif, on stderr): elapsed time, requests,
//! current rate and errors. Hidden when stderr is not a terminal or when
//! the config asks for no progress. It reads the connections' [`Live`]
//! counters a few times a second; it never touches the request path.

use std::{io::IsTerminal, sync::Arc};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::{
    task::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    args::{BenchConfig, Length},
    stats::Live,
};

const TICK: Duration = Duration::from_millis(250);

/// A running progress bar.
#[derive(Debug)]
pub(super) struct Progress {
    bar: ProgressBar,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing; measuring starts at `measure_start` (after warm-up).
    pub(super) fn start(
        config: &BenchConfig,
        lives: Vec<Arc<Live>>,
        measure_start: Instant,
    ) -> Self {
        if !config.progress || !std::io::stderr().is_terminal() {
            return Self {
                bar: ProgressBar::hidden(),
                task: None,
            };
        }
        let (len, unit) = match config.length {
            Length::Duration(d) => (d.as_secs().max(1), "s"),
            Length::Requests(n) => (n, "req"),
        };
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let template = format!(
            "{{prefix}}{{elapsed_precise}} [{{bar:20.cyan/blue}}] {{pos}}/{{len}} {unit} {{msg}}"
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        if !config.label.is_empty() {
            bar.set_prefix(format!("{} ", config.label));
        }
        let by_requests = matches!(config.length, Length::Requests(_));
        let warmup = !config.warmup.is_zero();
        let task = tokio::spawn({
            let bar = bar.clone();
            async move {
                let mut tick = tokio::time::interval(TICK);
                let (mut last_n, mut last_t) = (0u64, Instant::now());
                let mut measuring = false;
                loop {
                    tick.tick().await;
                    let now = Instant::now();
                    if now < measure_start {
                        if warmup {
                            bar.set_message("warming up");
                        }
                        continue;
                    }
                    if !measuring {
                        // Elapsed counts measured time, not the warm-up.
                        measuring = true;
                        bar.reset_elapsed();
                        last_t = measure_start;
                    }
                    let (n, errors) = lives.iter().fold((0, 0), |(n, e), l| {
                        let (ln, le) = l.read();
                        (n + ln, e + le)
                    });
                    let dt = now.duration_since(last_t).as_secs_f64().max(1e-3);
                    #[allow(clippy::cast_precision_loss)] // display only
                    let rps = n.saturating_sub(last_n) as f64 / dt;
                    (last_n, last_t) = (n, now);
                    bar.set_position(if by_requests {
                        n
                    } else {
                        (now - measure_start).as_secs()
                    });
                    bar.set_message(format!("| {n} req | {rps:.0} req/s | {errors} err"));
                }
            }
        });
        Self {
            bar,
            task: Some(task),
        }
    }

    /// Stops and clears the bar.
    pub(super) fn finish(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

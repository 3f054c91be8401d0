//! `--compare DIRECT_URL`: the proxy's cost in one command. The same load
//! runs straight at the app and through the proxy in alternating rounds
//! (direct first in even rounds, proxy first in odd ones, so drift on a shared
//! machine hits both sides alike); the rounds of each side are merged and the
//! report gives the added latency per percentile and the throughput ratio.

use std::fmt::Write as _;

use serde::Serialize;

use super::{
    args::{parse_url, BenchConfig, Length},
    load::{self, RunOutput},
    report::{fmt_us, Report},
    stats::Stats,
    BenchError,
};

/// Latency the proxy adds at each percentile, microseconds (proxy − direct).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Added {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// Throughput of one round.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Round {
    /// Direct requests per second.
    pub direct_rps: f64,
    /// Through-the-proxy requests per second.
    pub proxy_rps: f64,
}

/// The result of `--compare`.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// All rounds straight at the app.
    pub direct: Report,
    /// All rounds through the proxy.
    pub proxy: Report,
    /// Per-round throughput, to judge the noise.
    pub rounds: Vec<Round>,
    /// Latency added by the proxy, microseconds.
    pub added_latency_us: Added,
    /// Proxy throughput / direct throughput.
    pub throughput_ratio: f64,
}

/// Runs `config` (aimed at the proxy) and the same load at `direct_url`, in `rounds` rounds.
pub async fn compare(
    config: &BenchConfig,
    direct_url: &str,
    rounds: u32,
) -> Result<Comparison, BenchError> {
    config.validate()?;
    let rounds = rounds.max(1);
    let mut direct_cfg = config.clone();
    direct_cfg.url = parse_url(direct_url)?;
    let mut sides = [
        (direct_cfg, empty(), "direct"),
        (config.clone(), empty(), "proxy"),
    ];
    let mut per_round = Vec::new();
    for round in 0..rounds {
        let mut rps = [0.0; 2];
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (cfg, total, name) = &mut sides[side];
            let mut cfg = cfg.clone();
            cfg.length = share(config.length, rounds, round);
            cfg.label = format!("{name} {}/{rounds}", round + 1);
            let out = load::run(&cfg).await?;
            #[allow(clippy::cast_precision_loss)] // counts far below 2^53
            let r = out.stats.requests as f64 / out.elapsed.as_secs_f64().max(1e-9);
            rps[side] = r;
            total.stats.merge(&out.stats);
            total.elapsed += out.elapsed;
            total.planned = match (total.planned, out.planned) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
        }
        per_round.push(Round {
            direct_rps: rps[0],
            proxy_rps: rps[1],
        });
    }
    let [(dcfg, dout, _), (pcfg, pout, _)] = sides;
    let direct = Report::new(&dcfg, &dout);
    let proxy = Report::new(&pcfg, &pout);
    let (d, p) = (&direct.latency_us, &proxy.latency_us);
    let added_latency_us = Added {
        p50: p.p50 - d.p50,
        p90: p.p90 - d.p90,
        p99: p.p99 - d.p99,
        p99_9: p.p99_9 - d.p99_9,
        max: p.max - d.max,
        mean: p.mean - d.mean,
    };
    let throughput_ratio = if direct.throughput_rps > 0.0 {
        proxy.throughput_rps / direct.throughput_rps
    } else {
        0.0
    };
    Ok(Comparison {
        direct,
        proxy,
        rounds: per_round,
        added_latency_us,
        throughput_ratio,
    })
}

fn empty() -> RunOutput {
    RunOutput {
        stats: Stats::new(),
        elapsed: tokio::time::Duration::ZERO,
        planned: None,
    }
}

/// Round `round`'s share of the total length.
fn share(length: Length, rounds: u32, round: u32) -> Length {
    match length {
        Length::Duration(d) => Length::Duration(d / rounds),
        Length::Requests(n) => {
            let (base, extra) = (n / u64::from(rounds), n % u64::from(rounds));
            Length::Requests((base + u64::from(u64::from(round) < extra)).max(1))
        }
    }
}

impl Comparison {
    /// The human-readable comparison table.
    pub fn table(&self) -> String {
        let (d, p, a) = (
            &self.direct.latency_us,
            &self.proxy.latency_us,
            &self.added_latency_us,
        );
        let mut t = String::new();
        let _ = writeln!(t, "direct: {}", self.direct.table());
        let _ = writeln!(t, "proxy:  {}", self.proxy.table());
        let _ = writeln!(
            t,
            "proxy cost ({} rounds each, alternating)",
            self.rounds.len()
        );
        let _ = writeln!(
            t,
            "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        for (name, l) in [("direct", d), ("proxy", p)] {
            let _ = writeln!(
                t,
                "  {name:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                fmt_us(l.p50),
                fmt_us(l.p90),
                fmt_us(l.p99),
                fmt_us(l.p99_9),
                fmt_us(l.max),
                fmt_us(l.mean)
            );
        }
        let plus = |v: f64| format!("{}{}", if v >= 0.0 { "+" } else { "" }, fmt_us(v));
        let _ = writeln!(
            t,
            "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "added",
            plus(a.p50),
            plus(a.p90),
            plus(a.p99),
            plus(a.p99_9),
            plus(a.max),
            plus(a.mean)
        );
        let _ = writeln!(
            t,
            "  throughput {:.1} req/s direct, {:.1} req/s proxy: ratio {:.3}",
            self.direct.throughput_rps, self.proxy.throughput_rps, self.throughput_ratio
        );
        let rounds: Vec<String> = self
            .rounds
            .iter()
            .map(|r| format!("{:.0}/{:.0}", r.direct_rps, r.proxy_rps))
            .collect();
        let _ = writeln!(t, "  rounds (direct/proxy req/s): {}", rounds.join(", "));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        let total: u64 = (0..3)
            .map(|r| match share(Length::Requests(10), 3, r) {
                Length::Requests(n) => n,
                Length::Duration(_) => 0,
            })
            .sum();
        assert_eq!(total, 10);
    }
}

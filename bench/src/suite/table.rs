//! The suite's table: every figure of a [`Suite`], the hub's fan-out beside the floor's.

use super::{Baseline, GROUP, Suite};
use crate::fanout::{self, CallProbe, FanoutReport};
use crate::{Percentiles, Table, connections, ms, redis_cost, storm, webhooks};

/// The suite as one table.
pub fn table(s: &Suite) -> String {
    let mut t = Table::new();
    let v = &s.votes_g60;
    t.row(
        format!("hub votes/s, G={GROUP} ({} sessions)", v.sessions),
        format!("{:.0}", v.votes_per_second),
    );
    t.row(
        "hub votes/s, G=3",
        format!("{:.0}", s.votes_g3.votes_per_second),
    );
    t.row(
        format!("hub votes/s, G={GROUP}, each group together"),
        format!("{:.0}", s.votes_g60_together.votes_per_second),
    );
    let nodes = s.redis_nodes;
    for (runs, cost) in runs(
        &s.redis_cost_g60,
        &s.redis_cost_g3,
        &s.redis_cost_g60_together,
    ) {
        if let Some(cost) = cost {
            redis_cost::rows(&mut t, &format!("{runs}, all {nodes} node(s)"), cost);
        }
    }
    if let Some(b) = &s.baseline {
        baseline_rows(&mut t, s, b);
    }
    let limits = [
        ("no pipelining", "script limit", s.redis_script_limit),
        (
            "pipeline 16",
            "pipelined limit",
            s.redis_script_limit_pipelined,
        ),
    ];
    for (how, name, limit) in limits {
        if let Some(limit) = limit {
            t.row(
                format!("redis-benchmark, vote script, {how}"),
                format!("{limit:.0}"),
            );
            t.row(
                format!("hub G={GROUP} / {name}"),
                format!("{:.2}", v.votes_per_second / limit),
            );
        }
    }
    t.row(
        format!("vote latency at full load, G={GROUP} (ms) p50/p90/p99/p99.9/max"),
        v.latency_us.long_ms(),
    );
    let h = &s.votes_half_rate;
    t.row(
        format!(
            "vote latency at half rate ({:.0} votes/s) (ms) p50/p99/max",
            h.votes_per_second
        ),
        h.latency_us.short_ms(),
    );
    fanout_rows(&mut t, s);
    if let Some(report) = &s.webhooks {
        webhooks::rows(&mut t, report);
    }
    connections::rows(&mut t, &s.connections);
    if let Some(large) = &s.large {
        fanout::rows(&mut t, &large.fanout);
        t.row(
            format!(
                "fan-out cost per delivery at {} sessions (us), from p50/p99",
                large.fanout.sessions
            ),
            per_delivery_us(&large.fanout),
        );
        let c = &large.connections;
        t.row(
            format!("connect + register {} sessions (s)", c.sessions),
            format!("{:.2}", c.connect_seconds),
        );
        if let Some(bytes) = c.bytes_per_session {
            // The hub's allocator keeps what the earlier runs freed and hands it out again,
            // so this growth understates the cost; the first memory run is the measure.
            t.row(
                format!(
                    "hub RSS growth per session at {} sessions, after the earlier runs",
                    c.sessions
                ),
                format!("{:.1} KiB", bytes as f64 / 1024.0),
            );
        }
        if let Some(why) = &large.limited_by {
            t.row(
                format!("{} sessions asked for", large.asked),
                format!("limited by {why}"),
            );
        }
    }
    if let Some(report) = &s.storm {
        storm::rows(&mut t, report);
    }
    t.0
}

/// This build's votes beside the previous build's.
fn baseline_rows(t: &mut Table, s: &Suite, b: &Baseline) {
    let label = &b.label;
    let now = runs(&s.votes_g60, &s.votes_g3, &s.votes_g60_together);
    let then = runs(&b.votes_g60, &b.votes_g3, &b.votes_g60_together);
    for ((runs, now), (_, then)) in now.into_iter().zip(then) {
        t.row(
            format!("votes/s, {runs}: this build / {label}"),
            format!(
                "{:.0} / {:.0} = {:.2}x",
                now.votes_per_second,
                then.votes_per_second,
                now.votes_per_second / then.votes_per_second.max(1.0)
            ),
        );
        t.row(
            format!("vote latency p99, {runs}: this build / {label} (ms)"),
            format!("{} / {}", ms(now.latency_us.p99), ms(then.latency_us.p99)),
        );
    }
    for (runs, cost) in runs(
        &b.redis_cost_g60,
        &b.redis_cost_g3,
        &b.redis_cost_g60_together,
    ) {
        if let Some(cost) = cost {
            redis_cost::rows(t, &format!("{runs}, {label}"), cost);
        }
    }
}

/// The suite's three vote runs' figures (`g60`, `g3`, `together`), each beside its name.
fn runs<T>(g60: T, g3: T, together: T) -> [(String, T); 3] {
    [
        (format!("G={GROUP}"), g60),
        ("G=3".to_owned(), g3),
        (format!("G={GROUP} together"), together),
    ]
}

/// The middle of sorted `values` (the mean of the two middle ones for an even count).
fn median(values: &[f64]) -> f64 {
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// The time to the last session (p50 and p99) divided among the sessions: the cost of one
/// delivery, as "p50/p99" in microseconds.
fn per_delivery_us(report: &FanoutReport) -> String {
    let each = |us: u64| us as f64 / report.sessions.max(1) as f64;
    format!(
        "{:.1}/{:.1}",
        each(report.last_delivery_us.p50),
        each(report.last_delivery_us.p99)
    )
}

/// The hub's time over the floor's.
fn ratio(hub_us: u64, floor_us: u64) -> f64 {
    hub_us as f64 / floor_us.max(1) as f64
}

/// The percentiles of every timed decision of `runs` together, and how many there were.
/// A p99 of one round's 50 decisions is its slowest decision; over every round's
/// decisions together it is a p99 proper.
fn pooled(runs: &[FanoutReport]) -> (usize, Percentiles) {
    let all = runs.iter().flat_map(|r| &r.last_delivery_each_us);
    (all.clone().count(), Percentiles::of_samples(all))
}

/// The hub's fan-out per round, the floor's beside it, and their ratio.
fn fanout_rows(t: &mut Table, s: &Suite) {
    let (mut p99_ratios, mut p50_ratios) = (Vec::new(), Vec::new());
    for (round, report) in s.fanout.iter().enumerate() {
        let round = round + 1;
        let hub = &report.last_delivery_us;
        t.row(
            format!(
                "fan-out {round}: to all of {} sessions, {} decisions (ms) p50/p99/max",
                report.sessions, report.decisions
            ),
            hub.short_ms(),
        );
        if let Some(floor) = s.floor.get(round - 1) {
            let floor = &floor.last_delivery_us;
            t.row(
                format!("fan-out {round}: the floor (ms) p50/p99/max"),
                floor.short_ms(),
            );
            p99_ratios.push(ratio(hub.p99, floor.p99));
            p50_ratios.push(ratio(hub.p50, floor.p50));
            t.row(
                format!("fan-out {round}: hub p99 / floor p99"),
                format!("{:.2}", ratio(hub.p99, floor.p99)),
            );
        }
    }
    let ((hub_count, hub), (floor_count, floor)) = (pooled(&s.fanout), pooled(&s.floor));
    if hub_count > 0 && floor_count > 0 {
        t.row(
            format!(
                "fan-out hub / floor over all {hub_count} and {floor_count} decisions, p99 / p50 \
                 to the last session"
            ),
            format!(
                "{:.2} / {:.2} ({} / {} ms against {} / {} ms)",
                ratio(hub.p99, floor.p99),
                ratio(hub.p50, floor.p50),
                ms(hub.p99),
                ms(hub.p50),
                ms(floor.p99),
                ms(floor.p50),
            ),
        );
    }
    for (what, mut ratios) in [("p99", p99_ratios), ("p50", p50_ratios)] {
        if ratios.is_empty() {
            continue;
        }
        ratios.sort_by(f64::total_cmp);
        t.row(
            format!("fan-out hub / floor, {what} to the last session: min/median/max"),
            format!(
                "{:.2}/{:.2}/{:.2}",
                ratios[0],
                median(&ratios),
                ratios[ratios.len() - 1]
            ),
        );
    }
    if let Some(hub) = s.fanout.first() {
        t.row(
            format!(
                "fan-out cost per delivery at {} sessions (us), from p50/p99",
                hub.sessions
            ),
            per_delivery_us(hub),
        );
    }
    let probes: Vec<_> = s.fanout.iter().filter_map(|r| r.calls.as_ref()).collect();
    if !probes.is_empty() {
        let pool = |each: fn(&CallProbe) -> &Vec<u64>| -> Vec<u64> {
            probes.iter().flat_map(|p| each(p)).copied().collect()
        };
        let (during, idle) = (pool(|p| &p.during_each_us), pool(|p| &p.idle_each_us));
        fanout::call_rows(
            t,
            "fan-out rounds: ",
            during.len(),
            &Percentiles::of_samples(&during),
            &Percentiles::of_samples(&idle),
        );
    }
    let missed: u64 = s.fanout.iter().chain(&s.floor).map(|r| r.missed).sum();
    let expected: usize = s
        .fanout
        .iter()
        .chain(&s.floor)
        .map(FanoutReport::deliveries)
        .sum();
    t.row(
        "fan-out deliveries missed, every run",
        format!("{missed} of {expected}"),
    );
    for (who, runs) in [("the hub", &s.fanout), ("the floor", &s.floor)] {
        let kernel = runs.iter().filter_map(|r| r.kernel).reduce(|a, b| a + b);
        if let Some(kernel) = kernel {
            fanout::losses_row(t, &format!("fan-out rounds, {who}"), kernel);
        }
    }
}

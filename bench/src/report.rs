//! Reports for people (a table, an HTML page with charts) and for machines (JSON).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::scenario::connect::ConnectReport;
use crate::scenario::group::GroupReport;
use crate::scenario::pairs::PairsReport;
use crate::scenario::presence::{FanoutReport, StormReport};
use crate::scenario::room::RoomReport;

pub fn write_json(path: &Path, report: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The report line with the setup's sign-ups the server said "later" to (login admission).
pub(crate) fn setup_refusals_line(t: &mut String, refusals: u64) {
    let _ = writeln!(
        t,
        "  setup refusals     {refusals} (sign-ups told to come back later, retried after retry_after_ms)"
    );
}

/// The report line with the server's memory before and after and the load generator's CPU.
pub(crate) fn memory_line(
    t: &mut String,
    rss_before_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    bench_cpu_s: Option<f64>,
) {
    let kib = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let _ = writeln!(
        t,
        "  server rss         {} → {} KiB;  load generator cpu {} s",
        kib(rss_before_kib),
        kib(rss_after_kib),
        opt(bench_cpu_s, 2)
    );
}

pub fn pairs_table(r: &PairsReport) -> String {
    let mut t = String::new();
    let rate = r
        .rate_target_msgs_per_s
        .map_or_else(|| "window".to_owned(), |v| format!("{v:.0} msgs/s"));
    let _ = writeln!(
        t,
        "pairs over {:?}: {} pairs, {} B, window {}, {:.0} s, pacing {rate}, {} load threads, {}",
        r.transport,
        r.pairs,
        r.size_bytes,
        r.window,
        r.duration_s,
        r.threads,
        if r.delivery_ack {
            "receivers ack delivery"
        } else {
            "no delivery acks"
        }
    );
    let _ = writeln!(
        t,
        "  delivered          {:>12} msgs ({:.0} msgs/s)",
        r.delivered, r.delivered_msgs_per_s
    );
    let _ = writeln!(
        t,
        "  sent / acked       {:>12} / {};  delivery acks sent {}",
        r.sent, r.acked, r.delivery_acks
    );
    setup_refusals_line(&mut t, r.setup_refusals);
    let l = &r.latency_us;
    let _ = writeln!(
        t,
        "  latency µs         p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    let _ = writeln!(t, "  {} (rate limited {})", r.faults, r.rate_limited);
    if r.sync_hints > 0 {
        let _ = writeln!(
            t,
            "  sync hints {}: pushes were lost between cluster nodes (Sync has them)",
            r.sync_hints
        );
    }
    for (kind, n) in &r.error_kinds {
        let _ = writeln!(t, "    {n} × {kind}");
    }
    let _ = writeln!(
        t,
        "  server cpu         {} s  = {} µs per delivered message",
        opt(r.server_cpu_s, 2),
        opt(r.server_cpu_us_per_msg, 2)
    );
    memory_line(
        &mut t,
        r.server_rss_kib_before,
        r.server_rss_kib_after,
        r.bench_cpu_s,
    );
    t += &r.provenance.lines();
    t
}

pub fn connect_table(r: &ConnectReport) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "connect: {} connections, held {:.0} s, {} source address(es)",
        r.conns, r.hold_s, r.source_ips
    );
    let _ = writeln!(
        t,
        "  connected+logged in {:>10} in {:.2} s ({:.0}/s), errors {}",
        r.connected, r.connect_s, r.connects_per_s, r.errors
    );
    setup_refusals_line(&mut t, r.setup_refusals);
    let _ = writeln!(
        t,
        "  server rss          {} → {} KiB = {} KiB per connection",
        r.server_rss_kib_before
            .map_or("-".into(), |v| v.to_string()),
        r.server_rss_kib_after.map_or("-".into(), |v| v.to_string()),
        opt(r.server_rss_kib_per_conn, 2)
    );
    let _ = writeln!(
        t,
        "  marginal            {} KiB per connection (second half over first half)",
        opt(r.server_rss_kib_per_conn_marginal, 2)
    );
    let _ = writeln!(t, "  server cpu          {} s", opt(r.server_cpu_s, 2));
    t += &r.provenance.lines();
    t
}

pub fn fanout_table(r: &FanoutReport) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "presence-fanout: 1 user, {} online friends, {} changes",
        r.friends, r.changes
    );
    let _ = writeln!(
        t,
        "  delivered           {:>10} presence pushes (of {})",
        r.delivered,
        r.friends * r.changes
    );
    let _ = writeln!(
        t,
        "  lost {}  duplicates {}  wrong state {}",
        r.lost, r.duplicates, r.wrong_state
    );
    setup_refusals_line(&mut t, r.setup_refusals);
    let _ = writeln!(
        t,
        "  change to last friend  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        r.fanout_ms_p50, r.fanout_ms_p99, r.fanout_ms_max
    );
    let _ = writeln!(
        t,
        "  server cpu          {} s = {} µs per delivered update",
        opt(r.server_cpu_s, 3),
        opt(r.server_cpu_us_per_update, 3)
    );
    t += &r.provenance.lines();
    t
}

pub fn group_table(r: &GroupReport) -> String {
    let mut t = String::new();
    let mode = match r.rate_target_msgs_per_s {
        Some(rate) => format!("{rate} msg/s"),
        None => format!("window {}", r.window),
    };
    let _ = writeln!(
        t,
        "group: {} members, {} online, {} senders, {} B, {mode}, {:.0} s (setup {:.1} s)",
        r.members, r.online, r.senders, r.size_bytes, r.duration_s, r.setup_s
    );
    let _ = writeln!(
        t,
        "  messages            {:>10} sent, {} acked, {} refused as over the connection's rate{}",
        r.sent,
        r.acked,
        r.rate_limited,
        if r.rate_target_msgs_per_s.is_some() && r.rate_limited > 0 {
            " (a paced run takes every send: not clean)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        t,
        "  deliveries          {:>10} of {} ({:.0}/s); delivery acks {} sent, {} refused as over the rate",
        r.deliveries,
        r.expected_deliveries,
        r.deliveries_per_s,
        r.delivery_acks,
        r.delivery_acks_refused
    );
    setup_refusals_line(&mut t, r.setup_refusals);
    let _ = writeln!(t, "  {}", r.faults);
    for (kind, n) in &r.error_kinds {
        let _ = writeln!(t, "    {kind}: {n}");
    }
    let l = &r.latency_us;
    let _ = writeln!(
        t,
        "  send to last member p50 {} µs  p99 {} µs  max {} µs",
        l.p50, l.p99, l.max
    );
    let d = &r.delivery_latency_us;
    let _ = writeln!(
        t,
        "  send to a member    p50 {} µs  p99 {} µs  max {} µs",
        d.p50, d.p99, d.max
    );
    let _ = writeln!(
        t,
        "  server cpu          {} s = {} µs per delivery, {} µs per message",
        opt(r.server_cpu_s, 3),
        opt(r.server_cpu_us_per_delivery, 3),
        opt(r.server_cpu_us_per_message, 1)
    );
    t += &r.provenance.lines();
    t
}

pub fn storm_table(r: &StormReport) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "login-storm: {} users with {} friends each, {} logging in at once",
        r.users, r.friends_per_user, r.concurrency
    );
    let _ = writeln!(
        t,
        "  logged in           {:>10} in {:.2} s, errors {}, friends listed {}, retries {}",
        r.logged_in, r.storm_s, r.errors, r.friends_listed, r.retries
    );
    setup_refusals_line(&mut t, r.setup_refusals);
    let _ = writeln!(
        t,
        "  connect to first snapshot  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        r.snapshot_ms_p50, r.snapshot_ms_p99, r.snapshot_ms_max
    );
    let _ = writeln!(
        t,
        "  server cpu          {} s = {} µs per login",
        opt(r.server_cpu_s, 2),
        opt(r.server_cpu_us_per_login, 1)
    );
    t += &r.provenance.lines();
    t
}

/// A self-contained page: the summary, the latency distribution and throughput over time.
pub fn pairs_html(r: &PairsReport) -> String {
    let dist: Vec<(f64, f64)> = r
        .distribution
        .iter()
        .map(|(p, us)| (nines(*p), *us as f64))
        .collect();
    // The last second of the series is partial (the run ends inside it): left out, so that it
    // does not read as a collapse.
    let full_seconds = r.duration_s.floor() as usize;
    let per_second = |series: &[u64]| -> Vec<(f64, f64)> {
        series
            .iter()
            .take(full_seconds)
            .enumerate()
            .map(|(s, v)| (s as f64 + 1.0, *v as f64))
            .collect()
    };
    let throughput = per_second(&r.delivered_per_s);
    let worst = per_second(&r.latency_max_us_per_s);
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ringchat-bench pairs</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}pre{{background:#f6f6f6;padding:1em;white-space:pre-wrap}}\
         svg{{background:#fff;border:1px solid #ddd;margin:0.5em 0}}</style></head><body>\
         <h1>ringchat-bench: pairs</h1><pre>{}</pre>",
        escape(&pairs_table(r))
    );
    page += "<h2>Latency distribution</h2><p>End-to-end latency by percentile; the x axis counts nines (90, 99, 99.9, …).</p>";
    page += &chart(&dist, "percentile", "latency", nines_ticks(&dist), fmt_us);
    page +=
        "<h2>Throughput over time</h2><p>Messages delivered in each full second of the run.</p>";
    page += &chart(
        &throughput,
        "second",
        "msgs/s",
        second_ticks(&throughput),
        |v| format!("{v:.0}"),
    );
    page += "<h2>Worst latency per second</h2>";
    page += &chart(
        &worst,
        "second",
        "max latency",
        second_ticks(&worst),
        fmt_us,
    );
    page += "</body></html>\n";
    page
}

/// Percentile → "number of nines" (50 → 0.3, 90 → 1, 99 → 2, …), the usual latency-plot axis.
fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-6);
    -rest.log10()
}

fn un_nines(x: f64) -> f64 {
    100.0 * (1.0 - 10f64.powf(-x))
}

/// Ticks at 50, 90, 99, 99.9, … within the data's range.
fn nines_ticks(points: &[(f64, f64)]) -> Vec<(f64, String)> {
    let x_max = points.iter().map(|(x, _)| *x).fold(0.0, f64::max);
    let mut ticks = vec![(nines(50.0), "50".to_owned())];
    let mut n = 1;
    while f64::from(n) <= x_max + 1e-9 {
        // 90 and 99 with no decimals, 99.9 with one, 99.99 with two, …
        let decimals = usize::try_from(n - 2).unwrap_or(0);
        ticks.push((
            f64::from(n),
            format!("{:.decimals$}", un_nines(f64::from(n))),
        ));
        n += 1;
    }
    ticks
}

/// Whole seconds at a round step (1, 2, 5, 10, …), each label once.
fn second_ticks(points: &[(f64, f64)]) -> Vec<(f64, String)> {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Vec::new();
    };
    let step = nice_step((last.0 - first.0) / 6.0).max(1.0);
    let mut x = (first.0 / step).ceil() * step;
    let mut ticks = Vec::new();
    while x <= last.0 + 1e-9 {
        ticks.push((x, format!("{x:.0}")));
        x += step;
    }
    ticks
}

/// The round number (1, 2 or 5 × 10^k) at or above `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// Microseconds as a person reads them: 850 µs, 1.2 ms, 3.4 s.
fn fmt_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{} ms", trim(us / 1_000.0))
    } else {
        format!("{} s", trim(us / 1_000_000.0))
    }
}

fn trim(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.1}");
        s.strip_suffix(".0").map_or(s.clone(), str::to_owned)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A line chart as inline SVG, with axes, the given x ticks and round y ticks.
fn chart(
    points: &[(f64, f64)],
    x_label: &str,
    y_label: &str,
    x_ticks: Vec<(f64, String)>,
    y_fmt: impl Fn(f64) -> String,
) -> String {
    const W: f64 = 720.0;
    const H: f64 = 260.0;
    const PAD: f64 = 72.0;
    if points.is_empty() {
        return "<p>(no data)</p>".to_owned();
    }
    let (x_min, x_max) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), (x, _)| {
            (lo.min(*x), hi.max(*x))
        });
    let y_step = nice_step(points.iter().map(|(_, y)| *y).fold(0.0, f64::max).max(1.0) / 4.0);
    let y_max = (points.iter().map(|(_, y)| *y).fold(0.0, f64::max) / y_step)
        .ceil()
        .max(1.0)
        * y_step;
    let x_span = (x_max - x_min).max(1e-9);
    let sx = |x: f64| PAD + (x - x_min) / x_span * (W - 2.0 * PAD);
    let sy = |y: f64| H - PAD + -(y / y_max) * (H - 2.0 * PAD);
    let mut svg = format!(
        "<svg width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    let _ = write!(
        svg,
        "<line x1=\"{PAD}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/><line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{}\" stroke=\"#888\"/>",
        H - PAD,
        W - PAD,
        H - PAD,
        H - PAD
    );
    for (x, label) in x_ticks
        .iter()
        .filter(|(x, _)| *x >= x_min - 1e-9 && *x <= x_max + 1e-9)
    {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            sx(*x),
            H - PAD + 16.0,
            escape(label),
        );
    }
    let mut y = 0.0;
    while y <= y_max + 1e-9 {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            PAD - 6.0,
            sy(y) + 4.0,
            escape(&y_fmt(y))
        );
        y += y_step;
    }
    let path: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
        .collect();
    let _ = write!(
        svg,
        "<polyline fill=\"none\" stroke=\"#2a6fdb\" stroke-width=\"2\" points=\"{}\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">{}</text>\
         <text x=\"14\" y=\"{}\" font-size=\"12\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text></svg>",
        path.join(" "),
        W / 2.0,
        H - 12.0,
        escape(x_label),
        H / 2.0,
        H / 2.0,
        escape(y_label)
    );
    svg
}

pub fn room_table(r: &RoomReport) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "room: {} members, {} senders, {} B, {:.0} msgs/s for {:.0} s",
        r.members, r.senders, r.size_bytes, r.rate_target_msgs_per_s, r.duration_s
    );
    let _ = writeln!(
        t,
        "  sent / acked / refused  {} / {} / {}",
        r.sent, r.acked, r.refused
    );
    let _ = writeln!(
        t,
        "  deliveries          {:>10} of {} ({:.0} /s)",
        r.deliveries, r.deliveries_expected, r.deliveries_per_s
    );
    setup_refusals_line(&mut t, r.setup_refusals);
    let _ = writeln!(t, "  {}", r.faults);
    let _ = writeln!(
        t,
        "  due to delivered    p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms ({} over the histogram's bound)",
        r.latency_ms_p50, r.latency_ms_p99, r.latency_ms_max, r.latency_over_max
    );
    let _ = writeln!(
        t,
        "  server cpu          {} s = {} µs per delivery",
        opt(r.server_cpu_s, 3),
        opt(r.server_cpu_us_per_delivery, 3)
    );
    t += &r.provenance.lines();
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis_round_trips() {
        for p in [50.0, 90.0, 99.0, 99.9] {
            assert!((un_nines(nines(p)) - p).abs() < 1e-9);
        }
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn chart_is_valid_svg_text() {
        let svg = chart(&[(0.0, 1.0), (1.0, 3.0)], "x", "y<", Vec::new(), |y| {
            format!("{y}")
        });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("y&lt;"));
        assert_eq!(
            chart(&[], "x", "y", Vec::new(), |y| format!("{y}")),
            "<p>(no data)</p>"
        );
    }

    #[test]
    fn ticks_are_round_and_never_repeat() {
        let points: Vec<(f64, f64)> = (1..=10).map(|s| (f64::from(s), 1.0)).collect();
        let labels: Vec<String> = second_ticks(&points).into_iter().map(|(_, l)| l).collect();
        assert_eq!(labels, ["2", "4", "6", "8", "10"]);
        let dist = [(nines(50.0), 1.0), (nines(99.95), 2.0)];
        let labels: Vec<String> = nines_ticks(&dist).into_iter().map(|(_, l)| l).collect();
        assert_eq!(labels, ["50", "90", "99", "99.9"]);
        assert_eq!(fmt_us(850.0), "850 µs");
        assert_eq!(fmt_us(1_250.0), "1.2 ms");
        assert_eq!(fmt_us(250_000.0), "250 ms");
        assert_eq!(fmt_us(3_400_000.0), "3.4 s");
    }
}

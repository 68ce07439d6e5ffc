//! The table and its JSON twin: absolute numbers, ratios against veth and against each
//! row's comparator.

use serde_json::{Value, json};

use crate::measure::{Plan, Series};
use crate::scenarios::Stop;

/// What a scenario measured (possibly partly, when it failed half way).
#[derive(Debug, Default)]
pub(crate) struct Measured {
    pub(crate) rtt_ms: Option<f64>,
    pub(crate) one: Option<Series>,
    pub(crate) two: Option<Series>,
    /// One UDP flood ([`crate::measure::Traffic::UdpFlood`]).
    pub(crate) udp: Option<Series>,
    /// VmRSS of the weft router on host a, idle, and how many peers it had then.
    pub(crate) rss_idle_kib: Option<u64>,
    pub(crate) rss_idle_peers: Option<usize>,
    pub(crate) notes: Vec<String>,
}

/// One row of the table.
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) name: &'static str,
    pub(crate) label: &'static str,
    /// The row this one is compared with, by name.
    pub(crate) comparator: Option<&'static str>,
    pub(crate) m: Measured,
    pub(crate) stop: Option<Stop>,
    pub(crate) wall_s: f64,
}

impl Row {
    fn ok(&self) -> bool {
        self.stop.is_none()
    }

    fn status(&self) -> String {
        match &self.stop {
            None => "ok".into(),
            Some(Stop::Failed(s)) => format!("error: {s}"),
            Some(Stop::Unavailable(s) | Stop::Skipped(s)) => s.clone(),
        }
    }

    fn t1(&self) -> Option<f64> {
        self.m.one.as_ref()?.median_gbps()
    }

    fn t2(&self) -> Option<f64> {
        self.m.two.as_ref()?.median_gbps()
    }

    fn tu(&self) -> Option<f64> {
        self.m.udp.as_ref()?.median_gbps()
    }

    /// The series CPU figures are reported from: 1 stream.
    fn cpu_series(&self) -> Option<&Series> {
        self.m.one.as_ref()
    }

    fn rss_load_kib(&self) -> Option<u64> {
        [
            self.m.one.as_ref(),
            self.m.two.as_ref(),
            self.m.udp.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(Series::rss_max_kib)
        .max()
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn f(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

fn x(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}x"))
}

fn mib(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn find<'a>(rows: &'a [Row], name: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.name == name)
}

/// Added RTT over veth, microseconds.
fn added_rtt_us(rows: &[Row], r: &Row) -> Option<f64> {
    let veth = find(rows, "veth")?.m.rtt_ms?;
    Some((r.m.rtt_ms? - veth) * 1000.0)
}

/// The comparisons the brief asks for: (row, comparator, label).
const PAIRS: [(&str, &str, &str); 18] = [
    ("sleeve-enc", "nebula", "weft sleeve encrypted / Nebula"),
    (
        "sleeve-enc",
        "wireguard-go",
        "weft sleeve encrypted / wireguard-go",
    ),
    (
        "sleeve-enc",
        "sleeve",
        "weft sleeve encrypted (auto cipher) / plain",
    ),
    (
        "sleeve-enc-chacha",
        "sleeve",
        "weft sleeve encrypted, ChaCha20-Poly1305 / plain",
    ),
    (
        "sleeve-enc-aes",
        "sleeve",
        "weft sleeve encrypted, AES-256-GCM / plain",
    ),
    (
        "sleeve-enc-aes",
        "sleeve-enc-chacha",
        "weft sleeve encrypted, AES-256-GCM / ChaCha20-Poly1305",
    ),
    ("sleeve", "vxlan", "weft sleeve plain / kernel VXLAN"),
    ("fastdp", "vxlan", "weft fastdp / hand-built bridge+VXLAN"),
    ("sleeve", "nebula", "weft sleeve plain / Nebula"),
    (
        "sleeve",
        "sleeve-plain",
        "weft sleeve io_uring (default) / plain backend",
    ),
    (
        "sleeve-enc",
        "sleeve-enc-plain",
        "weft sleeve encrypted io_uring (default) / plain backend",
    ),
    (
        "sleeve-enc-2t",
        "sleeve-enc",
        "weft sleeve encrypted, 2 crypto threads / default (half the CPUs)",
    ),
    (
        "tapfwd",
        "vxlan",
        "ceiling (bare TAP<->UDP forwarder) / kernel VXLAN",
    ),
    ("sleeve", "tapfwd", "weft sleeve plain / ceiling"),
    (
        "sleeve-q2",
        "sleeve-q1",
        "weft sleeve plain, 2 queues / 1 queue",
    ),
    (
        "sleeve-enc-q2",
        "sleeve-enc-q1",
        "weft sleeve encrypted, 2 queues / 1 queue",
    ),
    (
        "sleeve-enc-q2",
        "sleeve-q2",
        "weft sleeve encrypted / plain, both 2 queues",
    ),
    (
        "sleeve-q1",
        "tapfwd",
        "weft sleeve plain, 1 queue / ceiling",
    ),
];

/// The congestion control the runs used, as the table and the JSON name it.
fn cc_label(plan: Plan) -> String {
    match plan.cc {
        Some(cc) => cc.to_owned(),
        None => {
            let path = "/proc/sys/net/ipv4/tcp_congestion_control";
            let dflt = std::fs::read_to_string(path).unwrap_or_else(|_| "?".into());
            format!("namespace default: {}", dflt.trim())
        }
    }
}

pub(crate) fn print_table(rows: &[Row], plan: Plan) {
    let veth = find(rows, "veth");
    println!();
    println!(
        "weft throughput benchmark: iperf3 TCP ({}) and a UDP flood ({} B datagrams, received), median of {} run(s) x {} s; ping median of {}; CPU and per-core figures from the 1-stream TCP runs",
        cc_label(plan),
        crate::measure::UDP_FLOOD_LEN,
        plan.runs,
        plan.secs,
        plan.pings
    );
    let head = [
        "scenario",
        "1 str Gb/s",
        "2 str Gb/s",
        "UDP Gb/s",
        "RTT ms",
        "+RTT us",
        "1str/veth",
        "2str/veth",
        "vs",
        "1str/vs",
        "2str/vs",
        "daemon CPU%",
        "Gb/s/dmn core",
        "path CPU%",
        "Gb/s/path core",
        "RSS idle MiB",
        "RSS load MiB",
    ];
    let mut lines: Vec<Vec<String>> = vec![head.iter().map(|s| (*s).to_owned()).collect()];
    let mut errors = Vec::new();
    for r in rows {
        let cmp = r.comparator.and_then(|c| find(rows, c));
        let cs = r.cpu_series();
        let idle = match (r.m.rss_idle_kib, r.m.rss_idle_peers) {
            (Some(k), Some(p)) => format!("{} ({p} peers)", mib(Some(k))),
            (k, _) => mib(k),
        };
        let mut line = vec![
            r.label.to_owned(),
            f(r.t1(), 3),
            f(r.t2(), 3),
            f(r.tu(), 3),
            f(r.m.rtt_ms, 3),
            f(added_rtt_us(rows, r), 0),
            x(ratio(r.t1(), veth.and_then(Row::t1))),
            x(ratio(r.t2(), veth.and_then(Row::t2))),
            r.comparator.unwrap_or("-").to_owned(),
            x(ratio(r.t1(), cmp.and_then(Row::t1))),
            x(ratio(r.t2(), cmp.and_then(Row::t2))),
            f(cs.and_then(Series::daemon_cpu_pct), 0),
            f(cs.and_then(Series::gbps_per_daemon_core), 2),
            f(cs.and_then(Series::path_cpu_pct), 0),
            f(cs.and_then(Series::gbps_per_path_core), 2),
            idle,
            mib(r.rss_load_kib()),
        ];
        if !r.ok() {
            let status = r.status();
            let first = status.lines().next().unwrap_or_default().to_owned();
            // Rows without numbers show their status in place of them.
            if r.t1().is_none() {
                line.truncate(1);
                line.push(first);
            }
            errors.push((r.label, status));
        }
        lines.push(line);
    }
    let cols = head.len();
    let mut width = vec![0usize; cols];
    for l in &lines {
        if l.len() == cols {
            for (w, c) in width.iter_mut().zip(l) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    width[0] = lines
        .iter()
        .map(|l| l[0].chars().count())
        .max()
        .unwrap_or(0);
    for (i, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(j, c)| {
                if l.len() == cols {
                    format!("{c:>w$}", w = width[j])
                } else if j == 0 {
                    format!("{c:<w$}", w = width[0])
                } else {
                    c.clone()
                }
            })
            .collect();
        println!("| {} |", cells.join(" | "));
        if i == 0 {
            let sep: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
            println!("|-{}-|", sep.join("-|-"));
        }
    }
    println!();
    println!("Comparisons (same run):");
    for c in comparisons(rows) {
        println!("  {}", c["text"].as_str().unwrap_or_default());
    }
    if !errors.is_empty() {
        println!();
        println!("Rows without (complete) numbers:");
        for (label, s) in errors {
            println!("  {label}: {s}");
        }
    }
    println!();
    println!("Notes:");
    for r in rows {
        for n in &r.m.notes {
            println!("  {}: {n}", r.label);
        }
    }
}

fn comparisons(rows: &[Row]) -> Vec<Value> {
    let mut out = Vec::new();
    for (a, b, label) in PAIRS {
        let (Some(ra), Some(rb)) = (find(rows, a), find(rows, b)) else {
            continue;
        };
        if ra.t1().is_none() {
            out.push(json!({
                "pair": [a, b],
                "text": format!("{label}: n/a ({a}: {})", ra.status().lines().next().unwrap_or_default()),
            }));
            continue;
        }
        let t1 = ratio(ra.t1(), rb.t1());
        let t2 = ratio(ra.t2(), rb.t2());
        let tu = ratio(ra.tu(), rb.tu());
        let (add_a, add_b) = (added_rtt_us(rows, ra), added_rtt_us(rows, rb));
        let per_core = ratio(
            ra.cpu_series().and_then(Series::gbps_per_path_core),
            rb.cpu_series().and_then(Series::gbps_per_path_core),
        );
        out.push(json!({
            "pair": [a, b],
            "throughput_1_stream_ratio": t1,
            "throughput_2_streams_ratio": t2,
            "udp_flood_ratio": tu,
            "added_rtt_us": [add_a, add_b],
            "gbps_per_path_core_ratio": per_core,
            "text": format!(
                "{label}: 1 stream {}, 2 streams {}, UDP flood {}, added RTT {} us vs {} us, Gbit/s per path core {}",
                x(t1), x(t2), x(tu), f(add_a, 0), f(add_b, 0), x(per_core)
            ),
        }));
    }
    out
}

fn series_json(s: Option<&Series>) -> Value {
    let Some(s) = s else {
        return Value::Null;
    };
    json!({
        "streams": s.streams,
        "traffic": match s.traffic {
            crate::measure::Traffic::Tcp => "tcp",
            crate::measure::Traffic::UdpFlood => "udp-flood",
        },
        "runs_gbps": s.runs.iter().map(|r| r.gbps).collect::<Vec<_>>(),
        "median_gbps": s.median_gbps(),
        "daemon_cpu_pct": s.daemon_cpu_pct(),
        "gbps_per_daemon_core": s.gbps_per_daemon_core(),
        "path_cpu_pct": s.path_cpu_pct(),
        "gbps_per_path_core": s.gbps_per_path_core(),
        "daemon_rss_max_kib": s.rss_max_kib(),
    })
}

pub(crate) fn to_json(rows: &[Row], plan: Plan, weft: &str) -> Value {
    let veth = find(rows, "veth");
    json!({
        "benchmark": "throughput",
        "plan": { "runs": plan.runs, "secs": plan.secs, "pings": plan.pings, "congestion_control": cc_label(plan) },
        "weft_binary": weft,
        "rows": rows.iter().map(|r| {
            let cmp = r.comparator.and_then(|c| find(rows, c));
            json!({
                "name": r.name,
                "label": r.label,
                "status": r.status(),
                "ok": r.ok(),
                "wall_s": r.wall_s,
                "rtt_ms": r.m.rtt_ms,
                "added_rtt_us": added_rtt_us(rows, r),
                "one_stream": series_json(r.m.one.as_ref()),
                "two_streams": series_json(r.m.two.as_ref()),
                "udp_flood": series_json(r.m.udp.as_ref()),
                "vs_veth": {
                    "one_stream": ratio(r.t1(), veth.and_then(Row::t1)),
                    "two_streams": ratio(r.t2(), veth.and_then(Row::t2)),
                },
                "comparator": r.comparator,
                "vs_comparator": {
                    "one_stream": ratio(r.t1(), cmp.and_then(Row::t1)),
                    "two_streams": ratio(r.t2(), cmp.and_then(Row::t2)),
                },
                "rss_idle_kib": r.m.rss_idle_kib,
                "rss_idle_peers": r.m.rss_idle_peers,
                "rss_load_kib": r.rss_load_kib(),
                "notes": r.m.notes,
            })
        }).collect::<Vec<_>>(),
        "comparisons": comparisons(rows),
    })
}

/// The comparisons of several rounds (each a full pass over the rows): per pair and
/// figure the median of the per-round ratios and their range, printed and as JSON. On a
/// shared machine a figure moves by tens of percent between minutes; the rounds put each
/// pair's two rows a few minutes apart, again and again.
pub(crate) fn print_rounds(rounds: &[Vec<Row>]) -> Value {
    let per_round: Vec<Vec<Value>> = rounds.iter().map(|r| comparisons(r)).collect();
    println!();
    println!(
        "Comparisons over {} rounds: median of the per-round ratios [min - max]",
        rounds.len()
    );
    let mut out = Vec::new();
    for (a, b, label) in PAIRS {
        let pick = |key: &str| -> Vec<f64> {
            per_round
                .iter()
                .filter_map(|cs| {
                    cs.iter()
                        .find(|c| c["pair"] == json!([a, b]))
                        .and_then(|c| c[key].as_f64())
                })
                .collect()
        };
        let (t1, t2, tu) = (
            pick("throughput_1_stream_ratio"),
            pick("throughput_2_streams_ratio"),
            pick("udp_flood_ratio"),
        );
        if t1.is_empty() {
            continue;
        }
        let show = |v: &[f64]| match summary(v) {
            Some((med, lo, hi)) => format!("{med:.2}x [{lo:.2} - {hi:.2}]"),
            None => "-".into(),
        };
        println!(
            "  {label}: 1 stream {}, 2 streams {}, UDP flood {}",
            show(&t1),
            show(&t2),
            show(&tu)
        );
        out.push(json!({
            "pair": [a, b],
            "rounds": t1.len(),
            "throughput_1_stream_ratios": t1,
            "throughput_2_streams_ratios": t2,
            "throughput_1_stream_median": summary(&t1).map(|s| s.0),
            "throughput_2_streams_median": summary(&t2).map(|s| s.0),
            "udp_flood_ratios": tu,
            "udp_flood_median": summary(&tu).map(|s| s.0),
        }));
    }
    Value::Array(out)
}

/// (median, min, max) of `v`.
fn summary(v: &[f64]) -> Option<(f64, f64, f64)> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some((med, s[0], s[n - 1]))
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn summary_is_median_and_range() {
        assert_eq!(summary(&[]), None);
        assert_eq!(summary(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(summary(&[f64::NAN, 1.0]), Some((1.0, 1.0, 1.0)));
    }
}

//! weft benchmarks. `src/bin/routers.rs`: many real routers on one machine (agreement time,
//! gossip at rest, RSS, recovery after kills). `src/bin/converge.rs`: simulator convergence time and gossip cost per
//! peer for 10, 100 and 1000 routers (10,000 with `--huge`); `throughput` (iperf3 through
//! weft's datapaths and other overlays) and `dnsqps` (weftDNS against dnsmasq) beside it.
//! This library holds what the binaries share.

use std::path::{Path, PathBuf};

/// The parsed command line; or, when it did not parse, the error (`err_prefix` before
/// it; `--help` has none) and `usage` on stderr and exit status 2.
pub fn args_or_exit<T>(parsed: Result<T, String>, err_prefix: &str, usage: &str) -> T {
    parsed.unwrap_or_else(|e| {
        if !e.is_empty() {
            eprintln!("{err_prefix}{e}");
        }
        eprintln!("{usage}");
        std::process::exit(2)
    })
}

/// The workspace root (this crate's parent folder).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The `weft` binary to benchmark: `flag` (which must exist), else `$WEFT_BIN`, else the
/// `weft` beside the running benchmark, else `<workspace>/target/release/weft`; the error
/// lists what was tried.
pub fn locate_weft(flag: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(f) = flag {
        // Asked for by name: that binary or an error, never a silent stand-in.
        return match f.is_file() {
            true => Ok(f),
            false => Err(format!("--weft {}: no such file", f.display())),
        };
    }
    let mut tried = Vec::new();
    let candidates = std::env::var_os("WEFT_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("weft"))),
        )
        .chain([workspace().join("target/release/weft")]);
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    Err(format!(
        "no weft binary (run `cargo build --release -p weft`; tried {})",
        tried.join(", ")
    ))
}

/// A directory of a benchmark's own, removed (with what is in it) when dropped, also when
/// the benchmark fails.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Least-squares slope of ln(y) over ln(x): the exponent b of y = c·x^b (points with a
/// coordinate not above zero are left out; `None` under two points).
pub fn loglog_slope(points: &[(f64, f64)]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod slope_tests {
    #[test]
    fn the_slope_is_the_exponent_of_a_power_law() {
        let pts: Vec<(f64, f64)> = [100.0, 300.0, 1000.0]
            .iter()
            .map(|&x| (x, 3.0 * x * x))
            .collect();
        let b = super::loglog_slope(&pts).unwrap();
        assert!((b - 2.0).abs() < 1e-9, "{b}");
        assert_eq!(super::loglog_slope(&[(1.0, 1.0)]), None);
        assert_eq!(super::loglog_slope(&[(0.0, 1.0), (2.0, 0.0)]), None);
    }
}

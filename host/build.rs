//! Builds `weft-wait` (`wait/weft-wait.rs`), the program the Docker API proxy puts in
//! front of a container's entrypoint, and leaves it in `OUT_DIR` for the binary to embed.
//!
//! It is compiled by the same `rustc`, standard library only, statically linked
//! (`+crt-static`, `panic=abort`, stripped), so that it runs in images with no C library.
//! Where that cannot be built (no static C library on the build host), an empty file is
//! embedded instead, cargo prints a warning, and the proxy says at start that it attaches
//! containers without making them wait.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "wait/weft-wait.rs";
    println!("cargo:rerun-if-changed={src}");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("weft-wait");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let built = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--target",
            &target,
            "--crate-name",
            "weft_wait",
        ])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args(["-C", "target-feature=+crt-static", "-o"])
        .arg(&out)
        .arg(src)
        .output();
    let why = match built {
        Ok(o) if o.status.success() => return,
        Ok(o) => String::from_utf8_lossy(&o.stderr)
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or("rustc failed")
            .to_owned(),
        Err(e) => e.to_string(),
    };
    println!(
        "cargo:warning=weft-wait could not be built statically ({why}); the Docker API proxy will attach containers without making them wait for their network"
    );
    std::fs::write(&out, b"").expect("OUT_DIR is writable");
}

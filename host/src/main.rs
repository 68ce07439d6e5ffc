//! The `weft` binary: everything lives in the library (`src/lib.rs`).

fn main() -> std::process::ExitCode {
    weft::main_entry()
}

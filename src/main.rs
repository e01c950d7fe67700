//! The `berth` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    berth::cli::main()
}

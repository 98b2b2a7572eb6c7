//! The `kiln` binary: everything lives in the library; `cli/` maps arguments onto it.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}

//! `kg`: the command-line tool. See docs/cli.md for the contract and the
//! `kg_cli` library for the parts.

fn main() -> std::process::ExitCode {
    kg_cli::main_with(std::env::args_os(), |var| std::env::var(var).ok())
}

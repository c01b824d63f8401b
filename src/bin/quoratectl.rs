//! `quoratectl`: the operator's command line for a quorate cluster.

fn main() -> std::process::ExitCode {
    quorate::cli::main()
}

//! The `consens` binary: parses the command line and hands over to [`consens::cli`].

fn main() -> std::process::ExitCode {
    consens::cli::main()
}

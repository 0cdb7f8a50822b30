//! The `noslate` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    noslate::cli::main(std::env::args_os().skip(1).collect())
}

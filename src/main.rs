//! `meshgate`: see `meshgate --help`.

fn main() -> std::process::ExitCode {
    meshgate_cli::main()
}

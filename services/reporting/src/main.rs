//! `centralita-reporting`: parses its configuration and runs [`centralita_reporting::run`].

fn main() -> std::process::ExitCode {
    centralita_platform::server::main_with(centralita_reporting::SERVICE, centralita_reporting::run)
}

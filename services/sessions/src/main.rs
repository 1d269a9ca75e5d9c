//! `centralita-sessions`: parses its configuration and runs [`centralita_sessions::run`].

fn main() -> std::process::ExitCode {
    centralita_platform::server::main_with(centralita_sessions::SERVICE, centralita_sessions::run)
}

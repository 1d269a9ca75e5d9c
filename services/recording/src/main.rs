//! `centralita-recording`: parses its configuration and runs [`centralita_recording::run`].

fn main() -> std::process::ExitCode {
    centralita_platform::server::main_with(centralita_recording::SERVICE, centralita_recording::run)
}

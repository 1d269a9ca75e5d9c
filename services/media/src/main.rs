//! `centralita-media`: parses its configuration and runs [`centralita_media::run`].

fn main() -> std::process::ExitCode {
    centralita_platform::server::main_with(centralita_media::SERVICE, centralita_media::run)
}

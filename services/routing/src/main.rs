//! `centralita-routing`: parses its configuration and runs [`centralita_routing::run`].

fn main() -> std::process::ExitCode {
    centralita_platform::server::main_with(centralita_routing::SERVICE, centralita_routing::run)
}

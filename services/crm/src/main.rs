//! `centralita-crm`: parses its configuration and runs [`centralita_crm::run`].

fn main() -> std::process::ExitCode {
    centralita_platform::server::main_with(centralita_crm::SERVICE, centralita_crm::run)
}

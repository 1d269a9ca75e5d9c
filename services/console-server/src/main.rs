//! Thin `main` of the console server: parse and validate config (one clear line and exit 2
//! when it is wrong), start logs, bind, serve until SIGTERM/SIGINT. See the crate docs.

use std::process::ExitCode;

use centralita_console::Config;
use centralita_platform::shutdown::Shutdown;
use clap::Parser as _;

fn main() -> ExitCode {
    let config = Config::parse();
    let prepared = match config.validate() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("centralita-console: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("centralita-console: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let _telemetry = match centralita_platform::telemetry::init("console", &config.telemetry) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("centralita-console: cannot start telemetry: {e}");
                return ExitCode::FAILURE;
            }
        };
        let bind = async {
            Ok::<_, std::io::Error>(centralita_console::Listeners {
                app: tokio::net::TcpListener::bind(config.addr).await?,
                admin: tokio::net::TcpListener::bind(config.admin_addr).await?,
            })
        };
        let listeners = match bind.await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, addr = %config.addr, admin = %config.admin_addr, "cannot bind the console's ports");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = Shutdown::new();
        shutdown.on_signals();
        match centralita_console::run(prepared, listeners, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "console server stopped with an error");
                ExitCode::FAILURE
            }
        }
    })
}

//! `centralita-operator [run] [FLAGS]` runs the controller on the platform runtime (what
//! every service's `main` does); `centralita-operator crd` prints the Tenant CRD generated
//! from the Rust types.

use std::ffi::OsString;
use std::process::ExitCode;

use centralita_operator::{crd, run, SERVICE};
use centralita_platform::server::main_with_args;

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("crd") => match crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("centralita-operator: cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Some("run") => {
            args.remove(1);
            main_with_args(SERVICE, args, run)
        }
        _ => main_with_args(SERVICE, args, run),
    }
}

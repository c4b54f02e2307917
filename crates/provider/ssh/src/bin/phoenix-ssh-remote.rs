//! The remote end of the ssh provider for the crate's own tests: `agent ...` (the local
//! provider's agent, as `phoenix agent`) and `provider-remote ...` (as `phoenix
//! provider-remote`). The real CLI has both; the debug `phoenix` binary is too big to upload
//! to every test host.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    match args.peek().and_then(|a| a.to_str()) {
        Some("agent") => phoenix_provider_local::agent_main(args),
        Some("provider-remote") => phoenix_provider_ssh::remote_main(args),
        _ => {
            eprintln!("usage: phoenix-ssh-remote agent ... | provider-remote ...");
            ExitCode::from(2)
        }
    }
}

//! Runs the local provider's agent: `phoenix-local-agent agent --state-dir DIR [...]`, the same
//! arguments as `phoenix agent`. The real CLI embeds the agent; this binary exists so the
//! crate's own integration tests can start agents without it.

fn main() -> std::process::ExitCode {
    phoenix_provider_local::agent_main(std::env::args_os().skip(1))
}

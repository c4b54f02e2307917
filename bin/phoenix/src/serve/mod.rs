//! `phoenix serve`: the HTTP API over the same state store the CLI uses (SQLite in
//! `--state-dir`, or PostgreSQL at `--state-url`), so that what the CLI does shows at once;
//! `phoenix serve token create|list|revoke` manage its API tokens, kept hashed in that store.
//!
//! The server only reads and writes through `phoenix_state::StateStore` (and, for the
//! monitoring targets, the pure `monitoring_cmd::generate`); store calls are blocking and run on
//! tokio's blocking pool. See `docs/serve.md`.

mod api;
mod auth;
mod charts;
mod events;
mod ledger;
mod logs;
mod metrics;
mod portal;
mod schemas;
mod views;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use phoenix_state::StateStore;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// `phoenix serve`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ServeArgs {
    #[command(subcommand)]
    command: Option<ServeCommand>,
    #[command(flatten)]
    run: RunArgs,
}

/// Where the store is.
#[derive(Args, Clone, Debug)]
pub(crate) struct StoreArgs {
    /// State directory (SQLite `state.db`), as the other commands take it.
    #[arg(long, default_value = ".phoenix", env = "PHOENIX_STATE_DIR")]
    state_dir: PathBuf,
    /// PostgreSQL URL of the state store (`postgres://...`) instead of SQLite in the state dir.
    #[arg(long, env = "PHOENIX_STATE_URL")]
    state_url: Option<String>,
}

impl StoreArgs {
    fn open(&self) -> anyhow::Result<Arc<dyn StateStore>> {
        Ok(Arc::from(
            phoenix_state::open(&self.state_dir, self.state_url.as_deref()).with_context(|| {
                match &self.state_url {
                    Some(_) => "opening the state store at --state-url".to_string(),
                    None => format!("opening the state store in {}", self.state_dir.display()),
                }
            })?,
        ))
    }
}

/// Running the server.
#[derive(Args, Debug)]
struct RunArgs {
    /// Address to listen on. A non-loopback address needs `--tls-cert` and `--tls-key`, or
    /// `--insecure`. Port 0 picks a free port (the address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (tokens then cross the network in clear).
    #[arg(long, conflicts_with = "tls_cert")]
    insecure: bool,
    #[command(flatten)]
    store: StoreArgs,
    /// The ledger (`--ledger URL[,URL...]`): the explorer and each audit record's confirmation
    /// read it; with `--ledger-key FILE`, writes made through the server are also recorded on
    /// it, as `phoenix rollback --ledger` records them.
    #[command(flatten)]
    ledger: crate::ledger_link::LedgerArgs,
    /// The secrets key (`--secrets-key FILE`, or the key itself in PHOENIX_SECRETS_KEY), so
    /// that writes through the server can start units of fleets with secrets. Without it they
    /// are refused for such fleets (docs/secrets.md).
    #[command(flatten)]
    secrets: crate::secret_cmd::KeyArgs,
}

#[derive(Subcommand, Debug)]
enum ServeCommand {
    /// API tokens: `create NAME --role viewer|deployer [--expires 30d]`, `list`, `revoke NAME`.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token; the token itself is printed alone on the last line, once.
    Create {
        /// Its name: the actor the audit log records for what is done with it.
        name: String,
        /// What it may do: `viewer` reads, `deployer` also writes.
        #[arg(long, value_enum)]
        role: auth::Role,
        /// How long it is valid (`90m`, `12h`, `30d`, `2w`); default: until revoked.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Every token: name, role, when created, when it expires, whether it is live.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        /// The token's name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Runs `phoenix serve ...`.
pub(crate) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(ServeCommand::Token(cmd)) => token(cmd),
        None => serve(args.run),
    }
}

fn token(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            name,
            role,
            expires,
            store,
        } => {
            auth::check_name(&name)?;
            let valid_for = expires.as_deref().map(auth::parse_validity).transpose()?;
            let store = store.open()?;
            let secret = auth::new_secret()?;
            let created = store.create_api_token(&phoenix_state::NewApiToken {
                name: name.clone(),
                role: role.as_str().to_string(),
                secret_sha256: auth::secret_hash(&secret),
                valid_for,
            })?;
            let expiry = created.expires_at.map_or(
                "never expires (revoke it with `phoenix serve token revoke NAME`)".to_string(),
                |t| format!("expires {t}"),
            );
            crate::print_out(&format!(
                "created token {} (role {}), {expiry}\nit is shown only this once; send it as `Authorization: Bearer TOKEN`\n{secret}\n",
                created.name,
                role.as_str()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List { store } => {
            let tokens = store.open()?.list_api_tokens()?;
            let now = jiff::Timestamp::now();
            let mut out = String::from("NAME\tROLE\tCREATED\tEXPIRES\tSTATE\n");
            for t in &tokens {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else if !t.is_live(now) {
                    "expired"
                } else {
                    "live"
                };
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{state}\n",
                    t.name,
                    t.role,
                    t.created_at,
                    t.expires_at.map_or("never".to_string(), |e| e.to_string()),
                ));
            }
            if tokens.is_empty() {
                out.push_str("(no tokens: create one with `phoenix serve token create NAME --role viewer`)\n");
            }
            crate::print_out(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { name, store } => {
            if store.open()?.revoke_api_token(&name)? {
                crate::print_out(&format!("revoked token {name}\n"))?;
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("no live token named {name} (see `phoenix serve token list`)");
                Ok(ExitCode::from(1))
            }
        }
    }
}

/// Shared by every request.
#[derive(Clone)]
pub(crate) struct AppState {
    store: Arc<dyn StateStore>,
    limiter: Arc<auth::FailureLimiter>,
    metrics: Arc<metrics::Metrics>,
    sessions: Arc<portal::Sessions>,
    /// Open event streams, bounded.
    streams: Arc<events::Streams>,
    /// Each fleet's read-side view, rebuilt in the background when it is expensive.
    views: Arc<views::Views>,
    /// Whether the server speaks TLS (session cookies are then `Secure`).
    tls: bool,
    /// Where the state is, for writes run through the engine as the CLI runs it.
    state_args: crate::deploy_cmd::StateArgs,
    /// The ledger, if any (`--ledger`, `--ledger-key`).
    ledger: crate::ledger_link::LedgerArgs,
    /// The secrets key, if the server was given one.
    secrets_key: Option<Arc<phoenix_state::secrets::SecretsKey>>,
}

/// A write the server runs through the engine as the CLI does (`deploy_cmd::*_for`).
pub(crate) enum Write {
    /// `phoenix rollback [--to N] [--force]`.
    Rollback { to: Option<u64>, force: bool },
    /// `phoenix apply` of a posted spec (already validated, of this fleet).
    Apply {
        sources: Vec<(String, String)>,
        env: Option<String>,
    },
    /// `phoenix destroy` with the fleet's latest spec.
    Destroy,
}

impl Write {
    fn name(&self) -> &'static str {
        match self {
            Write::Rollback { .. } => "rollback",
            Write::Apply { .. } => "apply",
            Write::Destroy => "destroy",
        }
    }
}

/// Runs `write` on `fleet` through the engine for `actor` (a deployer token's name), on a
/// thread of its own: the engine and its providers block, and some run runtimes of their own.
/// A refusal (a held lock, an unreachable site, nothing to roll back to) is `409`.
pub(crate) async fn run_write(
    state: &AppState,
    fleet: String,
    write: Write,
    actor: String,
) -> Result<serde_json::Value, api::ApiError> {
    let args = state.state_args.clone();
    // Recorded on the ledger only with a key to sign with; a ledger given for reading alone
    // does not make writes need one.
    let ledger = if state.ledger.ledger_key.is_some() {
        state.ledger.clone()
    } else {
        crate::ledger_link::LedgerArgs::default()
    };
    let what = write.name();
    let key = state.secrets_key.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("serve-{what}"))
        .spawn(move || {
            use crate::deploy_cmd::{apply_for, destroy_for, rollback_for};
            let result = match write {
                Write::Rollback { to, force } => {
                    rollback_for(&args, &fleet, to, force, &actor, &ledger, key.as_deref())
                }
                Write::Apply { sources, env } => {
                    apply_for(&args, sources, env, &actor, &ledger, key.as_deref())
                }
                Write::Destroy => destroy_for(&args, &fleet, &actor, &ledger),
            };
            let _ = tx.send(result);
        })
        .map_err(|e| api::ApiError::internal(format!("starting the {what}: {e}")))?;
    let report = rx
        .await
        .map_err(|_| api::ApiError::internal(format!("the {what} stopped unexpectedly")))?
        .map_err(|e| api::ApiError::new(axum::http::StatusCode::CONFLICT, format!("{e:#}")))?;
    Ok(serde_json::json!({
        "fleet": report.fleet,
        "operation": what,
        "revision": report.revision,
        "outcome": report.outcome,
        "failure": report.failure,
        "restored": report.restored,
    }))
}

/// Runs a store call on the blocking pool (the store's calls block: SQLite, the synchronous
/// PostgreSQL client).
pub(crate) async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn StateStore) -> Result<T, api::ApiError> + Send + 'static,
) -> Result<T, api::ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || f(&*store))
        .await
        .unwrap_or_else(|e| Err(api::ApiError::internal(format!("a store call failed: {e}"))))
}

/// The address to listen on, refused when it is not loopback and neither TLS nor
/// `--insecure` was given.
fn listen_address(args: &RunArgs) -> anyhow::Result<SocketAddr> {
    let addr = args
        .listen
        .to_socket_addrs()
        .with_context(|| {
            format!(
                "--listen {}: not an address (e.g. 127.0.0.1:8080 or [::1]:8080)",
                args.listen
            )
        })?
        .next()
        .with_context(|| format!("--listen {}: names no address", args.listen))?;
    if !addr.ip().is_loopback() && args.tls_cert.is_none() && !args.insecure {
        anyhow::bail!(
            "refusing to serve plain HTTP on {addr}, which is not a loopback address: tokens \
             would cross the network in clear. Give --tls-cert FILE --tls-key FILE, or \
             --insecure if something in front of phoenix terminates TLS"
        );
    }
    Ok(addr)
}

fn serve(args: RunArgs) -> anyhow::Result<ExitCode> {
    let addr = listen_address(&args)?;
    if !args.ledger.ledger.is_empty() {
        // The URLs are checked now (a typo is an error at start, not on every page).
        crate::ledger_link::Client::new(&args.ledger.ledger)?;
    } else if args.ledger.ledger_key.is_some() {
        anyhow::bail!(
            "--ledger-key needs --ledger URL: the ledger to record the server's writes on"
        );
    }
    // A key that cannot be read or is too short is an error at start, not on the first write.
    let secrets_key =
        crate::secret_cmd::load_key(&args.secrets, &args.store.state_dir)?.map(Arc::new);
    let store = args.store.open()?;
    // The last reference to the store is dropped here, after the runtime: the synchronous
    // PostgreSQL client blocks on its own runtime when dropped, which panics inside another.
    let keep_store = store.clone();
    // A second, read-only connection for the views' background rebuilds (without one they
    // share the server's); kept here too, for the same reason as the store.
    let reader: Option<Arc<dyn StateStore>> =
        phoenix_state::open_read_only(&args.store.state_dir, args.store.state_url.as_deref())
            .ok()
            .map(Arc::from);
    let keep_reader = reader.clone();
    let state = AppState {
        store,
        limiter: Arc::new(auth::FailureLimiter::default()),
        metrics: Arc::new(metrics::Metrics::new()),
        sessions: Arc::new(portal::Sessions::default()),
        streams: Arc::new(events::Streams::default()),
        views: Arc::new(views::Views::with_reader(reader)),
        tls: args.tls_cert.is_some(),
        state_args: crate::deploy_cmd::StateArgs {
            state_dir: args.store.state_dir.clone(),
            state_url: args.store.state_url.clone(),
            operator_key: std::env::var_os("PHOENIX_OPERATOR_KEY").map(PathBuf::from),
        },
        ledger: args.ledger.clone(),
        secrets_key,
    };
    let app = api::router(state);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    let served = runtime.block_on(async move {
        let handle = axum_server::Handle::new();
        let shutdown = handle.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            shutdown.graceful_shutdown(Some(Duration::from_secs(5)));
        });
        let scheme = if args.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let announce = handle.clone();
        tokio::spawn(async move {
            if let Some(bound) = announce.listening().await {
                // Alone on its line on stdout, so that scripts (and tests) can read the port.
                let _ = crate::print_out(&format!("listening on {scheme}://{bound}\n"));
            }
        });
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .with_context(|| {
                        format!(
                            "reading the TLS certificate {} and key {}",
                            cert.display(),
                            key.display()
                        )
                    })?;
                axum_server::bind_rustls(addr, config)
                    .handle(handle)
                    .serve(service)
                    .await
            }
            _ => axum_server::bind(addr).handle(handle).serve(service).await,
        }
        .with_context(|| format!("serving on {addr}"))?;
        Ok::<_, anyhow::Error>(())
    });
    drop(runtime);
    drop(keep_store);
    drop(keep_reader);
    served?;
    Ok(ExitCode::SUCCESS)
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

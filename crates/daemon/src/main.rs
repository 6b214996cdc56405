//! `crius`: the daemon's command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use crius::config::{Config, LogFormat, LogLevel, Overrides};
use crius::server::Server;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "crius",
    version,
    about = "A Kubernetes CRI container runtime daemon"
)]
struct Cli {
    /// TOML configuration file (see conf/crius.toml). Without it crius uses
    /// its embedded defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Unix socket to serve CRI on (path or unix:///path).
    #[arg(long, global = true, value_name = "SOCKET")]
    listen: Option<PathBuf>,
    /// Persistent state directory.
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Volatile state directory.
    #[arg(long, global = true, value_name = "DIR")]
    runroot: Option<PathBuf>,
    #[arg(long, global = true, value_enum)]
    log_level: Option<LogLevel>,
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// containers-registries.conf(5) file (search registries, mirrors).
    #[arg(long, global = true, value_name = "FILE")]
    registries_conf: Option<PathBuf>,
    /// Global pull credentials (auth.json / docker config.json).
    #[arg(long, global = true, value_name = "FILE")]
    auth_file: Option<PathBuf>,
    /// CNI network configuration directory (watched).
    #[arg(long, global = true, value_name = "DIR")]
    cni_config_dir: Option<PathBuf>,
    /// Run pods on loopback only while no CNI network is configured
    /// (crictl experiments, tests); see `allow_pods_without_network`.
    #[arg(long, global = true)]
    allow_pods_without_network: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the effective configuration (defaults, file, flags) as TOML.
    Config,
}

fn effective_config(cli: &Cli) -> anyhow::Result<Config> {
    let base = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    Ok(base.with_overrides(&Overrides {
        listen: cli.listen.clone(),
        root: cli.root.clone(),
        runroot: cli.runroot.clone(),
        log_level: cli.log_level,
        log_format: cli.log_format,
        registries_conf: cli.registries_conf.clone(),
        auth_file: cli.auth_file.clone(),
        cni_config_dir: cli.cni_config_dir.clone(),
        allow_pods_without_network: cli.allow_pods_without_network,
    })?)
}

fn run_daemon(config: Config, notifier: crius::notify::Notifier) -> anyhow::Result<()> {
    crius::logging::init(config.log_level, config.log_format);
    // glibc gives every thread that allocates its own arena (up to 8 per
    // core), and the blocking pool has many threads: two arenas keep the
    // daemon's resident memory flat under load at no measurable cost.
    // SAFETY: mallopt only tunes the allocator; called before any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    raise_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("crius")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config)?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing SIGTERM handler")?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("installing SIGINT handler")?;
        let shutdown = async move {
            let sig = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = sig, "received shutdown signal");
        };
        server.run(shutdown, &notifier).await?;
        tracing::info!("crius stopped");
        Ok(())
    })
}

/// Lifts the soft RLIMIT_NOFILE to the hard one (as Go's runtime does for
/// containerd and CRI-O): the daemon holds descriptors per running
/// container (its stats readers) and per connection, and a 1024 soft limit
/// outside systemd would run out. Children get their own limits (the OCI
/// spec sets the containers').
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "raising RLIMIT_NOFILE");
            }
        }
    }
}

fn main() -> ExitCode {
    // Before any thread exists: it edits the environment.
    let notifier = crius::notify::Notifier::from_env();
    let cli = Cli::parse();
    let result = effective_config(&cli).and_then(|config| match cli.command {
        Some(Command::Config) => {
            print!("{}", config.to_toml());
            Ok(())
        }
        None => run_daemon(config, notifier),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if crius::logging::initialised() {
                tracing::error!("{e:#}");
            } else {
                eprintln!("crius: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

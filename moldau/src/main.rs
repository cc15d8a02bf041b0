//! The `moldau` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use moldau::serve::frame::DEFAULT_MAX_REQUEST_BYTES;
use moldau::serve::{ServeConfig, Server};

/// Moldau: a Kafka-like log and stream processor, embedded.
#[derive(Debug, Parser)]
#[command(name = "moldau", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves a log directory over Kafka's wire protocol, for Kafka clients.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The log directory (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// Address to listen on; port 0 picks a free port. The bound address is printed on
    /// stdout as `listening on HOST:PORT`.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// HOST:PORT clients are told to connect to (default: the bound address).
    #[arg(long, value_parser = parse_host_port)]
    advertised_listener: Option<(String, u16)>,
    /// Kafka's socket.request.max.bytes: the largest request accepted.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    socket_request_max_bytes: usize,
    /// Kafka's auto.create.topics.enable: create a topic a client asks metadata for.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics_enable: bool,
    /// Kafka's num.partitions: partitions of a topic created without a count.
    #[arg(long, default_value_t = 1)]
    num_partitions: u32,
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    let port = port
        .parse()
        .map_err(|e| format!("bad port in {s:?}: {e}"))?;
    if host.is_empty() {
        return Err(format!("no host in {s:?}"));
    }
    Ok((host.to_string(), port))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            tracing::error!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let log = core_log::Log::open(&args.dir)?;
    tracing::info!(dir = %args.dir.display(), "log opened");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("moldau-serve")
        .build()?;
    let config = ServeConfig {
        listen: args.listen,
        advertised_listener: args.advertised_listener,
        max_request_bytes: args.socket_request_max_bytes,
        auto_create_topics: args.auto_create_topics_enable,
        num_partitions: args.num_partitions,
    };
    runtime.block_on(async move {
        let server = match Server::bind(log.clone(), config).await {
            Ok(s) => s,
            Err(e) => {
                // Leave the directory clean for the next start.
                let _ = log.close();
                return Err(e);
            }
        };
        drop(log);
        let addr = server.local_addr();
        tracing::info!(%addr, "serving Kafka's protocol");
        println!("listening on {addr}");
        server.run(shutdown_signal()).await
    })?;
    Ok(())
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}

//! `strata`: the one binary — a server, a local dev cluster, and client
//! commands in the style of Kafka's tools.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// `println!` for a command's output, returning the write's error (with `?`)
/// instead of panicking: when the reader goes away (`strata ... | head`),
/// the command ends quietly (see [`reader_gone`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

mod acl_cmds;
mod client_cmds;
mod dev;
#[cfg(feature = "otlp")]
mod otlp;
mod perf;

/// Strata: a durable, replicated message broker.
#[derive(Parser)]
#[command(name = "strata", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one node of a cluster.
    Server(ServerArgs),
    /// Runs a local cluster of N nodes (node 1 on ports 7070/7071/7072,
    /// node i on those + 10·(i−1)), data under ./strata-dev; Ctrl-C stops it.
    Dev(dev::DevArgs),
    /// Creates, lists, describes and deletes topics.
    Topic {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: client_cmds::TopicCommand,
    },
    /// Lists, describes (with lag), resets and deletes consumer groups.
    Group {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: client_cmds::GroupCommand,
    },
    /// Adds, lists and removes access control bindings (for brokers with
    /// authorization.enabled).
    Acl {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: acl_cmds::AclCommand,
    },
    /// Shows the brokers and the controller; removes a broker.
    Cluster {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: Option<client_cmds::ClusterCommand>,
    },
    /// Sends lines from stdin as records.
    Produce(client_cmds::ProduceArgs),
    /// Prints records of a topic.
    Consume(client_cmds::ConsumeArgs),
    /// Measures produce and consume throughput and latency, as Kafka's perf
    /// tools do.
    Perf {
        #[command(subcommand)]
        command: perf::PerfCommand,
    },
}

/// Where the cluster is, and how to reach it.
#[derive(Args, Clone)]
pub struct Connection {
    /// A broker's client address (several separated by commas).
    #[arg(long, global = true, default_value = "127.0.0.1:7070", env = "STRATA_BOOTSTRAP_SERVER")]
    bootstrap_server: String,
    /// Speak TLS to the brokers, trusting the authority in this PEM file
    /// (for brokers with tls.cert_file set).
    #[arg(long, global = true, env = "STRATA_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Present this certificate (PEM) to the brokers, for those with
    /// tls.client_ca_file set; needs --tls-key and --tls-ca.
    #[arg(long, global = true, env = "STRATA_TLS_CERT", value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "STRATA_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl Connection {
    /// A client for the cluster, over TLS when --tls-ca is given.
    pub fn client(&self) -> Result<strata_client::Client> {
        let client = match &self.tls_ca {
            Some(ca) => {
                let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
                let tls = strata_client::Tls::from_files(ca, identity)?;
                strata_client::Client::with_tls(&self.bootstrap_server, tls)?
            }
            None => strata_client::Client::new(&self.bootstrap_server)?,
        };
        Ok(client)
    }
}

#[derive(Args)]
struct ServerArgs {
    /// A TOML file of settings (see deploy/strata.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's id.
    #[arg(long)]
    node_id: Option<u64>,
    /// Every node: ID=HOST:PEER_PORT,...
    #[arg(long)]
    peers: Option<String>,
    /// Where data lives.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Client gRPC listen address.
    #[arg(long)]
    listen_client: Option<String>,
    /// Peer (Raft) listen address.
    #[arg(long)]
    listen_peer: Option<String>,
    /// HTTP (health) listen address.
    #[arg(long)]
    listen_http: Option<String>,
    /// The client address handed to clients.
    #[arg(long)]
    advertise_client: Option<String>,
    /// Any setting, as KEY=VALUE (e.g. limits.max_message_bytes=2MiB).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Also export tracing spans to this OpenTelemetry collector over
    /// OTLP/gRPC, e.g. http://collector:4317 (built with `--features otlp`).
    #[cfg(feature = "otlp")]
    #[arg(long, env = "STRATA_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Stop gracefully when stdin closes (how `strata dev` stops its nodes,
    /// and why they never outlive it).
    #[arg(long, hide = true)]
    stop_on_stdin_eof: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // A server's settings come first: they say how many threads its runtime has.
    let server_config = match &cli.command {
        Command::Server(args) => {
            let config = server_config(args)?;
            runtime.worker_threads(config.worker_threads);
            Some(config)
        }
        _ => None,
    };
    let runtime = runtime.build().context("start the runtime")?;
    if !matches!(cli.command, Command::Server(_) | Command::Dev(_)) {
        // A client command says what went wrong on the way (a retried
        // request, say) on stderr, as Kafka's tools do; its output stays
        // on stdout.
        init_logs(LogFormat::Text, tracing::Level::WARN, &Export::default());
    }
    let client_command = !matches!(cli.command, Command::Server(_) | Command::Dev(_));
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => server(args, server_config.context("server settings")?).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Topic { connection, command } => client_cmds::topic(&connection, command).await,
            Command::Cluster { connection, command } => client_cmds::cluster(&connection, command).await,
            Command::Acl { connection, command } => acl_cmds::acl(&connection, command).await,
            Command::Group { connection, command } => client_cmds::group(&connection, command).await,
            Command::Produce(args) => client_cmds::produce(args).await,
            Command::Consume(args) => client_cmds::consume(args).await,
            Command::Perf { command } => perf::run(command).await,
        }
    });
    match result {
        // What a Unix tool killed by SIGPIPE would do, less the signal: the
        // reader has what it wanted, so this is not a failure.
        Err(err) if client_command && reader_gone(&err) => Ok(()),
        other => other,
    }
}

/// Whether `err` is a write to a pipe whose reader is gone.
fn reader_gone(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Where spans go besides the logs: nowhere, or (feature `otlp`) an
/// OpenTelemetry collector.
#[cfg(feature = "otlp")]
type Export = Option<otlp::Otlp>;
#[cfg(not(feature = "otlp"))]
type Export = ();

/// Logs to stderr: Strata's own at `STRATA_LOG` (else at `default`), its
/// libraries' at warn and above; with `export`, the same spans also go to
/// the OpenTelemetry collector.
fn init_logs(format: LogFormat, default: tracing::Level, export: &Export) {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = std::env::var("STRATA_LOG").ok().and_then(|l| l.parse::<tracing::Level>().ok()).unwrap_or(default);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    #[cfg(feature = "otlp")]
    let exported = export.as_ref().map(|otlp| otlp.layer());
    #[cfg(not(feature = "otlp"))]
    let exported: Option<tracing_subscriber::layer::Identity> = {
        let () = export;
        None
    };
    // The per-partition spans of produce and fetch are made only where
    // spans are exported or the level is debug (see PARTITION_SPAN_TARGET).
    // One filter for every layer: its interest in a call site is fixed once,
    // where per-layer filters are asked again at every span (measured with
    // `bench/run cost`: some 4,000 instructions a one-record request, most
    // of what leaving the span out saves).
    let partition_spans = if exported.is_some() || level >= tracing::Level::DEBUG {
        LevelFilter::from_level(level)
    } else {
        LevelFilter::OFF
    };
    let targets = Targets::new()
        .with_default(tracing::Level::WARN.min(level))
        .with_target("strata", level)
        .with_target(strata_broker::PARTITION_SPAN_TARGET, partition_spans);
    tracing_subscriber::registry().with(fmt).with(exported).with(targets).init();
}

/// The server's settings: defaults, the file, `STRATA_*` variables, flags.
fn server_config(args: &ServerArgs) -> Result<strata_broker::ServerConfig> {
    let mut builder = strata_broker::ConfigBuilder::new();
    if let Some(path) = &args.config {
        builder = builder.file(path)?;
    }
    builder = builder.env(std::env::vars());
    let flags: [(&str, Option<String>); 7] = [
        ("node_id", args.node_id.map(|n| n.to_string())),
        ("peers", args.peers.clone()),
        ("data_dir", args.data_dir.as_ref().map(|d| d.display().to_string())),
        ("listen.client", args.listen_client.clone()),
        ("listen.peer", args.listen_peer.clone()),
        ("listen.http", args.listen_http.clone()),
        ("advertise.client", args.advertise_client.clone()),
    ];
    for (key, value) in flags {
        if let Some(value) = value {
            builder = builder.set(key, value)?;
        }
    }
    let mut extra = BTreeMap::new();
    for setting in &args.settings {
        let Some((key, value)) = setting.split_once('=') else {
            bail!("--set {setting:?}: expected KEY=VALUE");
        };
        extra.insert(key.trim().to_string(), value.trim().to_string());
    }
    for (key, value) in extra {
        builder = builder.set(&key, value)?;
    }
    Ok(builder.build()?)
}

async fn server(args: ServerArgs, config: strata_broker::ServerConfig) -> Result<()> {
    #[cfg(feature = "otlp")]
    let export: Export = match &args.otlp_endpoint {
        Some(endpoint) => Some(otlp::Otlp::start(endpoint, args.node_id)?),
        None => None,
    };
    #[cfg(not(feature = "otlp"))]
    let export: Export = ();
    init_logs(args.log_format, tracing::Level::INFO, &export);
    let server = strata_broker::Server::start(config).await?;
    let stdin_closed = async {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut sink);
            let _ = tx.send(());
        });
        let _ = rx.await;
    };
    tokio::select! {
        _ = strata_broker::wait_for_signal() => tracing::info!("stopping on signal"),
        _ = stdin_closed, if args.stop_on_stdin_eof => tracing::info!("stopping: stdin closed"),
    }
    server.shutdown().await;
    #[cfg(feature = "otlp")]
    if let Some(otlp) = export {
        otlp.shutdown();
    }
    Ok(())
}

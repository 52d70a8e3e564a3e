//! `strata dev`: a local cluster of real `strata server` processes.
//!
//! Node i listens on 127.0.0.1 at 7070/7071/7072 + 10·(i−1) (client, peer,
//! HTTP) and keeps its data in `<data-dir>/node-i`, so running it again
//! restarts the same cluster on the same data. Each node's stdin is a pipe
//! from this process: closing it stops the node gracefully, and the nodes
//! never outlive `strata dev`, however it ends.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use strata_client::{Admin, Client};

#[derive(Args)]
pub struct DevArgs {
    /// Number of nodes (1 to 9).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    nodes: u16,
    /// Where the nodes keep their data.
    #[arg(long, default_value = "./strata-dev")]
    data_dir: PathBuf,
    /// Client port of node 1; the other ports follow from it.
    #[arg(long, default_value_t = 7070)]
    base_port: u16,
    /// Keep idle CPUs awake while the cluster runs, for lower latency
    /// (each node's runtime.keep_cpus_awake; needs root, Linux).
    #[arg(long)]
    keep_cpus_awake: bool,
}

struct Node {
    id: u16,
    client: String,
    peer: String,
    http: String,
    log: PathBuf,
    child: Child,
}

/// How long the cluster may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the nodes may take to stop gracefully before being killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn run(args: DevArgs) -> Result<()> {
    let exe = std::env::current_exe().context("find the strata binary")?;
    let port = |i: u16, k: u16| args.base_port + 10 * (i - 1) + k;
    let peers: Vec<String> = (1..=args.nodes).map(|i| format!("{i}=127.0.0.1:{}", port(i, 1))).collect();
    let peers = peers.join(",");
    // The nodes share this machine's CPUs out rather than each starting a
    // runtime thread per CPU: on few cores, every extra thread is one more
    // to wake per request (see docs/benchmarks.md, session 17). A worker
    // count set in the environment wins.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let worker_threads = (threads / usize::from(args.nodes)).max(1);
    let share_cpus = std::env::var_os("STRATA_RUNTIME_WORKER_THREADS").is_none();
    let mut nodes = Vec::new();
    for i in 1..=args.nodes {
        let dir = args.data_dir.join(format!("node-{i}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let log = dir.join("server.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        let (client, peer, http) = (
            format!("127.0.0.1:{}", port(i, 0)),
            format!("127.0.0.1:{}", port(i, 1)),
            format!("127.0.0.1:{}", port(i, 2)),
        );
        let mut command = Command::new(&exe);
        command
            .args(["server", "--stop-on-stdin-eof", "--node-id", &i.to_string(), "--peers", &peers])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen-client", &client, "--listen-peer", &peer, "--listen-http", &http]);
        if share_cpus {
            command.arg("--set").arg(format!("runtime.worker_threads={worker_threads}"));
        }
        if args.keep_cpus_awake {
            command.arg("--set").arg("runtime.keep_cpus_awake=true");
        }
        let child = command
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("start a node")?;
        nodes.push(Node { id: i, client, peer, http, log, child });
    }
    let ready = wait_ready(&mut nodes).await;
    if let Err(err) = ready {
        stop(&mut nodes).await;
        return Err(err);
    }
    // The banner, then "Stopping..." and "Stopped.", go out whether or not
    // anyone still reads them: a cluster does not stop because its
    // terminal or pipe went away.
    let mut banner = format!("Strata dev cluster: {} node(s), data in {}\n", args.nodes, args.data_dir.display());
    for n in &nodes {
        banner += &format!(
            "  node {}: client {}  peer {}  http {}  log {}\n",
            n.id,
            n.client,
            n.peer,
            n.http,
            n.log.display()
        );
    }
    banner += "\nTry, in another terminal:\n";
    banner += "  strata topic create demo --partitions 3\n";
    banner += "  echo hello | strata produce --topic demo\n";
    banner += "  strata consume --topic demo --from-beginning\n";
    banner += "\nCtrl-C stops the cluster; `strata dev` again restarts it on the same data.\n";
    say(&banner);
    let exited = tokio::select! {
        _ = strata_broker::wait_for_signal() => None,
        id = watch_children(&mut nodes) => Some(id),
    };
    if let Some(id) = exited {
        eprintln!("node {id} exited unexpectedly; see its log. Stopping the others.");
    }
    say("Stopping...\n");
    stop(&mut nodes).await;
    if let Some(id) = exited {
        bail!("node {id} exited unexpectedly");
    }
    say("Stopped.\n");
    Ok(())
}

/// Writes `text` to stdout, whether or not anyone reads it.
fn say(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Waits until every node is registered with its client address and the
/// controller has a leader.
async fn wait_ready(nodes: &mut [Node]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let bootstrap: Vec<String> = nodes.iter().map(|n| n.client.clone()).collect();
    let admin = Admin::new(&Client::new(&bootstrap.join(","))?);
    loop {
        for n in nodes.iter_mut() {
            if let Some(status) = n.child.try_wait()? {
                bail!("node {} exited during start ({status}); see {}", n.id, n.log.display());
            }
        }
        if let Ok(cluster) = admin.describe_cluster().await {
            let addressed = cluster.brokers.iter().filter(|b| !b.address.is_empty()).count();
            if cluster.controller.is_some() && addressed == nodes.len() {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the cluster did not come up within {READY_TIMEOUT:?}; see the logs under the data directory");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Resolves with the id of the first node that exits.
async fn watch_children(nodes: &mut [Node]) -> u16 {
    loop {
        for n in nodes.iter_mut() {
            if let Ok(Some(_)) = n.child.try_wait() {
                return n.id;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Closes every node's stdin (a graceful stop), waits, and kills what is
/// still running after `STOP_TIMEOUT`.
async fn stop(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        drop(n.child.stdin.take());
    }
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    for n in nodes.iter_mut() {
        loop {
            match n.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if tokio::time::Instant::now() >= deadline => {
                    eprintln!("node {} did not stop in time; killing it", n.id);
                    let _ = n.child.kill();
                    let _ = n.child.wait();
                    break;
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

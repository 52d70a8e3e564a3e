//! An in-process cluster of real servers on loopback sockets, for the
//! broker's tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use strata_broker::{ConfigBuilder, Listeners, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
        let path = std::env::temp_dir().join(format!("strata-broker-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file of the test certificates (`tests/tls`, made by
/// `deploy/tls/make-certs.sh`).
pub fn tls_file(name: &str) -> String {
    format!("{}/tests/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The settings of a node with TLS on both ports: clients must present a
/// certificate of the test clients' authority, peers one of the nodes'.
pub fn with_tls(builder: ConfigBuilder) -> ConfigBuilder {
    builder
        .set("tls.cert_file", tls_file("node.crt"))
        .and_then(|b| b.set("tls.key_file", tls_file("node.key")))
        .and_then(|b| b.set("tls.client_ca_file", tls_file("client-ca.crt")))
        .and_then(|b| b.set("tls.peer_ca_file", tls_file("ca.crt")))
        .expect("tls settings")
}

/// What a client of a [`with_tls`] cluster uses: the nodes' test
/// authority, and the test client certificate.
pub fn client_tls() -> strata_client::Tls {
    tls_as("client")
}

/// The nodes' test authority and the certificate `NAME.crt` (CN `NAME`,
/// so the principal `User:NAME`, except `client`: `User:strata-client`,
/// and `node`, a node's: `User:strata-node`).
pub fn tls_as(name: &str) -> strata_client::Tls {
    let read = |file: &str| std::fs::read(tls_file(file)).expect("read test certificate");
    strata_client::Tls::new(read("ca.crt")).identity(read(&format!("{name}.crt")), read(&format!("{name}.key")))
}

pub struct TestCluster {
    pub servers: Vec<Server>,
    pub configs: Vec<ServerConfig>,
    pub bootstrap: String,
    _dir: TempDir,
}

impl TestCluster {
    /// The client address of node `id`.
    pub fn addr(&self, id: u64) -> String {
        self.servers[(id - 1) as usize].client_addr().to_string()
    }

    pub async fn shutdown(&self) {
        for server in &self.servers {
            server.shutdown().await;
        }
    }

    /// Starts node `id` again on its data and addresses (after a `halt`).
    pub async fn restart(&mut self, id: u64) {
        let i = (id - 1) as usize;
        let (client, peer, http) =
            (self.servers[i].client_addr(), self.servers[i].peer_addr(), self.servers[i].http_addr());
        let bind = |addr: std::net::SocketAddr| async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                match TcpListener::bind(addr).await {
                    Ok(l) => return l,
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("rebind {addr}: {e}"),
                }
            }
        };
        let listeners = Listeners { client: bind(client).await, peer: bind(peer).await, http: bind(http).await };
        self.servers[i] = Server::start_on(self.configs[i].clone(), listeners).await.expect("restart");
    }
}

/// Starts `n` nodes on loopback, each adjusted by `tweak`, and waits until
/// every broker is registered with its client address.
pub async fn cluster(n: u64, tweak: impl Fn(ConfigBuilder) -> ConfigBuilder) -> TestCluster {
    cluster_each(n, |_, builder| tweak(builder)).await
}

/// As [`cluster`], with `tweak` told which node (1 to `n`) it adjusts.
pub async fn cluster_each(n: u64, tweak: impl Fn(u64, ConfigBuilder) -> ConfigBuilder) -> TestCluster {
    let dir = TempDir::new("cluster");
    let mut bound = Vec::new();
    for _ in 0..n {
        let bind = || async { TcpListener::bind("127.0.0.1:0").await.expect("bind") };
        bound.push(Listeners { client: bind().await, peer: bind().await, http: bind().await });
    }
    let addr = |l: &TcpListener| l.local_addr().expect("addr").to_string();
    let peers: Vec<String> = bound.iter().enumerate().map(|(i, l)| format!("{}={}", i + 1, addr(&l.peer))).collect();
    let peers = peers.join(",");
    let mut servers = Vec::new();
    let mut configs = Vec::new();
    for (i, listeners) in bound.into_iter().enumerate() {
        let id = i as u64 + 1;
        let builder = ConfigBuilder::new()
            .set("node_id", id.to_string())
            .and_then(|b| b.set("peers", peers.clone()))
            .and_then(|b| b.set("data_dir", dir.0.join(format!("node-{id}")).display().to_string()))
            .and_then(|b| b.set("listen.client", addr(&listeners.client)))
            .and_then(|b| b.set("listen.peer", addr(&listeners.peer)))
            .and_then(|b| b.set("listen.http", addr(&listeners.http)))
            .and_then(|b| b.set("shutdown.grace", "2s"))
            .expect("settings");
        let config = tweak(id, builder).build().expect("config");
        configs.push(config.clone());
        servers.push(Server::start_on(config, listeners).await.expect("start"));
    }
    let bootstrap = servers.iter().map(|s| s.client_addr().to_string()).collect::<Vec<_>>().join(",");
    let client = match configs[0].tls {
        Some(_) => strata_client::Client::with_tls(&bootstrap, client_tls()),
        None => strata_client::Client::new(&bootstrap),
    };
    let admin = strata_client::Admin::new(&client.expect("client"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) = admin.describe_cluster().await {
            if c.controller.is_some() && c.brokers.iter().filter(|b| !b.address.is_empty()).count() == n as usize {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "cluster did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    TestCluster { servers, configs, bootstrap, _dir: dir }
}

/// Waits until every partition of `topic` has a leader.
pub async fn wait_for_leaders(admin: &strata_client::Admin, topic: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(t) = admin.describe_topic(topic).await {
            if t.partitions.iter().all(|p| p.leader.is_some()) {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "partitions of {topic} got no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The body of `GET path` from a node's HTTP listener, which must answer 200.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

/// The sum of every sample of `name` in a `/metrics` text whose labels
/// contain all of `labels` (0 when there is none).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

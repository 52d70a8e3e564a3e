//! [`Server`]: one Strata node — its three listeners (client gRPC, peer
//! Raft, HTTP health), the cluster node underneath, and a graceful stop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{FutureExt, StreamExt};
use strata_proto::api as pb;
use strata_proto::{api_paths, chained};
use strata_raft::acl::{Operation, ResourceType};
use strata_raft::{ClusterError, ClusterNode, RaftNodeConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::auth::{Access, Authorizer};
use crate::config::ServerConfig;
use crate::cpus_awake::{CPU_LATENCY_FILE, CpusAwake};
use crate::disk::DiskGuard;
use crate::error::{ApiError, Code};
use crate::limits::HANDOVER_MAX;
use crate::metrics::Metrics;
use crate::service::Broker;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The journaled test mode (`testing.journal_unsynced`) could not be
    /// set up.
    #[error("cannot journal unsynced writes under {dir}: {source}")]
    Journal {
        /// The data directory.
        dir: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `runtime.keep_cpus_awake` is set and the request could not be
    /// made.
    #[error(
        "cannot keep CPUs awake (runtime.keep_cpus_awake = true): {file}: {source}; \
         it needs write access to that file (root) on Linux, or leave the setting off"
    )]
    CpusAwake {
        /// The file the request goes through.
        file: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the data directory's lock: two nodes writing
    /// the same logs would corrupt them.
    #[error(
        "the data directory {dir} is in use by another strata server (it holds {dir}/{DATA_DIR_LOCK}); \
         every node needs a data directory of its own"
    )]
    DataDirInUse {
        /// The data directory.
        dir: String,
    },
    /// The data directory or its lock file could not be made.
    #[error("cannot use the data directory {dir}: {source}")]
    DataDir {
        /// The data directory.
        dir: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS files (`tls.*`) hold no usable certificate or key.
    #[error("TLS on the client port (tls.cert_file, tls.key_file, tls.client_ca_file): {0}")]
    Tls(String),
    /// The cluster node could not start.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// The file in a data directory that a running node holds locked.
pub const DATA_DIR_LOCK: &str = ".lock";

/// Takes the data directory's lock (`flock` on [`DATA_DIR_LOCK`], made if
/// missing), so that a second server started on the same directory, by
/// mistake, refuses to start instead of writing the same logs. The kernel
/// releases the lock when the holder exits, crashed or not. A file system
/// without locks is warned about, not refused.
fn lock_data_dir(dir: &std::path::Path) -> Result<Option<std::fs::File>, ServerError> {
    let shown = || dir.display().to_string();
    std::fs::create_dir_all(dir).map_err(|source| ServerError::DataDir { dir: shown(), source })?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(DATA_DIR_LOCK))
        .map_err(|source| ServerError::DataDir { dir: shown(), source })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServerError::DataDirInUse { dir: shown() }),
        Err(std::fs::TryLockError::Error(err)) => {
            tracing::warn!(dir = %shown(), error = %err, "cannot lock the data directory; nothing stops a second node from using it");
            Ok(None)
        }
    }
}

/// The three listeners of a node, bound.
pub struct Listeners {
    /// Client gRPC.
    pub client: TcpListener,
    /// Peer Raft transport.
    pub peer: TcpListener,
    /// HTTP health.
    pub http: TcpListener,
}

impl Listeners {
    /// Binds the listeners `config` names.
    pub async fn bind(config: &ServerConfig) -> Result<Listeners, ServerError> {
        async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
            TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { what, addr, source })
        }
        Ok(Listeners {
            client: bind("clients", config.listen_client).await?,
            peer: bind("peers", config.listen_peer).await?,
            http: bind("HTTP", config.listen_http).await?,
        })
    }
}

/// A running node.
pub struct Server {
    config: ServerConfig,
    cluster: Arc<ClusterNode>,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    http_addr: SocketAddr,
    stop_api: Mutex<Option<oneshot::Sender<()>>>,
    api: Mutex<Option<JoinHandle<()>>>,
    stop_http: watch::Sender<bool>,
    /// Cuts every client connection still open.
    cut: Arc<AtomicBool>,
    /// `runtime.keep_cpus_awake`'s request, held while the node lives.
    _cpus_awake: Option<CpusAwake>,
    /// The data directory's lock, held until the node has stopped.
    data_dir_lock: Mutex<Option<std::fs::File>>,
}

/// Below this many open files a node warns: two or three per partition
/// replica, with room for connections.
const OPEN_FILES_WANTED: u64 = 4096;

/// Raises the soft limit on open files to the hard one (see
/// `open_files.rs`), and says so, or warns when it stays low.
fn raise_open_files_limit() {
    match crate::open_files::raise_open_files_limit() {
        Ok((before, after)) => {
            if after.soft > before.soft {
                tracing::info!(from = before.soft, to = after.soft, "raised the limit on open files");
            }
            if after.soft < OPEN_FILES_WANTED {
                tracing::warn!(
                    limit = after.soft,
                    "few files may be open at once: a node keeps two or three per partition replica; \
                     raise the hard limit (LimitNOFILE=, ulimit -Hn)"
                );
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot read or raise the limit on open files"),
    }
}

impl Server {
    /// Binds the configured listeners and starts the node.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let listeners = Listeners::bind(&config).await?;
        Server::start_on(config, listeners).await
    }

    /// Starts the node on bound listeners (tests bind port 0 first).
    pub async fn start_on(config: ServerConfig, listeners: Listeners) -> Result<Server, ServerError> {
        let addr_of = |l: &TcpListener, what: &'static str, addr: SocketAddr| {
            l.local_addr().map_err(|source| ServerError::Bind { what, addr, source })
        };
        let client_addr = addr_of(&listeners.client, "clients", config.listen_client)?;
        let peer_addr = addr_of(&listeners.peer, "peers", config.listen_peer)?;
        let http_addr = addr_of(&listeners.http, "HTTP", config.listen_http)?;
        // Before anything starts: a bad certificate stops the node here.
        let api_server = api_server_builder(&config)?;
        if config.authorization.enabled && config.authorization.super_users.is_empty() {
            tracing::warn!(
                "authorization.enabled without authorization.super_users: only existing bindings let anyone in, \
                 and none can be made unless one allows ALTER on the cluster"
            );
        }
        raise_open_files_limit();
        let data_dir_lock = lock_data_dir(&config.data_dir)?;
        let cpus_awake = if config.keep_cpus_awake {
            let held = CpusAwake::hold().map_err(|source| ServerError::CpusAwake { file: CPU_LATENCY_FILE, source })?;
            tracing::info!(file = CPU_LATENCY_FILE, "runtime.keep_cpus_awake: idle CPUs poll instead of sleeping");
            Some(held)
        } else {
            None
        };
        if config.testing_journal_unsynced {
            // UNSAFE test mode (see the setting): every partition directory
            // this node opens records what it synced.
            strata_log::io::journaled::journal_under(&config.data_dir)
                .map_err(|source| ServerError::Journal { dir: config.data_dir.display().to_string(), source })?;
            tracing::warn!(
                data_dir = %config.data_dir.display(),
                "testing.journal_unsynced is on: every write is journaled for crash tests (UNSAFE, slow)"
            );
        }
        let raft = RaftNodeConfig {
            node_id: config.node_id,
            listen: peer_addr,
            data_dir: config.data_dir.clone(),
            raft: config.raft_config(),
            log: config.log.clone(),
            tls: config.tls.as_ref().and_then(|tls| tls.peer()),
        };
        let starting = ClusterNode::start_on(raft, listeners.peer, config.peers.clone());
        let cluster = Arc::new(crate::http::answer_while(&listeners.http, starting).await?);
        cluster.announce_client_addr(config.advertise_client.clone());
        let coordinator = crate::groups::Coordinator::new(cluster.clone(), config.offsets_partitions);
        // Every task of this node logs inside its span, so the lines of
        // several nodes in one process (tests, `strata dev` logs merged)
        // say whose they are.
        let node_span = tracing::info_span!("node", node = config.node_id);
        tokio::spawn(coordinator.clone().run(config.peers.len()).instrument(node_span.clone()));
        let metrics = Arc::new(Metrics::default());
        let disk = Arc::new(DiskGuard::new(config.node_id, config.data_dir.clone(), config.min_free_disk_bytes));
        let broker =
            Arc::new(Broker::new(cluster.clone(), coordinator.clone(), metrics.clone(), disk.clone(), &config));

        let service = ApiService::new(broker, Arc::new(config.authorization.clone()), config.request_bytes as usize);
        let cut = Arc::new(AtomicBool::new(false));
        let incoming = limited_incoming(
            listeners.client,
            Arc::new(Semaphore::new(config.connections)),
            cut.clone(),
            metrics.clone(),
        );
        let (stop_api, stopped) = oneshot::channel::<()>();
        let rpc_parent = node_span.clone();
        let api = tokio::spawn(async move {
            let result = api_server
                // HTTP/2's defaults (16 KiB frames, 1 MiB windows) cut a
                // producer's megabytes into many small frames and make it
                // wait for window updates: see `limits::H2_*`.
                .max_frame_size(crate::limits::H2_FRAME_BYTES)
                .initial_stream_window_size(crate::limits::H2_STREAM_WINDOW_BYTES)
                .initial_connection_window_size(crate::limits::H2_CONNECTION_WINDOW_BYTES)
                // One span per request, under the node's, naming the call.
                .trace_fn(move |request| tracing::info_span!(parent: &rpc_parent, "rpc", path = %request.uri().path()))
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(err) = result {
                tracing::error!(error = %err, "client API stopped");
            }
        });
        let (stop_http, http_stopped) = watch::channel(false);
        tokio::spawn(
            crate::retention::Scheduler::new(cluster.clone(), &config)
                .run(http_stopped.clone())
                .instrument(node_span.clone()),
        );
        let http = crate::http::Http { cluster: cluster.clone(), coordinator, metrics, disk };
        tokio::spawn(crate::http::serve(listeners.http, Arc::new(http), http_stopped).instrument(node_span.clone()));
        tracing::info!(node = config.node_id, client = %client_addr, peer = %peer_addr, http = %http_addr, "node started");
        Ok(Server {
            config,
            cluster,
            client_addr,
            peer_addr,
            http_addr,
            stop_api: Mutex::new(Some(stop_api)),
            api: Mutex::new(Some(api)),
            stop_http,
            cut,
            _cpus_awake: cpus_awake,
            data_dir_lock: Mutex::new(data_dir_lock),
        })
    }

    /// Where clients connect.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Where peers connect.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Where health is served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The cluster node underneath.
    pub fn cluster(&self) -> &Arc<ClusterNode> {
        &self.cluster
    }

    /// Stops gracefully: stops accepting clients, hands every leadership
    /// over, lets in-flight requests finish (up to `shutdown.grace`),
    /// flushes every log and stops Raft. Data stays on disk.
    pub async fn shutdown(&self) {
        let grace = self.config.shutdown_grace;
        if let Some(stop) = self.stop_api.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
        self.cluster.hand_over_leadership(HANDOVER_MAX.min(grace)).await;
        let api = self.api.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut api) = api {
            if tokio::time::timeout(grace, &mut api).await.is_err() {
                tracing::warn!(?grace, "in-flight requests did not finish in time; cutting them");
                self.cut.store(true, Ordering::Release);
                api.abort();
            }
        }
        let _ = self.stop_http.send(true);
        for group in self.cluster.raft_node().groups() {
            if let Err(err) = group.log.sync() {
                tracing::error!(group = group.id, error = %err, "flushing a log on shutdown failed");
            }
        }
        self.cluster.shutdown().await;
        self.data_dir_lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        tracing::info!(node = self.config.node_id, "node stopped");
    }

    /// Stops at once, as a crash would look to the rest of the cluster: no
    /// leadership handover and no draining (tests use it to leave the
    /// cluster without a leader).
    pub async fn halt(&self) {
        if let Some(stop) = self.stop_api.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
        self.cut.store(true, Ordering::Release);
        if let Some(api) = self.api.lock().unwrap_or_else(|p| p.into_inner()).take() {
            api.abort();
        }
        let _ = self.stop_http.send(true);
        self.cluster.shutdown().await;
        self.data_dir_lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("stopping on signal");
        self.shutdown().await;
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// A client connection holding one of the connection slots. Once `cut` is
/// set (a halt, or a graceful stop past its grace) every read or write
/// fails, so the connection tasks tonic spawned end too.
struct LimitedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    cut: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Drop for LimitedStream {
    fn drop(&mut self) {
        self.metrics.connection(-1);
    }
}

fn cut_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "the server stopped")
}

impl AsyncRead for LimitedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.cut.load(Ordering::Acquire) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.cut.load(Ordering::Acquire) {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for LimitedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

/// The client API's server, speaking TLS when `tls.*` is set.
fn api_server_builder(config: &ServerConfig) -> Result<tonic::transport::Server, ServerError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let server = tonic::transport::Server::builder();
    let Some(tls) = &config.tls else { return Ok(server) };
    let mut tls_config = ServerTlsConfig::new()
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
        .timeout(strata_raft::limits::TLS_HANDSHAKE_TIMEOUT);
    if let Some(ca) = &tls.client_ca_pem {
        tls_config = tls_config.client_ca_root(Certificate::from_pem(ca));
    }
    server.tls_config(tls_config).map_err(|e| ServerError::Tls(strata_proto::error_chain(&e)))
}

/// Accepts a connection only while a slot is free: beyond the limit,
/// connections wait in the listen backlog (back-pressure, not refusal).
fn limited_incoming(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    cut: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> impl futures::Stream<Item = Result<LimitedStream, std::io::Error>> {
    futures::stream::unfold((listener, slots, cut, metrics), |(listener, slots, cut, metrics)| async move {
        let slot = slots.clone().acquire_owned().await.ok()?;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    metrics.connection(1);
                    let conn = LimitedStream { stream, _slot: slot, cut: cut.clone(), metrics: metrics.clone() };
                    return Some((Ok(conn), (listener, slots, cut, metrics)));
                }
                Err(err) => {
                    // Out of file descriptors, most likely: wait, do not spin.
                    tracing::warn!(error = %err, "accepting a client connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// The error codes a response carries (top level and per partition), for
/// the request counters.
trait Codes {
    fn codes(&self) -> Vec<i32>;
}

fn code_names(codes: &[i32]) -> Vec<&'static str> {
    codes.iter().map(|c| pb::ErrorCode::try_from(*c).map_or("UNKNOWN", |c| c.as_str_name())).collect()
}

macro_rules! top_level_error {
    ($($t:ty),*) => {$(
        impl Codes for $t {
            fn codes(&self) -> Vec<i32> {
                self.error.iter().map(|e| e.code).collect()
            }
        }
    )*};
}

macro_rules! no_error {
    ($($t:ty),*) => {$(
        impl Codes for $t {
            fn codes(&self) -> Vec<i32> {
                Vec::new()
            }
        }
    )*};
}

top_level_error!(
    pb::CreateAclsResponse,
    pb::DeleteAclsResponse,
    pb::DescribeAclsResponse,
    pb::CreateTopicResponse,
    pb::DeleteTopicResponse,
    pb::AlterTopicConfigResponse,
    pb::CreatePartitionsResponse,
    pb::ReassignPartitionResponse,
    pb::RemoveBrokerResponse,
    pb::DescribeTopicResponse,
    pb::InitProducerIdResponse,
    pb::FindCoordinatorResponse,
    pb::GroupHeartbeatResponse,
    pb::OffsetCommitResponse,
    pb::OffsetFetchResponse,
    pb::DescribeGroupResponse,
    pb::DeleteGroupResponse
);
no_error!(pb::MetadataResponse, pb::ListTopicsResponse, pb::DescribeClusterResponse, pb::ListGroupsResponse);

macro_rules! top_level_and_partition_errors {
    ($($t:ty),*) => {$(
        impl Codes for $t {
            fn codes(&self) -> Vec<i32> {
                self.error
                    .iter()
                    .map(|e| e.code)
                    .chain(self.partitions.iter().filter_map(|p| p.error.as_ref().map(|e| e.code)))
                    .collect()
            }
        }
    )*};
}

top_level_and_partition_errors!(pb::ProduceResponse, pb::FetchResponse);

macro_rules! partition_errors {
    ($($t:ty),*) => {$(
        impl Codes for $t {
            fn codes(&self) -> Vec<i32> {
                self.partitions.iter().filter_map(|p| p.error.as_ref().map(|e| e.code)).collect()
            }
        }
    )*};
}

partition_errors!(pb::ListOffsetsResponse, pb::DeleteRecordsResponse);

/// The tonic service: each RPC checked against the client's rights
/// (`auth.rs`), then handed to the [`Broker`].
#[derive(Clone)]
struct Api(Arc<Broker>, Arc<Authorizer>);

impl Api {
    /// The rights of the client that sent `request`.
    fn access<T>(&self, request: &Request<T>) -> Access {
        self.1.access(request.extensions(), || self.0.cluster().metadata())
    }

    /// Refuses the whole call (PERMISSION_DENIED) unless `access` may do
    /// `operation` to the resource.
    fn require(
        &self,
        rpc: &'static str,
        access: &Access,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Result<(), Status> {
        access.check(operation, resource_type, name).map_err(|e| self.refuse(rpc, e))
    }

    fn refuse(&self, rpc: &'static str, error: ApiError) -> Status {
        self.0.metrics().answered(rpc, &["NOT_AUTHORIZED"]);
        Status::permission_denied(error.message)
    }

    /// Until this node's metadata caught up, every RPC is answered
    /// UNAVAILABLE at the gRPC level, which clients take as "try another
    /// broker".
    fn ready(&self) -> Result<(), Status> {
        if self.0.cluster().metadata_caught_up() {
            Ok(())
        } else {
            Err(Status::unavailable("this broker is catching up with the cluster metadata; try another"))
        }
    }

    /// Counts the answer and hands it to tonic.
    fn answer<T: Codes>(&self, rpc: &'static str, response: T) -> Answer<T> {
        self.0.metrics().answered(rpc, &code_names(&response.codes()));
        Ok(Response::new(response))
    }
}

type Answer<T> = Result<Response<T>, Status>;

/// The client API's gRPC service: tonic's generated server, except for
/// the two calls that carry batches, served with `strata_proto::chained`.
/// A Produce request's batches keep the HTTP/2 frames they arrived in,
/// where tonic's decoder would copy every byte into a buffer of its own
/// first (the client sends a batch of 16 KiB or more as a frame of its
/// own). A Fetch answer's records, slices of the log (of a sealed
/// segment's map, or of the tail cache), go to the connection as they are,
/// where tonic's encoder would copy them into its buffer first.
#[derive(Clone)]
struct ApiService {
    api: Api,
    generated: pb::strata_server::StrataServer<Api>,
    request_bytes: usize,
}

impl ApiService {
    fn new(broker: Arc<Broker>, authorizer: Arc<Authorizer>, request_bytes: usize) -> ApiService {
        let api = Api(broker, authorizer);
        let generated = pb::strata_server::StrataServer::new(api.clone())
            .max_decoding_message_size(request_bytes)
            .max_encoding_message_size(usize::MAX);
        ApiService { api, generated, request_bytes }
    }
}

/// A unary call's one request message, decoded without copying its
/// `bytes` fields.
async fn request_message<M: prost::Message + Default + 'static>(
    request: http::Request<Body>,
    request_bytes: usize,
) -> Result<Request<M>, Status> {
    // The TLS connection's certificates name the client (`auth.rs`).
    let tls = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().cloned();
    let mut messages = chained::Messages::<_, M>::new(request.into_body(), request_bytes);
    match messages.next().await {
        Some(Ok(message)) => {
            let mut request = Request::new(message);
            if let Some(tls) = tls {
                request.extensions_mut().insert(tls);
            }
            Ok(request)
        }
        Some(Err(status)) => Err(status),
        None => Err(Status::invalid_argument("a unary call without a request message")),
    }
}

/// A unary call's answer, its large `bytes` fields sent without a copy.
fn answer_message<M: prost::Message + 'static>(answer: Answer<M>) -> http::Response<Body> {
    match answer {
        Ok(response) => chained::answer(futures::stream::iter(Some(response.into_inner())), usize::MAX),
        Err(status) => status.into_http(),
    }
}

/// Answers a Produce call.
async fn produce_call(api: Api, request: http::Request<Body>, request_bytes: usize) -> http::Response<Body> {
    match request_message(request, request_bytes).await {
        Ok(request) => answer_message(pb::strata_server::Strata::produce(&api, request).await),
        Err(status) => status.into_http(),
    }
}

/// Answers a Fetch call.
async fn fetch_call(api: Api, request: http::Request<Body>, request_bytes: usize) -> http::Response<Body> {
    match request_message(request, request_bytes).await {
        Ok(request) => answer_message(pb::strata_server::Strata::fetch(&api, request).await),
        Err(status) => status.into_http(),
    }
}

impl tonic::server::NamedService for ApiService {
    const NAME: &'static str = <pb::strata_server::StrataServer<Api> as tonic::server::NamedService>::NAME;
}

impl tonic::codegen::Service<http::Request<Body>> for ApiService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tonic::codegen::Service::<http::Request<Body>>::poll_ready(&mut self.generated, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match request.uri().path() {
            api_paths::PRODUCE => Box::pin(produce_call(self.api.clone(), request, self.request_bytes).map(Ok)),
            api_paths::FETCH => Box::pin(fetch_call(self.api.clone(), request, self.request_bytes).map(Ok)),
            _ => Box::pin(self.generated.call(request)),
        }
    }
}

#[tonic::async_trait]
impl pb::strata_server::Strata for Api {
    async fn produce(&self, request: Request<pb::ProduceRequest>) -> Answer<pb::ProduceResponse> {
        self.ready()?;
        let access = self.access(&request);
        let mut request = request.into_inner();
        let denied = take_denied(&access, Operation::Write, &mut request.partitions, |p| (&p.topic, p.partition));
        let mut response = match (request.partitions.is_empty(), denied.is_empty()) {
            (true, false) => pb::ProduceResponse::default(),
            _ => self.0.produce(request).await,
        };
        response.partitions.extend(denied.into_iter().map(|(topic, partition, error)| pb::PartitionProduceResult {
            topic,
            partition,
            error: Some(error),
            base_offset: -1,
            duplicate: false,
            log_start_offset: -1,
        }));
        self.answer("produce", response)
    }

    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Answer<pb::FetchResponse> {
        self.ready()?;
        let access = self.access(&request);
        let mut request = request.into_inner();
        let denied = take_denied(&access, Operation::Read, &mut request.partitions, |p| (&p.topic, p.partition));
        let mut response = match (request.partitions.is_empty(), denied.is_empty()) {
            (true, false) => pb::FetchResponse::default(),
            _ => self.0.fetch(request).await,
        };
        response.partitions.extend(denied.into_iter().map(|(topic, partition, error)| pb::PartitionFetchResult {
            topic,
            partition,
            error: Some(error),
            ..Default::default()
        }));
        self.answer("fetch", response)
    }

    async fn list_offsets(&self, request: Request<pb::ListOffsetsRequest>) -> Answer<pb::ListOffsetsResponse> {
        self.ready()?;
        let access = self.access(&request);
        let mut request = request.into_inner();
        let denied = take_denied(&access, Operation::Describe, &mut request.partitions, |p| (&p.topic, p.partition));
        let mut response = match (request.partitions.is_empty(), denied.is_empty()) {
            (true, false) => pb::ListOffsetsResponse::default(),
            _ => self.0.list_offsets(request).await,
        };
        response.partitions.extend(denied.into_iter().map(|(topic, partition, error)| pb::PartitionOffset {
            topic,
            partition,
            error: Some(error),
            offset: -1,
        }));
        self.answer("list_offsets", response)
    }

    async fn delete_records(&self, request: Request<pb::DeleteRecordsRequest>) -> Answer<pb::DeleteRecordsResponse> {
        self.ready()?;
        let access = self.access(&request);
        let mut request = request.into_inner();
        let denied = take_denied(&access, Operation::Delete, &mut request.partitions, |p| (&p.topic, p.partition));
        let mut response = self.0.delete_records(request).await;
        response.partitions.extend(denied.into_iter().map(|(topic, partition, error)| pb::PartitionOffset {
            topic,
            partition,
            error: Some(error),
            offset: -1,
        }));
        self.answer("delete_records", response)
    }

    async fn metadata(&self, request: Request<pb::MetadataRequest>) -> Answer<pb::MetadataResponse> {
        self.ready()?;
        let access = self.access(&request);
        let request = request.into_inner();
        // Topics the client may not see are left out of a listing, and
        // named as refused when it asked for them.
        let asked = !request.topics.is_empty();
        let mut response = self.0.metadata(request).await;
        response.topics.retain_mut(|topic| match access.check(Operation::Describe, ResourceType::Topic, &topic.name) {
            Ok(()) => true,
            Err(error) => {
                *topic = pb::TopicMetadata {
                    name: std::mem::take(&mut topic.name),
                    error: Some(crate::convert::error_to_pb(&error)),
                    ..Default::default()
                };
                asked
            }
        });
        self.answer("metadata", response)
    }

    async fn create_topic(&self, request: Request<pb::CreateTopicRequest>) -> Answer<pb::CreateTopicResponse> {
        self.ready()?;
        let access = self.access(&request);
        if !access.allows(Operation::Create, ResourceType::Cluster, "") {
            self.require("create_topic", &access, Operation::Create, ResourceType::Topic, &request.get_ref().name)?;
        }
        self.answer("create_topic", self.0.create_topic(request.into_inner()).await)
    }

    async fn delete_topic(&self, request: Request<pb::DeleteTopicRequest>) -> Answer<pb::DeleteTopicResponse> {
        self.ready()?;
        let access = self.access(&request);
        self.require("delete_topic", &access, Operation::Delete, ResourceType::Topic, &request.get_ref().name)?;
        self.answer("delete_topic", self.0.delete_topic(request.into_inner()).await)
    }

    async fn alter_topic_config(
        &self,
        request: Request<pb::AlterTopicConfigRequest>,
    ) -> Answer<pb::AlterTopicConfigResponse> {
        self.ready()?;
        let access = self.access(&request);
        self.require("alter_topic_config", &access, Operation::Alter, ResourceType::Topic, &request.get_ref().name)?;
        self.answer("alter_topic_config", self.0.alter_topic_config(request.into_inner()).await)
    }

    async fn create_partitions(
        &self,
        request: Request<pb::CreatePartitionsRequest>,
    ) -> Answer<pb::CreatePartitionsResponse> {
        self.ready()?;
        let access = self.access(&request);
        self.require("create_partitions", &access, Operation::Alter, ResourceType::Topic, &request.get_ref().topic)?;
        self.answer("create_partitions", self.0.create_partitions(request.into_inner()).await)
    }

    async fn reassign_partition(
        &self,
        request: Request<pb::ReassignPartitionRequest>,
    ) -> Answer<pb::ReassignPartitionResponse> {
        self.ready()?;
        self.require("reassign_partition", &self.access(&request), Operation::Alter, ResourceType::Cluster, "")?;
        self.answer("reassign_partition", self.0.reassign_partition(request.into_inner()).await)
    }

    async fn remove_broker(&self, request: Request<pb::RemoveBrokerRequest>) -> Answer<pb::RemoveBrokerResponse> {
        self.ready()?;
        self.require("remove_broker", &self.access(&request), Operation::Alter, ResourceType::Cluster, "")?;
        self.answer("remove_broker", self.0.remove_broker(request.into_inner()).await)
    }

    async fn list_topics(&self, request: Request<pb::ListTopicsRequest>) -> Answer<pb::ListTopicsResponse> {
        self.ready()?;
        let access = self.access(&request);
        let mut response = self.0.list_topics().await;
        response.names.retain(|name| access.allows(Operation::Describe, ResourceType::Topic, name));
        self.answer("list_topics", response)
    }

    async fn describe_topic(&self, request: Request<pb::DescribeTopicRequest>) -> Answer<pb::DescribeTopicResponse> {
        self.ready()?;
        let access = self.access(&request);
        self.require("describe_topic", &access, Operation::Describe, ResourceType::Topic, &request.get_ref().name)?;
        self.answer("describe_topic", self.0.describe_topic(request.into_inner()).await)
    }

    async fn describe_cluster(
        &self,
        _request: Request<pb::DescribeClusterRequest>,
    ) -> Answer<pb::DescribeClusterResponse> {
        self.ready()?;
        self.answer("describe_cluster", self.0.describe_cluster().await)
    }

    async fn init_producer_id(
        &self,
        request: Request<pb::InitProducerIdRequest>,
    ) -> Answer<pb::InitProducerIdResponse> {
        self.ready()?;
        // An idempotent producer's id: for whoever may write some topic
        // (Kafka asks the same since 3.0).
        let access = self.access(&request);
        if !access.allows_some(Operation::Write, ResourceType::Topic) {
            let message = format!("{} may not write any topic, so gets no producer id", access.principal);
            return Err(self.refuse("init_producer_id", ApiError::new(Code::NotAuthorized, message)));
        }
        self.answer("init_producer_id", self.0.init_producer_id().await)
    }

    async fn find_coordinator(
        &self,
        request: Request<pb::FindCoordinatorRequest>,
    ) -> Answer<pb::FindCoordinatorResponse> {
        self.ready()?;
        let access = self.access(&request);
        self.require("find_coordinator", &access, Operation::Describe, ResourceType::Group, &request.get_ref().group)?;
        let request = request.into_inner();
        let span = tracing::info_span!("group", group = %request.group);
        self.answer("find_coordinator", self.0.find_coordinator(request).instrument(span).await)
    }

    async fn group_heartbeat(&self, request: Request<pb::GroupHeartbeatRequest>) -> Answer<pb::GroupHeartbeatResponse> {
        self.ready()?;
        let access = self.access(&request);
        self.require("group_heartbeat", &access, Operation::Read, ResourceType::Group, &request.get_ref().group)?;
        // A member is given partitions of what it subscribes to: only
        // topics it may see (Kafka leaves the others out; here the member
        // is told which one).
        for topic in &request.get_ref().topics {
            self.require("group_heartbeat", &access, Operation::Describe, ResourceType::Topic, topic)?;
        }
        let request = request.into_inner();
        let span = tracing::info_span!("group", group = %request.group);
        self.answer("group_heartbeat", self.0.group_heartbeat(request).instrument(span).await)
    }

    async fn offset_commit(&self, request: Request<pb::OffsetCommitRequest>) -> Answer<pb::OffsetCommitResponse> {
        self.ready()?;
        let access = self.access(&request);
        self.require("offset_commit", &access, Operation::Read, ResourceType::Group, &request.get_ref().group)?;
        for offset in &request.get_ref().offsets {
            self.require("offset_commit", &access, Operation::Read, ResourceType::Topic, &offset.topic)?;
        }
        let request = request.into_inner();
        let span = tracing::info_span!("group", group = %request.group);
        self.answer("offset_commit", self.0.offset_commit(request).instrument(span).await)
    }

    async fn offset_fetch(&self, request: Request<pb::OffsetFetchRequest>) -> Answer<pb::OffsetFetchResponse> {
        self.ready()?;
        let access = self.access(&request);
        self.require("offset_fetch", &access, Operation::Describe, ResourceType::Group, &request.get_ref().group)?;
        let request = request.into_inner();
        let span = tracing::info_span!("group", group = %request.group);
        let mut response = self.0.offset_fetch(request).instrument(span).await;
        // The group's offsets of topics the client may not see stay hidden.
        response.offsets.retain(|o| access.allows(Operation::Describe, ResourceType::Topic, &o.topic));
        self.answer("offset_fetch", response)
    }

    async fn list_groups(&self, request: Request<pb::ListGroupsRequest>) -> Answer<pb::ListGroupsResponse> {
        self.ready()?;
        let access = self.access(&request);
        let mut response = self.0.list_groups().await;
        response.groups.retain(|group| access.allows(Operation::Describe, ResourceType::Group, group));
        self.answer("list_groups", response)
    }

    async fn describe_group(&self, request: Request<pb::DescribeGroupRequest>) -> Answer<pb::DescribeGroupResponse> {
        self.ready()?;
        let access = self.access(&request);
        self.require("describe_group", &access, Operation::Describe, ResourceType::Group, &request.get_ref().group)?;
        let request = request.into_inner();
        let span = tracing::info_span!("group", group = %request.group);
        self.answer("describe_group", self.0.describe_group(request).instrument(span).await)
    }

    async fn delete_group(&self, request: Request<pb::DeleteGroupRequest>) -> Answer<pb::DeleteGroupResponse> {
        self.ready()?;
        let access = self.access(&request);
        self.require("delete_group", &access, Operation::Delete, ResourceType::Group, &request.get_ref().group)?;
        let request = request.into_inner();
        let span = tracing::info_span!("group", group = %request.group);
        self.answer("delete_group", self.0.delete_group(request).instrument(span).await)
    }

    async fn create_acls(&self, request: Request<pb::CreateAclsRequest>) -> Answer<pb::CreateAclsResponse> {
        self.ready()?;
        self.require("create_acls", &self.access(&request), Operation::Alter, ResourceType::Cluster, "")?;
        self.answer("create_acls", self.0.create_acls(request.into_inner()).await)
    }

    async fn delete_acls(&self, request: Request<pb::DeleteAclsRequest>) -> Answer<pb::DeleteAclsResponse> {
        self.ready()?;
        self.require("delete_acls", &self.access(&request), Operation::Alter, ResourceType::Cluster, "")?;
        self.answer("delete_acls", self.0.delete_acls(request.into_inner()).await)
    }

    async fn describe_acls(&self, request: Request<pb::DescribeAclsRequest>) -> Answer<pb::DescribeAclsResponse> {
        self.ready()?;
        self.require("describe_acls", &self.access(&request), Operation::Describe, ResourceType::Cluster, "")?;
        self.answer("describe_acls", self.0.describe_acls(request.into_inner()).await)
    }
}

/// Takes out of `parts` those of topics `access` may not do `operation`
/// to, and returns each as (topic, partition, NOT_AUTHORIZED).
fn take_denied<P>(
    access: &Access,
    operation: Operation,
    parts: &mut Vec<P>,
    key: impl Fn(&P) -> (&String, u32),
) -> Vec<(String, u32, pb::Error)> {
    let mut denied = Vec::new();
    if access.unchecked() {
        return denied;
    }
    parts.retain(|part| {
        let (topic, partition) = key(part);
        match access.check(operation, ResourceType::Topic, topic) {
            Ok(()) => true,
            Err(error) => {
                denied.push((topic.clone(), partition, crate::convert::error_to_pb(&error)));
                false
            }
        }
    });
    denied
}

//! Every bound of the replication layer, in one place.

/// Bytes of entries one AppendEntries carries at most (the first entry is
/// always sent whole). Keeps a replication message well inside the
/// transport's message limit.
pub const REPLICATION_BYTES_MAX: usize = 8 * 1024 * 1024;

/// On a leader, how many entries behind the last applied one a follower may
/// be and still have the entries it lacks kept in the log's tail cache for
/// its replication (`state_machine.rs`, `hold_from`). A follower further
/// behind (down, or catching up) is read for from the file, so it cannot make
/// every partition it follows hold its cache's ceiling.
pub const FOLLOWER_HOLD_ENTRIES_MAX: u64 = 64;

/// Largest message on the Raft transport; above `REPLICATION_BYTES_MAX` plus
/// one largest batch, so a bounded AppendEntries always fits.
pub const TRANSPORT_MESSAGE_BYTES_MAX: usize = 80 * 1024 * 1024;
/// HTTP/2 settings of the transport. hyper's defaults (16 KiB frames, a
/// 1 MiB window on the server) cut a 100 KB batch into seven frames and let
/// a few groups' batches to one peer fill the window; larger frames and
/// windows send a batch in one frame and keep many in flight.
pub const H2_FRAME_BYTES: u32 = 1024 * 1024;
/// The per-stream flow-control window of a transport connection.
pub const H2_STREAM_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// The per-connection flow-control window of a transport connection.
pub const H2_CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Requests queued to one peer before senders wait.
pub const PEER_QUEUE_MAX: usize = 1024;
/// Requests of one group queued on one stream before the stream's reader waits.
pub const GROUP_QUEUE_MAX: usize = 64;
/// How long an append that only tells a follower the new commit index waits
/// for the next append to carry it instead (network/client.rs). A follower
/// learns a commit up to this much later; leaders' commits and
/// acknowledgements do not wait for it.
pub const COMMIT_NOTICE_WAIT: std::time::Duration = std::time::Duration::from_millis(5);
/// How long connecting to a peer may take.
pub const PEER_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a TLS handshake may take, on the peer transport and on the
/// client API: a connection that stalls in it is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often an idle peer connection is pinged.
pub const PEER_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a ping may go unanswered before the connection is dropped.
pub const PEER_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// How long a stopping node waits for its transport's connections to close
/// before cutting them.
pub const SERVER_STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

const _: () = assert!(TRANSPORT_MESSAGE_BYTES_MAX >= REPLICATION_BYTES_MAX + strata_log::limits::BATCH_BYTES_MAX);
/// Groups a node asks to go quiet at once (each asks its followers); the
/// rest wait for the next check.
pub const QUIESCE_CONCURRENCY_MAX: usize = 256;
/// How long a write forwarded to another node's group (a metadata command
/// sent to the controller's leader) may take.
pub const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a batch that arrived ahead of its predecessor (a sequence gap)
/// waits for it before it is refused OUT_OF_ORDER_SEQUENCE.
pub const SEQUENCE_GAP_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

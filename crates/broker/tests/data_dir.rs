//! A second server started on a running node's data directory refuses to
//! start, saying why, instead of writing the same logs; once the first has
//! stopped, the directory can be used again.

mod common;

use common::cluster;
use strata_broker::{Listeners, Server, ServerError};
use tokio::net::TcpListener;

async fn fresh_listeners() -> Listeners {
    let bind = || async { TcpListener::bind("127.0.0.1:0").await.expect("bind") };
    Listeners { client: bind().await, peer: bind().await, http: bind().await }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_serves_one_node_at_a_time() {
    let cluster = cluster(1, |b| b).await;
    let config = cluster.configs[0].clone();
    let dir = config.data_dir.display().to_string();

    // Same directory, other ports: refused before anything is opened.
    let second = Server::start_on(config.clone(), fresh_listeners().await).await;
    match second {
        Err(err @ ServerError::DataDirInUse { .. }) => {
            let message = err.to_string();
            assert!(message.contains(&dir) && message.contains("in use by another strata server"), "{message}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a second server started on {dir}"),
    }

    // Stopped, the node lets go of it (as an exiting process would).
    cluster.shutdown().await;
    let again = Server::start_on(config, fresh_listeners().await).await.expect("start on the freed directory");
    again.shutdown().await;
}

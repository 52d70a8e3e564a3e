//! `--tls`: the run's servers speak mutual TLS on their client and peer
//! ports with authorization on, so kills, pauses and partitions also
//! exercise TLS reconnects and every request's authorization check. The
//! certificates are made for the nodes' addresses with
//! `deploy/tls/make-certs.sh` (openssl); the workload's client, whose
//! certificate names `User:strata-client`, is the one super user.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, bail};
use strata_client::{Client, Tls};

use crate::netns;

/// The workload's TLS, once `--tls` set it up.
static CLIENT_TLS: OnceLock<Tls> = OnceLock::new();

/// Makes the certificates under `out_dir/tls` for `nodes` nodes, and
/// returns the servers' settings.
pub fn setup(out_dir: &Path, nodes: u32) -> anyhow::Result<Vec<String>> {
    let dir = out_dir.join("tls");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tls/make-certs.sh");
    let hosts: Vec<String> = (1..=nodes).map(netns::node_ip).collect();
    let output = std::process::Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .args(&hosts)
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed (is openssl installed?): {}", script.display(), String::from_utf8_lossy(&output.stderr));
    }
    let file = |name: &str| dir.join(name).display().to_string();
    let read = |name: &str| std::fs::read(dir.join(name)).with_context(|| format!("read {name}"));
    let tls = Tls::new(read("ca.crt")?).identity(read("client.crt")?, read("client.key")?);
    let _ = CLIENT_TLS.set(tls);
    Ok(vec![
        format!("tls.cert_file={}", file("node.crt")),
        format!("tls.key_file={}", file("node.key")),
        format!("tls.client_ca_file={}", file("client-ca.crt")),
        format!("tls.peer_ca_file={}", file("ca.crt")),
        "authorization.enabled=true".to_string(),
        "authorization.super_users=User:strata-client".to_string(),
    ])
}

/// A client for `bootstrap`, over TLS in a `--tls` run.
pub fn client(bootstrap: &str) -> strata_client::Result<Client> {
    match CLIENT_TLS.get() {
        Some(tls) => Client::with_tls(bootstrap, tls.clone()),
        None => Client::new(bootstrap),
    }
}

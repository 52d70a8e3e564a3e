//! `strata server` with `tls.*` set speaks TLS on its client port, and the
//! client commands reach it with `--tls-ca`, `--tls-cert` and `--tls-key`
//! (or their `STRATA_TLS_*` variables); without them they fail, saying so
//! on stderr. With `authorization.enabled`, `strata acl` makes the bindings
//! that decide what another certificate's holder may do. The certificates
//! are the broker tests' (`deploy/tls/make-certs.sh`).

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn cert(name: &str) -> String {
    format!("{}/../broker/tests/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Runs `strata ARGS` against `bootstrap` with `env`, feeding it `stdin`.
fn strata(args: &[&str], bootstrap: &str, env: &[(&str, String)], stdin: &str) -> Output {
    let mut child = Command::new(STRATA)
        .args(args)
        .args(["--bootstrap-server", bootstrap])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strata");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("wait")
}

struct Stop(std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn client_commands_reach_a_tls_server_with_the_tls_flags_only() {
    let dir = std::env::temp_dir().join(format!("strata-cli-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (client_port, peer_port, http_port) = (free_port(), free_port(), free_port());
    let _server = Stop(
        Command::new(STRATA)
            .args(["server", "--node-id", "1"])
            .args(["--peers", &format!("1=127.0.0.1:{peer_port}")])
            .args(["--data-dir", &dir.display().to_string()])
            .args(["--listen-client", &format!("127.0.0.1:{client_port}")])
            .args(["--listen-peer", &format!("127.0.0.1:{peer_port}")])
            .args(["--listen-http", &format!("127.0.0.1:{http_port}")])
            .args(["--set", &format!("tls.cert_file={}", cert("node.crt"))])
            .args(["--set", &format!("tls.key_file={}", cert("node.key"))])
            .args(["--set", &format!("tls.client_ca_file={}", cert("client-ca.crt"))])
            .args(["--set", &format!("tls.peer_ca_file={}", cert("ca.crt"))])
            .args(["--set", "authorization.enabled=true"])
            .args(["--set", "authorization.super_users=User:strata-client"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start strata server"),
    );
    let bootstrap = format!("127.0.0.1:{client_port}");
    let (ca, client_cert, client_key) = (cert("ca.crt"), cert("client.crt"), cert("client.key"));
    let flags = ["--tls-ca", ca.as_str(), "--tls-cert", client_cert.as_str(), "--tls-key", client_key.as_str()];
    let with_flags = |args: &[&'static str]| -> Vec<&str> { args.iter().copied().chain(flags).collect() };

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = strata(&with_flags(&["topic", "create", "secure", "--if-not-exists"]), &bootstrap, &[], "");
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "no topic over TLS: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = strata(&with_flags(&["produce", "--topic", "secure"]), &bootstrap, &[], "one\ntwo\n");
    assert!(out.status.success(), "produce over TLS: {}", String::from_utf8_lossy(&out.stderr));
    // The same settings from the environment.
    let env = [
        ("STRATA_TLS_CA", cert("ca.crt")),
        ("STRATA_TLS_CERT", cert("client.crt")),
        ("STRATA_TLS_KEY", cert("client.key")),
    ];
    let out =
        strata(&["consume", "--topic", "secure", "--from-beginning", "--max-messages", "2"], &bootstrap, &env, "");
    assert!(out.status.success(), "consume over TLS: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");

    // Without the flags, or without the client certificate, it fails.
    let out = strata(&["topic", "list"], &bootstrap, &[], "");
    assert!(!out.status.success(), "a plain client listed topics of a TLS server");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Error"), "says so on stderr");
    let out = strata(&["topic", "list", "--tls-ca", &cert("ca.crt")], &bootstrap, &[], "");
    assert!(!out.status.success(), "a client without a certificate listed topics");
    // The node's alert (CertificateRequired) or, when the client was
    // still writing, the closed connection.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TLS handshake refused") || stderr.contains("transport"), "{stderr}");
    // A certificate without its key is refused by the command line itself.
    let out =
        strata(&["topic", "list", "--tls-ca", &cert("ca.crt"), "--tls-cert", &cert("client.crt")], &bootstrap, &[], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"), "names the missing flag");

    // Authorization: the test client is a super user; alice gets what the
    // bindings made with `strata acl` give her.
    let acl = |args: &[&'static str]| strata(&with_flags(&[&["acl"][..], args].concat()), &bootstrap, &[], "");
    let out = acl(&["add", "--principal", "User:alice", "--operation", "read", "--topic", "secure"]);
    assert!(out.status.success(), "acl add: {}", String::from_utf8_lossy(&out.stderr));
    let out = acl(&["add", "--principal", "User:alice", "--operation", "read", "--group", "g", "--deny"]);
    assert!(out.status.success(), "acl add --deny: {}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8_lossy(&acl(&["list", "--principal", "User:alice"]).stdout).to_string();
    assert!(listed.contains("User:alice\tallow read\ttopic secure"), "{listed}");
    assert!(listed.contains("User:alice\tdeny read\tgroup g"), "{listed}");
    let (alice_cert, alice_key) = (cert("alice.crt"), cert("alice.key"));
    let as_alice = |args: &[&str], stdin: &str| {
        let flags = ["--tls-ca", ca.as_str(), "--tls-cert", alice_cert.as_str(), "--tls-key", alice_key.as_str()];
        strata(&[args, &flags[..]].concat(), &bootstrap, &[], stdin)
    };
    let out = as_alice(&["consume", "--topic", "secure", "--from-beginning", "--max-messages", "2"], "");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n", "{}", String::from_utf8_lossy(&out.stderr));
    let out = as_alice(&["produce", "--topic", "secure"], "three\n");
    assert!(!out.status.success(), "alice wrote without a binding");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NotAuthorized") && stderr.contains("User:alice"), "{stderr}");
    let out = acl(&["remove"]);
    assert!(!out.status.success(), "removing every binding needs --all");
    let out = acl(&["remove", "--principal", "User:alice"]);
    let removed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(removed.lines().filter(|l| l.starts_with("Removed")).count(), 2, "{removed}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! The README's quick start works as written: `strata dev` brings up a
//! 3-node cluster, a topic is created, lines are produced and consumed
//! back, health answers, Ctrl-C stops every node cleanly, and `strata dev`
//! again restarts the cluster on the same data.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A base port with the 3 nodes' 9 ports free (a small race remains).
fn free_base_port() -> u16 {
    let seed = std::process::id() as u16;
    for attempt in 0..200u16 {
        let base = 20_000 + (seed.wrapping_add(attempt * 37) % 2_000) * 20;
        let all_free = (0..3u16)
            .flat_map(|i| (0..3u16).map(move |k| base + 10 * i + k))
            .all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free block of ports");
}

/// `strata dev`, killed if the test fails (its nodes then stop too: their
/// stdin closes); also a console consumer, killed when the test is done
/// with it.
struct Dev(Option<Child>);

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_dev(base: u16, data: &Path) -> (Dev, Vec<String>) {
    let mut child = Command::new(STRATA)
        .args(["dev", "--nodes", "3", "--base-port", &base.to_string()])
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start strata dev");
    let mut lines = Vec::new();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).expect("read");
        assert!(n > 0, "strata dev ended before it was ready: {lines:?}");
        lines.push(line.trim_end().to_string());
        if line.contains("Ctrl-C stops the cluster") {
            break;
        }
    }
    // Keep draining stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = out.read_to_string(&mut rest);
        print!("{rest}");
    });
    (Dev(Some(child)), lines)
}

fn strata(args: &[&str], bootstrap: &str, stdin: &str) -> String {
    let mut child = Command::new(STRATA)
        .args(args)
        .args(["--bootstrap-server", bootstrap])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strata");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "strata {args:?} failed: {stderr}");
    String::from_utf8(output.stdout).expect("utf8")
}

fn http_get(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(stream, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
}

fn interrupt_and_wait(mut dev: Dev) {
    let mut child = dev.0.take().expect("running");
    let status = Command::new("sh").arg("-c").arg(format!("kill -INT {}", child.id())).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "strata dev exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "strata dev did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_readme_quick_start_works_and_the_cluster_restarts_on_its_data() {
    let data = std::env::temp_dir().join(format!("strata-quickstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let base = free_base_port();
    let bootstrap = format!("127.0.0.1:{base}");
    let (dev, banner) = start_dev(base, &data);
    assert!(banner.iter().any(|l| l.contains(&format!("node 3: client 127.0.0.1:{}", base + 20))), "{banner:?}");

    let created = strata(&["topic", "create", "demo", "--partitions", "3"], &bootstrap, "");
    assert!(created.contains("Created topic demo."), "{created}");
    // `topic create` returns once the partitions have leaders, so that the
    // producer below is not refused first.
    let described = strata(&["topic", "describe", "demo"], &bootstrap, "");
    assert_eq!(described.matches("\tLeader: ").count(), 3, "{described}");
    assert!(!described.contains("Leader: none"), "{described}");
    assert!(strata(&["topic", "list"], &bootstrap, "").lines().any(|l| l == "demo"));
    // For scripts that run again: no error for what is already so.
    let again = strata(&["topic", "create", "demo", "--partitions", "3", "--if-not-exists"], &bootstrap, "");
    assert!(again.contains("Topic demo already exists."), "{again}");
    let absent = strata(&["topic", "delete", "absent", "--if-exists"], &bootstrap, "");
    assert!(absent.contains("Topic absent does not exist."), "{absent}");
    strata(&["produce", "--topic", "demo", "--key-separator", ":"], &bootstrap, "hello\nk:world\n");
    let consume = ["consume", "--topic", "demo", "--from-beginning", "--max-messages", "2"];
    let mut values: Vec<String> = strata(&consume, &bootstrap, "").lines().map(String::from).collect();
    values.sort();
    assert_eq!(values, ["hello", "world"]);
    let json = strata(&[&consume[..], &["--format", "json"]].concat(), &bootstrap, "");
    let keyed: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .filter(|v: &serde_json::Value| v["key"] == "k")
        .collect();
    assert_eq!(keyed.len(), 1);
    assert_eq!(keyed[0]["value"], "world");
    // Topic configs change at runtime; --verbose shows every replica.
    let altered = strata(&["topic", "alter", "demo", "--config", "retention.ms=86400000"], &bootstrap, "");
    assert!(altered.contains("retention.ms=86400000"), "{altered}");
    let verbose = strata(&["topic", "describe", "demo", "--verbose"], &bootstrap, "");
    let replica_lines = verbose.lines().filter(|l| l.contains("Broker:") && l.contains("LogEnd:")).count();
    assert_eq!(replica_lines, 9, "3 partitions x 3 replicas: {verbose}");
    // A console consumer without a group reads from the partitions added
    // while it runs; it has started once it printed an old record.
    let mut follower = Command::new(STRATA)
        .args(["consume", "--topic", "demo", "--from-beginning", "--bootstrap-server", &bootstrap])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a consumer");
    let (lines_tx, followed) = std::sync::mpsc::channel::<String>();
    let follower_out = BufReader::new(follower.stdout.take().expect("stdout"));
    let follower = Dev(Some(follower));
    std::thread::spawn(move || {
        for line in follower_out.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    followed.recv_timeout(Duration::from_secs(30)).expect("the consumer printed an old record");
    // A topic grows, and returns once its new partitions have leaders.
    let grown = strata(&["topic", "alter", "demo", "--partitions", "6"], &bootstrap, "");
    assert!(grown.contains("Topic demo has 6 partitions"), "{grown}");
    let described = strata(&["topic", "describe", "demo"], &bootstrap, "");
    assert_eq!(described.matches("\tLeader: ").count(), 6, "{described}");
    assert!(!described.contains("Leader: none"), "{described}");
    strata(&["produce", "--topic", "demo", "--partition", "5"], &bootstrap, "in a new partition\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match followed.recv_timeout(left) {
            Ok(line) if line == "in a new partition" => break,
            Ok(_) => {}
            Err(err) => panic!("the consumer never read the new partition: {err}"),
        }
    }
    drop(follower);
    // A group reads one record and commits it: lag = log end - committed.
    let one = strata(
        &["consume", "--topic", "demo", "--group", "readers", "--from-beginning", "--max-messages", "1"],
        &bootstrap,
        "",
    );
    assert_eq!(one.lines().count(), 1);
    let described = strata(&["group", "describe", "readers"], &bootstrap, "");
    let mut total_committed = 0;
    for row in described.lines().filter(|l| l.starts_with("demo\t")) {
        let cols: Vec<&str> = row.split('\t').collect();
        let (committed, end, lag) = (cols[2], cols[3], cols[4]);
        let end: u64 = end.parse().expect("log end");
        let committed: u64 = if committed == "-" { 0 } else { committed.parse().expect("committed") };
        assert_eq!(lag.parse::<u64>().expect("lag"), end - committed, "{row}");
        total_committed += committed;
    }
    assert_eq!(total_committed, 1, "the group committed the one record it printed: {described}");
    // Ctrl-C on a group's console consumer makes it leave the group at
    // once: its partitions are free again without waiting for its session
    // to time out.
    let mut watcher = Command::new(STRATA)
        .args(["consume", "--topic", "demo", "--group", "watchers", "--from-beginning"])
        .args(["--bootstrap-server", &bootstrap])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a consumer");
    let mut printed = BufReader::new(watcher.stdout.take().expect("stdout"));
    let mut first = String::new();
    printed.read_line(&mut first).expect("read a record");
    assert!(!first.is_empty(), "the consumer printed a record");
    let described = strata(&["group", "describe", "watchers"], &bootstrap, "");
    assert!(described.contains("\nMember "), "a member while it runs: {described}");
    let status = Command::new("sh").arg("-c").arg(format!("kill -INT {}", watcher.id())).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(status) = watcher.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the consumer did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the consumer exits cleanly on Ctrl-C: {status}");
    drop(printed);
    let described = strata(&["group", "describe", "watchers"], &bootstrap, "");
    assert!(described.contains("State: Empty") && !described.contains("\nMember "), "it left: {described}");
    // A reader that goes away (`strata ... | head`) ends a command quietly:
    // no panic, a success, and a group's consumer leaves its group without
    // committing what nobody read. The pipes are closed before anything
    // is written to them.
    let gone = |args: &[&str]| {
        let mut child = Command::new(STRATA)
            .args(args)
            .args(["--bootstrap-server", &bootstrap])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run strata");
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success() && stderr.is_empty(), "strata {args:?}: {}: {stderr}", output.status);
    };
    gone(&["topic", "describe", "demo", "--verbose"]);
    gone(&["consume", "--topic", "demo", "--group", "quitters", "--from-beginning"]);
    // A group with no member and no committed offset is not kept.
    let described = Command::new(STRATA)
        .args(["group", "describe", "quitters", "--bootstrap-server", &bootstrap])
        .output()
        .expect("describe the group");
    let (stdout, stderr) = (String::from_utf8_lossy(&described.stdout), String::from_utf8_lossy(&described.stderr));
    assert!(
        stderr.contains("group quitters does not exist")
            || (described.status.success() && stdout.contains("State: Empty") && !stdout.contains("\nMember ")),
        "it left and committed nothing: {stdout}{stderr}"
    );
    // The perf tool prints Kafka's summary, then one JSON object.
    let perf = strata(
        &[
            "perf",
            "produce",
            "--topic",
            "demo",
            "--num-records",
            "1000",
            "--record-size",
            "10",
            "--throughput",
            "-1",
            "--json",
        ],
        &bootstrap,
        "",
    );
    assert!(perf.contains("1000 records sent"), "{perf}");
    let summary: serde_json::Value = serde_json::from_str(perf.lines().last().expect("a line")).expect("json");
    assert_eq!((summary["records"].as_u64(), summary["failed"].as_u64()), (Some(1000), Some(0)), "{summary}");
    let e2e = strata(
        &[
            "perf",
            "e2e",
            "--topic",
            "demo",
            "--num-records",
            "200",
            "--record-size",
            "16",
            "--throughput",
            "400",
            "--json",
        ],
        &bootstrap,
        "",
    );
    let summary: serde_json::Value = serde_json::from_str(e2e.lines().last().expect("a line")).expect("json");
    assert_eq!(summary["records"].as_u64(), Some(200), "{e2e}");
    assert!(summary["e2e_latency_ms"]["p50"].as_f64().is_some_and(|p| p > 0.0), "{e2e}");
    // The same records' acknowledgements, timed by the producer.
    assert_eq!(summary["acked"].as_u64(), Some(200), "{e2e}");
    assert!(summary["ack_latency_ms"]["p50"].as_f64().is_some_and(|p| p > 0.0), "{e2e}");
    // Progress: plain lines in a pipe; on a terminal (`script` gives one
    // where it is installed and pseudo-terminals work), a live line redrawn
    // in place and erased before the summary.
    let perf =
        ["perf", "produce", "--topic", "demo", "--num-records", "4000", "--record-size", "10", "--throughput", "2000"];
    let piped = Command::new(STRATA).args(perf).args(["--bootstrap-server", &bootstrap]).output().expect("run perf");
    let all = [piped.stdout, piped.stderr].concat();
    assert!(piped.status.success(), "{}", String::from_utf8_lossy(&all));
    assert!(
        !all.contains(&b'\r') && !all.contains(&0x1b),
        "no terminal codes in a pipe: {}",
        String::from_utf8_lossy(&all)
    );
    let command = format!("{STRATA} {} --bootstrap-server {bootstrap}", perf.join(" "));
    let tty = Command::new("script").args(["-qec", &command, "/dev/null"]).stdin(Stdio::null()).output();
    match tty {
        Ok(tty) if String::from_utf8_lossy(&tty.stdout).contains("records sent") => {
            let text = String::from_utf8_lossy(&tty.stdout);
            assert!(tty.status.success(), "{text}");
            assert!(text.contains("\r\x1b[2K") && text.contains(" of 4000 records acknowledged ("), "{text:?}");
            assert!(
                text.contains("\r\x1b[2K4000 records sent"),
                "the live line is erased before the summary: {text:?}"
            );
        }
        _ => eprintln!("no terminal from `script` here: the live line is not checked"),
    }
    assert!(http_get(base + 2, "/health/live").starts_with("HTTP/1.1 200"));
    assert!(http_get(base + 12, "/health/ready").starts_with("HTTP/1.1 200"));
    interrupt_and_wait(dev);

    // Again, on the same data: the topic and its records are there.
    let (dev, _) = start_dev(base, &data);
    assert!(strata(&["topic", "list"], &bootstrap, "").lines().any(|l| l == "demo"));
    // As JSON: the perf tools' records above are binary and may hold a
    // newline, which plain output would print as is.
    let again = strata(&[&consume[..], &["--format", "json"]].concat(), &bootstrap, "");
    assert_eq!(again.lines().count(), 2, "{again}");
    assert!(again.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{again}");
    interrupt_and_wait(dev);
    let _ = std::fs::remove_dir_all(&data);
}

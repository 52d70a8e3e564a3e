//! A server started with a low soft limit on open files (as shells and many
//! init systems start programs: 1,024) raises it to the hard limit, so that
//! hundreds of partitions do not run it out of descriptors.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The soft and hard "Max open files" of a process, from /proc.
fn limits_of(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line.split_whitespace().filter_map(|w| w.parse::<u64>().ok());
    Some((numbers.next()?, numbers.next()?))
}

#[test]
fn a_server_raises_its_soft_open_files_limit_to_the_hard_one() {
    let hard = limits_of(std::process::id()).expect("this process's limits").1;
    assert!(hard > 256, "the test needs a hard limit above 256, not {hard}");
    let dir = std::env::temp_dir().join(format!("strata-open-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let ports: Vec<u16> = {
        let listeners: Vec<std::net::TcpListener> =
            (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
        listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect()
    };
    let log = std::fs::File::create(dir.join("server.log")).expect("log");
    // The shell lowers its soft limit, then becomes the server.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_strata"))
        .args(["server", "--stop-on-stdin-eof", "--node-id", "1"])
        .args(["--peers", &format!("1=127.0.0.1:{}", ports[1])])
        .args(["--data-dir", &dir.join("data").display().to_string()])
        .args(["--listen-client", &format!("127.0.0.1:{}", ports[0])])
        .args(["--listen-peer", &format!("127.0.0.1:{}", ports[1])])
        .args(["--listen-http", &format!("127.0.0.1:{}", ports[2])])
        .stdin(Stdio::piped())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start the server");
    // Read once the server has started (the shell it was spawned as still
    // has this process's limits).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut server_log = String::new();
    while Instant::now() < deadline && !server_log.contains("node started") {
        std::thread::sleep(Duration::from_millis(50));
        server_log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    }
    let seen = limits_of(child.id());
    drop(child.stdin.take()); // --stop-on-stdin-eof
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(seen, Some((hard, hard)), "{server_log}");
    assert!(server_log.contains("raised the limit on open files"), "{server_log}");
}

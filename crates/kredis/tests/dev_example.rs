//! `make run` end to end: the real `kredis dev --example` binary starts the control plane and
//! the operator, the example cluster becomes Ready and the printed redis-cli command works;
//! SIGINT stops every process and exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Kills the child if the test fails before it stopped it.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    // The API server takes this port and the operator's HTTP API the next one.
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if port < 65000 && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

#[test]
fn dev_example_becomes_ready_and_stops_cleanly_on_sigint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let child = Command::new(env!("CARGO_BIN_EXE_kredis"))
        .args(["dev", "--example", "--port", &port.to_string(), "--dir"])
        .arg(dir.path())
        .current_dir(root)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kredis dev");
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen = Vec::new();
    let mut redis_cli = None;
    while redis_cli.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line.trim_start().starts_with("redis-cli -c") {
                    redis_cli = Some(line.trim().to_string());
                }
                seen.push(line);
            }
            Err(_) => panic!(
                "the example never became Ready; output:\n{}",
                seen.join("\n")
            ),
        }
    }
    let out = seen.join("\n");
    assert!(out.contains("is Ready: 6/6"), "{out}");
    assert!(out.contains("applied examples/kredis.yaml"), "{out}");

    // The printed command works as printed (kubectl reads the password from the Secret).
    let kubeconfig = dir.path().join("kubeconfig");
    let cmd = format!(
        "{} set made-by make-run && {} get made-by",
        redis_cli.as_deref().unwrap_or_default(),
        redis_cli.as_deref().unwrap_or_default()
    );
    let ran = Command::new("sh")
        .args(["-c", &cmd])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("run the printed redis-cli");
    let text = String::from_utf8_lossy(&ran.stdout);
    assert!(
        text.contains("OK") && text.contains("make-run"),
        "printed command {cmd:?} failed: {text} {}",
        String::from_utf8_lossy(&ran.stderr)
    );

    // SIGINT: exits 0 and leaves no redis-server of the example behind.
    let pid = guard.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = guard.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "kredis dev did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "kredis dev exited with {status}");
    let left = Command::new("pgrep")
        .args(["-f", "redis-server 127.1.0.[0-9]+:1000[0-5] "])
        .output()
        .expect("pgrep");
    assert!(
        left.stdout.is_empty(),
        "redis-server processes survived: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

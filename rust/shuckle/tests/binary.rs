//! The `eggsshuckle` binary: flags, serving, and a clean exit on SIGTERM.

// Test code: a failed unwrap or expect is the failed test's message, and casts of test
// patterns and sizes need no checking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use eggs_client::ShuckleClient;
use eggs_protocol::shuckle::{CdcReq, RegisterCdcReq};
use eggs_protocol::{Addr, EggsTime};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Reads the child's log on a thread of its own, until it closes (so that the child never
/// writes into a closed pipe), and reports the address it says it listens on.
fn watch_log(stderr: impl std::io::Read + Send + 'static) -> mpsc::Receiver<SocketAddr> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if let Some((_, rest)) = line.split_once("listening on ") {
                let addr: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                if let Ok(addr) = addr.parse() {
                    let _ = tx.send(addr);
                }
            }
        }
    });
    rx
}

/// Waits for the child to exit, killing it after `limit`.
fn wait_for_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("eggsshuckle did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn binary_serves_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!(
        "eggs-shuckle-bin-{}-{}",
        std::process::id(),
        EggsTime::now().0
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_eggsshuckle"))
        .args(["--addr", "127.0.0.1:0", "--stale-after-ms", "1000", "--dir"])
        .arg(&dir)
        .env("EGGS_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn eggsshuckle");
    let stderr = child.stderr.take().expect("piped stderr");
    let log = watch_log(stderr);
    let addr = tokio::task::spawn_blocking(move || log.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("eggsshuckle never said where it listens");

    let client = ShuckleClient::new(addr);
    let cdc = Addr {
        ip: [127, 0, 0, 1],
        port: 4242,
    };
    client.request(RegisterCdcReq { addr: cdc }).await.unwrap();
    assert_eq!(client.request(CdcReq {}).await.unwrap().addr, cdc);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status =
        tokio::task::spawn_blocking(move || wait_for_exit(&mut child, Duration::from_secs(10)))
            .await
            .unwrap();
    assert!(status.success(), "exit status {status}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! A Redis server of a test's own: `redis-server` on a free loopback port, keeping nothing on disk (its folder is
//! a temporary one), stopped and started again on the same port when a test asks, killed when dropped. Tests never
//! touch the machine's shared Redis.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use banksim_store::testing::{ChildServer, ServerKind};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REDIS: ServerKind = ServerKind {
    program: "redis-server",
    arguments,
    ready: |port| Box::pin(answers(port)),
    needed_by: "the Redis tests",
};

/// A running (or stopped) `redis-server` of one test.
pub struct RedisServer {
    server: ChildServer,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> Self {
        Self { server: ChildServer::start(REDIS).await }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.server.port())
    }

    /// Kills the server (as a crash would) and waits until its port refuses connections.
    pub async fn stop(&mut self) {
        self.server.kill().await;
    }

    /// Starts the server again on the same port (empty: it kept nothing).
    pub async fn restart(&mut self) {
        self.server.restart().await;
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, as with a hung Redis.
    pub fn pause(&self) {
        self.server.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.server.signal("-CONT");
    }

    /// Sends one command in RESP and returns the raw reply (enough for `PING`, `PUBSUB NUMSUB`, `EXISTS`).
    pub async fn command(&self, args: &[&str]) -> String {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        let port = self.server.port();
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect to redis");
        stream.write_all(request.as_bytes()).await.expect("send to redis");
        let mut reply = vec![0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut reply))
            .await
            .expect("redis answered")
            .expect("read from redis");
        String::from_utf8_lossy(&reply[..read]).into_owned()
    }
}

fn arguments(port: u16, dir: &Path) -> Vec<OsString> {
    let port = port.to_string();
    let mut arguments: Vec<OsString> = ["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        .into_iter()
        .chain(["--loglevel", "warning", "--protected-mode", "no", "--dir"])
        .map(OsString::from)
        .collect();
    arguments.push(dir.as_os_str().to_owned());
    arguments
}

async fn answers(port: u16) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut reply = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_millis(200), stream.read(&mut reply)).await,
        Ok(Ok(n)) if reply[..n].starts_with(b"+PONG")
    )
}

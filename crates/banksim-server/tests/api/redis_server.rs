//! A Redis server of a test's own: `redis-server` on a free loopback port, keeping nothing on disk (its folder is
//! a temporary one), stopped and started again on the same port when a test asks, killed when dropped. Tests never
//! touch the machine's shared Redis.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use banksim_store::testing::free_port;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running (or stopped) `redis-server` of one test.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self { port, dir: tempfile::tempdir().expect("redis dir"), child: None };
            if server.launch().await {
                return server;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would) and waits until its port refuses connections.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server on port {} did not stop", self.port);
    }

    /// Starts the server again on the same port (empty: it kept nothing).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        assert!(self.launch().await, "redis-server did not start again on port {}", self.port);
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, as with a hung Redis.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("a running server");
        let status = Command::new("kill").arg(signal).arg(child.id().to_string()).status().expect("kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Sends one command in RESP and returns the raw reply (enough for `PING`, `PUBSUB NUMSUB`, `EXISTS`).
    pub async fn command(&self, args: &[&str]) -> String {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.expect("connect to redis");
        stream.write_all(request.as_bytes()).await.expect("send to redis");
        let mut reply = vec![0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut reply))
            .await
            .expect("redis answered")
            .expect("read from redis");
        String::from_utf8_lossy(&reply[..read]).into_owned()
    }

    async fn launch(&mut self) -> bool {
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--loglevel", "warning", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => panic!("redis-server could not be run ({e}); the Redis tests need Debian's redis-server"),
        };
        for _ in 0..200 {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if self.answers().await {
                self.child = Some(child);
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    async fn answers(&self) -> bool {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else { return false };
        if stream.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut reply = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_millis(200), stream.read(&mut reply)).await,
            Ok(Ok(n)) if reply[..n].starts_with(b"+PONG")
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

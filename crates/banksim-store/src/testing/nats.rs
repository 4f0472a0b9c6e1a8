//! A NATS server that one test owns: `nats-server` with JetStream on a free loopback port, its store in a temporary
//! folder that outlives a stop, so that a restart finds its streams again. Tests never touch the machine's NATS.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

/// A running (or stopped) `nats-server -js` of one test.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts connections.
    pub async fn start() -> Self {
        for _ in 0..5 {
            let mut server = Self { port: free_port(), store: tempfile::tempdir().expect("nats store"), child: None };
            if server.launch().await {
                return server;
            }
        }
        panic!("could not start nats-server on a free port");
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, as a crash would) and waits until its port refuses connections.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("nats-server on port {} did not stop", self.port);
    }

    /// Starts the server again on the same port and store.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        assert!(self.launch().await, "nats-server did not start again on port {}", self.port);
    }

    async fn launch(&mut self) -> bool {
        let spawned = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => panic!("nats-server could not be run ({e}); the relay tests need Debian's nats-server"),
        };
        for _ in 0..500 {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if self.greets().await {
                self.child = Some(child);
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl NatsServer {
    /// Whether the server accepts a connection and greets it with its `INFO` line, as NATS servers do.
    async fn greets(&self) -> bool {
        use tokio::io::AsyncReadExt;
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else { return false };
        let mut greeting = [0u8; 4];
        matches!(
            tokio::time::timeout(Duration::from_millis(500), stream.read_exact(&mut greeting)).await,
            Ok(Ok(_)) if &greeting == b"INFO"
        )
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

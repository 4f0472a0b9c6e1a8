//! [`ChildServer`]: a server process that one test owns — on a free loopback port, with a temporary folder that
//! outlives a stop, killed (as a crash would kill it) and started again on the same port when a test asks, and
//! killed when dropped. The Redis and NATS servers of the tests are two of them.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

/// Whether the server on a port is ready: a probe made for each kind of server.
pub type Readiness = fn(u16) -> Pin<Box<dyn Future<Output = bool> + Send>>;

/// How to run one kind of server.
#[derive(Debug, Clone, Copy)]
pub struct ServerKind {
    /// The program, as Debian packages it (`redis-server`).
    pub program: &'static str,
    /// The arguments that put it on a port, with its files in a folder.
    pub arguments: fn(u16, &Path) -> Vec<std::ffi::OsString>,
    /// Whether it answers on its port.
    pub ready: Readiness,
    /// Which tests need it, for the message when it cannot be run.
    pub needed_by: &'static str,
}

/// A running (or stopped) server process of one test.
#[derive(Debug)]
pub struct ChildServer {
    kind: ServerKind,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ChildServer {
    /// Starts a server of `kind` on a free port and waits until it is ready.
    pub async fn start(kind: ServerKind) -> Self {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("a folder for the server");
            let mut server = Self { kind, port: free_port(), dir, child: None };
            if server.launch().await {
                return server;
            }
        }
        panic!("could not start {} on a free port", kind.program);
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
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
        panic!("{} on port {} did not stop", self.kind.program, self.port);
    }

    /// Starts the server again on the same port and folder.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        assert!(self.launch().await, "{} did not start again on port {}", self.kind.program, self.port);
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to the running server.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("a running server");
        let status = Command::new("kill").arg(signal).arg(child.id().to_string()).status().expect("kill");
        assert!(status.success(), "kill {signal} failed");
    }

    async fn launch(&mut self) -> bool {
        let spawned = Command::new(self.kind.program)
            .args((self.kind.arguments)(self.port, self.dir.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => panic!(
                "{} could not be run ({e}); {} need Debian's {}",
                self.kind.program, self.kind.needed_by, self.kind.program
            ),
        };
        for _ in 0..500 {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if (self.kind.ready)(self.port).await {
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

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

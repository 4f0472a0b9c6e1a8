//! A NATS server that one test owns: `nats-server` with JetStream on a free loopback port, its store in a temporary
//! folder that outlives a stop, so that a restart finds its streams again. Tests never touch the machine's NATS.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use super::child::{ChildServer, ServerKind};

const NATS: ServerKind = ServerKind {
    program: "nats-server",
    arguments,
    ready: |port| Box::pin(greets(port)),
    needed_by: "the relay tests",
};

/// A running (or stopped) `nats-server -js` of one test.
#[derive(Debug)]
pub struct NatsServer {
    server: ChildServer,
}

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts connections.
    pub async fn start() -> Self {
        Self { server: ChildServer::start(NATS).await }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.server.port())
    }

    /// Kills the server (SIGKILL, as a crash would) and waits until its port refuses connections.
    pub async fn kill(&mut self) {
        self.server.kill().await;
    }

    /// Starts the server again on the same port and store.
    pub async fn restart(&mut self) {
        self.server.restart().await;
    }
}

fn arguments(port: u16, store: &Path) -> Vec<OsString> {
    let mut arguments: Vec<OsString> = ["-js", "-a", "127.0.0.1", "-p"].map(OsString::from).into();
    arguments.extend([OsString::from(port.to_string()), OsString::from("-sd"), store.as_os_str().to_owned()]);
    arguments
}

/// Whether the server accepts a connection and greets it with its `INFO` line, as NATS servers do.
async fn greets(port: u16) -> bool {
    use tokio::io::AsyncReadExt;
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    let mut greeting = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_millis(500), stream.read_exact(&mut greeting)).await,
        Ok(Ok(_)) if &greeting == b"INFO"
    )
}

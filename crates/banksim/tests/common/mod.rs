//! What the command-line tests share: a `banksim` command with a clean environment, and a running server.

#![allow(dead_code, reason = "each test binary uses its own part of these helpers")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `banksim` command with a clean environment (only what the test sets), cheap password hashing, text logs,
/// and no auth rate limit (setups log many users in from one address; the limit has tests of its own).
pub fn banksim(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_banksim"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATA_DIR", data_dir)
        .env("ARGON2_MEMORY_KIB", "64")
        .env("ARGON2_ITERATIONS", "1")
        .env("LOG_FORMAT", "text")
        .env("AUTH_RATE_LIMIT_PER_MINUTE", "0")
        .stdin(Stdio::null());
    command
}

/// Runs a command to its end.
pub fn run(command: &mut Command) -> Output {
    command.output().expect("banksim runs")
}

/// A command's standard error, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A running `banksim serve` on a free port, killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// Every line the server wrote on stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server and waits for the `addr=` line it logs once it listens.
    pub fn start(mut command: Command) -> Self {
        let mut child = command.env("PORT", "0").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, receiver) = std::sync::mpsc::channel();
        let log = std::sync::Arc::<std::sync::Mutex<Vec<String>>>::default();
        let kept = log.clone();
        std::thread::spawn(move || {
            // Keep reading after the address: a full pipe would block the server's logging.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // `addr=127.0.0.1:1234` in text logs, `"addr":"127.0.0.1:1234"` in JSON ones.
                let address = line.split("addr=").nth(1).or_else(|| line.split("\"addr\":\"").nth(1));
                if let Some(rest) = address {
                    let address = rest.split(|c: char| c.is_whitespace() || c == '"').next().unwrap_or_default();
                    let _ = sender.send(address.to_owned());
                }
                kept.lock().expect("log").push(line);
            }
        });
        let addr = receiver.recv_timeout(Duration::from_secs(30)).expect("server reports its address");
        let port = addr.rsplit(':').next().expect("port").to_owned();
        Self { child, address: format!("http://127.0.0.1:{port}"), log }
    }

    /// The lines the server has logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// Sends SIGTERM and waits (at most 10 s) for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

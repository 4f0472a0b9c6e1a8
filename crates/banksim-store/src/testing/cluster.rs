//! PostgreSQL servers that one test owns: a primary made by `initdb` on a free port, and streaming replicas of it
//! made by `scripts/pg-replica.sh` (so the script CI uses is what the tests use). Fault tests stop, pause and
//! restart these, never the shared server of `TEST_DATABASE_URL`; everything is stopped and removed on drop.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, every server command runs as the `postgres`
//! account (`runuser`), and the servers' folders belong to it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use sqlx::Connection;

use super::free_port;

/// The replica script, from the repository root.
const REPLICA_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/pg-replica.sh");
/// The account the servers run as when the tests run as root.
const SERVER_ACCOUNT: &str = "postgres";

/// A PostgreSQL server of the test's own.
#[derive(Debug)]
pub struct PgServer {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Its data folder.
    pub data: PathBuf,
    folder: tempfile::TempDir,
    bin: PathBuf,
    /// For a replica: the environment its script was run with (to stop it the same way).
    script_env: Option<Vec<(String, String)>>,
}

impl PgServer {
    /// Whether this machine can run servers of a test's own (the PostgreSQL binaries are installed).
    pub fn available() -> bool {
        server_bin().is_some()
    }

    /// A new primary: `initdb` into a temporary folder, started on a free port, trusting local connections
    /// (replication included), without fsync (a test's server need not survive the machine's crash).
    ///
    /// # Panics
    /// When the server cannot be made or started: the test cannot go on without it.
    pub async fn primary() -> Self {
        let bin = server_bin().expect("PostgreSQL's initdb and pg_ctl (install postgresql, or set PG_BIN)");
        let folder = owned_folder();
        let data = folder.path().join("data");
        let port = free_port();
        run(as_server_async(&bin.join("initdb"))
            .args(["-D", path(&data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
            .arg("--no-instructions"))
        .await;
        let settings = format!(
            "\n# a test's own server\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 60\nshared_buffers = 32MB\n",
            folder.path().display()
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("write postgresql.conf");
        let server = Self { port, data, folder, bin, script_env: None };
        server.start().await;
        server
    }

    /// A streaming replica of `primary`, made by `scripts/pg-replica.sh start` with a port and folder of its own.
    ///
    /// # Panics
    /// When the script fails.
    pub async fn replica_of(primary: &PgServer) -> Self {
        let bin = primary.bin.clone();
        let folder = owned_folder();
        let port = free_port();
        let replica_dir = folder.path().join("replica");
        let env = vec![
            ("PRIMARY_HOST".to_owned(), "127.0.0.1".to_owned()),
            ("PRIMARY_PORT".to_owned(), primary.port.to_string()),
            ("REPLICA_PORT".to_owned(), port.to_string()),
            ("REPLICA_DIR".to_owned(), path(&replica_dir).to_owned()),
            ("PG_BIN".to_owned(), path(&bin).to_owned()),
        ];
        let mut command = tokio::process::Command::new("bash");
        command.arg(REPLICA_SCRIPT).arg("start").envs(env.iter().map(|(k, v)| (k, v)));
        let url = run(&mut command).await;
        assert!(url.trim().ends_with(&format!(":{port}/postgres")), "the script prints the replica's URL: {url:?}");
        Self { port, data: replica_dir.join("data"), folder, bin, script_env: Some(env) }
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (after [`PgServer::stop`]) and waits until it accepts connections.
    pub async fn start(&self) {
        let log = self.folder.path().join("server.log");
        run(as_server_async(&self.bin.join("pg_ctl")).args([
            "-D",
            path(&self.data),
            "-l",
            path(&log),
            "-w",
            "-t",
            "60",
            "start",
        ]))
        .await;
    }

    /// Stops the server at once: clients are disconnected, nothing is lost (`pg_ctl stop -m fast`).
    pub async fn stop(&self) {
        run(as_server_async(&self.bin.join("pg_ctl")).args(["-D", path(&self.data), "-m", "fast", "-w", "stop"])).await;
    }

    /// `pg_ctl restart -m fast`: disconnects every client, stops and starts again.
    pub async fn restart(&self) {
        let log = self.folder.path().join("server.log");
        run(as_server_async(&self.bin.join("pg_ctl")).args([
            "-D",
            path(&self.data),
            "-l",
            path(&log),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
            "restart",
        ]))
        .await;
    }

    /// Runs one statement on the server's `postgres` database.
    ///
    /// # Panics
    /// When it fails.
    pub async fn execute(&self, sql: &str) {
        let mut conn = sqlx::PgConnection::connect(&self.url()).await.expect("connect to the test's server");
        sqlx::query(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Blocking is fine here: the test is over. A replica is stopped by its script, which also drops its slot
        // on the primary (if the primary still runs); a primary is stopped without waiting for anything.
        let status = match &self.script_env {
            Some(env) => std::process::Command::new("bash")
                .arg(REPLICA_SCRIPT)
                .arg("stop")
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status(),
            None => as_server(&self.bin.join("pg_ctl"))
                .args(["-D", path(&self.data), "-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status(),
        };
        drop(status);
    }
}

/// Runs a command to its end and returns its standard output.
///
/// # Panics
/// When it cannot run or fails.
async fn run(command: &mut tokio::process::Command) -> String {
    let output = command.stdin(Stdio::null()).output().await.unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A command of the server's binaries, run as the server's account when the tests run as root.
fn as_server(program: &Path) -> std::process::Command {
    if running_as_root() {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", SERVER_ACCOUNT, "--"]).arg(program);
        command
    } else {
        std::process::Command::new(program)
    }
}

/// [`as_server`], to run without blocking the test's runtime.
fn as_server_async(program: &Path) -> tokio::process::Command {
    tokio::process::Command::from(as_server(program))
}

fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| id(&["-u"]) == Some(0))
}

/// `id <args>` as a number.
fn id(args: &[&str]) -> Option<u32> {
    let output = std::process::Command::new("id").args(args).output().ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// A temporary folder the server's account may write in.
fn owned_folder() -> tempfile::TempDir {
    let folder = tempfile::Builder::new().prefix("banksim-pg-").tempdir().expect("temporary folder");
    if running_as_root() {
        let uid = id(&["-u", SERVER_ACCOUNT]).expect("a postgres account to run the server as");
        let gid = id(&["-g", SERVER_ACCOUNT]).expect("the postgres account's group");
        std::os::unix::fs::chown(folder.path(), Some(uid), Some(gid)).expect("chown the server's folder");
    }
    folder
}

/// The folder of `initdb` and `pg_ctl`: `PG_BIN`, else the newest `/usr/lib/postgresql/<n>/bin`, else `PATH`.
fn server_bin() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
        if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
            return has_tools(&dir).then_some(dir);
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
            .filter(|(_, dir)| has_tools(dir))
            .collect();
        versions.sort();
        versions.pop().map(|(_, dir)| dir).or_else(|| {
            std::env::var_os("PATH")
                .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .find(|dir| has_tools(dir))
        })
    })
    .clone()
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

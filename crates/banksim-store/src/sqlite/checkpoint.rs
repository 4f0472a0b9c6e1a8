//! Copying the write-ahead log back into the database file, off the writer's path.
//!
//! In WAL mode a commit appends the pages it changed to the log, and a checkpoint copies them into the database
//! file. By default SQLite checkpoints in the committing connection once the log passes 1,000 pages: on the
//! ledger's writer that was a checkpoint every three or four batches, with every commit queued behind it. Here a
//! connection of its own checkpoints every [`INTERVAL`] in `PASSIVE` mode (it never blocks the writer or a
//! reader), so the writer only appends, and a page changed by many batches in between is copied once. The writer
//! still checkpoints itself past [`WRITER_PAGES`], which keeps the log bounded.
//! Measured on the SQLite `transfer` scenario (docs/benchmarks.md): +19–23 % movements/s, a lower p99.

use std::time::Duration;

use sqlx::SqlitePool;

/// How often the checkpointer copies what the log holds into the database file.
const INTERVAL: Duration = Duration::from_millis(100);

/// The log size (in pages) past which the writer checkpoints on its own: 256 MB with 4 KB pages. Under steady
/// writes a passive checkpoint rarely catches up with the log (SQLite `transfer` writes about 300 MB of it a second),
/// so the log, and its file on disk, grow to this size before it starts over. At 64 MB the writer's own checkpoints
/// were the p99 of SQLite `transfer` (53–62 ms against 37–43 ms at 256 MB, docs/benchmarks.md).
pub(super) const WRITER_PAGES: u32 = 65_536;

/// Checkpoints through `checkpointer` (a pool of one connection) until that pool is closed.
pub(super) async fn run(checkpointer: SqlitePool) {
    while !checkpointer.is_closed() {
        tokio::time::sleep(INTERVAL).await;
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&checkpointer).await {
            // Another process's checkpoint, or the pool closing: the next round (or the writer) catches up.
            tracing::debug!(%error, "checkpoint skipped");
        }
    }
}

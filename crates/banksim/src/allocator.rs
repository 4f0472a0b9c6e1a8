//! The process's memory allocator: mimalloc, with freed memory handed back to the system within half a second.

use std::time::Duration;

/// mimalloc returns freed memory to the system: with the default allocator, the 19 MiB that each Argon2 hash
/// borrows stays parked in per-thread arenas, and a burst of logins leaves the process at a gigabyte.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_arena_eager_commit` (its place in `mi_option_e`, mimalloc.h, which keeps retired options in
/// place so that the numbers never move).
#[cfg(target_os = "linux")]
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// How often freed memory is handed back.
const PURGE_EVERY: Duration = Duration::from_millis(500);

/// Makes the allocator commit its arenas' memory as it hands it out rather than each whole arena up front. It must
/// run before the first allocation, which reserves the first arena: the loader runs it, from `.init_array`.
///
/// In an eagerly committed arena (mimalloc's default on Linux) what batches had freed stayed resident whatever the
/// purges did: the server was at 116–122 MB a second after the SQLite `batch` scenario with 46–49 MB of it in the
/// allocator, and at 73 MB with this and the SQLite readers' cap; no change in CPU per transfer (docs/benchmarks.md).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static COMMIT_ON_DEMAND: extern "C" fn() = {
    extern "C" fn commit_on_demand() {
        // SAFETY: `mi_option_set` takes no pointer and only stores the value, before any thread but this one runs.
        unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) }
    }
    commit_on_demand
};

/// How long a spare thread of the runtime's blocking pool waits for work before it exits (tokio's default: 10 s).
///
/// A thread's freed pages go back to the system only when that thread collects its own heap, or exits. The SQLite
/// ledger writer runs each batch in `block_in_place`, which hands the worker's core to another thread and leaves
/// the old one spare, idle in the pool, where neither happens: with the default, the server was at 92–102 MB a
/// second after the SQLite `batch` scenario and fell to 58 MB only when six spare threads exited ten seconds later.
pub const SPARE_THREAD_KEEP_ALIVE: Duration = Duration::from_millis(500);

/// Starts a thread that hands freed memory back to the system every [`PURGE_EVERY`].
///
/// mimalloc returns a freed range only once its purge delay (1 s) has passed, and only when some thread frees a
/// page after that: a server that goes idle right after a burst of logins or batches kept what they had freed —
/// 130 MB resident after the `login` scenario instead of 42 MB, 178 MB after `batch` instead of 95 MB — for as long
/// as it stayed idle. A purge delay of 0 gives it back at once but costs a system call on every freed page (15 %
/// more server CPU per transfer, docs/benchmarks.md); purging everything freed twice a second costs nothing
/// measurable.
pub fn purge_freed_memory_periodically() -> std::io::Result<()> {
    std::thread::Builder::new().name("allocator-purge".into()).spawn(|| {
        loop {
            std::thread::sleep(PURGE_EVERY);
            purge_freed_memory();
        }
    })?;
    Ok(())
}

/// For a runtime's worker threads when they run out of work: collects the thread's own empty pages (which only that
/// thread can free) and purges, at most once per [`PURGE_EVERY`] per thread.
pub fn purge_now_and_then() {
    use std::cell::Cell;
    use std::time::Instant;
    thread_local!(static LAST_PURGE: Cell<Option<Instant>> = const { Cell::new(None) });
    let now = Instant::now();
    if LAST_PURGE.get().is_none_or(|last| now.duration_since(last) >= PURGE_EVERY) {
        LAST_PURGE.set(Some(now));
        purge_freed_memory();
    }
}

/// Hands every range freed so far back to the system, whichever thread freed it.
fn purge_freed_memory() {
    // SAFETY: `mi_collect` takes no pointer and may be called from any thread at any time: it collects the calling
    // thread's own heap and, forced, purges the freed ranges of every arena under mimalloc's own locks.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resident_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in kB")
    }

    #[test]
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn arenas_are_committed_on_demand_from_the_start() {
        // SAFETY: reads an option's value; takes no pointer.
        let eager = unsafe { libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT) };
        assert_eq!(eager, 0, "the loader did not run the hook that turns eager commits off");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_purge_hands_memory_freed_by_another_thread_back() {
        // Blocks the size of an Argon2 hash's memory (19 MiB), written so that they are resident, freed on a thread
        // of their own as the blocking pool frees a hash's.
        std::thread::spawn(|| {
            let blocks: Vec<Vec<u8>> = (0..4).map(|_| vec![1_u8; 19 << 20]).collect();
            assert!(blocks.iter().all(|block| block[block.len() - 1] == 1));
        })
        .join()
        .expect("the allocating thread");
        let holding = resident_kib();
        purge_freed_memory();
        let after = resident_kib();
        assert!(
            holding.saturating_sub(after) >= 60 << 10,
            "the purge gave back only {} KiB of 76 MiB freed ({holding} → {after} KiB)",
            holding.saturating_sub(after)
        );
    }
}

//! Ports for the servers that tests start. They are taken below Linux's ephemeral range (32768 and up): a port in
//! that range may become a client connection's local end between the check and the server's bind. PostgreSQL then
//! listens on IPv6 alone, and a test waiting on `127.0.0.1` times out.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where the blocks are taken from: above the well-known services, below the ephemeral range.
const FIRST: u16 = 20_000;
const END: u16 = 32_000;

/// A port that nothing listens on or connects from now.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `count` consecutive ports that are all free now (a formation or a cluster derives its servers'
/// ports from one base). Each call in a process gets a block of its own; processes start at different offsets.
pub fn free_ports(count: u16) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let count = count.max(1);
    let span = u32::from(END - FIRST);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(u32::from(count), Ordering::Relaxed) % span;
        let base = FIRST + u16::try_from(offset).expect("below the span");
        if base.checked_add(count).is_some_and(|end| end <= END) && (base..base + count).all(is_free) {
            return base;
        }
    }
    panic!("no {count} consecutive free ports between {FIRST} and {END}");
}

/// Whether a server could listen on every address of `port` (PostgreSQL binds `0.0.0.0`, which clashes with any
/// socket on the port, a client's too).
fn is_free(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_free_below_the_ephemeral_range_and_not_given_twice() {
        let first = free_ports(3);
        let second = free_ports(3);
        for base in [first, second] {
            assert!((FIRST..END).contains(&base));
            for port in base..base + 3 {
                assert!(is_free(port), "port {port} is free");
            }
        }
        assert!(first.abs_diff(second) >= 3, "blocks {first} and {second} overlap");
    }

    #[test]
    fn a_port_with_a_client_connection_on_it_is_not_free() {
        let server = TcpListener::bind("127.0.0.1:0").expect("a listener");
        let client = std::net::TcpStream::connect(server.local_addr().expect("its address")).expect("connected");
        let taken = client.local_addr().expect("the client's end").port();
        assert!(!is_free(taken));
    }
}

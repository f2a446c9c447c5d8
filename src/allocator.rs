//! The relay's heap: mimalloc, without transparent huge pages.
//!
//! Every delivered frame allocates and frees on a shard (packet buffers,
//! stream chunks, wakers), and glibc's arenas spend a tenth of a shard's
//! CPU on it, a share that grows with the working set (issue 14:
//! `unlink_chunk` from 2.5 % at 100 subscribers to 8.4 % at 10,000).
//! mimalloc's per-thread free lists suit a thread-per-core relay.
//!
//! Huge pages are the catch: mimalloc asks for them on its arenas, and a
//! 2 MiB page committed for a few live objects made RSS per subscriber
//! 70 KB instead of 45 KB (fanout, 500 subscribers). So the relay turns
//! transparent huge pages off for itself, at start-up, whatever the host's
//! `/sys/kernel/mm/transparent_hugepage/enabled` says; the crate is built
//! without its `madvise(MADV_HUGEPAGE)` call (feature `no_thp`).

/// The global allocator of `qumo-relay` (and of the fan-out bench, so that
/// it measures what the relay runs).
pub type Allocator = mimalloc::MiMalloc;

/// Turn transparent huge pages off for this process (Linux
/// `PR_SET_THP_DISABLE`): from now on no mapping of it is backed by huge
/// pages, mimalloc's arenas included. Returns whether the kernel agreed;
/// elsewhere, or on a kernel without the call, it is a no-op.
pub fn disable_transparent_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_THP_DISABLE takes four integers and
        // touches no memory of ours.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flag is per process and inherited, so a test can read it back.
    #[cfg(target_os = "linux")]
    #[test]
    fn transparent_huge_pages_end_up_disabled() {
        assert!(disable_transparent_huge_pages());
        // SAFETY: PR_GET_THP_DISABLE takes no pointer.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }
}

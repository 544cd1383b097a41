//! The process's global allocator: glibc's malloc by default, mimalloc or jemalloc
//! with the `mimalloc` / `jemalloc` features (session 9's comparison, BENCHMARKS.md),
//! and each one's way to hand free memory back to the kernel for the periodic trim.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Tell the querier's `release_free_memory` (used by the ingester's trim timer and
/// after large queries) how this allocator returns free memory.
pub fn install_releaser() {
    #[cfg(feature = "mimalloc")]
    strata_querier::fanout::set_free_memory_releaser(|| {
        // SAFETY: mi_collect only frees the allocator's own unused pages.
        unsafe { libmimalloc_sys::mi_collect(true) }
    });
    #[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
    strata_querier::fanout::set_free_memory_releaser(|| {
        // "arena.<MALLCTL_ARENAS_ALL>.purge": every arena's unused dirty pages go back
        // to the kernel now rather than after the decay time.
        // SAFETY: a NUL-terminated name; purge takes and returns no value.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                c"arena.4096.purge".as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            );
        }
    });
}

//! The binaries' global allocator (`alloc::CachingMiMalloc`) as this test's: large freed blocks
//! serve the next request of their class with their pages still mapped, with the contents
//! `alloc_zeroed` and `realloc` promise, and go back to the OS when released or kept too long.

use std::sync::Mutex;
use std::time::Duration;

use reid_process::alloc;

reid_process::use_fast_allocator!();

/// The tests share one allocator and read its totals: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn minor_faults() -> i64 {
    // SAFETY: getrusage writes one rusage struct.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u.ru_minflt
    }
}

/// One "training step": the same large buffers every time, each written whole, then freed.
fn step(sizes: &[usize]) -> f32 {
    let bufs: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![1.0f32; n]).collect();
    bufs.iter().map(|b| b[b.len() - 1]).sum()
}

#[test]
fn a_steps_large_buffers_are_reused_without_page_faults() {
    let _serial = SERIAL.lock().unwrap();
    alloc::configure();
    alloc::set_cache_keep_ms(alloc::CACHE_KEEP_MS); // whatever the environment says
                                                    // mimalloc returns freed memory at once: without the cache every step faults its pages in
                                                    // again (≥ 1 fault per 2 MiB even with huge pages, ~30 a step here).
                                                    // SAFETY: option 15 is mi_option_purge_delay; options take plain integers.
    unsafe { libmimalloc_sys::mi_option_set(15, 0) };
    let sizes = [3 << 18, 5 << 18, 17 << 18, 40 << 18, 40 << 18];
    for _ in 0..2 {
        step(&sizes);
    }
    let before = minor_faults();
    for _ in 0..8 {
        assert_eq!(step(&sizes), 5.0);
    }
    let faults = minor_faults() - before;
    // SAFETY: as above; back to the binaries' delay.
    unsafe { libmimalloc_sys::mi_option_set(15, alloc::PURGE_DELAY_MS as _) };
    assert!(
        faults < 16,
        "{faults} page faults in 8 steps of the same buffers (none expected once cached)"
    );
}

#[test]
fn a_reused_block_is_zeroed_when_asked_and_realloc_keeps_the_contents() {
    let _serial = SERIAL.lock().unwrap();
    alloc::set_cache_keep_ms(alloc::CACHE_KEEP_MS);
    let n = 3 << 20;
    let dirty = vec![7u8; n];
    let at = dirty.as_ptr();
    drop(dirty);
    let zeroed = vec![0u8; n];
    assert_eq!(
        zeroed.as_ptr(),
        at,
        "the freed block serves its class's next request"
    );
    assert!(
        zeroed.iter().all(|&b| b == 0),
        "alloc_zeroed on a kept block"
    );
    drop(zeroed);

    let mut v: Vec<u8> = Vec::with_capacity((1 << 20) + 1);
    v.extend((0..(1 << 20) + 1).map(|i| (i % 251) as u8));
    let at = v.as_ptr();
    v.reserve_exact(100 << 10); // 1 MiB + 100 KiB: the same class (1 MiB + 128 KiB)
    assert_eq!(
        v.as_ptr(),
        at,
        "growth within the block's class stays in place"
    );
    v.reserve_exact(4 << 20);
    assert!(v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    v.truncate(1000);
    v.shrink_to_fit(); // down to mimalloc's small blocks
    assert!(v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
}

#[test]
fn kept_blocks_go_back_when_released_or_kept_too_long() {
    let _serial = SERIAL.lock().unwrap();
    alloc::configure();
    alloc::set_cache_keep_ms(alloc::CACHE_KEEP_MS);
    alloc::release_unused();
    drop(vec![1u8; 5 << 20]);
    assert!(alloc::cached_bytes() >= 5 << 20);
    alloc::release_unused();
    assert_eq!(alloc::cached_bytes(), 0);

    // never reused: back after the minimum keep time, a second, whatever the cap
    drop(vec![1u8; 7 << 20]);
    assert!(alloc::cached_bytes() >= 7 << 20);
    std::thread::sleep(Duration::from_millis(2000)); // the sweeper runs every 500 ms
    assert_eq!(
        alloc::cached_bytes(),
        0,
        "a block not asked for again goes back"
    );

    alloc::set_cache_keep_ms(100);
    drop(vec![1u8; 5 << 20]);
    assert!(alloc::cached_bytes() >= 5 << 20);
    std::thread::sleep(Duration::from_millis(1500)); // the sweeper runs every 500 ms
    let left = alloc::cached_bytes();
    alloc::set_cache_keep_ms(alloc::CACHE_KEEP_MS);
    assert_eq!(
        left, 0,
        "a block unused for longer than the keep time goes back"
    );
}

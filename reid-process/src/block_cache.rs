//! Large freed blocks kept by size class for the next request of that class: the logic behind
//! `alloc::CachingMiMalloc` (the binaries' global allocator), kept apart so that it is tested
//! without being any test's allocator.
//!
//! A training step allocates and frees the same large buffers, of the same sizes, every step.
//! Returned to mimalloc, a freed buffer's pages go back to the OS once unused for its purge
//! delay, and the next step faults every page in again while the kernel zeroes it: a third of a
//! 256×128 ResNet-50 step (`clear_page_erms`, BENCHMARKS.md session 11). Kept here, the block
//! serves the next request of its class with its pages still mapped.
//!
//! How long a block stays is learned per class: twice the longest wait between a free and the
//! next take of that class within the last minute, at least `MIN_KEEP_MS`, at most the
//! caller's cap. A request that finds its class empty after a block of it was returned counts
//! the wait since that block's free too, so a class whose blocks expired before their reuse
//! keeps them next time. A 256×128 step reuses its blocks after up to a step's length, so they
//! stay that long; a small net's blocks come back within milliseconds, so they go after a
//! second, as mimalloc's own purge would return them (kept 20 s, the default run's peak grew
//! from 266 to 429 MB for no speed). A class not asked for again goes back, so a process whose
//! work changes shape does not keep the old shape's blocks.

/// Smallest block kept (256 KiB): below this, mimalloc's own pages serve the request.
pub const MIN_CACHED: usize = 1 << 18;
const MIN_LOG2: u32 = MIN_CACHED.trailing_zeros();
/// Classes per power of two: a block is at most 1/8 larger than its request. Only the pages a
/// request touches become resident, so the rounding costs address space, not memory.
const SUB: usize = 8;
/// Octaves from 256 KiB to 1 TiB; larger requests are never kept.
const OCTAVES: usize = 22;
pub const CLASSES: usize = OCTAVES * SUB;
/// How long a class remembers its longest wait: a shorter wait replaces it only after this.
pub const WAIT_MEMORY_MS: u64 = 60_000;
/// The longest wait a miss teaches: a class asked for again long after its blocks went back
/// (the next evaluation of a grid) starts a new phase, not a step to keep blocks across.
pub const MAX_LEARNED_MISS_MS: u64 = 10_000;
/// The shortest a block is kept (mimalloc's purge delay in the binaries).
pub const MIN_KEEP_MS: u64 = 1_000;
/// Blocks kept per class: more than the largest number of same-sized buffers one ResNet step
/// holds at once; a block freed into a full class goes straight back.
pub const SLOTS: usize = 64;

/// The size class of a request: `bytes` is what a block of the class holds (≥ the request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeClass {
    pub index: usize,
    pub bytes: usize,
}

/// The class of a request of `size` bytes, or `None` when it is not kept (too small or too
/// large).
pub fn size_class(size: usize) -> Option<SizeClass> {
    if size < MIN_CACHED {
        return None;
    }
    let mut log2 = usize::BITS - 1 - size.leading_zeros();
    let mut sub = (size - (1usize << log2)).div_ceil(1usize << (log2 - SUB.trailing_zeros()));
    if sub == SUB {
        (log2, sub) = (log2 + 1, 0);
    }
    let index = (log2 - MIN_LOG2) as usize * SUB + sub;
    (index < CLASSES).then(|| SizeClass {
        index,
        bytes: class_bytes(index),
    })
}

#[derive(Clone, Copy)]
struct Slot {
    ptr: *mut u8,
    freed_at_ms: u64,
}

const EMPTY: Slot = Slot {
    ptr: std::ptr::null_mut(),
    freed_at_ms: 0,
};

/// Kept blocks by class, oldest first in each class. Fixed arrays: the global allocator locks
/// and uses this, so it must never allocate.
pub struct BlockCache {
    slots: [[Slot; SLOTS]; CLASSES],
    lens: [u8; CLASSES],
    /// Per class: the longest recent wait (ms) between a block's free and its reuse, and when
    /// it was seen.
    wait_ms: [u32; CLASSES],
    wait_seen_at_ms: [u64; CLASSES],
    /// Per class: when the last block returned by `expire` had been freed (0: none since).
    expired_freed_at_ms: [u64; CLASSES],
    bytes: usize,
}

// SAFETY: the pointers are blocks this cache owns while they are kept; the allocator below
// (mimalloc) frees a block from any thread.
unsafe impl Send for BlockCache {}

impl Default for BlockCache {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockCache {
    pub const fn new() -> Self {
        Self {
            slots: [[EMPTY; SLOTS]; CLASSES],
            lens: [0; CLASSES],
            wait_ms: [0; CLASSES],
            wait_seen_at_ms: [0; CLASSES],
            expired_freed_at_ms: [0; CLASSES],
            bytes: 0,
        }
    }

    /// Bytes held in kept blocks (their classes' sizes).
    pub fn cached_bytes(&self) -> usize {
        self.bytes
    }

    /// The most recently freed block of the class (its pages are the likeliest still in cache),
    /// taken at `now_ms`; `None` when the class is empty.
    pub fn take(&mut self, class: SizeClass, now_ms: u64) -> Option<*mut u8> {
        let i = class.index;
        if self.lens[i] == 0 {
            // A block of this class went back too early: learn the wait it would have had, when
            // it is a step's length (≤ MAX_LEARNED_MISS_MS), not a phase that came back later.
            let freed = std::mem::take(&mut self.expired_freed_at_ms[i]);
            if freed != 0 && now_ms.saturating_sub(freed) <= MAX_LEARNED_MISS_MS {
                self.learn_wait(i, now_ms.saturating_sub(freed), now_ms);
            }
            return None;
        }
        self.lens[i] -= 1;
        self.bytes -= class.bytes;
        let slot = self.slots[i][self.lens[i] as usize];
        self.learn_wait(i, now_ms.saturating_sub(slot.freed_at_ms), now_ms);
        Some(slot.ptr)
    }

    /// The longest wait of the last minute: a class reused both within microseconds (scratch
    /// within a step) and after a step's length must keep the longer, and a slow phase that
    /// ended must not hold forever.
    fn learn_wait(&mut self, index: usize, waited_ms: u64, now_ms: u64) {
        let waited = waited_ms.min(u32::MAX as u64) as u32;
        let stale = now_ms.saturating_sub(self.wait_seen_at_ms[index]) > WAIT_MEMORY_MS;
        if waited >= self.wait_ms[index] || stale {
            self.wait_ms[index] = waited;
            self.wait_seen_at_ms[index] = now_ms;
        }
    }

    /// How long a block of class `index` stays unused before it goes back: twice its class's
    /// recent longest wait, within [`MIN_KEEP_MS`, `max_keep_ms`]; 0 with `max_keep_ms` 0.
    pub fn keep_ms(&self, index: usize, max_keep_ms: u64) -> u64 {
        (2 * self.wait_ms[index] as u64)
            .max(MIN_KEEP_MS)
            .min(max_keep_ms)
    }

    /// Keep `ptr`, a block of `class`, freed at `now_ms`. `false` when the class is full: the
    /// caller frees the block.
    pub fn put(&mut self, class: SizeClass, ptr: *mut u8, now_ms: u64) -> bool {
        let len = &mut self.lens[class.index];
        if *len as usize == SLOTS {
            return false;
        }
        self.slots[class.index][*len as usize] = Slot {
            ptr,
            freed_at_ms: now_ms,
        };
        *len += 1;
        self.bytes += class.bytes;
        true
    }

    /// Remove the blocks unused for longer than their class's keep time ([`Self::keep_ms`]
    /// under `max_keep_ms`; all with 0) into `out`, at most `out.len()`; returns how many. The
    /// caller frees them (outside any lock).
    pub fn expire(&mut self, now_ms: u64, max_keep_ms: u64, out: &mut [*mut u8]) -> usize {
        let mut n = 0;
        for index in 0..CLASSES {
            let keep_ms = self.keep_ms(index, max_keep_ms);
            let len = self.lens[index] as usize;
            let slots = &mut self.slots[index];
            let old = slots[..len]
                .iter()
                .take_while(|s| now_ms.saturating_sub(s.freed_at_ms) >= keep_ms)
                .count()
                .min(out.len() - n);
            if old == 0 {
                continue;
            }
            for (o, s) in out[n..n + old].iter_mut().zip(&slots[..old]) {
                *o = s.ptr;
            }
            self.expired_freed_at_ms[index] = slots[old - 1].freed_at_ms.max(1);
            slots.copy_within(old..len, 0);
            self.lens[index] = (len - old) as u8;
            self.bytes -= old * class_bytes(index);
            n += old;
            if n == out.len() {
                break;
            }
        }
        n
    }
}

/// What a block of class `index` holds.
fn class_bytes(index: usize) -> usize {
    let log2 = MIN_LOG2 as usize + index / SUB;
    (1 << log2) + (index % SUB) * (1 << (log2 - SUB.trailing_zeros() as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(i: usize) -> *mut u8 {
        (i * 4096) as *mut u8
    }

    #[test]
    fn a_class_holds_its_request_with_at_most_an_eighth_more() {
        assert_eq!(size_class(MIN_CACHED - 1), None);
        let mut last = 0;
        for size in (MIN_CACHED..40 << 20).step_by(4093).chain([1 << 39]) {
            let c = size_class(size).unwrap();
            assert!(c.bytes >= size, "{size} -> {c:?}");
            assert!(c.bytes - size <= size / 8, "{size} -> {c:?}");
            assert_eq!(class_bytes(c.index), c.bytes);
            assert_eq!(size_class(c.bytes), Some(c), "a class's own size is in it");
            assert!(c.index >= last, "classes grow with the size");
            last = c.index;
        }
        assert_eq!(size_class(1 << 20).unwrap().bytes, 1 << 20);
        assert_eq!(
            size_class((1 << 20) + 1).unwrap().bytes,
            (1 << 20) + (1 << 17)
        );
        assert_eq!(size_class(1 << 40), None, "beyond the last octave");
    }

    #[test]
    fn the_last_freed_block_of_a_class_is_taken_first_and_others_stay_apart() {
        let mut c = BlockCache::new();
        let a = size_class(1 << 20).unwrap();
        let b = size_class(5 << 20).unwrap();
        assert!(c.put(a, fake(1), 0));
        assert!(c.put(a, fake(2), 1));
        assert!(c.put(b, fake(3), 2));
        assert_eq!(c.cached_bytes(), 2 * a.bytes + b.bytes);
        assert_eq!(c.take(a, 0), Some(fake(2)));
        assert_eq!(c.take(a, 0), Some(fake(1)));
        assert_eq!(c.take(a, 0), None);
        assert_eq!(c.take(b, 0), Some(fake(3)));
        assert_eq!(c.cached_bytes(), 0);
    }

    #[test]
    fn a_full_class_refuses_the_block() {
        let mut c = BlockCache::new();
        let a = size_class(MIN_CACHED).unwrap();
        for i in 0..SLOTS {
            assert!(c.put(a, fake(i + 1), 0));
        }
        assert!(!c.put(a, fake(999), 0));
        assert_eq!(c.cached_bytes(), SLOTS * a.bytes);
    }

    #[test]
    fn blocks_unused_for_the_keep_time_expire_oldest_first() {
        let mut c = BlockCache::new();
        let a = size_class(2 << 20).unwrap();
        let b = size_class(9 << 20).unwrap();
        // never reused yet: kept the minimum, a second
        c.put(a, fake(1), 100);
        c.put(a, fake(2), 500);
        c.put(b, fake(3), 200);
        let mut out = [std::ptr::null_mut(); 8];
        assert_eq!(c.expire(1_099, 20_000, &mut out), 0, "none is a second old");
        assert_eq!(c.expire(1_150, 20_000, &mut out), 1);
        assert_eq!(out[0], fake(1));
        assert_eq!(c.cached_bytes(), a.bytes + b.bytes);
        let younger = c.take(a, 600);
        assert_eq!(younger, Some(fake(2)), "the younger block stays, in place");
        c.put(a, fake(2), 600);
        // the cap wins over the minimum
        assert_eq!(c.expire(1_050, 500, &mut out), 1);
        assert_eq!(out[0], fake(3));
        // a small `out` takes what fits; the rest stays for the next call
        c.put(b, fake(3), 600);
        let mut one = [std::ptr::null_mut(); 1];
        assert_eq!(c.expire(10_000, 20_000, &mut one), 1);
        assert_eq!(c.expire(10_000, 20_000, &mut one), 1);
        assert_eq!(c.expire(10_000, 20_000, &mut one), 0);
        assert_eq!(c.cached_bytes(), 0);
        // a cap of 0 empties the cache whatever the times
        c.put(b, fake(4), 10_000);
        assert_eq!(c.expire(10_000, 0, &mut out), 1);
        assert_eq!(c.cached_bytes(), 0);
    }

    #[test]
    fn a_class_reused_after_long_waits_keeps_its_blocks_that_long() {
        let mut c = BlockCache::new();
        let a = size_class(8 << 20).unwrap();
        // a step of 7 s: each block comes back 7 s after its free
        for step in 0..3u64 {
            c.put(a, fake(1), step * 7_000);
            assert_eq!(c.take(a, (step + 1) * 7_000), Some(fake(1)));
        }
        assert_eq!(c.keep_ms(a.index, 20_000), 14_000);
        assert_eq!(c.keep_ms(a.index, 10_000), 10_000, "at most the cap");
        c.put(a, fake(1), 21_000);
        let mut out = [std::ptr::null_mut(); 4];
        assert_eq!(
            c.expire(30_000, 20_000, &mut out),
            0,
            "9 s unused: kept for the next step"
        );
        assert_eq!(
            c.expire(35_000, 20_000, &mut out),
            1,
            "14 s unused: returned"
        );
        // quick reuse within the minute does not shorten it; after the minute it does
        for t in 0..200u64 {
            c.put(a, fake(1), 40_000 + t);
            c.take(a, 40_001 + t);
        }
        assert_eq!(c.keep_ms(a.index, 20_000), 14_000);
        c.put(a, fake(1), 21_000 + WAIT_MEMORY_MS);
        c.take(a, 21_001 + WAIT_MEMORY_MS);
        assert_eq!(c.keep_ms(a.index, 20_000), MIN_KEEP_MS);
    }

    #[test]
    fn a_request_after_its_block_went_back_too_early_keeps_the_next_one_longer() {
        let mut c = BlockCache::new();
        let a = size_class(8 << 20).unwrap();
        let mut out = [std::ptr::null_mut(); 4];
        // step 1 frees at 0; the block goes back after a second; step 2 asks at 6 s
        c.put(a, fake(1), 0);
        assert_eq!(c.expire(1_000, 20_000, &mut out), 1);
        // (a free at time 0 is recorded as 1 ms: 0 means "none")
        assert_eq!(c.take(a, 6_000), None);
        assert_eq!(c.keep_ms(a.index, 20_000), 11_998);
        // so step 2's block, freed at 6 s, is still there for step 3 at 12 s
        c.put(a, fake(2), 6_000);
        assert_eq!(c.expire(12_000, 20_000, &mut out), 0);
        assert_eq!(c.take(a, 12_000), Some(fake(2)));
        // a miss with nothing returned before learns nothing
        let b = size_class(3 << 20).unwrap();
        assert_eq!(c.take(b, 50_000), None);
        assert_eq!(c.keep_ms(b.index, 20_000), MIN_KEEP_MS);
        // nor does one long after the block went back: a new phase
        c.put(b, fake(3), 50_000);
        assert_eq!(c.expire(51_000, 20_000, &mut out), 1);
        assert_eq!(c.take(b, 50_000 + MAX_LEARNED_MISS_MS + 1), None);
        assert_eq!(c.keep_ms(b.index, 20_000), MIN_KEEP_MS);
    }
}

//! Large freed blocks kept by size class for the next request of that class: the logic behind
//! `alloc::CachingMiMalloc` (the binaries' global allocator), kept apart so that it is tested
//! without being any test's allocator.
//!
//! A training step allocates and frees the same large buffers, of the same sizes, every step.
//! Returned to mimalloc, a freed buffer's pages go back to the OS once unused for its purge
//! delay, and the next step faults every page in again while the kernel zeroes it: a third of a
//! 256×128 ResNet-50 step (`clear_page_erms`, BENCHMARKS.md session 11). Kept here, the block
//! serves the next request of its class with its pages still mapped. A block unused for
//! the keep time goes back, so a process whose work changes shape does not keep the old one's.

/// Smallest block kept (256 KiB): below this, mimalloc's own pages serve the request.
pub const MIN_CACHED: usize = 1 << 18;
const MIN_LOG2: u32 = MIN_CACHED.trailing_zeros();
/// Classes per power of two: a block is at most 1/8 larger than its request. Only the pages a
/// request touches become resident, so the rounding costs address space, not memory.
const SUB: usize = 8;
/// Octaves from 256 KiB to 1 TiB; larger requests are never kept.
const OCTAVES: usize = 22;
pub const CLASSES: usize = OCTAVES * SUB;
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
    let step = 1usize << (log2 - SUB.trailing_zeros());
    let mut sub = (size - (1usize << log2)).div_ceil(step);
    if sub == SUB {
        (log2, sub) = (log2 + 1, 0);
    }
    let index = (log2 - MIN_LOG2) as usize * SUB + sub;
    (index < CLASSES).then(|| SizeClass {
        index,
        bytes: (1usize << log2) + sub * (1usize << (log2 - SUB.trailing_zeros())),
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
            bytes: 0,
        }
    }

    /// Bytes held in kept blocks (their classes' sizes).
    pub fn cached_bytes(&self) -> usize {
        self.bytes
    }

    /// The most recently freed block of the class (its pages are the likeliest still in cache).
    pub fn take(&mut self, class: SizeClass) -> Option<*mut u8> {
        let len = &mut self.lens[class.index];
        if *len == 0 {
            return None;
        }
        *len -= 1;
        self.bytes -= class.bytes;
        Some(self.slots[class.index][*len as usize].ptr)
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

    /// Remove blocks freed before `now_ms − keep_ms` (all with `keep_ms` 0) into `out`, at most
    /// `out.len()`; returns how many. The caller frees them (outside any lock).
    pub fn expire(&mut self, now_ms: u64, keep_ms: u64, out: &mut [*mut u8]) -> usize {
        let mut n = 0;
        for index in 0..CLASSES {
            let len = self.lens[index] as usize;
            let slots = &mut self.slots[index];
            let old = slots[..len]
                .iter()
                .take_while(|s| keep_ms == 0 || now_ms.saturating_sub(s.freed_at_ms) >= keep_ms)
                .count()
                .min(out.len() - n);
            if old == 0 {
                continue;
            }
            for (o, s) in out[n..n + old].iter_mut().zip(&slots[..old]) {
                *o = s.ptr;
            }
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
        assert_eq!(c.take(a), Some(fake(2)));
        assert_eq!(c.take(a), Some(fake(1)));
        assert_eq!(c.take(a), None);
        assert_eq!(c.take(b), Some(fake(3)));
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
        c.put(a, fake(1), 100);
        c.put(a, fake(2), 500);
        c.put(b, fake(3), 200);
        let mut out = [std::ptr::null_mut(); 8];
        assert_eq!(c.expire(999, 900, &mut out), 0, "none is 900 ms old");
        assert_eq!(c.expire(1_050, 900, &mut out), 1);
        assert_eq!(out[0], fake(1));
        assert_eq!(c.cached_bytes(), a.bytes + b.bytes);
        assert_eq!(
            c.take(a),
            Some(fake(2)),
            "the younger block stays, in place"
        );
        c.put(a, fake(2), 500);
        // a small `out` takes what fits; the rest stays for the next call
        let mut one = [std::ptr::null_mut(); 1];
        assert_eq!(c.expire(10_000, 900, &mut one), 1);
        assert_eq!(c.expire(10_000, 900, &mut one), 1);
        assert_eq!(c.expire(10_000, 900, &mut one), 0);
        assert_eq!(c.cached_bytes(), 0);
        // keep 0 empties the cache whatever the times
        c.put(b, fake(4), 10_000);
        assert_eq!(c.expire(10_000, 0, &mut out), 1);
        assert_eq!(c.cached_bytes(), 0);
    }
}

//! The gemm wrapper: row-major matrix views and their products through the `gemm` crate.

use std::mem::MaybeUninit;

use ::gemm::Parallelism;

/// A row-major view: pointer, row stride, column stride.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

impl Mat {
    pub(crate) fn rows(s: &[f32], cols: usize) -> Self {
        Self {
            ptr: s.as_ptr(),
            rs: cols as isize,
            cs: 1,
        }
    }

    /// The transpose of a row-major [rows × cols] matrix stored in `s`.
    pub(crate) fn transposed(s: &[f32], cols: usize) -> Self {
        Self {
            ptr: s.as_ptr(),
            rs: 1,
            cs: cols as isize,
        }
    }
}

/// dst[m × n] (row-major) = lhs[m × k] × rhs[k × n], or += when `accumulate`.
pub(crate) fn matmul(
    dst: &mut [f32],
    dims: (usize, usize, usize),
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
    par: Parallelism,
) {
    assert!(dst.len() >= dims.0 * dims.1);
    // SAFETY: dst holds m×n initialised elements.
    unsafe { gemm_into(dst.as_mut_ptr(), dims, lhs, rhs, accumulate, par) }
}

/// dst[m × n] (row-major) = lhs[m × k] × rhs[k × n] into memory that need not be initialised;
/// returns it initialised.
pub(crate) fn matmul_uninit(
    dst: &mut [MaybeUninit<f32>],
    (m, n, k): (usize, usize, usize),
    lhs: Mat,
    rhs: Mat,
    par: Parallelism,
) -> &mut [f32] {
    assert_eq!(dst.len(), m * n);
    let ptr = dst.as_mut_ptr().cast::<f32>();
    // SAFETY: dst holds m×n elements. With read_dst = false (and alpha 0) gemm never reads dst:
    // its first pass over k stores beta·lhs·rhs, later passes add to what it stored, and k = 0
    // stores zeros. So all m·n elements are initialised when it returns.
    unsafe {
        gemm_into(ptr, (m, n, k), lhs, rhs, false, par);
        std::slice::from_raw_parts_mut(ptr, m * n)
    }
}

/// The one gemm call behind [`matmul`] and [`matmul_uninit`].
///
/// # Safety
/// `dst` must be valid for m×n writes (and initialised when `accumulate`); the views must hold
/// m×k and k×n elements with their strides (the callers' geometry checks this).
pub(crate) unsafe fn gemm_into(
    dst: *mut f32,
    (m, n, k): (usize, usize, usize),
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
    par: Parallelism,
) {
    // SAFETY: the caller's contract above.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

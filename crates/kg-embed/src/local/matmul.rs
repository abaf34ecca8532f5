//! `C += A · W` for the encoder's linear layers, with `W` packed once at
//! load time.
//!
//! A general matrix product copies ("packs") both operands into the order
//! its micro-kernel reads on every call; the weights of a linear layer never
//! change, so here they are packed once, when the model is loaded, into
//! panels of [`NR`] output columns. A call then streams the activations
//! straight from their rows: no copy, no allocation, so a product over a
//! block of 48 rows costs no more per row than one over 4 000, and the
//! caller can cut its rows into many small tasks for load balancing.
//!
//! The micro-kernel computes a 6 × 16 tile of `C` in twelve AVX2 registers
//! (six rows of `A` broadcast, two vectors of a weight panel, fused
//! multiply-add), the classic shape for 16 vector registers. Without AVX2
//! and FMA (or in unoptimised builds, where the intrinsics are not inlined)
//! each panel goes through the `gemm` crate instead; the packed layout is a
//! plain row-major `k × 16` matrix per panel, so both paths read the same
//! weights.

/// Output columns per weight panel (two AVX registers of f32).
pub(crate) const NR: usize = 16;
/// Rows of `A` per micro-kernel call.
const MR: usize = 6;
/// Depth of one pass over a panel: 384 × 16 floats (24 KB) of weights stay
/// in the L1/L2 cache while the rows of a task go by.
const KC: usize = 384;
/// Panels per column block: 384 × 384 floats (576 KB) of weights per block
/// stay in the L2 cache.
const PANELS_PER_BLOCK: usize = 24;

/// A linear layer's weight matrix (`n_in × n_out`), packed: panel `p` holds,
/// for each input `i`, the weights of outputs `p·NR .. p·NR + NR` (zeros
/// past `n_out`), contiguously.
pub(crate) struct Packed {
    panels: Vec<f32>,
    n_in: usize,
    n_out: usize,
}

impl Packed {
    /// Packs a PyTorch `weight` (`[n_out, n_in]`, row-major).
    pub fn from_torch(weight: &[f32], n_out: usize, n_in: usize) -> Self {
        let n_panels = n_out.div_ceil(NR);
        let mut panels = vec![0.0f32; n_panels * n_in * NR];
        for (o, row) in weight.chunks_exact(n_in).take(n_out).enumerate() {
            let (p, j) = (o / NR, o % NR);
            let panel = panels
                .get_mut(p * n_in * NR..(p + 1) * n_in * NR)
                .unwrap_or_default();
            for (slot, &w) in panel.iter_mut().skip(j).step_by(NR).zip(row) {
                *slot = w;
            }
        }
        Self {
            panels,
            n_in,
            n_out,
        }
    }
}

/// `c (rows × n_out) += a (rows × n_in) · W`, both row-major and dense.
///
/// # Panics
/// If the slices do not hold whole rows of the same count (a bug in the
/// caller, never a property of the input data).
pub(crate) fn matmul_acc(c: &mut [f32], a: &[f32], w: &Packed) {
    matmul_with(c, a, w, super::bert::has_avx2_fma());
}

fn matmul_with(c: &mut [f32], a: &[f32], w: &Packed, simd: bool) {
    let (k, n) = (w.n_in, w.n_out);
    if k == 0 || n == 0 {
        return;
    }
    let rows = a.len() / k;
    assert!(
        a.len() == rows * k && c.len() == rows * n && w.panels.len() == n.div_ceil(NR) * k * NR,
        "matrix product shapes do not match"
    );
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: the CPU has AVX2 and FMA (the caller checked), and the
        // shapes of `a`, `c` and the panels were just checked.
        unsafe { avx2::matmul(c, a, w, rows) };
        return;
    }
    let _ = simd;
    portable(c, a, w, rows);
}

/// One product per panel through the `gemm` crate.
fn portable(c: &mut [f32], a: &[f32], w: &Packed, rows: usize) {
    let (k, n) = (w.n_in, w.n_out);
    for (p, panel) in w.panels.chunks_exact(k * NR).enumerate() {
        let cols = NR.min(n - p * NR);
        let dst = c.get_mut(p * NR..).unwrap_or_default();
        assert!(
            rows == 0 || (rows - 1) * n + cols <= dst.len(),
            "matrix product out of bounds"
        );
        // SAFETY: `dst` holds `rows` rows of stride `n` with `cols` columns
        // (checked just above), `a` holds `rows × k` and `panel` `k × NR`
        // (checked by the caller); `dst` is borrowed mutably, so it aliases
        // neither.
        unsafe {
            gemm::gemm(
                rows,
                cols,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                true,
                a.as_ptr(),
                1,
                k as isize,
                panel.as_ptr(),
                1,
                NR as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Packed, KC, MR, NR, PANELS_PER_BLOCK};
    use std::arch::x86_64::*;

    /// The blocked loop: depth blocks of [`KC`], column blocks of
    /// [`PANELS_PER_BLOCK`] panels, then rows by [`MR`] against each panel.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `a` must hold `rows × n_in` floats,
    /// `c` `rows × n_out`, and the panels `ceil(n_out / NR) × n_in × NR`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn matmul(c: &mut [f32], a: &[f32], w: &Packed, rows: usize) {
        let (k, n) = (w.n_in, w.n_out);
        let n_panels = n.div_ceil(NR);
        let (a, b, c) = (a.as_ptr(), w.panels.as_ptr(), c.as_mut_ptr());
        let mut kb = 0;
        while kb < k {
            let kc = KC.min(k - kb);
            let mut pb = 0;
            while pb < n_panels {
                let pe = (pb + PANELS_PER_BLOCK).min(n_panels);
                let mut r = 0;
                while r < rows {
                    let mr = MR.min(rows - r);
                    for p in pb..pe {
                        let cols = NR.min(n - p * NR);
                        // SAFETY (all three): in bounds by the contract;
                        // row r + mr ≤ rows, depth kb + kc ≤ k, panel p.
                        let a_tile = unsafe { a.add(r * k + kb) };
                        let b_tile = unsafe { b.add(p * k * NR + kb * NR) };
                        let c_tile = unsafe { c.add(r * n + p * NR) };
                        if cols == NR {
                            // SAFETY: an mr × NR tile of C at row stride n.
                            unsafe { tile(mr, kc, a_tile, k, b_tile, c_tile, n) };
                        } else {
                            // The last panel of an output width that is not
                            // a multiple of 16: through a full-width buffer.
                            let mut buf = [0.0f32; MR * NR];
                            for i in 0..mr {
                                for j in 0..cols {
                                    // SAFETY: row i < mr, column j < cols.
                                    buf[i * NR + j] = unsafe { *c_tile.add(i * n + j) };
                                }
                            }
                            // SAFETY: `buf` is an MR × NR tile.
                            unsafe { tile(mr, kc, a_tile, k, b_tile, buf.as_mut_ptr(), NR) };
                            for i in 0..mr {
                                for j in 0..cols {
                                    // SAFETY: as above.
                                    unsafe { *c_tile.add(i * n + j) = buf[i * NR + j] };
                                }
                            }
                        }
                    }
                    r += mr;
                }
                pb = pe;
            }
            kb += kc;
        }
    }

    /// Dispatches to the kernel for `mr` (1 to 6) rows.
    ///
    /// # Safety
    /// As [`kernel`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile(
        mr: usize,
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        // SAFETY: the caller's contract, for the matching row count.
        unsafe {
            match mr {
                6 => kernel::<6>(kc, a, lda, b, c, ldc),
                5 => kernel::<5>(kc, a, lda, b, c, ldc),
                4 => kernel::<4>(kc, a, lda, b, c, ldc),
                3 => kernel::<3>(kc, a, lda, b, c, ldc),
                2 => kernel::<2>(kc, a, lda, b, c, ldc),
                _ => kernel::<1>(kc, a, lda, b, c, ldc),
            }
        }
    }

    /// `C[R × 16] += A[R × kc] · B[kc × 16]`: A rows at stride `lda`, B a
    /// contiguous panel slice, C rows at stride `ldc`.
    ///
    /// # Safety
    /// AVX2 and FMA; `a` readable for `R` rows of `kc`, `b` for `kc × 16`,
    /// `c` readable and writable for `R` rows of 16.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn kernel<const R: usize>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        // SAFETY: every pointer offset below stays inside the regions the
        // contract names.
        unsafe {
            let mut lo = [_mm256_setzero_ps(); R];
            let mut hi = [_mm256_setzero_ps(); R];
            for r in 0..R {
                lo[r] = _mm256_loadu_ps(c.add(r * ldc));
                hi[r] = _mm256_loadu_ps(c.add(r * ldc + 8));
            }
            for p in 0..kc {
                let b0 = _mm256_loadu_ps(b.add(p * NR));
                let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
                for r in 0..R {
                    let x = _mm256_broadcast_ss(&*a.add(r * lda + p));
                    lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);
                    hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);
                }
            }
            for r in 0..R {
                _mm256_storeu_ps(c.add(r * ldc), lo[r]);
                _mm256_storeu_ps(c.add(r * ldc + 8), hi[r]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], w: &[f32], rows: usize, n_in: usize, n_out: usize) -> Vec<f32> {
        let mut c = vec![0.0f32; rows * n_out];
        for r in 0..rows {
            for o in 0..n_out {
                c[r * n_out + o] = (0..n_in)
                    .map(|i| a[r * n_in + i] as f64 * w[o * n_in + i] as f64)
                    .sum::<f64>() as f32
                    + 0.5;
            }
        }
        c
    }

    #[test]
    fn packed_products_match_a_naive_loop() {
        // Odd sizes: a row remainder (13 = 6 + 6 + 1), a depth over one
        // block (400 > KC), outputs over one column block (400 > 24 · 16)
        // with a partial last panel (400 = 25 · 16, then 40 = 2 · 16 + 8).
        for (rows, n_in, n_out) in [(13, 400, 400), (7, 37, 40), (1, 5, 3), (6, 16, 16)] {
            let a: Vec<f32> = (0..rows * n_in)
                .map(|i| ((i * 7) % 13) as f32 * 0.1 - 0.6)
                .collect();
            let w: Vec<f32> = (0..n_out * n_in)
                .map(|i| ((i * 5) % 11) as f32 * 0.1 - 0.5)
                .collect();
            let packed = Packed::from_torch(&w, n_out, n_in);
            let want = naive(&a, &w, rows, n_in, n_out);
            let mut paths = vec![false];
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                paths.push(true);
            }
            for simd in paths {
                let mut c = vec![0.5f32; rows * n_out];
                matmul_with(&mut c, &a, &packed, simd);
                for (i, (got, want)) in c.iter().zip(&want).enumerate() {
                    assert!(
                        (got - want).abs() < 1e-3,
                        "simd {simd} {rows}x{n_in}x{n_out} [{i}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}

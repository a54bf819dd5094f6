//! Quantized blocks of 32 values and their dot products, the kernels every matrix product of
//! the model runs.
//!
//! - Weights are held as GGUF ships them where a kernel takes that layout: Q4_1 (4-bit steps
//!   with a scale and a minimum, [`Q4Block`]) and Q8_0 (8-bit steps with a scale,
//!   [`Q8Block`]); their scales are widened from f16 to f32 once, at load. Any other layout
//!   is requantized to Q8_0 ([`Matrix::quantize_q8`]).
//! - Activations are quantized to 8 bits per block ([`ActBlock`], llama.cpp's Q8_1), so a dot
//!   product is integer multiply-adds with one float scale per block.
//! - The kernels run with AVX2 and FMA where the CPU has them (chosen at run time, through
//!   `pulp`'s safe wrappers of the instructions), else in portable code. Both compute the
//!   same integer sums; only the order of the float additions differs.

use rayon::prelude::*;

/// Values per block.
pub const BLOCK: usize = 32;

/// 32 weights `d·q + m`, `q` in 0..16: value `j` is the low nibble of `qs[j]` for `j < 16` and
/// the high nibble of `qs[j − 16]` after (GGUF's Q4_1).
#[derive(Clone, Copy, Debug, Default)]
pub struct Q4Block {
    pub d: f32,
    pub m: f32,
    pub qs: [u8; 16],
}

/// 32 weights `d·q` (GGUF's Q8_0).
#[derive(Clone, Copy, Debug, Default)]
pub struct Q8Block {
    pub d: f32,
    pub qs: [i8; 32],
}

/// 32 activations `d·q`, with `s = d·Σq` for the minimum term of a Q4_1 product.
#[derive(Clone, Copy, Debug, Default)]
pub struct ActBlock {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; 32],
}

/// The step `d` of a block of 8-bit values and its inverse: values in ±127 steps, never
/// -128 (which the AVX2 kernel's sign trick could not negate), and a block of zeros (or of
/// values too small for an f32 inverse) all zeros.
fn scales(x: &[f32]) -> (f32, f32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let inv = 127.0 / amax;
    if amax > 0.0 && inv.is_finite() {
        (amax / 127.0, inv)
    } else {
        (0.0, 0.0)
    }
}

/// 32 values as 8-bit steps: the step and the values in steps.
fn q8(x: &[f32]) -> (f32, [i8; 32]) {
    let (d, inv) = scales(x);
    let mut qs = [0i8; 32];
    for (q, v) in qs.iter_mut().zip(x) {
        *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
    }
    (d, qs)
}

/// Quantizes `x` (a multiple of [`BLOCK`] long) to activation blocks.
pub fn quantize_acts(x: &[f32], out: &mut [ActBlock]) {
    for (x, out) in x.chunks_exact(BLOCK).zip(out.iter_mut()) {
        let (d, qs) = q8(x);
        let sum: i32 = qs.iter().map(|q| i32::from(*q)).sum();
        *out = ActBlock {
            d,
            s: d * sum as f32,
            qs,
        };
    }
}

/// How a matrix's weights are held.
#[derive(Clone, Debug)]
pub enum Weights {
    Q4(Vec<Q4Block>),
    Q8(Vec<Q8Block>),
    /// Unquantized: the reference the kernels are checked against.
    F32(Vec<f32>),
}

/// A `rows × cols` matrix, row-major; `cols` is a multiple of [`BLOCK`].
#[derive(Clone, Debug)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub weights: Weights,
}

impl Matrix {
    /// Quantizes an f32 matrix to Q8_0.
    pub fn quantize_q8(rows: usize, cols: usize, values: &[f32]) -> Self {
        let blocks = values
            .chunks_exact(BLOCK)
            .map(|x| {
                let (d, qs) = q8(x);
                Q8Block { d, qs }
            })
            .collect();
        Self {
            rows,
            cols,
            weights: Weights::Q8(blocks),
        }
    }

    /// Row `row`, dequantized into `out`.
    pub fn row(&self, row: usize, out: &mut [f32]) {
        let kb = self.cols / BLOCK;
        match &self.weights {
            Weights::Q4(blocks) => {
                for (b, out) in blocks[row * kb..(row + 1) * kb]
                    .iter()
                    .zip(out.chunks_exact_mut(BLOCK))
                {
                    for j in 0..16 {
                        out[j] = b.d * f32::from(b.qs[j] & 15) + b.m;
                        out[j + 16] = b.d * f32::from(b.qs[j] >> 4) + b.m;
                    }
                }
            }
            Weights::Q8(blocks) => {
                for (b, out) in blocks[row * kb..(row + 1) * kb]
                    .iter()
                    .zip(out.chunks_exact_mut(BLOCK))
                {
                    for (o, q) in out.iter_mut().zip(b.qs) {
                        *o = b.d * f32::from(q);
                    }
                }
            }
            Weights::F32(values) => {
                out.copy_from_slice(&values[row * self.cols..(row + 1) * self.cols]);
            }
        }
    }

    /// Every row, dequantized.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (row, out) in out.chunks_exact_mut(self.cols).enumerate() {
            self.row(row, out);
        }
        out
    }

    /// The matrices stacked one under the other (their columns must agree), in one layout:
    /// theirs where they share it, else Q8_0.
    pub fn stack(parts: Vec<Matrix>) -> Matrix {
        let cols = parts[0].cols;
        assert!(
            parts.iter().all(|p| p.cols == cols),
            "stacked matrices share columns"
        );
        let rows = parts.iter().map(|p| p.rows).sum();
        let same = |f: fn(&Weights) -> bool| parts.iter().all(|p| f(&p.weights));
        let weights = if same(|w| matches!(w, Weights::Q4(_))) {
            Weights::Q4(
                parts
                    .into_iter()
                    .flat_map(|p| match p.weights {
                        Weights::Q4(b) => b,
                        _ => unreachable!(),
                    })
                    .collect(),
            )
        } else if same(|w| matches!(w, Weights::F32(_))) {
            Weights::F32(parts.iter().flat_map(Matrix::dequantize).collect())
        } else if same(|w| matches!(w, Weights::Q8(_))) {
            Weights::Q8(
                parts
                    .into_iter()
                    .flat_map(|p| match p.weights {
                        Weights::Q8(b) => b,
                        _ => unreachable!(),
                    })
                    .collect(),
            )
        } else {
            let values: Vec<f32> = parts.iter().flat_map(Matrix::dequantize).collect();
            return Matrix::quantize_q8(rows, cols, &values);
        };
        Matrix {
            rows,
            cols,
            weights,
        }
    }

    /// The bytes its weights take.
    pub fn bytes(&self) -> usize {
        match &self.weights {
            Weights::Q4(b) => std::mem::size_of_val(b.as_slice()),
            Weights::Q8(b) => std::mem::size_of_val(b.as_slice()),
            Weights::F32(v) => std::mem::size_of_val(v.as_slice()),
        }
    }

    /// `out[r·n + t] = row r · input t` for the `n` inputs in `x` (each `cols` long; `acts`
    /// holds them quantized, for the quantized layouts), split over the current rayon pool.
    pub fn matmul(
        &self,
        kernels: Kernels,
        x: &[f32],
        acts: &[ActBlock],
        n: usize,
        out: &mut [f32],
    ) {
        let kb = self.cols / BLOCK;
        debug_assert_eq!(out.len(), self.rows * n);
        let threads = rayon::current_num_threads();
        // Pieces of whole rows, a few per thread so that one slow thread does not hold the
        // others up; never so small that handing them out costs more than they do.
        let rows_per = (self.rows / (threads * 4)).clamp(16, 512);
        out.par_chunks_mut(rows_per * n)
            .enumerate()
            .for_each(|(piece, out)| {
                let first = piece * rows_per;
                let rows = out.len() / n;
                match &self.weights {
                    Weights::Q4(blocks) => {
                        kernels.rows(&blocks[first * kb..(first + rows) * kb], kb, acts, n, out)
                    }
                    Weights::Q8(blocks) => {
                        kernels.rows(&blocks[first * kb..(first + rows) * kb], kb, acts, n, out)
                    }
                    Weights::F32(values) => {
                        for (r, out) in out.chunks_exact_mut(n).enumerate() {
                            let w = &values[(first + r) * self.cols..(first + r + 1) * self.cols];
                            for (t, o) in out.iter_mut().enumerate() {
                                let x = &x[t * self.cols..(t + 1) * self.cols];
                                *o = w.iter().zip(x).map(|(a, b)| a * b).sum();
                            }
                        }
                    }
                }
            });
    }
}

/// A block of weights the kernels multiply with activation blocks.
pub trait Block: Copy + Send + Sync {
    /// `self · a`, in portable code.
    fn dot(&self, a: &ActBlock) -> f32;
    /// `acc + self · a` in eight lanes, plus a term kept apart (Q4_1's minimum), with AVX2.
    #[cfg(target_arch = "x86_64")]
    fn dot_avx2(
        &self,
        simd: pulp::x86::V3,
        a: &ActBlock,
        acc: std::arch::x86_64::__m256,
    ) -> (std::arch::x86_64::__m256, f32);
}

impl Block for Q4Block {
    #[inline(always)]
    fn dot(&self, a: &ActBlock) -> f32 {
        let mut sum = 0i32;
        for j in 0..16 {
            sum += i32::from(self.qs[j] & 15) * i32::from(a.qs[j])
                + i32::from(self.qs[j] >> 4) * i32::from(a.qs[j + 16]);
        }
        self.d * a.d * sum as f32 + self.m * a.s
    }

    /// The nibbles are spread to 32 bytes (the low ones, then the high ones: the values'
    /// order); the minimum's term is kept apart.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn dot_avx2(
        &self,
        simd: pulp::x86::V3,
        a: &ActBlock,
        acc: std::arch::x86_64::__m256,
    ) -> (std::arch::x86_64::__m256, f32) {
        let packed: std::arch::x86_64::__m128i = pulp::cast(self.qs);
        let high = simd.sse2._mm_srli_epi16::<4>(packed);
        let q = simd.avx2._mm256_and_si256(
            simd.avx._mm256_set_m128i(high, packed),
            simd.avx._mm256_set1_epi8(15),
        );
        let sum = x86::mul_add(simd, q, pulp::cast(a.qs), self.d * a.d, acc);
        (sum, self.m * a.s)
    }
}

impl Block for Q8Block {
    #[inline(always)]
    fn dot(&self, a: &ActBlock) -> f32 {
        let sum: i32 = self
            .qs
            .iter()
            .zip(a.qs)
            .map(|(x, y)| i32::from(*x) * i32::from(y))
            .sum();
        self.d * a.d * sum as f32
    }

    /// The weights' signs are moved onto the activations so that the unsigned-by-signed
    /// multiply applies.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn dot_avx2(
        &self,
        simd: pulp::x86::V3,
        a: &ActBlock,
        acc: std::arch::x86_64::__m256,
    ) -> (std::arch::x86_64::__m256, f32) {
        let q: std::arch::x86_64::__m256i = pulp::cast(self.qs);
        let magnitudes = simd.avx2._mm256_sign_epi8(q, q);
        let signed = simd.avx2._mm256_sign_epi8(pulp::cast(a.qs), q);
        (
            x86::mul_add(simd, magnitudes, signed, self.d * a.d, acc),
            0.0,
        )
    }
}

/// Which kernels run: AVX2 and FMA where the CPU has them, else portable code.
#[derive(Clone, Copy, Debug)]
pub enum Kernels {
    #[cfg(target_arch = "x86_64")]
    Avx2(pulp::x86::V3),
    Portable,
}

impl Kernels {
    /// The fastest this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = pulp::x86::V3::try_new() {
            return Kernels::Avx2(simd);
        }
        Kernels::Portable
    }

    /// Their name, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(_) => "AVX2+FMA",
            Kernels::Portable => "portable",
        }
    }

    /// `out[r·n + t]` = row `r` of `w` (rows of `kb` blocks) · activations `t`.
    fn rows<B: Block>(self, w: &[B], kb: usize, acts: &[ActBlock], n: usize, out: &mut [f32]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernels::Avx2(simd) => simd.vectorize(|| x86::rows(simd, w, kb, acts, n, out)),
            Kernels::Portable => {
                for (row, out) in w.chunks_exact(kb).zip(out.chunks_exact_mut(n)) {
                    for (t, o) in out.iter_mut().enumerate() {
                        *o = row
                            .iter()
                            .zip(&acts[t * kb..(t + 1) * kb])
                            .map(|(w, a)| w.dot(a))
                            .sum();
                    }
                }
            }
        }
    }

    /// One row · one activation row (for tests of the kernels against each other).
    #[cfg(test)]
    pub fn dot<B: Block>(self, w: &[B], a: &[ActBlock]) -> f32 {
        let mut out = [0f32];
        self.rows(w, w.len(), a, 1, &mut out);
        out[0]
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{__m256, __m256i};

    use pulp::x86::V3;

    use super::{ActBlock, Block};

    /// The sum of the eight lanes.
    #[inline(always)]
    fn sum(v: __m256) -> f32 {
        let lanes: [f32; 8] = pulp::cast(v);
        ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
            + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
    }

    /// `acc + scale · Σ u·x` over 32 bytes: unsigned `u` times signed `x`, summed in pairs
    /// (`vpmaddubsw`, which cannot saturate here: at most 2·128·127 < 2^15, a Q8_0 weight of
    /// −128 read as the magnitude 128), then in fours
    /// (`vpmaddwd`), then once per block in floats.
    #[inline(always)]
    pub fn mul_add(simd: V3, u: __m256i, x: __m256i, scale: f32, acc: __m256) -> __m256 {
        let pairs = simd.avx2._mm256_maddubs_epi16(u, x);
        let fours = simd
            .avx2
            ._mm256_madd_epi16(pairs, simd.avx._mm256_set1_epi16(1));
        simd.fma._mm256_fmadd_ps(
            simd.avx._mm256_set1_ps(scale),
            simd.avx._mm256_cvtepi32_ps(fours),
            acc,
        )
    }

    /// Four dot products at once, so that four chains of additions run side by side (one
    /// chain waits on its fused multiply-add's latency) and what they share is read once:
    /// four rows with one input, or one row with four inputs.
    #[inline(always)]
    fn four<'w, 'a, B: Block + 'w>(
        simd: V3,
        blocks: usize,
        w: impl Fn(usize, usize) -> &'w B,
        a: impl Fn(usize, usize) -> &'a ActBlock,
    ) -> [f32; 4] {
        let mut acc = [simd.avx._mm256_setzero_ps(); 4];
        let mut apart = [0f32; 4];
        for i in 0..blocks {
            for k in 0..4 {
                let (v, e) = w(k, i).dot_avx2(simd, a(k, i), acc[k]);
                acc[k] = v;
                apart[k] += e;
            }
        }
        std::array::from_fn(|k| sum(acc[k]) + apart[k])
    }

    /// One dot product.
    #[inline(always)]
    fn one<B: Block>(simd: V3, w: &[B], a: &[ActBlock]) -> f32 {
        let mut acc = simd.avx._mm256_setzero_ps();
        let mut apart = 0f32;
        for (w, a) in w.iter().zip(a) {
            let (v, e) = w.dot_avx2(simd, a, acc);
            acc = v;
            apart += e;
        }
        sum(acc) + apart
    }

    /// `out[r·n + t]` = row `r` · input `t`: four rows at a time for one input, four inputs
    /// at a time for more.
    #[inline(always)]
    pub fn rows<B: Block>(
        simd: V3,
        w: &[B],
        kb: usize,
        acts: &[ActBlock],
        n: usize,
        out: &mut [f32],
    ) {
        if n == 1 {
            for (r, o) in out.iter_mut().enumerate() {
                *o = one(simd, &w[r * kb..(r + 1) * kb], acts);
            }
            return;
        }
        for (r, out) in out.chunks_exact_mut(n).enumerate() {
            let row = &w[r * kb..(r + 1) * kb];
            let mut t = 0;
            while t + 4 <= n {
                let sums = four(simd, kb, |_, i| &row[i], |k, i| &acts[(t + k) * kb + i]);
                out[t..t + 4].copy_from_slice(&sums);
                t += 4;
            }
            for t in t..n {
                out[t] = one(simd, row, &acts[t * kb..(t + 1) * kb]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repeatable spread of values (no RNG crate in the tree for it).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn q4_of(x: &[f32]) -> Vec<Q4Block> {
        x.chunks_exact(BLOCK)
            .map(|x| {
                let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (hi - lo) / 15.0;
                let mut qs = [0u8; 16];
                for j in 0..16 {
                    let q = |v: f32| ((v - lo) / d).round().clamp(0.0, 15.0) as u8;
                    qs[j] = q(x[j]) | (q(x[j + 16]) << 4);
                }
                Q4Block { d, m: lo, qs }
            })
            .collect()
    }

    #[test]
    fn the_kernels_agree_with_each_other_and_with_the_float_product() {
        let k = 576;
        let w = values(k, 1);
        let x: Vec<f32> = values(k, 2).iter().map(|v| v * 3.0).collect();
        let mut acts = vec![ActBlock::default(); k / BLOCK];
        quantize_acts(&x, &mut acts);
        let q4 = q4_of(&w);
        let q8 = match Matrix::quantize_q8(1, k, &w).weights {
            Weights::Q8(b) => b,
            _ => unreachable!(),
        };
        let exact = |m: &Matrix| -> f32 { m.dequantize().iter().zip(&x).map(|(a, b)| a * b).sum() };
        let q4_exact = exact(&Matrix {
            rows: 1,
            cols: k,
            weights: Weights::Q4(q4.clone()),
        });
        let q8_exact = exact(&Matrix {
            rows: 1,
            cols: k,
            weights: Weights::Q8(q8.clone()),
        });
        let portable = (
            Kernels::Portable.dot(&q4, &acts),
            Kernels::Portable.dot(&q8, &acts),
        );
        let fast = (
            Kernels::detect().dot(&q4, &acts),
            Kernels::detect().dot(&q8, &acts),
        );
        // The same integer sums, added in another order.
        assert!(
            (portable.0 - fast.0).abs() <= 1e-4 * portable.0.abs().max(1.0),
            "{portable:?} {fast:?}"
        );
        assert!(
            (portable.1 - fast.1).abs() <= 1e-4 * portable.1.abs().max(1.0),
            "{portable:?} {fast:?}"
        );
        // Against the float product of the same weights: only the activations' rounding.
        let scale: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
        assert!(
            (portable.0 - q4_exact).abs() < 0.01 * scale,
            "{} vs {q4_exact}",
            portable.0
        );
        assert!(
            (portable.1 - q8_exact).abs() < 0.01 * scale,
            "{} vs {q8_exact}",
            portable.1
        );
    }

    #[test]
    fn a_matrix_product_over_many_inputs_is_each_input_s_product() {
        let (rows, cols, n) = (103, 64, 6);
        let w = values(rows * cols, 3);
        let x = values(n * cols, 4);
        let mut acts = vec![ActBlock::default(); n * cols / BLOCK];
        quantize_acts(&x, &mut acts);
        let m = Matrix::quantize_q8(rows, cols, &w);
        let mut all = vec![0f32; rows * n];
        m.matmul(Kernels::detect(), &x, &acts, n, &mut all);
        for t in 0..n {
            let mut one = vec![0f32; rows];
            m.matmul(
                Kernels::detect(),
                &x[t * cols..(t + 1) * cols],
                &acts[t * 2..(t + 1) * 2],
                1,
                &mut one,
            );
            for r in 0..rows {
                assert_eq!(all[r * n + t], one[r], "row {r}, input {t}");
            }
        }
    }
}

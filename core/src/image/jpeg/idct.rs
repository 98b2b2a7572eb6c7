//! The "ISLOW" inverse DCT of the IJG code that libjpeg-turbo (and so Pillow) uses by default:
//! the Loeffler-Ligtenberg-Moschytz factorisation in 13-bit fixed point, columns first with
//! 2 extra bits kept between the passes.
//!
//! Every step is an integer multiply, add or arithmetic shift, so any arrangement with the
//! same constants and the same two rounding shifts gives the same bits; this one follows the
//! algorithm's published structure. The arithmetic wraps in 32 bits: valid data never comes
//! near the limit (libjpeg-turbo's SIMD code uses 16- and 32-bit lanes too), and hostile data
//! must not panic.

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;

const FIX_0_298631336: i32 = 2446;
const FIX_0_390180644: i32 = 3196;
const FIX_0_541196100: i32 = 4433;
const FIX_0_765366865: i32 = 6270;
const FIX_0_899976223: i32 = 7373;
const FIX_1_175875602: i32 = 9633;
const FIX_1_501321110: i32 = 12299;
const FIX_1_847759065: i32 = 15137;
const FIX_1_961570560: i32 = 16069;
const FIX_2_053119869: i32 = 16819;
const FIX_2_562915447: i32 = 20995;
const FIX_3_072711026: i32 = 25172;

// The odd part with the rotations distributed over the four inputs (x7, x5, x3, x1), so that
// each product is a 16-bit value times a 16-bit constant: exact integer algebra, the same
// values as the factored form, and the form libjpeg-turbo's SIMD code computes.
const ODD: [[i32; 4]; 4] = {
    let (c0, c1, c2, c3) = (FIX_0_298631336, FIX_0_899976223, FIX_2_053119869, FIX_1_961570560);
    let (c4, c5, c6, c7, c8) = (
        FIX_2_562915447,
        FIX_1_175875602,
        FIX_0_390180644,
        FIX_3_072711026,
        FIX_1_501321110,
    );
    [
        // tmp0 (weights of x7, x5, x3, x1)
        [c0 - c1 - c3 + c5, c5, c5 - c3, c5 - c1],
        // tmp1
        [c5, c2 - c4 - c6 + c5, c5 - c4, c5 - c6],
        // tmp2
        [c5 - c3, c5 - c4, c7 - c4 - c3 + c5, c5],
        // tmp3
        [c5 - c1, c5 - c6, c5, c8 - c1 - c6 + c5],
    ]
};

/// The 1-D transform applied to eight vectors at once: `x[k][lane]` is input `k` of the
/// transform in lane `lane`, so each step is one 8-lane vector operation (the compiler
/// vectorises the lane loop, with 16x16-bit multiplies). Returns the eight unshifted 32-bit
/// outputs, laid out the same way. Sums wrap in 32 bits, as the SIMD code's do.
#[inline(always)]
fn idct_1d(x: &[[i16; 8]; 8]) -> [[i32; 8]; 8] {
    let mut out = [[0i32; 8]; 8];
    for lane in 0..8 {
        let v = |k: usize| i32::from(x[k][lane]);
        // Even part.
        let (z2, z3) = (v(2), v(6));
        let tmp2 = z2
            .wrapping_mul(FIX_0_541196100)
            .wrapping_add(z3.wrapping_mul(FIX_0_541196100 - FIX_1_847759065));
        let tmp3 = z2
            .wrapping_mul(FIX_0_541196100 + FIX_0_765366865)
            .wrapping_add(z3.wrapping_mul(FIX_0_541196100));
        let tmp0 = v(0).wrapping_add(v(4)).wrapping_shl(CONST_BITS);
        let tmp1 = v(0).wrapping_sub(v(4)).wrapping_shl(CONST_BITS);
        let tmp10 = tmp0.wrapping_add(tmp3);
        let tmp13 = tmp0.wrapping_sub(tmp3);
        let tmp11 = tmp1.wrapping_add(tmp2);
        let tmp12 = tmp1.wrapping_sub(tmp2);

        // Odd part.
        let inputs = [v(7), v(5), v(3), v(1)];
        let odd = |weights: &[i32; 4]| {
            inputs
                .iter()
                .zip(weights)
                .fold(0i32, |sum, (&x, &w)| sum.wrapping_add(x.wrapping_mul(w)))
        };
        let (t0, t1, t2, t3) = (odd(&ODD[0]), odd(&ODD[1]), odd(&ODD[2]), odd(&ODD[3]));

        out[0][lane] = tmp10.wrapping_add(t3);
        out[1][lane] = tmp11.wrapping_add(t2);
        out[2][lane] = tmp12.wrapping_add(t1);
        out[3][lane] = tmp13.wrapping_add(t0);
        out[4][lane] = tmp13.wrapping_sub(t0);
        out[5][lane] = tmp12.wrapping_sub(t1);
        out[6][lane] = tmp11.wrapping_sub(t2);
        out[7][lane] = tmp10.wrapping_sub(t3);
    }
    out
}

#[inline(always)]
fn descale(x: i32, n: u32) -> i32 {
    x.wrapping_add(1 << (n - 1)) >> n
}

/// A 32-bit intermediate stored in 16 bits with saturation, as the SIMD code packs it.
#[inline(always)]
fn saturate(x: i32) -> i16 {
    x.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

/// The final sample: `x + 128` clamped to 0..=255. (libjpeg's C code wraps values far outside
/// the range through a 1024-entry table, its SIMD code clamps; they agree on every value a
/// valid file produces, and Pillow's wheels run the SIMD code.)
#[inline(always)]
fn range_limit(x: i32) -> u8 {
    (x.clamp(-128, 127) + 128) as u8
}

/// Dequantizes `coefficients` (natural order) with `quant` and writes the 8x8 block of samples
/// to `out` at `stride`.
///
/// Follows the arithmetic of libjpeg-turbo's SIMD ISLOW code (what Pillow runs on x86-64 and
/// Arm): the dequantized coefficients and the workspace between the passes are 16-bit (the
/// product keeps its low 16 bits; the workspace saturates), products are 32-bit. On every
/// value a valid file produces this is also exactly the C code's arithmetic. A block with
/// only a DC term takes the flat shortcut (the same bits as the full transform).
pub(super) fn idct_block(coefficients: &[i16; 64], quant: &[u16; 64], out: &mut [u8], stride: usize) {
    if coefficients[1..].iter().all(|&c| c == 0) {
        let dc = coefficients[0].wrapping_mul(quant[0] as i16);
        let pass1 = saturate(i32::from(dc) << PASS1_BITS);
        let value = range_limit(descale(i32::from(pass1), PASS1_BITS + 3));
        for row in 0..8 {
            out[row * stride..row * stride + 8].fill(value);
        }
        return;
    }
    // Column pass: input k of every column is row k of the block.
    let mut rows = [[0i16; 8]; 8];
    for (k, row) in rows.iter_mut().enumerate() {
        for (lane, value) in row.iter_mut().enumerate() {
            *value = coefficients[k * 8 + lane].wrapping_mul(quant[k * 8 + lane] as i16);
        }
    }
    let columns = idct_1d(&rows);
    // Row pass: input k of every row is column k of the workspace, so transpose.
    let mut transposed = [[0i16; 8]; 8];
    for (k, line) in transposed.iter_mut().enumerate() {
        for (lane, value) in line.iter_mut().enumerate() {
            *value = saturate(descale(columns[lane][k], CONST_BITS - PASS1_BITS));
        }
    }
    let samples = idct_1d(&transposed);
    for row in 0..8 {
        let line = &mut out[row * stride..row * stride + 8];
        for (col, o) in line.iter_mut().enumerate() {
            *o = range_limit(descale(samples[col][row], CONST_BITS + PASS1_BITS + 3));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transform of a DC-only block is flat at `dc * q / 8 + 128`, rounded.
    #[test]
    fn dc_only_blocks_are_flat_and_rounded() {
        let mut quant = [1u16; 64];
        quant[0] = 8;
        for dc in [-128i16, -17, -1, 0, 1, 5, 127] {
            let mut coefficients = [0i16; 64];
            coefficients[0] = dc;
            let mut out = [0u8; 64];
            idct_block(&coefficients, &quant, &mut out, 8);
            let expected = (i32::from(dc) + 128).clamp(0, 255) as u8;
            assert!(out.iter().all(|&v| v == expected), "dc {dc}: {out:?}");
        }
    }

    /// The final clamp, and the workspace's saturation.
    #[test]
    fn range_limit_and_saturation_clamp() {
        assert_eq!(range_limit(-128), 0);
        assert_eq!(range_limit(127), 255);
        assert_eq!(range_limit(0), 128);
        assert_eq!(range_limit(383), 255);
        assert_eq!(range_limit(-5000), 0);
        assert_eq!(saturate(40_000), i16::MAX);
        assert_eq!(saturate(-40_000), i16::MIN);
    }

    /// libjpeg's ISLOW IDCT as its C code writes it (factored rotations, one column or row at
    /// a time, 64-bit intermediates, the C range-limit table), as an oracle for the vector form.
    fn islow_c(coefficients: &[i16; 64], quant: &[u16; 64]) -> [u8; 64] {
        let mul = |a: i64, c: i32| a * i64::from(c);
        let transform = |x: [i64; 8]| -> [i64; 8] {
            let (z2, z3) = (x[2], x[6]);
            let z1 = mul(z2 + z3, FIX_0_541196100);
            let tmp2 = z1 + mul(z3, -FIX_1_847759065);
            let tmp3 = z1 + mul(z2, FIX_0_765366865);
            let tmp0 = (x[0] + x[4]) << CONST_BITS;
            let tmp1 = (x[0] - x[4]) << CONST_BITS;
            let (tmp10, tmp13, tmp11, tmp12) = (tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2);
            let (t0, t1, t2, t3) = (x[7], x[5], x[3], x[1]);
            let (z1, z2, z3, z4) = (t0 + t3, t1 + t2, t0 + t2, t1 + t3);
            let z5 = mul(z3 + z4, FIX_1_175875602);
            let (t0, t1, t2, t3) = (
                mul(t0, FIX_0_298631336),
                mul(t1, FIX_2_053119869),
                mul(t2, FIX_3_072711026),
                mul(t3, FIX_1_501321110),
            );
            let (z1, z2) = (mul(z1, -FIX_0_899976223), mul(z2, -FIX_2_562915447));
            let z3 = mul(z3, -FIX_1_961570560) + z5;
            let z4 = mul(z4, -FIX_0_390180644) + z5;
            let (t0, t1, t2, t3) = (t0 + z1 + z3, t1 + z2 + z4, t2 + z2 + z3, t3 + z1 + z4);
            [
                tmp10 + t3,
                tmp11 + t2,
                tmp12 + t1,
                tmp13 + t0,
                tmp13 - t0,
                tmp12 - t1,
                tmp11 - t2,
                tmp10 - t3,
            ]
        };
        let descale = |x: i64, n: u32| (x + (1 << (n - 1))) >> n;
        let mut workspace = [0i64; 64];
        for col in 0..8 {
            let x =
                std::array::from_fn(|k| i64::from(coefficients[k * 8 + col]) * i64::from(quant[k * 8 + col]));
            for (row, v) in transform(x).into_iter().enumerate() {
                workspace[row * 8 + col] = descale(v, CONST_BITS - PASS1_BITS);
            }
        }
        let mut out = [0u8; 64];
        for row in 0..8 {
            let x = std::array::from_fn(|k| workspace[row * 8 + k]);
            for (col, v) in transform(x).into_iter().enumerate() {
                let v = (descale(v, CONST_BITS + PASS1_BITS + 3) & 1023) as u32;
                out[row * 8 + col] = match v {
                    0..=127 => (v + 128) as u8,
                    128..=511 => 255,
                    512..=895 => 0,
                    _ => (v - 896) as u8,
                };
            }
        }
        out
    }

    /// The vector form equals the C code on every block an encoder produces: the JPEG forward
    /// DCT of random 8x8 samples (smooth, noisy, and saturated checkerboards, whose ringing
    /// overshoots the most) quantized with fine and coarse tables.
    #[test]
    fn equals_the_c_code_on_encoded_blocks() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let basis = |k: usize, n: usize| {
            let c = if k == 0 {
                std::f64::consts::FRAC_1_SQRT_2
            } else {
                1.0
            };
            c * (((2 * n + 1) * k) as f64 * std::f64::consts::PI / 16.0).cos()
        };
        for trial in 0..20_000 {
            let samples: [f64; 64] = match trial % 3 {
                0 => std::array::from_fn(|_| (next() % 256) as f64),
                1 => {
                    let (a, b) = ((next() % 256) as f64, (next() % 64) as f64);
                    std::array::from_fn(|i| {
                        (a + b * ((i % 8) as f64 - 3.5) + (next() % 9) as f64).clamp(0.0, 255.0)
                    })
                }
                _ => std::array::from_fn(|i| {
                    if (i % 8 + i / 8 + trial) % 2 == 0 {
                        0.0
                    } else {
                        255.0
                    }
                }),
            };
            let q = [1u16, 2, 5, 16, 50][trial % 5];
            let quant: [u16; 64] = std::array::from_fn(|i| q + (i as u16 * q) / 16);
            let coefficients: [i16; 64] = std::array::from_fn(|i| {
                let (v, u) = (i / 8, i % 8);
                let mut sum = 0.0;
                for (j, s) in samples.iter().enumerate() {
                    sum += (s - 128.0) * basis(u, j % 8) * basis(v, j / 8);
                }
                (sum / 4.0 / f64::from(quant[i])).round() as i16
            });
            let mut out = [0u8; 64];
            idct_block(&coefficients, &quant, &mut out, 8);
            assert_eq!(
                out,
                islow_c(&coefficients, &quant),
                "trial {trial}: {coefficients:?}"
            );
        }
    }

    /// The flat shortcut gives the same bits as the full transform of a DC-only block.
    #[test]
    fn the_flat_shortcut_equals_the_full_transform() {
        for dc in [-1016i16, -3, 0, 7, 1016] {
            let mut coefficients = [0i16; 64];
            coefficients[0] = dc;
            let mut out = [0u8; 64];
            idct_block(&coefficients, &[1; 64], &mut out, 8);
            assert_eq!(out, islow_c(&coefficients, &[1; 64]));
        }
    }
}

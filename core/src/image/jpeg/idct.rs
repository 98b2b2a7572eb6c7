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

/// The 1-D transform of eight values `x[0..8]` (in natural order), before the final shift.
/// Returns the eight unshifted outputs.
#[inline(always)]
fn idct_1d(x: [i32; 8]) -> [i32; 8] {
    // Even part.
    let z2 = x[2];
    let z3 = x[6];
    let z1 = z2.wrapping_add(z3).wrapping_mul(FIX_0_541196100);
    let tmp2 = z1.wrapping_add(z3.wrapping_mul(-FIX_1_847759065));
    let tmp3 = z1.wrapping_add(z2.wrapping_mul(FIX_0_765366865));
    let tmp0 = x[0].wrapping_add(x[4]).wrapping_shl(CONST_BITS);
    let tmp1 = x[0].wrapping_sub(x[4]).wrapping_shl(CONST_BITS);
    let tmp10 = tmp0.wrapping_add(tmp3);
    let tmp13 = tmp0.wrapping_sub(tmp3);
    let tmp11 = tmp1.wrapping_add(tmp2);
    let tmp12 = tmp1.wrapping_sub(tmp2);

    // Odd part.
    let (t0, t1, t2, t3) = (x[7], x[5], x[3], x[1]);
    let z1 = t0.wrapping_add(t3);
    let z2 = t1.wrapping_add(t2);
    let z3 = t0.wrapping_add(t2);
    let z4 = t1.wrapping_add(t3);
    let z5 = z3.wrapping_add(z4).wrapping_mul(FIX_1_175875602);
    let t0 = t0.wrapping_mul(FIX_0_298631336);
    let t1 = t1.wrapping_mul(FIX_2_053119869);
    let t2 = t2.wrapping_mul(FIX_3_072711026);
    let t3 = t3.wrapping_mul(FIX_1_501321110);
    let z1 = z1.wrapping_mul(-FIX_0_899976223);
    let z2 = z2.wrapping_mul(-FIX_2_562915447);
    let z3 = z3.wrapping_mul(-FIX_1_961570560).wrapping_add(z5);
    let z4 = z4.wrapping_mul(-FIX_0_390180644).wrapping_add(z5);
    let t0 = t0.wrapping_add(z1).wrapping_add(z3);
    let t1 = t1.wrapping_add(z2).wrapping_add(z4);
    let t2 = t2.wrapping_add(z2).wrapping_add(z3);
    let t3 = t3.wrapping_add(z1).wrapping_add(z4);

    [
        tmp10.wrapping_add(t3),
        tmp11.wrapping_add(t2),
        tmp12.wrapping_add(t1),
        tmp13.wrapping_add(t0),
        tmp13.wrapping_sub(t0),
        tmp12.wrapping_sub(t1),
        tmp11.wrapping_sub(t2),
        tmp10.wrapping_sub(t3),
    ]
}

#[inline(always)]
fn descale(x: i32, n: u32) -> i32 {
    x.wrapping_add(1 << (n - 1)) >> n
}

/// libjpeg's post-IDCT range limit: the value is taken modulo 1024 (its `RANGE_MASK`), so
/// results a little outside 0..=255 clamp and wild ones wrap, as the C tables do.
#[inline(always)]
fn range_limit(x: i32) -> u8 {
    let v = (x & 1023) as u32;
    match v {
        0..=127 => (v + 128) as u8,
        128..=511 => 255,
        512..=895 => 0,
        _ => (v - 896) as u8,
    }
}

/// Dequantizes `coefficients` (natural order) with `quant` and writes the 8x8 block of samples
/// to `out` at `stride`.
pub(super) fn idct_block(coefficients: &[i16; 64], quant: &[u16; 64], out: &mut [u8], stride: usize) {
    let mut workspace = [0i32; 64];
    for col in 0..8 {
        let input =
            |row: usize| i32::from(coefficients[row * 8 + col]).wrapping_mul(i32::from(quant[row * 8 + col]));
        // A column with no AC terms is flat: the shortcut gives the same bits as the full
        // transform (its descale of `dc << 13` by 11 bits is exact).
        if (1..8).all(|row| coefficients[row * 8 + col] == 0) {
            let dc = input(0).wrapping_shl(PASS1_BITS);
            for row in 0..8 {
                workspace[row * 8 + col] = dc;
            }
            continue;
        }
        let column = idct_1d([
            input(0),
            input(1),
            input(2),
            input(3),
            input(4),
            input(5),
            input(6),
            input(7),
        ]);
        for row in 0..8 {
            workspace[row * 8 + col] = descale(column[row], CONST_BITS - PASS1_BITS);
        }
    }
    for row in 0..8 {
        let w = &workspace[row * 8..row * 8 + 8];
        let line = &mut out[row * stride..row * stride + 8];
        if w[1..].iter().all(|&v| v == 0) {
            let value = range_limit(descale(w[0], PASS1_BITS + 3));
            line.fill(value);
            continue;
        }
        let samples = idct_1d([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        for (o, s) in line.iter_mut().zip(samples) {
            *o = range_limit(descale(s, CONST_BITS + PASS1_BITS + 3));
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

    /// The range limit clamps moderate overshoot and wraps like libjpeg's table beyond it.
    #[test]
    fn range_limit_matches_the_table_layout() {
        assert_eq!(range_limit(-128), 0);
        assert_eq!(range_limit(127), 255);
        assert_eq!(range_limit(0), 128);
        assert_eq!(range_limit(200), 255);
        assert_eq!(range_limit(383), 255);
        assert_eq!(range_limit(-129), 0);
        assert_eq!(range_limit(-512), 0);
        // 1024 further on, the same again.
        assert_eq!(range_limit(-128 + 1024), 0);
    }

    /// The shortcut for flat columns and rows gives the same bits as the full transform.
    #[test]
    fn shortcuts_equal_the_full_transform() {
        for dc in [-1000i32, -3, 0, 7, 999] {
            let full = idct_1d([dc, 0, 0, 0, 0, 0, 0, 0]);
            for v in full {
                assert_eq!(descale(v, CONST_BITS - PASS1_BITS), dc << PASS1_BITS);
                assert_eq!(
                    descale(v << PASS1_BITS, CONST_BITS + PASS1_BITS + 3),
                    descale(dc << PASS1_BITS, PASS1_BITS + 3)
                );
            }
        }
    }
}

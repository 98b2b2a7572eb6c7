//! Chroma upsampling and colour conversion as libjpeg-turbo does them with its defaults
//! (`do_fancy_upsampling`, no merged upsampler), so the pixels equal Pillow's.
//!
//! libjpeg-turbo picks a method per component from the ratio of the largest sampling factors
//! to the component's:
//! - 2:1 horizontally: a triangle filter (3/4 nearer + 1/4 farther sample, rounding biases
//!   alternating 1 and 2) when the component is more than 2 samples wide, else replication;
//! - 2:1 vertically only: the same filter vertically (biases 1 above, 2 below);
//! - 2:1 both ways: the filter in both directions (9/16, 3/16, 3/16, 1/16; biases 8 and 7),
//!   when more than 2 samples wide, else replication;
//! - other integral ratios: replication.
//!
//! Rows above the first and below the last real row (the component's own height, not the
//! padding the blocks carry) repeat that row, as libjpeg's context rows do; so do columns.

/// One component's decoded samples, `stride` bytes per row.
pub(super) struct Plane<'a> {
    pub samples: &'a [u8],
    pub stride: usize,
    /// The component's own size: `ceil(image size * factor / largest factor)`.
    pub width: usize,
    pub height: usize,
}

impl Plane<'_> {
    fn row(&self, row: usize) -> &[u8] {
        &self.samples[row * self.stride..row * self.stride + self.width]
    }
}

/// Upsamples one component by the integral factors `(h, v)`, an output row at a time.
pub(super) struct Upsampler<'a> {
    plane: Plane<'a>,
    h: usize,
    v: usize,
    row: Vec<u8>,
    sums: Vec<i32>,
}

impl<'a> Upsampler<'a> {
    pub(super) fn new(plane: Plane<'a>, h: usize, v: usize) -> Self {
        let row = vec![0u8; plane.width * h];
        let sums = vec![0i32; plane.width];
        Upsampler {
            plane,
            h,
            v,
            row,
            sums,
        }
    }

    /// Output row `y`, `width` samples (at most the plane's width times `h`).
    pub(super) fn row(&mut self, y: usize, width: usize) -> &[u8] {
        let p = &self.plane;
        let last_row = p.height - 1;
        // The nearest input row and, for vertical filtering, the next nearest (above for
        // even output rows, below for odd ones), repeating the edge rows.
        let i = (y / self.v).min(last_row);
        let near = if y.is_multiple_of(2) {
            i.saturating_sub(1)
        } else {
            (i + 1).min(last_row)
        };
        let fancy_h = p.width > 2;
        match (self.h, self.v) {
            (1, 1) => return &p.row(i)[..width],
            (2, 1) if fancy_h => triangle(p.row(i), &mut self.row, [1, 2], 2),
            (1, 2) => {
                let bias = if y.is_multiple_of(2) { 1 } else { 2 };
                for ((o, &a), &b) in self.row.iter_mut().zip(p.row(i)).zip(p.row(near)) {
                    *o = ((3 * i32::from(a) + i32::from(b) + bias) >> 2) as u8;
                }
            }
            (2, 2) if fancy_h => {
                for ((sum, &a), &b) in self.sums.iter_mut().zip(p.row(i)).zip(p.row(near)) {
                    *sum = 3 * i32::from(a) + i32::from(b);
                }
                triangle(&self.sums, &mut self.row, [8, 7], 4);
            }
            (h, _) => {
                // Replication ("box filter"): libjpeg's choice for other ratios and for 2:1
                // planes at most 2 samples wide.
                for (chunk, &value) in self.row.chunks_exact_mut(h).zip(p.row(i)) {
                    chunk.fill(value);
                }
            }
        }
        &self.row[..width]
    }
}

/// Horizontal triangle filter doubling `input` into `out`: each output is 3/4 of the nearer
/// input and 1/4 of the farther, plus `bias[0]` (left output of a pair) or `bias[1]` (right),
/// shifted right by `shift`; the first and last inputs stand in for their missing neighbours.
/// With the column sums of the 2:1 vertical filter as input this is libjpeg's h2v2 filter.
fn triangle<T: Copy + Into<i32>>(input: &[T], out: &mut [u8], bias: [i32; 2], shift: u32) {
    let n = input.len();
    let at = |j: usize| -> i32 { input[j].into() };
    // libjpeg special-cases the first and last columns; taking the edge sample as its own
    // missing neighbour gives the same values (e.g. `(4 * x + 8) >> 4`).
    let mut pair = |j: usize, left: i32, this: i32, right: i32| {
        out[2 * j] = ((3 * this + left + bias[0]) >> shift) as u8;
        out[2 * j + 1] = ((3 * this + right + bias[1]) >> shift) as u8;
    };
    pair(0, at(0), at(0), at(1.min(n - 1)));
    for (j, w) in input.windows(3).enumerate() {
        pair(j + 1, w[0].into(), w[1].into(), w[2].into());
    }
    if n > 1 {
        pair(n - 1, at(n - 2), at(n - 1), at(n - 1));
    }
}

const SCALEBITS: u32 = 16;
const ONE_HALF: i32 = 1 << (SCALEBITS - 1);

/// `FIX(x)` of libjpeg's colour converter: `x` in 16-bit fixed point, rounded.
const fn fix(x: f64) -> i32 {
    (x * (1 << SCALEBITS) as f64 + 0.5) as i32
}

/// libjpeg's YCbCr -> RGB tables (ITU-R BT.601 with full-range chroma), indexed by Cb or Cr.
pub(super) struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i32; 256],
    cb_g: [i32; 256],
}

impl YccTables {
    pub(super) fn new() -> Self {
        let mut t = YccTables {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256 {
            let x = i as i32 - 128;
            t.cr_r[i] = (fix(1.40200) * x + ONE_HALF) >> SCALEBITS;
            t.cb_b[i] = (fix(1.77200) * x + ONE_HALF) >> SCALEBITS;
            t.cr_g[i] = -fix(0.71414) * x;
            t.cb_g[i] = -fix(0.34414) * x + ONE_HALF;
        }
        t
    }

    /// One pixel's `(R, G, B)`, each clamped to 0..=255.
    #[inline(always)]
    pub(super) fn rgb(&self, y: u8, cb: u8, cr: u8) -> [u8; 3] {
        let y = i32::from(y);
        let (cb, cr) = (usize::from(cb), usize::from(cr));
        let clamp = |v: i32| v.clamp(0, 255) as u8;
        [
            clamp(y + self.cr_r[cr]),
            clamp(y + ((self.cb_g[cb] + self.cr_g[cr]) >> SCALEBITS)),
            clamp(y + self.cb_b[cb]),
        ]
    }
}

/// A row of YCbCr samples to interleaved RGB, with the tables' arithmetic done in vector
/// lanes: each table entry is `(FIX(c) * x + ONE_HALF) >> 16` (or its unshifted form), and
/// the constants above 2^15 are split into a shift and a 16-bit multiple so every product is
/// 16x16 bits. Equal to [`YccTables::rgb`] on every input (tested over all of them).
pub(super) fn ycc_row_to_rgb(y: &[u8], cb: &[u8], cr: &[u8], scratch: &mut [Vec<u8>; 3], out: &mut [u8]) {
    let n = y.len();
    let [r_row, g_row, b_row] = scratch;
    r_row.resize(n, 0);
    g_row.resize(n, 0);
    b_row.resize(n, 0);
    let lanes = r_row.iter_mut().zip(g_row.iter_mut()).zip(b_row.iter_mut());
    for ((((r, g), b), (&l, &u)), &v) in lanes.zip(y.iter().zip(cb)).zip(cr) {
        let l = i32::from(l);
        let u = i32::from(u) - 128;
        let v = i32::from(v) - 128;
        // FIX(1.402) = 91881 = 65536 + 26345; FIX(1.772) = 116130 = 131072 - 14942;
        // FIX(0.34414) = 22554; FIX(0.71414) = 46802 = 65536 - 18734.
        let red = ((v << 16) + v * 26345 + ONE_HALF) >> SCALEBITS;
        let blue = ((u << 17) - u * 14942 + ONE_HALF) >> SCALEBITS;
        let green = (-(u * 22554) - (v << 16) + v * 18734 + ONE_HALF) >> SCALEBITS;
        *r = (l + red).clamp(0, 255) as u8;
        *g = (l + green).clamp(0, 255) as u8;
        *b = (l + blue).clamp(0, 255) as u8;
    }
    for (((pixel, &r), &g), &b) in out
        .chunks_exact_mut(3)
        .zip(r_row.iter())
        .zip(g_row.iter())
        .zip(b_row.iter())
    {
        pixel[0] = r;
        pixel[1] = g;
        pixel[2] = b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(samples: &[u8], width: usize, height: usize) -> Plane<'_> {
        Plane {
            samples,
            stride: width,
            width,
            height,
        }
    }

    fn upsample(plane: Plane, h: usize, v: usize, width: usize, height: usize) -> Vec<u8> {
        let mut up = Upsampler::new(plane, h, v);
        (0..height).flat_map(|y| up.row(y, width).to_vec()).collect()
    }

    /// The triangle filter by hand: first and last columns repeat, biases 1 and 2.
    #[test]
    fn horizontal_fancy_upsampling_by_hand() {
        let samples = [0u8, 100, 200];
        let out = upsample(plane(&samples, 3, 1), 2, 1, 6, 1);
        // x0: (0*3 + 0 + 1) >> 2; x1: (0*3 + 100 + 2) >> 2; x2: (300 + 0 + 1) >> 2; ...
        assert_eq!(out, [0, 25, 75, 125, 175, 200]);
    }

    /// Two samples wide is replicated, as libjpeg-turbo only filters wider planes.
    #[test]
    fn narrow_planes_are_replicated() {
        let samples = [10u8, 90];
        assert_eq!(upsample(plane(&samples, 2, 1), 2, 1, 4, 1), [10, 10, 90, 90]);
    }

    /// Vertical filtering uses bias 1 above and 2 below, and repeats the edge rows.
    #[test]
    fn vertical_fancy_upsampling_by_hand() {
        let samples = [0u8, 100];
        let out = upsample(plane(&samples, 1, 2), 1, 2, 1, 4);
        assert_eq!(out, [0, 25, 75, 100]);
    }

    /// The vector form of the conversion equals the tables on every (Y, Cb, Cr).
    #[test]
    fn vector_conversion_equals_the_tables() {
        let t = YccTables::new();
        let mut scratch = [Vec::new(), Vec::new(), Vec::new()];
        let y: Vec<u8> = (0..=255).collect();
        let mut out = vec![0u8; 256 * 3];
        for cb in 0..=255u8 {
            for cr in 0..=255u8 {
                ycc_row_to_rgb(&y, &[cb; 256], &[cr; 256], &mut scratch, &mut out);
                for (l, pixel) in out.chunks_exact(3).enumerate() {
                    assert_eq!(pixel, t.rgb(l as u8, cb, cr), "Y {l} Cb {cb} Cr {cr}");
                }
            }
        }
    }

    /// The YCbCr tables give the familiar primaries.
    #[test]
    fn ycc_tables_convert_primaries() {
        let t = YccTables::new();
        assert_eq!(t.rgb(128, 128, 128), [128, 128, 128]);
        assert_eq!(t.rgb(76, 85, 255), [254, 0, 0]);
        assert_eq!(t.rgb(0, 128, 128), [0, 0, 0]);
    }
}

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

/// Upsamples `plane` by the integral factors `(h, v)` to `width` x `height` samples.
pub(super) fn upsample(plane: &Plane, h: usize, v: usize, width: usize, height: usize) -> Vec<u8> {
    let mut out = vec![0u8; width * height];
    let at = |row: usize, col: usize| i32::from(plane.samples[row * plane.stride + col]);
    let last_row = plane.height - 1;
    let last_col = plane.width - 1;
    let fancy_h = plane.width > 2;
    match (h, v) {
        (1, 1) => {
            for y in 0..height {
                out[y * width..(y + 1) * width]
                    .copy_from_slice(&plane.samples[y * plane.stride..y * plane.stride + width]);
            }
        }
        (2, 1) if fancy_h => {
            for y in 0..height {
                let row = &mut out[y * width..(y + 1) * width];
                for (x, o) in row.iter_mut().enumerate() {
                    let j = x / 2;
                    let value = if x % 2 == 0 {
                        3 * at(y, j) + at(y, j.saturating_sub(1)) + 1
                    } else {
                        3 * at(y, j) + at(y, (j + 1).min(last_col)) + 2
                    };
                    *o = (value >> 2) as u8;
                }
            }
        }
        (1, 2) => {
            for y in 0..height {
                let i = y / 2;
                let (near, bias) = if y % 2 == 0 {
                    (i.saturating_sub(1), 1)
                } else {
                    ((i + 1).min(last_row), 2)
                };
                let row = &mut out[y * width..(y + 1) * width];
                for (x, o) in row.iter_mut().enumerate() {
                    *o = ((3 * at(i, x) + at(near, x) + bias) >> 2) as u8;
                }
            }
        }
        (2, 2) if fancy_h => {
            let mut sums = vec![0i32; plane.width];
            for y in 0..height {
                let i = y / 2;
                let near = if y % 2 == 0 {
                    i.saturating_sub(1)
                } else {
                    (i + 1).min(last_row)
                };
                for (j, sum) in sums.iter_mut().enumerate() {
                    *sum = 3 * at(i, j) + at(near, j);
                }
                let row = &mut out[y * width..(y + 1) * width];
                for (x, o) in row.iter_mut().enumerate() {
                    let j = x / 2;
                    let value = if x % 2 == 0 {
                        3 * sums[j] + sums[j.saturating_sub(1)] + 8
                    } else {
                        3 * sums[j] + sums[(j + 1).min(last_col)] + 7
                    };
                    *o = (value >> 4) as u8;
                }
            }
        }
        _ => {
            // Replication ("box filter"); for 2:1 this is libjpeg's choice for narrow planes.
            for y in 0..height {
                let source = (y / v).min(last_row);
                let row = &mut out[y * width..(y + 1) * width];
                for (x, o) in row.iter_mut().enumerate() {
                    *o = plane.samples[source * plane.stride + x / h];
                }
            }
        }
    }
    out
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

    /// The triangle filter by hand: first and last columns repeat, biases 1 and 2.
    #[test]
    fn horizontal_fancy_upsampling_by_hand() {
        let samples = [0u8, 100, 200];
        let out = upsample(&plane(&samples, 3, 1), 2, 1, 6, 1);
        // x0: (0*3 + 0 + 1) >> 2; x1: (0*3 + 100 + 2) >> 2; x2: (300 + 0 + 1) >> 2; ...
        assert_eq!(out, [0, 25, 75, 125, 175, 200]);
    }

    /// Two samples wide is replicated, as libjpeg-turbo only filters wider planes.
    #[test]
    fn narrow_planes_are_replicated() {
        let samples = [10u8, 90];
        assert_eq!(upsample(&plane(&samples, 2, 1), 2, 1, 4, 1), [10, 10, 90, 90]);
    }

    /// Vertical filtering uses bias 1 above and 2 below, and repeats the edge rows.
    #[test]
    fn vertical_fancy_upsampling_by_hand() {
        let samples = [0u8, 100];
        let out = upsample(&plane(&samples, 1, 2), 1, 2, 1, 4);
        assert_eq!(out, [0, 25, 75, 100]);
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

//! Pillow's 8-bit resampling (`ImagingResample`), bit-exact: separable convolution with 22-bit
//! fixed-point weights, a uint8 intermediate between passes, premultiplied alpha for RGBA, and
//! `NEAREST` by accumulated double coordinates.

use std::borrow::Cow;

use crate::spec::{Filter, ResizeParams, ResizeSize};

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Fixed-point filter taps for one axis: output `o` reads `len[o]` inputs from `start[o]`
/// with weights `weights[o * taps ..]` (zero-padded to `taps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AxisCoefficients {
    pub in_size: usize,
    pub out_size: usize,
    pub taps: usize,
    pub start: Vec<u32>,
    pub len: Vec<u32>,
    pub weights: Vec<i32>,
}

/// The filter's support in input pixels, before widening for downscaling; `None` for nearest.
fn filter_support(filter: Filter) -> Option<f64> {
    match filter {
        Filter::Nearest => None,
        Filter::Bilinear => Some(1.0),
        Filter::Bicubic => Some(2.0),
        Filter::Lanczos => Some(3.0),
    }
}

/// Taps per output of [`AxisCoefficients::new`] (saturating).
fn taps(in_size: usize, out_size: usize, support: f64, antialias: bool) -> usize {
    let scale = f64::from(in_size as f32) / out_size as f64;
    let filterscale = if antialias { scale.max(1.0) } else { 1.0 };
    // A float-to-int `as` saturates.
    ((support * filterscale).ceil() as usize)
        .saturating_mul(2)
        .saturating_add(1)
}

/// Coefficients [`ResizePlan::new`] stores for one axis (`out_size * taps`, saturating), so a
/// caller can refuse a huge table before building it. Zero when the axis keeps its size or the
/// filter is nearest (index tables only).
pub fn coefficient_count(in_size: usize, out_size: usize, params: &ResizeParams) -> usize {
    match filter_support(params.filter) {
        Some(support) if in_size != out_size && out_size > 0 => {
            out_size.saturating_mul(taps(in_size, out_size, support, params.antialias))
        }
        _ => 0,
    }
}

impl AxisCoefficients {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`. With `antialias` the support
    /// widens by the downscale factor (Pillow always does this).
    pub fn new(in_size: usize, out_size: usize, filter: Filter, antialias: bool) -> Self {
        let kernel: fn(f64) -> f64 = match filter {
            Filter::Bilinear => bilinear,
            Filter::Bicubic => bicubic,
            Filter::Lanczos => lanczos,
            // Nearest uses index tables; its callers never get here.
            Filter::Nearest => bilinear,
        };
        let base_support = filter_support(filter).unwrap_or(1.0);
        let in_extent = f64::from(in_size as f32);
        let scale = in_extent / out_size as f64;
        let filterscale = if antialias { scale.max(1.0) } else { 1.0 };
        let support = base_support * filterscale;
        let taps = taps(in_size, out_size, base_support, antialias);
        let inv = 1.0 / filterscale;
        let mut start = Vec::with_capacity(out_size);
        let mut len = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * taps];
        let mut w = vec![0.0f64; taps];
        for o in 0..out_size {
            let center = (o as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin).min(taps);
            let mut total = 0.0;
            for (x, slot) in w.iter_mut().enumerate().take(n) {
                *slot = kernel((x as f64 + xmin as f64 - center + 0.5) * inv);
                total += *slot;
            }
            for (x, &v) in w.iter().enumerate().take(n) {
                let v = if total != 0.0 { v / total } else { v };
                let fixed = v * f64::from(1u32 << PRECISION_BITS);
                weights[o * taps + x] = if v < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            start.push(xmin as u32);
            len.push(n as u32);
        }
        AxisCoefficients {
            in_size,
            out_size,
            taps,
            start,
            len,
            weights,
        }
    }

    /// First input index any output reads, and one past the last.
    pub fn input_span(&self) -> (usize, usize) {
        let first = self.start[0] as usize;
        let last = self.out_size - 1;
        (first, self.start[last] as usize + self.len[last] as usize)
    }

    fn shifted(&self, offset: usize) -> Self {
        let mut c = self.clone();
        c.start.iter_mut().for_each(|s| *s -= offset as u32);
        c.in_size -= offset;
        c
    }
}

/// What a resize does for one input size, precomputed once and reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResizeKind {
    /// Same size: Pillow returns a copy.
    Copy,
    /// Source row and column per output pixel.
    Nearest { rows: Vec<u32>, cols: Vec<u32> },
    /// Separable convolution. `rows` limits the first (horizontal) pass to the rows the vertical
    /// pass reads; vertical coefficients are then relative to `rows.0`.
    Convolution {
        horizontal_first: bool,
        rows: (usize, usize),
        horizontal: Option<AxisCoefficients>,
        vertical: Option<AxisCoefficients>,
        premultiply: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResizePlan {
    pub in_height: usize,
    pub in_width: usize,
    pub out_height: usize,
    pub out_width: usize,
    pub channels: usize,
    pub kind: ResizeKind,
}

/// torchvision `_compute_resized_output_size` for an int size: the shorter side becomes `side`,
/// the longer `int(side * long / short)`.
pub fn output_size(params: &ResizeParams, height: usize, width: usize) -> (usize, usize) {
    match params.size {
        ResizeSize::Exact { height, width } => (height, width),
        ResizeSize::ShorterSide(side) => {
            let (short, long) = if width <= height {
                (width, height)
            } else {
                (height, width)
            };
            // The product in u64 stays exact below 2^53 (sides are bounded far below that); the
            // float-to-int `as` saturates rather than wrapping.
            let new_long = ((side as u64 * long as u64) as f64 / short as f64) as usize;
            if width <= height {
                (new_long, side)
            } else {
                (side, new_long)
            }
        }
    }
}

/// Pillow `NEAREST` source indices: `pos = 0.5 * in/out`, then `(int)pos` and `pos += in/out`.
pub fn nearest_indices(in_size: usize, out_size: usize) -> Vec<u32> {
    let step = f64::from(in_size as f32) / out_size as f64;
    let mut pos = step * 0.5;
    (0..out_size)
        .map(|_| {
            let i = pos as u32;
            pos += step;
            i.min(in_size as u32 - 1)
        })
        .collect()
}

impl ResizePlan {
    pub fn new(params: &ResizeParams, height: usize, width: usize, channels: usize) -> Self {
        let (out_height, out_width) = output_size(params, height, width);
        let kind = if (out_height, out_width) == (height, width) {
            ResizeKind::Copy
        } else if params.filter == Filter::Nearest {
            ResizeKind::Nearest {
                rows: nearest_indices(height, out_height),
                cols: nearest_indices(width, out_width),
            }
        } else {
            let (dh, dw) = (height as i64 - out_height as i64, width as i64 - out_width as i64);
            // Pillow >= 13 runs the vertical pass first when it shrinks much more than the other.
            let horizontal_first = !(dh > 0 && dh > 2 * dw);
            let need_h = out_width != width;
            let need_v = out_height != height;
            let vertical = AxisCoefficients::new(height, out_height, params.filter, params.antialias);
            let horizontal =
                need_h.then(|| AxisCoefficients::new(width, out_width, params.filter, params.antialias));
            let (rows, vertical) = if horizontal_first && need_h {
                let span = vertical.input_span();
                (span, need_v.then(|| vertical.shifted(span.0)))
            } else {
                ((0, height), need_v.then_some(vertical))
            };
            ResizeKind::Convolution {
                horizontal_first,
                rows,
                horizontal,
                vertical,
                premultiply: channels == 4,
            }
        };
        ResizePlan {
            in_height: height,
            in_width: width,
            out_height,
            out_width,
            channels,
            kind,
        }
    }

    /// Resizes `(H, W, C)` uint8 pixels.
    pub fn process(&self, pixels: &[u8]) -> Vec<u8> {
        let c = self.channels;
        match &self.kind {
            ResizeKind::Copy => pixels.to_vec(),
            ResizeKind::Nearest { rows, cols } => {
                let mut out = Vec::with_capacity(self.out_height * self.out_width * c);
                for &r in rows {
                    let row = &pixels[r as usize * self.in_width * c..];
                    for &col in cols {
                        out.extend_from_slice(&row[col as usize * c..][..c]);
                    }
                }
                out
            }
            ResizeKind::Convolution { .. } => {
                // Borrowed until the first pass writes a new image: no copy of the input.
                let mut img = Cow::Borrowed(pixels);
                for pass in self.passes() {
                    match pass {
                        ResizePass::Premultiply => img = premultiply_alpha(&img).into(),
                        ResizePass::Horizontal {
                            coeffs,
                            row_offset,
                            rows,
                        } => {
                            let stride = coeffs.in_size * c;
                            let band = &img[row_offset * stride..(row_offset + rows) * stride];
                            img = horizontal_pass(band, rows, coeffs, c).into();
                        }
                        ResizePass::Vertical { coeffs, width } => {
                            img = vertical_pass(&img, width, coeffs, c).into()
                        }
                        ResizePass::Unpremultiply => unpremultiply_alpha(img.to_mut()),
                    }
                }
                img.into_owned()
            }
        }
    }

    /// The steps of a convolution resize in Pillow's order, shared by every backend so the
    /// pass-order rules live in one place. Empty for `Copy` and `Nearest`.
    pub fn passes(&self) -> Vec<ResizePass<'_>> {
        let ResizeKind::Convolution {
            horizontal_first,
            rows,
            horizontal,
            vertical,
            premultiply,
        } = &self.kind
        else {
            return Vec::new();
        };
        let mut passes = Vec::with_capacity(4);
        if *premultiply {
            passes.push(ResizePass::Premultiply);
        }
        if *horizontal_first {
            let mut width = self.in_width;
            if let Some(coeffs) = horizontal {
                passes.push(ResizePass::Horizontal {
                    coeffs,
                    row_offset: rows.0,
                    rows: rows.1 - rows.0,
                });
                width = coeffs.out_size;
            }
            if let Some(coeffs) = vertical {
                passes.push(ResizePass::Vertical { coeffs, width });
            }
        } else {
            let mut height = self.in_height;
            if let Some(coeffs) = vertical {
                passes.push(ResizePass::Vertical {
                    coeffs,
                    width: self.in_width,
                });
                height = coeffs.out_size;
            }
            if let Some(coeffs) = horizontal {
                passes.push(ResizePass::Horizontal {
                    coeffs,
                    row_offset: 0,
                    rows: height,
                });
            }
        }
        if *premultiply {
            passes.push(ResizePass::Unpremultiply);
        }
        passes
    }
}

/// One step of a convolution resize (see [`ResizePlan::passes`]).
#[derive(Debug, Clone, Copy)]
pub enum ResizePass<'a> {
    Premultiply,
    /// Over `rows` rows starting at `row_offset` of an image `coeffs.in_size` wide.
    Horizontal {
        coeffs: &'a AxisCoefficients,
        row_offset: usize,
        rows: usize,
    },
    /// Over an image `width` wide.
    Vertical {
        coeffs: &'a AxisCoefficients,
        width: usize,
    },
    Unpremultiply,
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One axis's taps rearranged for the vectorized passes. Every output reads exactly `taps`
/// inputs from `start[o]`: a window that would run past the end moves left and its weights
/// move right over zeros, which leaves every sum unchanged. Each 22-bit weight `w` is split
/// as `w = hi * 2^16 + lo` with `lo` its low 16 bits read as signed (so `hi` absorbs the
/// borrow), both `i16`, so the loops need only 16-bit multiplies, which SSE2 has (`pmullw`,
/// `pmaddwd`) and baseline x86-64 lacks for 32 bits.
///
/// Why the sums stay the bytes the scalar `i32` loop gives: that loop computes
/// `S = 2^21 + sum(p * w)` modulo 2^32 (its `i32` wraps, and only the wrapped value is ever
/// shifted and clamped), and modulo 2^32
/// `p * w = 2^16 * (p * hi) + p * lo`. So `S = 2^21 + 2^16 * sum(p * hi) + sum(p * lo)`, where
/// `2^16 * sum(p * hi)` depends only on `sum(p * hi)` modulo 2^16: the `hi` sums are kept in
/// wrapping `i16` lanes. Each `p * lo` (`p` in 0..=255, `lo` in -2^15..2^15) is exact in `i32`
/// (below 2^23 in magnitude) and the `lo` sums wrap in `i32` like the original. Every step is
/// exact modulo 2^32 and addition modulo 2^32 is associative and commutative, so any grouping
/// of taps, pixels or rows gives the same bytes, for every weight, tap count and filter, even
/// where the scalar sum itself would wrap (it does not for normalized weights: each output's
/// `sum(|w|)` is below 2^23 for the filters here, so `255 * sum(|w|)` stays below 2^31).
struct SplitTaps {
    in_size: usize,
    out_size: usize,
    taps: usize,
    start: Vec<usize>,
    hi: Vec<i16>,
    lo: Vec<i16>,
}

impl SplitTaps {
    /// `extent`: the inputs there are to read, at least every `start + len` (the vertical pass
    /// after a horizontal band has fewer rows than `k.in_size`).
    fn new(k: &AxisCoefficients, extent: usize) -> Self {
        // `len <= min(k.taps, extent)` and `start + len <= extent` hold for every output.
        let taps = k.taps.min(extent);
        let mut start = Vec::with_capacity(k.out_size);
        let mut hi = vec![0i16; k.out_size * taps];
        let mut lo = vec![0i16; k.out_size * taps];
        for o in 0..k.out_size {
            let first = k.start[o] as usize;
            let shifted = first.min(extent - taps);
            let offset = first - shifted;
            let weights = &k.weights[o * k.taps..][..k.len[o] as usize];
            for (i, &w) in weights.iter().enumerate() {
                let low = w as i16;
                hi[o * taps + offset + i] = (w.wrapping_sub(i32::from(low)) >> 16) as i16;
                lo[o * taps + offset + i] = low;
            }
            start.push(shifted);
        }
        SplitTaps {
            in_size: extent,
            out_size: k.out_size,
            taps,
            start,
            hi,
            lo,
        }
    }

    fn hi_lo(&self, o: usize) -> (&[i16], &[i16]) {
        (
            &self.hi[o * self.taps..][..self.taps],
            &self.lo[o * self.taps..][..self.taps],
        )
    }
}

/// `L` independent sums `2^21 + sum_t window(t)[i] * w_t`, clipped: the one inner loop of both
/// passes (see [`SplitTaps`] for why it equals the scalar `i32` sum). `L` is a const so the
/// lanes stay in vector registers across all taps and the lane loop vectorizes.
#[inline(always)]
fn convolve_lanes<'a, const L: usize>(window: impl Fn(usize) -> &'a [u8], hi: &[i16], lo: &[i16]) -> [u8; L] {
    let mut acc_hi = [0i16; L];
    let mut acc_lo = [1i32 << (PRECISION_BITS - 1); L];
    // Taps two at a time, `hi` and `lo` in separate lane loops: LLVM then keeps every
    // accumulator in a register, runs the `hi` loop 8 lanes per `pmullw` and feeds each
    // `pmaddwd` from one zero-extended load (measured; one tap a time with both sums in one
    // loop vectorized only 4 lanes wide and spilled).
    let pairs = hi.len() / 2;
    for t in 0..pairs {
        let p0: &[u8; L] = window(2 * t)[..L].try_into().expect("window has L lanes");
        let p1: &[u8; L] = window(2 * t + 1)[..L].try_into().expect("window has L lanes");
        let (h0, h1) = (hi[2 * t], hi[2 * t + 1]);
        let (l0, l1) = (i32::from(lo[2 * t]), i32::from(lo[2 * t + 1]));
        for i in 0..L {
            let h = i16::from(p0[i])
                .wrapping_mul(h0)
                .wrapping_add(i16::from(p1[i]).wrapping_mul(h1));
            acc_hi[i] = acc_hi[i].wrapping_add(h);
        }
        for i in 0..L {
            // |p * lo| < 2^23: exact, and so is the sum of two.
            acc_lo[i] = acc_lo[i].wrapping_add(i32::from(p0[i]) * l0 + i32::from(p1[i]) * l1);
        }
    }
    if hi.len() % 2 == 1 {
        let t = hi.len() - 1;
        let p: &[u8; L] = window(t)[..L].try_into().expect("window has L lanes");
        for i in 0..L {
            acc_hi[i] = acc_hi[i].wrapping_add(i16::from(p[i]).wrapping_mul(hi[t]));
            acc_lo[i] = acc_lo[i].wrapping_add(i32::from(p[i]) * i32::from(lo[t]));
        }
    }
    let mut out = [0u8; L];
    for i in 0..L {
        out[i] = clip8((i32::from(acc_hi[i]) << 16).wrapping_add(acc_lo[i]));
    }
    out
}

/// Lanes per call of [`convolve_lanes`] in the row loops: 16 `i16` and 16 `i32` accumulators
/// fill 6 of SSE2's 16 vector registers.
const LANES: usize = 16;

/// Output `o` of `k` over "rows" of `stride` bytes in `src` (input rows for the vertical pass,
/// tile columns for the horizontal one): `LANES` bytes at a time, then the tail.
fn convolve_row(src: &[u8], stride: usize, k: &SplitTaps, o: usize, dst: &mut [u8]) {
    let (hi, lo) = k.hi_lo(o);
    let window = &src[k.start[o] * stride..][..k.taps * stride];
    let main = stride - stride % LANES;
    for (x, chunk) in dst[..main].chunks_exact_mut(LANES).enumerate() {
        let x = x * LANES;
        chunk.copy_from_slice(&convolve_lanes::<LANES>(|t| &window[t * stride + x..], hi, lo));
    }
    // The last `stride % LANES` bytes, one lane at a time with the same arithmetic.
    for (x, dst) in dst[..stride].iter_mut().enumerate().skip(main) {
        *dst = convolve_lanes::<1>(|t| &window[t * stride + x..], hi, lo)[0];
    }
}

fn horizontal_pass(img: &[u8], rows: usize, k: &AxisCoefficients, c: usize) -> Vec<u8> {
    let taps = SplitTaps::new(k, k.in_size);
    match c {
        1 => horizontal_pass_n::<1, 16>(img, rows, &taps),
        3 => horizontal_pass_n::<3, 16>(img, rows, &taps),
        4 => horizontal_pass_n::<4, 8>(img, rows, &taps),
        _ => unreachable!("images have 1, 3 or 4 channels"),
    }
}

/// The horizontal pass over `R` rows at a time: the block is transposed into a tile with pixel
/// `x` of every row side by side (`R * C` bytes at `tile[x * R * C..]`), so an output pixel of
/// all `R` rows is one vertical-style sum over contiguous lanes ([`convolve_row`]). `R * C` is
/// a multiple of [`LANES`].
fn horizontal_pass_n<const C: usize, const R: usize>(img: &[u8], rows: usize, k: &SplitTaps) -> Vec<u8> {
    let lanes = R * C;
    let (in_w, out_w) = (k.in_size, k.out_size);
    let mut out = vec![0u8; rows * out_w * C];
    if in_w == 0 || out_w == 0 {
        return out;
    }
    let mut tile = vec![0u8; in_w * lanes];
    let mut sums = vec![0u8; lanes];
    for (block, out_block) in img[..rows * in_w * C]
        .chunks(R * in_w * C)
        .zip(out.chunks_mut(R * out_w * C))
    {
        // A short last block leaves the previous block's rows in the unused lanes: they are
        // computed and dropped.
        let n = block.len() / (in_w * C);
        for (r, row) in block.chunks_exact(in_w * C).enumerate() {
            for (dst, px) in tile.chunks_exact_mut(lanes).zip(row.chunks_exact(C)) {
                dst[r * C..][..C].copy_from_slice(px);
            }
        }
        for o in 0..out_w {
            convolve_row(&tile, lanes, k, o, &mut sums);
            for (r, px) in sums.chunks_exact(C).take(n).enumerate() {
                out_block[(r * out_w + o) * C..][..C].copy_from_slice(px);
            }
        }
    }
    out
}

fn vertical_pass(img: &[u8], width: usize, k: &AxisCoefficients, c: usize) -> Vec<u8> {
    let stride = width * c;
    if stride == 0 {
        return vec![0u8; k.out_size * stride];
    }
    let k = SplitTaps::new(k, img.len() / stride);
    let mut out = vec![0u8; k.out_size * stride];
    for (o, out_row) in out.chunks_exact_mut(stride).enumerate() {
        convolve_row(img, stride, &k, o, out_row);
    }
    out
}

/// Pillow's 8-bit premultiply: `t = c * a + 128; c = ((t >> 8) + t) >> 8`.
pub fn premultiply_alpha(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| {
            let a = u32::from(p[3]);
            let mul = |c: u8| {
                let t = u32::from(c) * a + 128;
                (((t >> 8) + t) >> 8) as u8
            };
            [mul(p[0]), mul(p[1]), mul(p[2]), p[3]]
        })
        .collect()
}

/// Pillow's un-premultiply: colour kept for alpha 0 or 255, else `min(255, 255 * c / a)`.
pub fn unpremultiply_alpha(rgba: &mut [u8]) {
    for p in rgba.chunks_exact_mut(4) {
        let a = u32::from(p[3]);
        if a != 0 && a != 255 {
            for c in &mut p[..3] {
                *c = (255 * u32::from(*c) / a).min(255) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The straightforward scalar passes the vectorized ones replaced: the oracle. Sums wrap as
    /// the original `i32` loop does in a release build, so weights far outside the normalized
    /// range can be compared too.
    mod reference {
        use super::super::{clip8, AxisCoefficients, PRECISION_BITS};

        pub fn horizontal_pass(img: &[u8], rows: usize, k: &AxisCoefficients, c: usize) -> Vec<u8> {
            let in_w = k.in_size;
            let mut out = vec![0u8; rows * k.out_size * c];
            for r in 0..rows {
                for o in 0..k.out_size {
                    let start = k.start[o] as usize;
                    for ch in 0..c {
                        let mut acc = 1i32 << (PRECISION_BITS - 1);
                        for i in 0..k.len[o] as usize {
                            let p = i32::from(img[(r * in_w + start + i) * c + ch]);
                            acc = acc.wrapping_add(p.wrapping_mul(k.weights[o * k.taps + i]));
                        }
                        out[(r * k.out_size + o) * c + ch] = clip8(acc);
                    }
                }
            }
            out
        }

        pub fn vertical_pass(img: &[u8], width: usize, k: &AxisCoefficients, c: usize) -> Vec<u8> {
            let stride = width * c;
            let mut out = vec![0u8; k.out_size * stride];
            for o in 0..k.out_size {
                let start = k.start[o] as usize;
                for x in 0..stride {
                    let mut acc = 1i32 << (PRECISION_BITS - 1);
                    for i in 0..k.len[o] as usize {
                        let p = i32::from(img[(start + i) * stride + x]);
                        acc = acc.wrapping_add(p.wrapping_mul(k.weights[o * k.taps + i]));
                    }
                    out[o * stride + x] = clip8(acc);
                }
            }
            out
        }
    }

    /// [`ResizePlan::process`] with the reference passes.
    fn reference_process(plan: &ResizePlan, pixels: &[u8]) -> Vec<u8> {
        let c = plan.channels;
        let mut img = pixels.to_vec();
        for pass in plan.passes() {
            match pass {
                ResizePass::Premultiply => img = premultiply_alpha(&img),
                ResizePass::Horizontal {
                    coeffs,
                    row_offset,
                    rows,
                } => {
                    let stride = coeffs.in_size * c;
                    let band = &img[row_offset * stride..(row_offset + rows) * stride];
                    img = reference::horizontal_pass(band, rows, coeffs, c);
                }
                ResizePass::Vertical { coeffs, width } => {
                    img = reference::vertical_pass(&img, width, coeffs, c)
                }
                ResizePass::Unpremultiply => unpremultiply_alpha(&mut img),
            }
        }
        img
    }

    /// xorshift64*: a fixed-seed generator, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        /// Pixels that hit the clamps and, for RGBA, alpha 0 and 255 often.
        fn pixels(&mut self, n: usize) -> Vec<u8> {
            (0..n)
                .map(|_| match self.below(8) {
                    0 => 0,
                    1 => 255,
                    _ => self.next() as u8,
                })
                .collect()
        }
    }

    const FILTERS: [Filter; 4] = [
        Filter::Nearest,
        Filter::Bilinear,
        Filter::Bicubic,
        Filter::Lanczos,
    ];

    fn check(
        rng: &mut Rng,
        (h, w): (usize, usize),
        (out_h, out_w): (usize, usize),
        filter: Filter,
        antialias: bool,
        c: usize,
    ) {
        let params = ResizeParams {
            size: ResizeSize::Exact {
                height: out_h,
                width: out_w,
            },
            filter,
            antialias,
        };
        let plan = ResizePlan::new(&params, h, w, c);
        let pixels = rng.pixels(h * w * c);
        let got = plan.process(&pixels);
        assert_eq!(got.len(), out_h * out_w * c);
        let want = match &plan.kind {
            ResizeKind::Convolution { .. } => reference_process(&plan, &pixels),
            _ => got.clone(),
        };
        assert!(
            got == want,
            "{h}x{w}x{c} -> {out_h}x{out_w} {filter:?} antialias={antialias}: first difference at byte {:?}",
            got.iter().zip(&want).position(|(a, b)| a != b)
        );
    }

    #[test]
    fn vectorized_passes_match_the_scalar_reference_bytes() {
        let mut rng = Rng(0x5eed_0fca_11ed);
        for _ in 0..600 {
            let size = |rng: &mut Rng| {
                let max = if rng.below(4) == 0 { 300 } else { 40 };
                1 + rng.below(max)
            };
            let (h, w) = (size(&mut rng), size(&mut rng));
            let (out_h, out_w) = (size(&mut rng), size(&mut rng));
            let filter = FILTERS[rng.below(4)];
            let antialias = rng.below(5) != 0;
            let c = [1, 3, 4][rng.below(3)];
            check(&mut rng, (h, w), (out_h, out_w), filter, antialias, c);
        }
    }

    #[test]
    fn vectorized_passes_match_at_the_edges() {
        let mut rng = Rng(7);
        let shapes = [
            // One pixel in, one out; one pixel up to many.
            ((1, 1), (1, 2)),
            ((1, 1), (37, 1)),
            ((1, 1), (9, 17)),
            // Huge ratios: every input under one output, and windows wider than the image.
            ((1, 5000), (1, 1)),
            ((3000, 2), (2, 3)),
            ((2, 4097), (1, 3)),
            // Only one axis changes (the other pass is skipped); the vertical pass first.
            ((17, 33), (17, 20)),
            ((40, 9), (13, 9)),
            ((301, 20), (7, 19)),
            // Rows not a multiple of the row block; widths not a multiple of the lane count.
            ((15, 61), (23, 45)),
            ((33, 65), (31, 11)),
            // The benchmark's shapes.
            ((480, 640), (224, 224)),
            ((480, 640), (256, 341)),
        ];
        for ((h, w), out) in shapes {
            for filter in FILTERS {
                for antialias in [true, false] {
                    for c in [1, 3, 4] {
                        check(&mut rng, (h, w), out, filter, antialias, c);
                    }
                }
            }
        }
    }

    /// The split-weight arithmetic is exact modulo 2^32 for any `i32` weight, not only for
    /// normalized ones: tables with extreme weights whose sums wrap still match the oracle.
    #[test]
    fn split_weights_are_exact_for_any_weight() {
        let mut rng = Rng(99);
        let extremes = [
            i32::MIN,
            i32::MAX,
            -1,
            1,
            0x7fff,
            0x8000,
            -0x8000,
            -0x8001,
            0xffff,
            0x1_0000,
            1 << 22,
            -(1 << 22),
        ];
        for _ in 0..200 {
            let in_size = 1 + rng.below(50);
            let out_size = 1 + rng.below(50);
            let taps = 1 + rng.below(12);
            let mut k = AxisCoefficients {
                in_size,
                out_size,
                taps,
                start: Vec::new(),
                len: Vec::new(),
                weights: vec![0; out_size * taps],
            };
            for o in 0..out_size {
                let len = 1 + rng.below(taps.min(in_size));
                k.start.push(rng.below(in_size - len + 1) as u32);
                k.len.push(len as u32);
                for wt in &mut k.weights[o * taps..][..len] {
                    *wt = if rng.below(3) == 0 {
                        extremes[rng.below(extremes.len())]
                    } else {
                        rng.next() as i32
                    };
                }
            }
            let c = [1, 3, 4][rng.below(3)];
            let rows = 1 + rng.below(20);
            let img = rng.pixels(rows * in_size * c);
            assert_eq!(
                horizontal_pass(&img, rows, &k, c),
                reference::horizontal_pass(&img, rows, &k, c)
            );
            let width = 1 + rng.below(70);
            let img = rng.pixels(in_size * width * c);
            assert_eq!(
                vertical_pass(&img, width, &k, c),
                reference::vertical_pass(&img, width, &k, c)
            );
        }
    }
}

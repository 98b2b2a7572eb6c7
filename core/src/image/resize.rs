//! Pillow's 8-bit resampling (`ImagingResample`), bit-exact: separable convolution with 22-bit
//! fixed-point weights, a uint8 intermediate between passes, premultiplied alpha for RGBA, and
//! `NEAREST` by accumulated double coordinates.

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
                let mut img = pixels.to_vec();
                for pass in self.passes() {
                    match pass {
                        ResizePass::Premultiply => img = premultiply_alpha(&img),
                        ResizePass::Horizontal {
                            coeffs,
                            row_offset,
                            rows,
                        } => {
                            let stride = coeffs.in_size * c;
                            let band = &img[row_offset * stride..(row_offset + rows) * stride];
                            img = horizontal_pass(band, rows, coeffs, c);
                        }
                        ResizePass::Vertical { coeffs, width } => img = vertical_pass(&img, width, coeffs, c),
                        ResizePass::Unpremultiply => unpremultiply_alpha(&mut img),
                    }
                }
                img
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

fn horizontal_pass(img: &[u8], rows: usize, k: &AxisCoefficients, c: usize) -> Vec<u8> {
    match c {
        1 => horizontal_pass_n::<1>(img, rows, k),
        3 => horizontal_pass_n::<3>(img, rows, k),
        4 => horizontal_pass_n::<4>(img, rows, k),
        _ => unreachable!("images have 1, 3 or 4 channels"),
    }
}

/// The channel count is a const so the per-tap channel loop unrolls and the accumulators stay
/// in registers.
fn horizontal_pass_n<const C: usize>(img: &[u8], rows: usize, k: &AxisCoefficients) -> Vec<u8> {
    let in_w = k.in_size;
    let mut out = vec![0u8; rows * k.out_size * C];
    for (row, out_row) in img
        .chunks_exact(in_w * C)
        .take(rows)
        .zip(out.chunks_exact_mut(k.out_size * C))
    {
        for (o, dst) in out_row.chunks_exact_mut(C).enumerate() {
            let start = k.start[o] as usize;
            let weights = &k.weights[o * k.taps..][..k.len[o] as usize];
            let pixels = &row[start * C..(start + weights.len()) * C];
            let mut acc = [1i32 << (PRECISION_BITS - 1); C];
            for (&wt, px) in weights.iter().zip(pixels.chunks_exact(C)) {
                for ch in 0..C {
                    acc[ch] += i32::from(px[ch]) * wt;
                }
            }
            for ch in 0..C {
                dst[ch] = clip8(acc[ch]);
            }
        }
    }
    out
}

fn vertical_pass(img: &[u8], width: usize, k: &AxisCoefficients, c: usize) -> Vec<u8> {
    let stride = width * c;
    let mut out = vec![0u8; k.out_size * stride];
    let mut acc = vec![0i32; stride];
    for o in 0..k.out_size {
        acc.fill(1 << (PRECISION_BITS - 1));
        let start = k.start[o] as usize;
        for (i, &wt) in k.weights[o * k.taps..][..k.len[o] as usize].iter().enumerate() {
            let row = &img[(start + i) * stride..][..stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += i32::from(p) * wt;
            }
        }
        for (dst, &a) in out[o * stride..][..stride].iter_mut().zip(&acc) {
            *dst = clip8(a);
        }
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

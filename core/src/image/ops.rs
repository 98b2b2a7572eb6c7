//! Centre crop (torchvision, zero padding when the crop is larger), uint8 -> f32, per-channel
//! normalisation and HWC -> CHW.

use super::ImageDims;

/// torchvision `CenterCrop` offsets of the crop's top-left corner in the source, negative where
/// the crop is larger than the image (zero padding `(crop - size) // 2` before).
pub fn center_crop_offset(size: usize, crop: usize) -> isize {
    if crop > size {
        return -(((crop - size) / 2) as isize);
    }
    let d = size - crop;
    // Python's round(d / 2) rounds half to even.
    let half = d / 2;
    let rounded = if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    };
    rounded as isize
}

/// Crops `data` laid out as `dims` to `height` x `width` at the given offsets, filling with zero
/// outside the source.
pub fn crop<T: Copy + Default>(
    data: &[T],
    dims: &ImageDims,
    top: isize,
    left: isize,
    height: usize,
    width: usize,
) -> Vec<T> {
    let c = dims.channels;
    let mut out = vec![T::default(); height * width * c];
    let source = |y: usize, x: usize| -> Option<(usize, usize)> {
        let sy = y as isize + top;
        let sx = x as isize + left;
        ((0..dims.height as isize).contains(&sy) && (0..dims.width as isize).contains(&sx))
            .then_some((sy as usize, sx as usize))
    };
    for y in 0..height {
        for x in 0..width {
            let Some((sy, sx)) = source(y, x) else { continue };
            for ch in 0..c {
                let (dst, src) = if dims.chw {
                    (
                        (ch * height + y) * width + x,
                        (ch * dims.height + sy) * dims.width + sx,
                    )
                } else {
                    ((y * width + x) * c + ch, (sy * dims.width + sx) * c + ch)
                };
                out[dst] = data[src];
            }
        }
    }
    out
}

/// torchvision `ToTensor` scaling: `x / 255` in f32.
pub fn to_float(data: &[u8]) -> Vec<f32> {
    data.iter().map(|&v| f32::from(v) / 255.0).collect()
}

/// `(x - mean[c]) / std[c]` in f32; `mean`/`std` have one value per channel.
pub fn normalize(data: &mut [f32], dims: &ImageDims, mean: &[f32], std: &[f32]) {
    let plane = dims.height * dims.width;
    for (i, v) in data.iter_mut().enumerate() {
        let ch = if dims.chw { i / plane } else { i % dims.channels };
        *v = (*v - mean[ch]) / std[ch];
    }
}

/// `(H, W, C)` -> `(C, H, W)`.
pub fn hwc_to_chw<T: Copy>(data: &[T], dims: &ImageDims) -> Vec<T> {
    let (h, w, c) = (dims.height, dims.width, dims.channels);
    let mut out = Vec::with_capacity(data.len());
    for ch in 0..c {
        for i in 0..h * w {
            out.push(data[i * c + ch]);
        }
    }
    out
}

/// `(C, H, W)` -> `(H, W, C)`.
pub fn chw_to_hwc<T: Copy>(data: &[T], dims: &ImageDims) -> Vec<T> {
    let (h, w, c) = (dims.height, dims.width, dims.channels);
    let mut out = Vec::with_capacity(data.len());
    for i in 0..h * w {
        for ch in 0..c {
            out.push(data[ch * h * w + i]);
        }
    }
    out
}

//! The image shaders' uniform blocks, field for field as each `.wgsl` declares `Params`.

use crate::uniform::uniform;

uniform! {
    /// `resize.wgsl`: one horizontal or vertical resampling pass.
    Resize for crate::image::RESIZE_WGSL {
        in_width: u32,
        out_width: u32,
        rows: u32,
        channels: u32,
        taps: u32,
        row_offset: u32,
        out_rows: u32,
        src_stride: u32,
        dst_stride: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

uniform! {
    /// `pixels.wgsl`: every per-pixel kernel (premultiply, NEAREST, crop, ToTensor, Normalize,
    /// layout) reads these.
    Pixels for crate::image::PIXELS_WGSL {
        height: u32,
        width: u32,
        channels: u32,
        out_height: u32,
        out_width: u32,
        top: i32,
        left: i32,
        chw: u32,
        src_stride: u32,
        dst_stride: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

//! PNG/JPEG decoding to 8-bit L, RGB or RGBA, with Pillow's `convert` rules between modes.

use image::{DynamicImage, ImageFormat};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::error::{Error, Result};
use crate::spec::ImageMode;

/// A decoded 8-bit image, `(H, W, C)` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub height: usize,
    pub width: usize,
    pub mode: ImageMode,
    pub pixels: Vec<u8>,
}

/// Decodes PNG or JPEG bytes (JPEG with the pure-Rust zune-jpeg decoder, through `image`).
///
/// With `mode: None` the file's own mode is kept: gray -> `L`, RGB -> `RGB`, RGBA -> `RGBA`.
/// Gray+alpha becomes `RGBA` and palette images are expanded (kiln has no `LA`/`P` modes);
/// 16-bit samples keep their high byte, as Pillow's 16-bit RGB PNG reader does.
pub fn decode_image(bytes: &[u8], mode: Option<ImageMode>) -> Result<Image> {
    let format = image::guess_format(bytes)
        .map_err(|_| Error::decode("image", "not a PNG or JPEG file (unrecognised signature)"))?;
    match format {
        ImageFormat::Png => {}
        ImageFormat::Jpeg => {
            let (native_mode, width, height, native) = decode_jpeg(bytes)?;
            let target = mode.unwrap_or(native_mode);
            let pixels = convert(&native, native_mode, target);
            return Ok(Image {
                height,
                width,
                mode: target,
                pixels,
            });
        }
        other => {
            return Err(Error::decode(
                "image",
                format!("{other:?} is not supported (PNG and JPEG are)"),
            ))
        }
    }
    let decoded = image::load_from_memory_with_format(bytes, format).map_err(|e| Error::decode("PNG", e))?;
    let (width, height) = (decoded.width() as usize, decoded.height() as usize);
    let (native_mode, native): (ImageMode, Vec<u8>) = match decoded {
        DynamicImage::ImageLuma8(b) => (ImageMode::L, b.into_raw()),
        DynamicImage::ImageLuma16(b) => (ImageMode::L, high_bytes(b.into_raw())),
        DynamicImage::ImageLumaA8(b) => (ImageMode::Rgba, gray_alpha_to_rgba(&b.into_raw())),
        DynamicImage::ImageLumaA16(b) => (ImageMode::Rgba, gray_alpha_to_rgba(&high_bytes(b.into_raw()))),
        DynamicImage::ImageRgb8(b) => (ImageMode::Rgb, b.into_raw()),
        DynamicImage::ImageRgb16(b) => (ImageMode::Rgb, high_bytes(b.into_raw())),
        DynamicImage::ImageRgba8(b) => (ImageMode::Rgba, b.into_raw()),
        DynamicImage::ImageRgba16(b) => (ImageMode::Rgba, high_bytes(b.into_raw())),
        other => (ImageMode::Rgba, other.to_rgba8().into_raw()),
    };
    let target = mode.unwrap_or(native_mode);
    let pixels = convert(&native, native_mode, target);
    Ok(Image {
        height,
        width,
        mode: target,
        pixels,
    })
}

/// Decodes a JPEG with zune-jpeg to L (grayscale files) or RGB (colour, including CMYK).
///
/// Like Pillow (libjpeg), damaged entropy data decodes as well as it can, but a file that ends
/// before its last scan is an error: the missing rows would otherwise come back as flat gray.
fn decode_jpeg(bytes: &[u8]) -> Result<(ImageMode, usize, usize, Vec<u8>)> {
    let run = |strict: bool| -> Result<(ImageMode, usize, usize, Vec<u8>), zune_jpeg::errors::DecodeErrors> {
        let options = DecoderOptions::default()
            .set_strict_mode(strict)
            .set_max_width(usize::from(u16::MAX))
            .set_max_height(usize::from(u16::MAX));
        let mut probe = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
        probe.decode_headers()?;
        let gray = matches!(probe.input_colorspace(), Some(ColorSpace::Luma));
        let (mode, space) = if gray {
            (ImageMode::L, ColorSpace::Luma)
        } else {
            (ImageMode::Rgb, ColorSpace::RGB)
        };
        let mut decoder =
            JpegDecoder::new_with_options(ZCursor::new(bytes), options.jpeg_set_out_colorspace(space));
        let pixels = decoder.decode()?;
        let (width, height) = decoder.dimensions().expect("headers decoded");
        Ok((mode, width, height, pixels))
    };
    match run(true) {
        Ok(decoded) => Ok(decoded),
        Err(strict_error) => {
            let lenient = run(false).map_err(|e| Error::decode("JPEG", e))?;
            let reason = strict_error.to_string();
            if ["Premature end", "No more bytes", "Exhausted data"]
                .iter()
                .any(|m| reason.contains(m))
            {
                return Err(Error::decode(
                    "JPEG",
                    format!("image file is truncated ({reason})"),
                ));
            }
            Ok(lenient)
        }
    }
}

fn high_bytes(samples: Vec<u16>) -> Vec<u8> {
    samples.into_iter().map(|v| (v >> 8) as u8).collect()
}

fn gray_alpha_to_rgba(la: &[u8]) -> Vec<u8> {
    la.chunks_exact(2)
        .flat_map(|p| [p[0], p[0], p[0], p[1]])
        .collect()
}

/// Pillow `Image.convert` between L, RGB and RGBA: luma is ITU-R 601-2 in 16-bit fixed point,
/// alpha is dropped without compositing, and added as 255.
pub fn convert(pixels: &[u8], from: ImageMode, to: ImageMode) -> Vec<u8> {
    if from == to {
        return pixels.to_vec();
    }
    let luma = |p: &[u8]| {
        ((u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471 + 0x8000) >> 16) as u8
    };
    let step = from.channels();
    let chunks = pixels.chunks_exact(step);
    match (from, to) {
        (ImageMode::L, ImageMode::Rgb) => pixels.iter().flat_map(|&l| [l, l, l]).collect(),
        (ImageMode::L, ImageMode::Rgba) => pixels.iter().flat_map(|&l| [l, l, l, 255]).collect(),
        (ImageMode::Rgb | ImageMode::Rgba, ImageMode::L) => chunks.map(luma).collect(),
        (ImageMode::Rgb, ImageMode::Rgba) => chunks.flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
        (ImageMode::Rgba, ImageMode::Rgb) => chunks.flat_map(|p| [p[0], p[1], p[2]]).collect(),
        _ => unreachable!("same-mode conversion returned above"),
    }
}

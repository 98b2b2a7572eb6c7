//! PNG/JPEG decoding to 8-bit L, RGB or RGBA, with Pillow's `convert` rules between modes.
//!
//! Declared dimensions are checked against Pillow's decompression-bomb rule ([`check_pixels`])
//! before any pixel memory is allocated, and the pixel buffer itself is allocated fallibly, so a
//! few bytes of header can neither abort the process nor make it allocate gigabytes.

use std::io::Cursor;

use image::codecs::webp::WebPDecoder;
use image::{ColorType, ImageDecoder, ImageFormat};

use crate::error::{Error, Result, Warning};
use crate::limits::DEFAULT_MAX_PIXELS;
use crate::spec::ImageMode;

mod png;

/// A decoded 8-bit image, `(H, W, C)` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub height: usize,
    pub width: usize,
    pub mode: ImageMode,
    pub pixels: Vec<u8>,
}

/// Pillow's `Image._decompression_bomb_check` for a `width` x `height` image.
///
/// With `max_pixels: Some(m)` (Pillow's `Image.MAX_IMAGE_PIXELS = m`; `decode_image`'s default
/// is [`DEFAULT_MAX_PIXELS`], Pillow's), an image of more than `2 * m` pixels is an error
/// (Pillow's `DecompressionBombError`) and one of more than `m` pixels decodes with a
/// [`Warning::DecompressionBomb`] (Pillow's `DecompressionBombWarning`). Pixels are counted as
/// Pillow does: `max(1, width) * max(1, height)`. `None` (`MAX_IMAGE_PIXELS = None`) checks
/// nothing.
pub fn check_pixels(
    format: &'static str,
    width: u64,
    height: u64,
    max_pixels: Option<u64>,
) -> Result<Option<Warning>> {
    let Some(limit) = max_pixels else { return Ok(None) };
    // Both sides are at most 2^32, so the product fits.
    let pixels = u128::from(width.max(1)) * u128::from(height.max(1));
    let pixels = u64::try_from(pixels).unwrap_or(u64::MAX);
    if u128::from(pixels) > 2 * u128::from(limit) {
        return Err(Error::DecompressionBomb {
            format,
            width,
            height,
            pixels,
            limit: limit.saturating_mul(2),
            max_pixels: limit,
        });
    }
    Ok((pixels > limit).then_some(Warning::DecompressionBomb {
        width,
        height,
        pixels,
        limit,
    }))
}

/// Decodes PNG, JPEG or WebP bytes with Pillow's default decompression-bomb limit; see
/// [`decode_image_limited`] (this drops its warning).
pub fn decode_image(bytes: &[u8], mode: Option<ImageMode>) -> Result<Image> {
    decode_image_limited(bytes, mode, Some(DEFAULT_MAX_PIXELS)).map(|(image, _)| image)
}

/// Decodes PNG, JPEG or WebP bytes (JPEG with kiln's own decoder, exact against Pillow;
/// WebP with `image-webp`).
///
/// With `mode: Some(m)` the pixels equal Pillow 13's `Image.open(path).convert(m)`. With
/// `mode: None` the file's own mode is kept as far as kiln's modes hold it, and the pixels equal
/// Pillow's `convert` to that mode: gray -> `L`, RGB -> `RGB`, RGBA -> `RGBA`; a PNG's other
/// modes (kiln has no `1`/`LA`/`P`/`I;16`) become `L` (1-, 2-, 4- and 16-bit gray), `RGB`
/// (palette) or, where the file carries transparency (gray+alpha, or a `tRNS` chunk on a
/// palette, gray or RGB image), `RGBA`. So 16-bit colour samples keep their high byte and
/// 16-bit gray clips at 255, as Pillow converts them; the PNG rules, quirks included, are in
/// the docs of the private module `decode::png`.
///
/// The dimensions in the header are checked with [`check_pixels`] against `max_pixels` before
/// anything is decoded; the warnings it gives come back beside the image.
pub fn decode_image_limited(
    bytes: &[u8],
    mode: Option<ImageMode>,
    max_pixels: Option<u64>,
) -> Result<(Image, Vec<Warning>)> {
    let format = image::guess_format(bytes)
        .map_err(|_| Error::decode("image", "not a PNG, JPEG or WebP file (unrecognised signature)"))?;
    let (native_mode, width, height, native, warning) = match format {
        ImageFormat::Png => png::decode(bytes, mode, max_pixels)?,
        ImageFormat::Jpeg => decode_jpeg(bytes, max_pixels)?,
        ImageFormat::WebP => decode_webp(bytes, max_pixels)?,
        other => {
            return Err(Error::decode(
                "image",
                format!("{other:?} is not supported (PNG, JPEG and WebP are)"),
            ))
        }
    };
    let target = mode.unwrap_or(native_mode);
    let pixels = convert(&native, native_mode, target);
    let image = Image {
        height,
        width,
        mode: target,
        pixels,
    };
    Ok((image, warning.into_iter().collect()))
}

type Decoded = (ImageMode, usize, usize, Vec<u8>, Option<Warning>);

/// A zeroed buffer of `len` bytes for `format`'s pixels, or an error where the allocator has
/// no room (rather than the abort `vec!` gives).
fn pixel_buffer(format: &'static str, len: usize, width: usize, height: usize) -> Result<Vec<u8>> {
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(len).map_err(|_| {
        Error::decode(
            format,
            format!("cannot allocate {len} bytes for a {width}x{height} image"),
        )
    })?;
    buffer.resize(len, 0);
    Ok(buffer)
}

/// Width and height from a WebP's first chunk (the canvas of an extended file), read by hand so
/// the decompression-bomb check needs nothing from the decoder.
fn webp_dimensions(bytes: &[u8]) -> Result<(u32, u32)> {
    let short = || Error::decode("WebP", "the file ends inside its header");
    let chunk = bytes.get(12..16).ok_or_else(short)?;
    let data = bytes.get(20..).ok_or_else(short)?;
    let le = |at: usize, len: usize| -> Result<u32> {
        let b = data.get(at..at + len).ok_or_else(short)?;
        Ok(b.iter().rev().fold(0u32, |v, &x| v << 8 | u32::from(x)))
    };
    match chunk {
        b"VP8 " => Ok((le(6, 2)? & 0x3fff, le(8, 2)? & 0x3fff)),
        b"VP8L" => {
            let bits = le(1, 4)?;
            Ok(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        b"VP8X" => Ok((le(4, 3)? + 1, le(7, 3)? + 1)),
        other => Err(Error::decode(
            "WebP",
            format!("unknown first chunk {:?}", String::from_utf8_lossy(other)),
        )),
    }
}

/// Decodes a WebP (lossless or lossy; the first frame of an animation) with the pure-Rust
/// `image-webp` decoder, to RGB or, with an alpha channel, RGBA, as Pillow opens it. Lossy
/// frames go through the same fancy upsampling libwebp (and so Pillow) uses.
fn decode_webp(bytes: &[u8], max_pixels: Option<u64>) -> Result<Decoded> {
    let (width, height) = webp_dimensions(bytes)?;
    let warning = check_pixels("WebP", width.into(), height.into(), max_pixels)?;
    let decoder = WebPDecoder::new(Cursor::new(bytes)).map_err(|e| Error::decode("WebP", e))?;
    if decoder.dimensions() != (width, height) {
        return Err(Error::decode(
            "WebP",
            format!(
                "the header says {width}x{height}, the image {:?}",
                decoder.dimensions()
            ),
        ));
    }
    let color = decoder.color_type();
    let (width, height) = (width as usize, height as usize);
    let len = usize::try_from(decoder.total_bytes())
        .map_err(|_| Error::decode("WebP", format!("a {width}x{height} image does not fit in memory")))?;
    let mut raw = pixel_buffer("WebP", len, width, height)?;
    decoder
        .read_image(&mut raw)
        .map_err(|e| Error::decode("WebP", e))?;
    let native_mode = match color {
        ColorType::Rgb8 => ImageMode::Rgb,
        ColorType::Rgba8 => ImageMode::Rgba,
        other => {
            return Err(Error::decode(
                "WebP",
                format!("unsupported colour type {other:?}"),
            ))
        }
    };
    Ok((native_mode, width, height, raw, warning))
}

/// Decodes a JPEG with kiln's own decoder ([`crate::image::jpeg`]), whose pixels equal
/// Pillow's (libjpeg-turbo's ISLOW IDCT, fancy upsampling and colour conversion), to L
/// (grayscale files) or RGB (colour, including CMYK and YCCK as Pillow converts them).
fn decode_jpeg(bytes: &[u8], max_pixels: Option<u64>) -> Result<Decoded> {
    let (width, height) = super::jpeg::dimensions(bytes)?;
    let warning = check_pixels("JPEG", width.into(), height.into(), max_pixels)?;
    let (mode, width, height, pixels) = super::jpeg::decode(bytes)?;
    Ok((mode, width, height, pixels, warning))
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// An 8-bit gray PNG declaring `width` x `height`, whose IDAT (a stored zlib block) holds
    /// only the rows given.
    fn gray_png(width: u32, height: u32, rows: &[Vec<u8>]) -> Vec<u8> {
        let mut raw = Vec::new();
        for row in rows {
            raw.push(0); // filter: none
            raw.extend_from_slice(row);
        }
        let (mut a, mut b) = (1u32, 0u32);
        for &x in &raw {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        let mut zlib = vec![0x78, 0x01, 0x01];
        let len = raw.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(&raw);
        zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let body = [kind, data].concat();
            png.extend_from_slice(&body);
            png.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        };
        let ihdr = [&width.to_be_bytes()[..], &height.to_be_bytes(), &[8, 0, 0, 0, 0]].concat();
        chunk(b"IHDR", &ihdr);
        chunk(b"IDAT", &zlib);
        chunk(b"IEND", &[]);
        png
    }

    /// A baseline gray JPEG declaring `width` x `height`: one quantisation table, one-code
    /// Huffman tables (DC diff 0, AC end-of-block) and `data` bytes of zero bits, so every block
    /// decodes to mid-gray and `data` bytes cover `4 * data` blocks.
    fn gray_jpeg(width: u16, height: u16, data: usize) -> Vec<u8> {
        let mut jpeg = vec![0xFF, 0xD8];
        let mut segment = |marker: u8, body: &[u8]| {
            jpeg.extend_from_slice(&[0xFF, marker]);
            jpeg.extend_from_slice(&(body.len() as u16 + 2).to_be_bytes());
            jpeg.extend_from_slice(body);
        };
        segment(0xDB, &[[0u8].as_slice(), &[1u8; 64]].concat());
        let size = [height.to_be_bytes(), width.to_be_bytes()].concat();
        segment(0xC0, &[&[8u8][..], &size, &[1, 1, 0x11, 0]].concat());
        let mut one_code = vec![1u8];
        one_code.extend_from_slice(&[0; 15]);
        one_code.push(0);
        segment(0xC4, &[&[0x00u8][..], &one_code].concat());
        segment(0xC4, &[&[0x10u8][..], &one_code].concat());
        segment(0xDA, &[1, 1, 0x00, 0, 63, 0]);
        jpeg.extend(std::iter::repeat_n(0u8, data));
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        jpeg
    }

    #[test]
    fn hand_built_images_decode() {
        let (image, warnings) =
            decode_image_limited(&gray_png(3, 2, &[vec![1, 2, 3], vec![4, 5, 6]]), None, Some(6)).unwrap();
        assert_eq!((image.width, image.height, image.mode), (3, 2, ImageMode::L));
        assert_eq!(image.pixels, vec![1, 2, 3, 4, 5, 6]);
        assert!(warnings.is_empty());
        let (image, _) = decode_image_limited(&gray_jpeg(16, 8, 2), None, None).unwrap();
        assert_eq!((image.width, image.height), (16, 8));
        assert!(image.pixels.iter().all(|&p| p == 128), "{:?}", image.pixels);
    }

    #[test]
    fn pillow_bomb_rule_warns_above_max_pixels_and_refuses_above_twice() {
        let png = gray_png(8, 8, &vec![vec![9; 8]; 8]);
        // 64 pixels: max 64 is silent, 63 and 32 warn (64 <= 2 * 32), 31 refuses.
        assert!(decode_image_limited(&png, None, Some(64)).unwrap().1.is_empty());
        for limit in [63, 32] {
            let (image, warnings) = decode_image_limited(&png, None, Some(limit)).unwrap();
            assert_eq!(image.pixels, vec![9; 64]);
            assert_eq!(
                warnings,
                vec![Warning::DecompressionBomb {
                    width: 8,
                    height: 8,
                    pixels: 64,
                    limit
                }]
            );
            assert!(warnings[0]
                .to_string()
                .contains(&format!("image size (64 pixels) exceeds limit of {limit} pixels")));
        }
        let error = decode_image_limited(&png, None, Some(31))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("PNG image is 8x8: image size (64 pixels) exceeds limit of 62 pixels, could be decompression bomb DOS attack"),
            "{error}"
        );
        assert!(error.contains("decode_image `max_pixels` is 31"), "{error}");
        // `None` is Pillow's `MAX_IMAGE_PIXELS = None`: no check at all.
        assert!(decode_image_limited(&png, None, None).unwrap().1.is_empty());
        // Pillow counts a zero side as one.
        assert!(check_pixels("PNG", 0, 5, Some(4)).unwrap().is_some());
    }

    /// A lossless WebP whose header declares `width` x `height` and that holds no pixels.
    fn lossless_webp_header(width: u32, height: u32) -> Vec<u8> {
        let bits = (width - 1) | (height - 1) << 14;
        let mut chunk = vec![0x2f];
        chunk.extend_from_slice(&bits.to_le_bytes());
        chunk.extend_from_slice(&[0; 8]);
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(4 + 8 + chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WEBPVP8L");
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(&chunk);
        out
    }

    #[test]
    fn webp_decodes_and_a_truncated_one_is_an_error_naming_webp() {
        let (w, h) = (23u32, 11u32);
        let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        let mut bytes = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut bytes)
            .encode(&pixels, w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        let image = decode_image(&bytes, None).unwrap();
        assert_eq!((image.width, image.height, image.mode), (23, 11, ImageMode::Rgb));
        assert_eq!(image.pixels, pixels, "lossless WebP round trip");
        let error = decode_image(&bytes[..bytes.len() / 2], None).unwrap_err();
        assert!(error.to_string().contains("WebP"), "{error}");
    }

    #[test]
    fn declared_bombs_are_refused_quickly_before_decoding() {
        let cases = [
            ("JPEG", gray_jpeg(60000, 60000, 1200), 3_600_000_000u64),
            ("JPEG", gray_jpeg(20000, 20000, 100), 400_000_000),
            ("PNG", gray_png(20000, 20000, &[vec![0; 20000]]), 400_000_000),
            ("WebP", lossless_webp_header(16384, 16384), 268_435_456),
        ];
        for (format, bytes, pixels) in cases {
            let start = Instant::now();
            let error = decode_image(&bytes, None).unwrap_err();
            let elapsed = start.elapsed();
            assert!(elapsed < Duration::from_millis(100), "{format}: {elapsed:?}");
            match &error {
                Error::DecompressionBomb {
                    format: f,
                    pixels: p,
                    limit,
                    ..
                } => assert_eq!((*f, *p, *limit), (format, pixels, 2 * DEFAULT_MAX_PIXELS)),
                other => panic!("{format}: {other}"),
            }
            assert!(
                error.to_string().contains(&format!(
                    "image size ({pixels} pixels) exceeds limit of 178956970 pixels"
                )),
                "{error}"
            );
        }
        assert!(gray_jpeg(60000, 60000, 1200).len() < 1400);
    }

    #[test]
    fn a_png_without_ihdr_is_refused() {
        let error = decode_image(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDX", None).unwrap_err();
        assert!(
            error.to_string().contains("does not start with an IHDR chunk"),
            "{error}"
        );
    }
}

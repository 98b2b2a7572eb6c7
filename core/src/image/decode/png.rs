//! PNG as Pillow 13 opens it (`PngImagePlugin`) and converts it to L, RGB or RGBA
//! (`Image.convert`, `Convert.c`), quirks included.
//!
//! The `image` crate's PNG decoder does the inflating, unfiltering and de-interlacing; the
//! chunks that decide what the samples mean (`PLTE`, `tRNS`) are read here, because the decoder
//! applies them by the PNG specification and Pillow does not:
//!
//! - Low bit depths scale to 8 bits (1-bit gray is Pillow's mode `1`, 0 or 255; 2- and 4-bit
//!   gray multiply by 85 and 17), 16-bit colour samples keep their high byte (Pillow's
//!   `RGB;16B`, `RGBA;16B` and `LA;16B` unpackers: 16-bit gray+alpha opens as `RGBA`), and
//!   16-bit gray (`I;16`) clips at 255.
//! - A palette (`P`) maps index `i` to `PLTE` entry `i`; indices past the end of `PLTE` are
//!   black, and an odd byte count drops the partial last entry. Converting to RGBA takes alpha
//!   `i` from `tRNS` byte `i` (255 past its end), even where `tRNS` outlasts `PLTE`. `P -> L`
//!   is the luma of the entry, as `RGB -> L`.
//! - A `tRNS` colour on a gray or RGB image only matters for `convert("RGBA")` (and for
//!   `mode: None`, which then gives RGBA): Pillow compares the converted 8-bit pixel with the
//!   low byte of each 16-bit `tRNS` sample (`Convert.c`'s `rgbT2rgba`). So a 2-bit gray key `1`
//!   never matches (pixels are 0, 85, 170, 255), a 16-bit gray key matches the pixel clipped to
//!   255, and a 16-bit RGB key matches the high bytes of the pixel. For 1-bit gray any non-zero
//!   key is 255 (`chunk_tRNS`). The matching pixels keep their colour and get alpha 0.
//! - Pillow reads `PLTE` only before the image data (the last one wins) but `tRNS` anywhere
//!   before `IEND` (the last one wins, even after `IDAT`: `load_end` reads it before `convert`
//!   looks). A `tRNS` of more than 256 bytes on a palette image is an error for RGBA (Pillow's
//!   "palette index out of range"), as is a `PLTE` of more than 256 entries ("invalid palette
//!   size").
//!
//! To get at the palette indices, whatever the file's `PLTE`/`tRNS` say, the decoder is handed
//! a copy of the file without those chunks and with a `PLTE` whose entry `i` is `(i, i, i)`.

use std::borrow::Cow;
use std::io::Cursor;

use image::codecs::png::PngDecoder;
use image::{ColorType, ImageDecoder, Limits};

use super::{check_pixels, pixel_buffer, Decoded};
use crate::error::{Error, Result};
use crate::spec::ImageMode;

/// Memory the PNG decoder may use besides the pixels (decompressed ICC profiles and text,
/// row buffers on top of [`ROWS_BUDGET`] rows): a zlib bomb in a metadata chunk stops here.
const METADATA_BUDGET: u64 = 64 << 20;
/// Rows of the widest (RGBA, 16-bit) layout the PNG decoder may buffer besides the pixels.
const ROWS_BUDGET: u64 = 8;

const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// PNG colour types (the `IHDR` byte).
const GRAY: u8 = 0;
const RGB: u8 = 2;
const INDEXED: u8 = 3;

/// One chunk, with the byte range it occupies in the file.
struct Chunk<'a> {
    kind: [u8; 4],
    data: &'a [u8],
    crc: u32,
    start: usize,
    end: usize,
}

impl Chunk<'_> {
    fn name(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.kind)
    }

    /// Pillow refuses a file whose chunks before the image data fail their CRC.
    fn check_crc(&self) -> Result<()> {
        if crc32(&[&self.kind, self.data]) == self.crc {
            Ok(())
        } else {
            Err(Error::decode(
                "PNG",
                format!("the {} chunk fails its CRC (a damaged file)", self.name()),
            ))
        }
    }
}

/// The chunks after the signature, up to `IEND` or to the first one that runs past the end of
/// the file (whose bytes are left to the decoder, which reports the truncation).
fn chunks(bytes: &[u8]) -> impl Iterator<Item = Chunk<'_>> {
    let mut at = SIGNATURE.len();
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let header = bytes.get(at..at.checked_add(8)?)?;
        let len = usize::try_from(u32::from_be_bytes([header[0], header[1], header[2], header[3]])).ok()?;
        let kind = [header[4], header[5], header[6], header[7]];
        let data_end = at.checked_add(8)?.checked_add(len)?;
        let end = data_end.checked_add(4)?;
        let data = bytes.get(at + 8..data_end)?;
        let crc = bytes.get(data_end..end)?;
        let chunk = Chunk {
            kind,
            data,
            crc: u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]),
            start: at,
            end,
        };
        done = &kind == b"IEND";
        at = end;
        Some(chunk)
    })
}

/// What Pillow reads from the header chunks.
struct Header<'a> {
    depth: u8,
    color: u8,
    /// The last `PLTE` before the first `IDAT`.
    palette: Option<&'a [u8]>,
    /// The last `tRNS` before `IEND`.
    transparency: Option<&'a [u8]>,
    /// A palette image, or any `PLTE` or `tRNS` chunk: the decoder gets a copy without them.
    rewrite: bool,
}

fn read_header(bytes: &[u8]) -> Result<Header<'_>> {
    let ihdr = bytes
        .get(8..29)
        .filter(|h| &h[4..8] == b"IHDR")
        .ok_or_else(|| Error::decode("PNG", "the file does not start with an IHDR chunk"))?;
    let mut header = Header {
        depth: ihdr[16],
        color: ihdr[17],
        palette: None,
        transparency: None,
        // The decoder needs a `PLTE` to decode indices, even where Pillow needs none.
        rewrite: ihdr[17] == INDEXED,
    };
    let mut seen_idat = false;
    for chunk in chunks(bytes) {
        match &chunk.kind {
            b"IDAT" => seen_idat = true,
            b"PLTE" => {
                header.rewrite = true;
                if !seen_idat {
                    chunk.check_crc()?;
                    header.palette = Some(chunk.data);
                }
            }
            b"tRNS" => {
                header.rewrite = true;
                if !seen_idat {
                    chunk.check_crc()?;
                }
                header.transparency = Some(chunk.data);
            }
            _ => {}
        }
    }
    Ok(header)
}

/// Width and height from a PNG's `IHDR`, which the format requires to be the first chunk:
/// read by hand so the decompression-bomb check needs nothing from the decoder.
pub(super) fn dimensions(bytes: &[u8]) -> Result<(u32, u32)> {
    let header = bytes
        .get(8..24)
        .filter(|h| &h[4..8] == b"IHDR")
        .ok_or_else(|| Error::decode("PNG", "the file does not start with an IHDR chunk"))?;
    let word = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    Ok((word(8), word(12)))
}

/// The file without its `PLTE` and `tRNS` chunks and, for a palette image, with a `PLTE` of
/// entries `(i, i, i)` where the first `PLTE` was (or before the first `IDAT`), so the decoder
/// gives the indices and never refuses a `PLTE`/`tRNS` that Pillow accepts.
fn rewrite(bytes: &[u8], header: &Header) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.try_reserve_exact(bytes.len() + 3 * 256 + 12).map_err(|_| {
        Error::decode(
            "PNG",
            format!("cannot allocate a copy of a {}-byte file", bytes.len()),
        )
    })?;
    out.extend_from_slice(SIGNATURE);
    let mut palette_due = header.color == INDEXED;
    let mut copied_to = SIGNATURE.len();
    for chunk in chunks(bytes) {
        let is_plte = &chunk.kind == b"PLTE";
        if palette_due && (is_plte || &chunk.kind == b"IDAT") {
            let entries = 1usize << header.depth.min(8);
            let data: Vec<u8> = (0..entries).flat_map(|i| [i as u8; 3]).collect();
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(b"PLTE");
            out.extend_from_slice(&data);
            out.extend_from_slice(&crc32(&[b"PLTE", &data]).to_be_bytes());
            palette_due = false;
        }
        if !is_plte && &chunk.kind != b"tRNS" {
            out.extend_from_slice(&bytes[chunk.start..chunk.end]);
        }
        copied_to = chunk.end;
    }
    // A truncated last chunk (or anything after IEND) goes to the decoder as it is.
    out.extend_from_slice(&bytes[copied_to..]);
    Ok(out)
}

/// Decodes a PNG to the mode Pillow's `convert` gives for `mode`, or with `mode: None` to L
/// (gray), RGB (colour or palette) or RGBA (an alpha channel or a `tRNS` chunk); the caller
/// converts between L, RGB and RGBA from there. See the module docs for Pillow's rules.
pub(super) fn decode(bytes: &[u8], mode: Option<ImageMode>, max_pixels: Option<u64>) -> Result<Decoded> {
    let (width, height) = dimensions(bytes)?;
    let warning = check_pixels("PNG", width.into(), height.into(), max_pixels)?;
    let header = read_header(bytes)?;
    let stream = if header.rewrite {
        Cow::Owned(rewrite(bytes, &header)?)
    } else {
        Cow::Borrowed(bytes)
    };
    let row_bytes = u64::from(width) * 8 + 1;
    let mut limits = Limits::default();
    limits.max_alloc = Some(METADATA_BUDGET.saturating_add(row_bytes.saturating_mul(ROWS_BUDGET)));
    let decoder =
        PngDecoder::with_limits(Cursor::new(&*stream), limits).map_err(|e| Error::decode("PNG", e))?;
    let color = decoder.color_type();
    let (width, height) = (width as usize, height as usize);
    let len = usize::try_from(decoder.total_bytes())
        .map_err(|_| Error::decode("PNG", format!("a {width}x{height} image does not fit in memory")))?;
    let mut raw = pixel_buffer("PNG", len, width, height)?;
    decoder
        .read_image(&mut raw)
        .map_err(|e| Error::decode("PNG", e))?;
    // Whether the transparency of a tRNS chunk shows: Pillow's `convert("RGBA")`, and kiln's
    // `mode: None` for a file that has one.
    let wants_alpha = mode.is_none_or(|m| m == ImageMode::Rgba);
    let keyed = header.transparency.filter(|_| wants_alpha);
    let (native_mode, native) = match (header.color, color) {
        (INDEXED, ColorType::Rgb8) => {
            let indices = raw.chunks_exact(3).map(|p| p[0]);
            let table = palette_table(&header, keyed.is_some())?;
            if keyed.is_some() {
                (
                    ImageMode::Rgba,
                    indices.flat_map(|i| table[usize::from(i)]).collect(),
                )
            } else {
                let rgb = |i: u8| {
                    let [r, g, b, _] = table[usize::from(i)];
                    [r, g, b]
                };
                (ImageMode::Rgb, indices.flat_map(rgb).collect())
            }
        }
        (GRAY, ColorType::L8 | ColorType::L16) => {
            let gray = if color == ColorType::L16 {
                clip_to_byte(&raw)
            } else {
                raw
            };
            match keyed {
                Some(trns) => {
                    let key = gray_key(trns, header.depth)?;
                    let rgba = gray
                        .iter()
                        .flat_map(|&l| [l, l, l, if l == key { 0 } else { 255 }]);
                    (ImageMode::Rgba, rgba.collect())
                }
                None => (ImageMode::L, gray),
            }
        }
        (RGB, ColorType::Rgb8 | ColorType::Rgb16) => {
            let rgb = if color == ColorType::Rgb16 {
                high_bytes(&raw)
            } else {
                raw
            };
            match keyed {
                Some(trns) => {
                    let key = rgb_key(trns)?;
                    let rgba = rgb
                        .chunks_exact(3)
                        .flat_map(|p| [p[0], p[1], p[2], if p == key { 0 } else { 255 }]);
                    (ImageMode::Rgba, rgba.collect())
                }
                None => (ImageMode::Rgb, rgb),
            }
        }
        (_, ColorType::La8) => (ImageMode::Rgba, gray_alpha_to_rgba(&raw)),
        (_, ColorType::La16) => (ImageMode::Rgba, gray_alpha_to_rgba(&high_bytes(&raw))),
        (_, ColorType::Rgba8) => (ImageMode::Rgba, raw),
        (_, ColorType::Rgba16) => (ImageMode::Rgba, high_bytes(&raw)),
        (kind, other) => {
            return Err(Error::decode(
                "PNG",
                format!("colour type {kind} decoded as unsupported {other:?}"),
            ))
        }
    };
    Ok((native_mode, width, height, native, warning))
}

/// Pillow's palette as RGBA entries: `PLTE` entries (whole ones only), black past them, alpha
/// from `tRNS` where `alpha` is asked for (255 past its end).
fn palette_table(header: &Header, alpha: bool) -> Result<Vec<[u8; 4]>> {
    let plte = header.palette.unwrap_or_default();
    let entries = plte.len() / 3;
    if entries > 256 {
        return Err(Error::decode(
            "PNG",
            format!("the PLTE chunk holds {entries} entries; a palette has at most 256 (Pillow: invalid palette size)"),
        ));
    }
    let mut table = vec![[0, 0, 0, 255]; 256];
    for (entry, rgb) in table.iter_mut().zip(plte.chunks_exact(3)) {
        entry[..3].copy_from_slice(rgb);
    }
    if alpha {
        let trns = header.transparency.unwrap_or_default();
        if trns.len() > 256 {
            return Err(Error::decode(
                "PNG",
                format!(
                    "the tRNS chunk holds {} alpha values for a palette of at most 256 entries (Pillow: palette index out of range)",
                    trns.len()
                ),
            ));
        }
        for (entry, &a) in table.iter_mut().zip(trns) {
            entry[3] = a;
        }
    }
    Ok(table)
}

fn truncated_trns(len: usize, needs: usize, what: &str) -> Error {
    Error::decode(
        "PNG",
        format!("truncated tRNS chunk: {len} bytes where a {what} image needs {needs}"),
    )
}

/// The 8-bit gray value Pillow makes transparent: the low byte of the 16-bit `tRNS` sample,
/// or for 1-bit images (Pillow's mode `1`) 255 for any non-zero sample.
fn gray_key(trns: &[u8], depth: u8) -> Result<u8> {
    let sample = trns
        .get(..2)
        .ok_or_else(|| truncated_trns(trns.len(), 2, "gray"))?;
    Ok(match depth {
        1 if sample != [0, 0] => 255,
        1 => 0,
        _ => sample[1],
    })
}

/// The 8-bit RGB colour Pillow makes transparent: the low byte of each 16-bit `tRNS` sample.
fn rgb_key(trns: &[u8]) -> Result<[u8; 3]> {
    let samples = trns
        .get(..6)
        .ok_or_else(|| truncated_trns(trns.len(), 6, "RGB"))?;
    Ok([samples[1], samples[3], samples[5]])
}

/// 16-bit gray (Pillow's `I;16`) to 8 bits as Pillow 13's `convert("L")` does it: values
/// above 255 clip to 255 (16-bit colour keeps the high byte instead, as Pillow reads it).
/// Samples come from the decoder in native byte order.
fn clip_to_byte(samples: &[u8]) -> Vec<u8> {
    samples
        .chunks_exact(2)
        .map(|s| u16::from_ne_bytes([s[0], s[1]]).min(255) as u8)
        .collect()
}

/// The high byte of each native-endian 16-bit sample (as `image` lays them out).
fn high_bytes(samples: &[u8]) -> Vec<u8> {
    samples
        .chunks_exact(2)
        .map(|v| (u16::from_ne_bytes([v[0], v[1]]) >> 8) as u8)
        .collect()
}

fn gray_alpha_to_rgba(la: &[u8]) -> Vec<u8> {
    la.chunks_exact(2)
        .flat_map(|p| [p[0], p[0], p[0], p[1]])
        .collect()
}

/// CRC-32 (ISO-HDLC, PNG's) over the concatenated parts, with the crc32fast crate the PNG
/// decoder already uses.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::decode::{decode_image, Image};

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
        out
    }

    /// A PNG of one row of `width` pixels whose packed samples are `row`, with `before`
    /// chunks ahead of IDAT and `after` chunks behind it; IDAT is a stored zlib block.
    fn png(width: u32, depth: u8, color: u8, row: &[u8], before: &[Vec<u8>], after: &[Vec<u8>]) -> Vec<u8> {
        let raw = [&[0u8][..], row].concat();
        let (mut a, mut b) = (1u32, 0u32);
        for &x in &raw {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        let len = raw.len() as u16;
        let zlib = [
            &[0x78, 0x01, 0x01][..],
            &len.to_le_bytes(),
            &(!len).to_le_bytes(),
            &raw,
            &((b << 16) | a).to_be_bytes(),
        ]
        .concat();
        let ihdr = [
            &width.to_be_bytes()[..],
            &1u32.to_be_bytes(),
            &[depth, color, 0, 0, 0],
        ]
        .concat();
        let mut out = SIGNATURE.to_vec();
        out.extend(chunk(b"IHDR", &ihdr));
        before.iter().for_each(|c| out.extend_from_slice(c));
        out.extend(chunk(b"IDAT", &zlib));
        after.iter().for_each(|c| out.extend_from_slice(c));
        out.extend(chunk(b"IEND", &[]));
        out
    }

    fn pixels(bytes: &[u8], mode: ImageMode) -> Vec<u8> {
        decode_image(bytes, Some(mode)).unwrap().pixels
    }

    #[test]
    fn mode_none_keeps_what_kiln_modes_hold_and_equals_that_conversion() {
        let plte = chunk(b"PLTE", &[10, 20, 30, 200, 100, 50]);
        let cases = [
            ("1-bit gray", png(4, 1, 0, &[0b1010_0000], &[], &[]), ImageMode::L),
            (
                "16-bit gray",
                png(2, 16, 0, &[1, 0, 0, 9], &[], &[]),
                ImageMode::L,
            ),
            (
                "gray+tRNS",
                png(2, 8, 0, &[0, 5], &[chunk(b"tRNS", &[0, 5])], &[]),
                ImageMode::Rgba,
            ),
            (
                "RGB+tRNS",
                png(1, 8, 2, &[1, 2, 3], &[chunk(b"tRNS", &[0, 1, 0, 2, 0, 3])], &[]),
                ImageMode::Rgba,
            ),
            (
                "palette",
                png(2, 8, 3, &[0, 1], std::slice::from_ref(&plte), &[]),
                ImageMode::Rgb,
            ),
            (
                "palette+tRNS",
                png(2, 8, 3, &[0, 1], &[plte, chunk(b"tRNS", &[7])], &[]),
                ImageMode::Rgba,
            ),
            ("gray+alpha 8", png(1, 8, 4, &[3, 4], &[], &[]), ImageMode::Rgba),
            (
                "gray+alpha 16",
                png(1, 16, 4, &[3, 9, 4, 9], &[], &[]),
                ImageMode::Rgba,
            ),
        ];
        for (what, bytes, expected) in cases {
            let image = decode_image(&bytes, None).unwrap();
            assert_eq!(image.mode, expected, "{what}");
            assert_eq!(image.pixels, pixels(&bytes, expected), "{what}");
        }
    }

    #[test]
    fn pillow_quirks_for_transparent_colours() {
        // 2-bit gray scales to 0, 85, 170, 255 and Pillow compares that with the raw key: key 1
        // never matches, key 85 (out of range for 2 bits) matches level 1.
        for (key, alpha) in [(1u8, [255, 255, 255, 255]), (85, [255, 0, 255, 255])] {
            let bytes = png(4, 2, 0, &[0b0001_1011], &[chunk(b"tRNS", &[0, key])], &[]);
            let rgba = pixels(&bytes, ImageMode::Rgba);
            assert_eq!(
                rgba,
                [0, 0, 0, alpha[0], 85, 85, 85, alpha[1], 170, 170, 170, alpha[2], 255, 255, 255, alpha[3]]
            );
            assert_eq!(pixels(&bytes, ImageMode::L), [0, 85, 170, 255]);
        }
        // 1-bit gray: any non-zero key is white.
        let bytes = png(2, 1, 0, &[0b0100_0000], &[chunk(b"tRNS", &[1, 0])], &[]);
        assert_eq!(pixels(&bytes, ImageMode::Rgba), [0, 0, 0, 255, 255, 255, 255, 0]);
        // 16-bit gray: the pixel clipped to 255 against the key's low byte (300 -> 44). Pixels
        // 44, 300, 255 and 65535 clip to 44, 255, 255, 255.
        let row = [0, 44, 1, 44, 0, 255, 255, 255];
        for (key, alpha) in [([1, 44], [0, 255, 255, 255]), ([0, 255], [255, 0, 0, 0])] {
            let bytes = png(4, 16, 0, &row, &[chunk(b"tRNS", &key)], &[]);
            let got: Vec<u8> = pixels(&bytes, ImageMode::Rgba).chunks(4).map(|p| p[3]).collect();
            assert_eq!(got, alpha, "key {key:?}");
        }
        // 16-bit RGB: the pixel's high bytes against the key's low bytes.
        let row = [1, 9, 2, 9, 3, 9, 0, 1, 0, 2, 0, 3];
        let bytes = png(2, 16, 2, &row, &[chunk(b"tRNS", &[0, 1, 0, 2, 0, 3])], &[]);
        assert_eq!(pixels(&bytes, ImageMode::Rgba), [1, 2, 3, 0, 0, 0, 0, 255]);
    }

    #[test]
    fn pillow_palette_rules() {
        let plte = chunk(b"PLTE", &[10, 20, 30, 200, 100, 50, 7]);
        // Index 2 lies in the partial third entry, index 3 past PLTE: both black.
        let bytes = png(4, 8, 3, &[0, 1, 2, 3], std::slice::from_ref(&plte), &[]);
        assert_eq!(
            pixels(&bytes, ImageMode::Rgb),
            [10, 20, 30, 200, 100, 50, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(pixels(&bytes, ImageMode::L), [18, 124, 0, 0]);
        // tRNS after IDAT, longer than PLTE, and two of them: the last applies, past PLTE too.
        let after = [chunk(b"tRNS", &[1]), chunk(b"tRNS", &[5, 6, 7, 8, 9])];
        let bytes = png(4, 8, 3, &[0, 1, 2, 3], std::slice::from_ref(&plte), &after);
        let alpha: Vec<u8> = pixels(&bytes, ImageMode::Rgba).chunks(4).map(|p| p[3]).collect();
        assert_eq!(alpha, [5, 6, 7, 8]);
        assert_eq!(decode_image(&bytes, None).unwrap().mode, ImageMode::Rgba);
        // No PLTE at all: black.
        let bytes = png(2, 4, 3, &[0x01], &[], &[]);
        assert_eq!(pixels(&bytes, ImageMode::Rgb), [0; 6]);
    }

    #[test]
    fn palettes_and_keys_pillow_refuses_are_errors_naming_the_chunk() {
        let big = chunk(b"PLTE", &[1; 3 * 257]);
        let error = decode_image(&png(1, 8, 3, &[0], &[big], &[]), None)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("PLTE chunk holds 257 entries; a palette has at most 256"),
            "{error}"
        );
        // 300 alpha values: an error for RGBA only (Pillow converts to L and RGB).
        let bytes = png(
            1,
            8,
            3,
            &[0],
            &[chunk(b"PLTE", &[1, 2, 3]), chunk(b"tRNS", &[9; 300])],
            &[],
        );
        assert_eq!(pixels(&bytes, ImageMode::Rgb), [1, 2, 3]);
        let error = decode_image(&bytes, Some(ImageMode::Rgba))
            .unwrap_err()
            .to_string();
        assert!(error.contains("tRNS chunk holds 300 alpha values"), "{error}");
        let bytes = png(1, 8, 0, &[0], &[chunk(b"tRNS", &[0])], &[]);
        let error = decode_image(&bytes, None).unwrap_err().to_string();
        assert!(
            error.contains("truncated tRNS chunk: 1 bytes where a gray image needs 2"),
            "{error}"
        );
        let mut bad = chunk(b"tRNS", &[0, 0]);
        *bad.last_mut().unwrap() ^= 1;
        let error = decode_image(&png(1, 8, 0, &[0], &[bad], &[]), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("the tRNS chunk fails its CRC"), "{error}");
    }

    #[test]
    fn crc32_matches_the_png_specification() {
        // IEND's CRC, fixed by the format.
        assert_eq!(crc32(&[b"IEND"]), 0xAE42_6082);
        let Image { pixels, .. } = decode_image(&png(3, 8, 0, &[4, 5, 6], &[], &[]), None).unwrap();
        assert_eq!(pixels, [4, 5, 6]);
    }
}

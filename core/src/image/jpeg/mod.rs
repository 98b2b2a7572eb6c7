//! A baseline and progressive JPEG decoder whose pixels equal Pillow's, which decodes with
//! libjpeg-turbo's defaults: the ISLOW integer IDCT ([`idct`]), fancy upsampling and
//! libjpeg's YCbCr tables ([`upsample`]), and libjpeg's rules for which colour space a file
//! holds. Four-component files are Adobe-inverted CMYK (or YCCK) converted to RGB as Pillow
//! does. EXIF orientation is not applied, as Pillow does not apply it unless asked.
//!
//! Written here rather than taken from a crate: the pure-Rust decoders use other IDCTs and
//! upsamplers (zune-jpeg differed from Pillow by up to 62 levels on small 4:2:0 images), and
//! the libjpeg-turbo bindings need a C build that the browser target cannot have.
//!
//! Not supported (explicit errors): arithmetic coding, lossless and hierarchical JPEG, 12-bit
//! samples, two-component files, and scans using a Huffman table the file never defines
//! (libjpeg-turbo substitutes the standard tables for Motion-JPEG frames).

mod entropy;
mod idct;
mod upsample;

use entropy::{BitReader, HuffmanTable, ScanParams};
use upsample::{Plane, Upsampler, YccTables};

use crate::error::{Error, Result};
use crate::spec::ImageMode;

fn error(reason: impl std::fmt::Display) -> Error {
    Error::decode("JPEG", reason)
}

/// Width and height from the frame header, read without decoding anything, so that the
/// decompression-bomb check can run before any pixel memory is allocated.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32)> {
    let mut pos = start(bytes)?;
    loop {
        let (at, marker) = entropy::next_marker(bytes, pos)
            .ok_or_else(|| error("the file ends before the frame header (SOF)"))?;
        match marker {
            0xD0..=0xD9 | 0x01 => pos = at + 2,
            _ => {
                let segment = segment(bytes, at, marker)?;
                if is_frame(marker) {
                    let frame = Frame::parse(marker, segment)?;
                    return Ok((frame.width as u32, frame.height as u32));
                }
                pos = at + 2 + segment.len() + 2;
            }
        }
    }
}

/// Decodes a JPEG to `L` (one component) or `RGB` (three or four), row-major.
pub fn decode(bytes: &[u8]) -> Result<(ImageMode, usize, usize, Vec<u8>)> {
    let mut decoder = Decoder::default();
    decoder.read(bytes)?;
    decoder.output()
}

fn start(bytes: &[u8]) -> Result<usize> {
    if bytes.get(..2) != Some(&[0xFF, 0xD8]) {
        return Err(error("not a JPEG file (no SOI marker)"));
    }
    Ok(2)
}

fn is_frame(marker: u8) -> bool {
    matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// The payload of the marker segment at `at` (after its 2-byte length).
fn segment(bytes: &[u8], at: usize, marker: u8) -> Result<&[u8]> {
    let length = bytes
        .get(at + 2..at + 4)
        .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
        .ok_or_else(|| error(format!("image file is truncated (inside marker 0x{marker:02X})")))?;
    if length < 2 {
        return Err(error(format!("marker 0x{marker:02X} has a bad length {length}")));
    }
    bytes
        .get(at + 4..at + 2 + length)
        .ok_or_else(|| error(format!("image file is truncated (inside marker 0x{marker:02X})")))
}

#[derive(Debug, Clone)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant_index: usize,
    /// Latched when the component's first scan starts, as libjpeg does: a later DQT with the
    /// same index does not change it.
    quant: Option<[u16; 64]>,
    /// The component's own size in samples.
    width: usize,
    height: usize,
    /// Block grid, padded to whole MCUs.
    blocks_wide: usize,
    blocks_high: usize,
    coefficients: Vec<[i16; 64]>,
    /// Whether a sequential scan has covered it.
    scanned: bool,
}

#[derive(Debug, Clone)]
struct Frame {
    progressive: bool,
    width: usize,
    height: usize,
    components: Vec<Component>,
    h_max: usize,
    v_max: usize,
    mcus_wide: usize,
    mcus_high: usize,
}

impl Frame {
    fn parse(marker: u8, s: &[u8]) -> Result<Frame> {
        match marker {
            0xC0..=0xC2 => {}
            0xC3 | 0xC7 | 0xCB | 0xCF => return Err(error("lossless JPEG is not supported")),
            0xC5 | 0xC6 => return Err(error("hierarchical JPEG is not supported")),
            _ => return Err(error("arithmetic-coded JPEG is not supported")),
        }
        if s.len() < 6 {
            return Err(error("the frame header (SOF) is too short"));
        }
        if s[0] != 8 {
            return Err(error(format!(
                "{}-bit samples are not supported (8-bit are)",
                s[0]
            )));
        }
        let height = usize::from(u16::from_be_bytes([s[1], s[2]]));
        let width = usize::from(u16::from_be_bytes([s[3], s[4]]));
        let count = usize::from(s[5]);
        if height == 0 || width == 0 {
            return Err(error(format!(
                "empty image ({width}x{height}; a height given by a DNL marker is not supported)"
            )));
        }
        if !matches!(count, 1 | 3 | 4) {
            return Err(error(format!("cannot handle {count}-component images")));
        }
        if s.len() < 6 + 3 * count {
            return Err(error("the frame header (SOF) is too short"));
        }
        let mut components = Vec::with_capacity(count);
        for c in s[6..6 + 3 * count].chunks_exact(3) {
            let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
                return Err(error(format!("bad sampling factors {h}x{v}")));
            }
            if c[2] > 3 {
                return Err(error(format!("bad quantization table index {}", c[2])));
            }
            components.push(Component {
                id: c[0],
                h,
                v,
                quant_index: usize::from(c[2]),
                quant: None,
                width: 0,
                height: 0,
                blocks_wide: 0,
                blocks_high: 0,
                coefficients: Vec::new(),
                scanned: false,
            });
        }
        let h_max = components.iter().map(|c| c.h).max().unwrap_or(1);
        let v_max = components.iter().map(|c| c.v).max().unwrap_or(1);
        let mcus_wide = width.div_ceil(8 * h_max);
        let mcus_high = height.div_ceil(8 * v_max);
        for c in &mut components {
            if h_max % c.h != 0 || v_max % c.v != 0 {
                return Err(error(format!(
                    "fractional sampling ({}x{} against {h_max}x{v_max}) is not supported",
                    c.h, c.v
                )));
            }
            c.width = (width * c.h).div_ceil(h_max);
            c.height = (height * c.v).div_ceil(v_max);
            c.blocks_wide = mcus_wide * c.h;
            c.blocks_high = mcus_high * c.v;
        }
        Ok(Frame {
            progressive: marker == 0xC2,
            width,
            height,
            components,
            h_max,
            v_max,
            mcus_wide,
            mcus_high,
        })
    }

    /// Allocates the coefficient buffers, fallibly: their size follows from the header alone.
    fn allocate(&mut self) -> Result<()> {
        for c in &mut self.components {
            let blocks = c.blocks_wide * c.blocks_high;
            let mut buffer = Vec::new();
            buffer.try_reserve_exact(blocks).map_err(|_| {
                error(format!(
                    "cannot allocate {} bytes of coefficients for a {}x{} image",
                    blocks * 128,
                    self.width,
                    self.height
                ))
            })?;
            buffer.resize(blocks, [0i16; 64]);
            c.coefficients = buffer;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Decoder {
    frame: Option<Frame>,
    quant: [Option<[u16; 64]>; 4],
    dc_tables: [Option<HuffmanTable>; 4],
    ac_tables: [Option<HuffmanTable>; 4],
    restart_interval: usize,
    jfif: bool,
    adobe_transform: Option<u8>,
    eoi: bool,
}

impl Decoder {
    fn read(&mut self, bytes: &[u8]) -> Result<()> {
        let mut pos = start(bytes)?;
        while let Some((at, marker)) = entropy::next_marker(bytes, pos) {
            match marker {
                0xD9 => {
                    self.eoi = true;
                    break;
                }
                0xD8 => return Err(error("a second SOI marker")),
                0xD0..=0xD7 | 0x01 => {
                    pos = at + 2;
                    continue;
                }
                _ => {}
            }
            let s = segment(bytes, at, marker)?;
            let after = at + 4 + s.len();
            match marker {
                0xC4 => self.define_huffman(s)?,
                0xCC => return Err(error("arithmetic-coded JPEG is not supported")),
                0xDB => self.define_quant(s)?,
                0xDD => {
                    let b = s.get(..2).ok_or_else(|| error("the DRI segment is too short"))?;
                    self.restart_interval = usize::from(u16::from_be_bytes([b[0], b[1]]));
                }
                0xE0 => self.jfif |= s.len() >= 14 && s.starts_with(b"JFIF\0"),
                0xEE if s.len() >= 12 && s.starts_with(b"Adobe") => self.adobe_transform = Some(s[11]),
                0xDA => {
                    pos = self.scan(bytes, s, after)?;
                    continue;
                }
                m if is_frame(m) => {
                    if self.frame.is_some() {
                        return Err(error("a second frame header (SOF)"));
                    }
                    let mut frame = Frame::parse(m, s)?;
                    frame.allocate()?;
                    self.frame = Some(frame);
                }
                _ => {}
            }
            pos = after;
        }
        let frame = self
            .frame
            .as_ref()
            .ok_or_else(|| error("no frame header (SOF)"))?;
        // Like Pillow, a file that stops before its data is complete is an error rather than
        // an image padded with gray: a progressive file is read to its EOI before any pixel
        // is output, a sequential one needs every component scanned.
        let complete = if frame.progressive {
            self.eoi
        } else {
            frame.components.iter().all(|c| c.scanned)
        };
        if !complete {
            return Err(error("image file is truncated"));
        }
        Ok(())
    }

    fn define_huffman(&mut self, mut s: &[u8]) -> Result<()> {
        while !s.is_empty() {
            let short = || error("the DHT segment is too short");
            let class_id = s[0];
            let counts: [u8; 16] = s.get(1..17).ok_or_else(short)?.try_into().expect("16 bytes");
            let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
            let values = s.get(17..17 + total).ok_or_else(short)?;
            let (class, id) = (class_id >> 4, usize::from(class_id & 15));
            if class > 1 || id > 3 {
                return Err(error(format!("bad Huffman table class/index 0x{class_id:02X}")));
            }
            let table = HuffmanTable::new(&counts, values, class == 0)?;
            if class == 0 {
                self.dc_tables[id] = Some(table);
            } else {
                self.ac_tables[id] = Some(table);
            }
            s = &s[17 + total..];
        }
        Ok(())
    }

    fn define_quant(&mut self, mut s: &[u8]) -> Result<()> {
        while !s.is_empty() {
            let (precision, id) = (s[0] >> 4, usize::from(s[0] & 15));
            if precision > 1 || id > 3 {
                return Err(error(format!("bad quantization table header 0x{:02X}", s[0])));
            }
            let size = if precision == 0 { 64 } else { 128 };
            let data = s
                .get(1..1 + size)
                .ok_or_else(|| error("the DQT segment is too short"))?;
            let mut table = [0u16; 64];
            for (k, &natural) in entropy::NATURAL_ORDER[..64].iter().enumerate() {
                table[natural] = if precision == 0 {
                    u16::from(data[k])
                } else {
                    u16::from_be_bytes([data[2 * k], data[2 * k + 1]])
                };
            }
            self.quant[id] = Some(table);
            s = &s[1 + size..];
        }
        Ok(())
    }

    /// Decodes one scan whose header is `s` and whose data starts at `data_at`; returns where
    /// the following marker starts.
    fn scan(&mut self, bytes: &[u8], s: &[u8], data_at: usize) -> Result<usize> {
        let frame = self
            .frame
            .as_mut()
            .ok_or_else(|| error("a scan (SOS) before the frame header"))?;
        let count = usize::from(*s.first().ok_or_else(|| error("empty SOS segment"))?);
        if !(1..=4).contains(&count) || s.len() < 1 + 2 * count + 3 {
            return Err(error("bad SOS segment"));
        }
        let mut members = Vec::with_capacity(count);
        for pair in s[1..1 + 2 * count].chunks_exact(2) {
            let index = frame
                .components
                .iter()
                .position(|c| c.id == pair[0])
                .ok_or_else(|| error(format!("a scan names component {} that the frame lacks", pair[0])))?;
            if members.iter().any(|&(i, _, _)| i == index) {
                return Err(error("a scan names a component twice"));
            }
            members.push((index, usize::from(pair[1] >> 4), usize::from(pair[1] & 15)));
        }
        let tail = &s[1 + 2 * count..];
        let params = ScanParams {
            start: usize::from(tail[0]),
            end: usize::from(tail[1]),
            high: u32::from(tail[2] >> 4),
            low: u32::from(tail[2] & 15),
        };
        if frame.progressive {
            let bad = params.end > 63
                || params.start > params.end
                || (params.start == 0 && params.end != 0)
                || (params.start > 0 && count != 1)
                || params.high > 13
                || params.low > 13;
            if bad {
                return Err(error(format!(
                    "bad progression parameters Ss={} Se={} Ah={} Al={}",
                    params.start, params.end, params.high, params.low
                )));
            }
        }
        if count > 1 {
            let blocks: usize = members
                .iter()
                .map(|&(i, _, _)| frame.components[i].h * frame.components[i].v)
                .sum();
            if blocks > 10 {
                return Err(error(format!(
                    "an MCU of {blocks} blocks (at most 10 are allowed)"
                )));
            }
        }
        // What the scan decodes decides which tables it needs.
        let needs_dc = !frame.progressive || (params.start == 0 && params.high == 0);
        let needs_ac = !frame.progressive || params.start > 0;
        let mut tables = Vec::with_capacity(count);
        for &(index, dc, ac) in &members {
            let c = &mut frame.components[index];
            if c.quant.is_none() {
                c.quant =
                    Some(self.quant[c.quant_index].ok_or_else(|| {
                        error(format!("quantization table {} is not defined", c.quant_index))
                    })?);
            }
            let lookup = |set: &[Option<HuffmanTable>; 4],
                          id: usize,
                          kind: &str,
                          needed: bool|
             -> Result<Option<HuffmanTable>> {
                if !needed {
                    return Ok(None);
                }
                set.get(id).and_then(Option::clone).map(Some).ok_or_else(|| {
                    error(format!(
                        "the scan uses {kind} Huffman table {id}, which the file does not define"
                    ))
                })
            };
            tables.push((
                lookup(&self.dc_tables, dc, "DC", needs_dc)?,
                lookup(&self.ac_tables, ac, "AC", needs_ac)?,
            ));
        }

        let mut reader = BitReader::new(bytes, data_at);
        let mut state = ScanState {
            progressive: frame.progressive,
            params,
            tables,
            predictions: [0; 4],
            eob_run: 0,
        };
        let interval = self.restart_interval;
        let mut mcu = 0usize;
        if count == 1 {
            let c = &mut frame.components[members[0].0];
            let (wide, high) = (c.width.div_ceil(8), c.height.div_ceil(8));
            for row in 0..high {
                stop_if_truncated(&reader)?;
                for col in 0..wide {
                    state.restart_if_due(&mut reader, mcu, interval);
                    state.decode_block(&mut reader, &mut c.coefficients[row * c.blocks_wide + col], 0);
                    mcu += 1;
                }
            }
        } else {
            for mcu_row in 0..frame.mcus_high {
                stop_if_truncated(&reader)?;
                for mcu_col in 0..frame.mcus_wide {
                    state.restart_if_due(&mut reader, mcu, interval);
                    for (slot, &(index, _, _)) in members.iter().enumerate() {
                        let c = &mut frame.components[index];
                        for v in 0..c.v {
                            for h in 0..c.h {
                                let at = (mcu_row * c.v + v) * c.blocks_wide + mcu_col * c.h + h;
                                state.decode_block(&mut reader, &mut c.coefficients[at], slot);
                            }
                        }
                    }
                    mcu += 1;
                }
            }
        }
        stop_if_truncated(&reader)?;
        if !frame.progressive {
            for &(index, _, _) in &members {
                frame.components[index].scanned = true;
            }
        }
        Ok(reader.position())
    }
}

/// Checked once per row of MCUs, so a header declaring a large image over a few bytes of data
/// stops early instead of decoding millions of blocks of padding.
fn stop_if_truncated(reader: &BitReader) -> Result<()> {
    if reader.read_past_end() {
        return Err(error("image file is truncated"));
    }
    Ok(())
}

/// What decoding one scan carries from block to block.
struct ScanState {
    progressive: bool,
    params: ScanParams,
    /// Per scan member: its DC and AC tables, where the scan uses them.
    tables: Vec<(Option<HuffmanTable>, Option<HuffmanTable>)>,
    predictions: [i32; 4],
    eob_run: u32,
}

impl ScanState {
    /// At a restart boundary: move past the RSTn marker and reset the DC predictions and the
    /// end-of-band run.
    fn restart_if_due(&mut self, reader: &mut BitReader, mcu: usize, interval: usize) {
        if interval > 0 && mcu > 0 && mcu.is_multiple_of(interval) {
            reader.restart();
            self.predictions = [0; 4];
            self.eob_run = 0;
        }
    }

    fn decode_block(&mut self, reader: &mut BitReader, block: &mut [i16; 64], slot: usize) {
        // The tables a scan needs were checked when it started.
        let (dc, ac) = &self.tables[slot];
        let params = self.params;
        if !self.progressive {
            if let (Some(dc), Some(ac)) = (dc, ac) {
                entropy::decode_sequential(reader, block, dc, ac, &mut self.predictions[slot]);
            }
        } else if params.start == 0 {
            if params.high != 0 {
                entropy::decode_dc_refine(reader, block, params.low);
            } else if let Some(dc) = dc {
                entropy::decode_dc_first(reader, block, dc, &mut self.predictions[slot], params.low);
            }
        } else if let Some(ac) = ac {
            if params.high == 0 {
                entropy::decode_ac_first(reader, block, ac, params, &mut self.eob_run);
            } else {
                entropy::decode_ac_refine(reader, block, ac, params, &mut self.eob_run);
            }
        }
    }
}

/// The colour space of the decoded components, by libjpeg's rules (JFIF and Adobe markers,
/// then component ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColorSpace {
    Gray,
    YCbCr,
    Rgb,
    Cmyk,
    Ycck,
}

impl Decoder {
    fn color_space(&self, frame: &Frame) -> ColorSpace {
        match frame.components.len() {
            1 => ColorSpace::Gray,
            3 if self.jfif => ColorSpace::YCbCr,
            3 => match self.adobe_transform {
                Some(0) => ColorSpace::Rgb,
                Some(_) => ColorSpace::YCbCr,
                None => {
                    let ids: Vec<u8> = frame.components.iter().map(|c| c.id).collect();
                    if ids == b"RGB" {
                        ColorSpace::Rgb
                    } else {
                        ColorSpace::YCbCr
                    }
                }
            },
            _ => match self.adobe_transform {
                None | Some(0) => ColorSpace::Cmyk,
                Some(_) => ColorSpace::Ycck,
            },
        }
    }

    /// Inverse DCT, upsampling and colour conversion of the whole image.
    fn output(&self) -> Result<(ImageMode, usize, usize, Vec<u8>)> {
        let frame = self
            .frame
            .as_ref()
            .ok_or_else(|| error("no frame header (SOF)"))?;
        let (width, height) = (frame.width, frame.height);
        let mut planes = Vec::with_capacity(frame.components.len());
        for c in &frame.components {
            // A component no scan ever reached keeps zero coefficients (and no table).
            let quant = c.quant.unwrap_or([1; 64]);
            let stride = c.blocks_wide * 8;
            let (wide, high) = (c.width.div_ceil(8), c.height.div_ceil(8));
            let mut samples = buffer(stride * high * 8, width, height)?;
            for row in 0..high {
                for col in 0..wide {
                    let block = &c.coefficients[row * c.blocks_wide + col];
                    let at = row * 8 * stride + col * 8;
                    idct::idct_block(block, &quant, &mut samples[at..], stride);
                }
            }
            planes.push((samples, stride));
        }
        let mut upsamplers: Vec<Upsampler> = frame
            .components
            .iter()
            .zip(&planes)
            .map(|(c, (samples, stride))| {
                let plane = Plane {
                    samples,
                    stride: *stride,
                    width: c.width,
                    height: c.height,
                };
                Upsampler::new(plane, frame.h_max / c.h, frame.v_max / c.v)
            })
            .collect();
        let space = self.color_space(frame);
        let channels = if space == ColorSpace::Gray { 1 } else { 3 };
        let mut out = buffer(width * height * channels, width, height)?;
        let tables = YccTables::new();
        let mut scratch = [Vec::new(), Vec::new(), Vec::new()];
        for (y, line) in out.chunks_exact_mut(width * channels).enumerate() {
            let rows: Vec<&[u8]> = upsamplers.iter_mut().map(|u| u.row(y, width)).collect();
            match space {
                ColorSpace::Gray => line.copy_from_slice(rows[0]),
                ColorSpace::YCbCr => upsample::ycc_row_to_rgb(rows[0], rows[1], rows[2], &mut scratch, line),
                ColorSpace::Rgb => {
                    for (((rgb, &r), &g), &b) in
                        line.chunks_exact_mut(3).zip(rows[0]).zip(rows[1]).zip(rows[2])
                    {
                        rgb.copy_from_slice(&[r, g, b]);
                    }
                }
                ColorSpace::Cmyk | ColorSpace::Ycck => {
                    let samples = rows[0].iter().zip(rows[1]).zip(rows[2]).zip(rows[3]);
                    for (rgb, (((&a, &b), &c), &k)) in line.chunks_exact_mut(3).zip(samples) {
                        let cmy = if space == ColorSpace::Ycck {
                            // libjpeg's YCCK -> CMYK: the YCbCr conversion, inverted.
                            tables.rgb(a, b, c).map(|v| 255 - v)
                        } else {
                            [a, b, c]
                        };
                        rgb.copy_from_slice(&cmyk_to_rgb(cmy, k));
                    }
                }
            }
        }
        let mode = if space == ColorSpace::Gray {
            ImageMode::L
        } else {
            ImageMode::Rgb
        };
        Ok((mode, width, height, out))
    }
}

/// Pillow's reading of a CMYK JPEG: the samples are Adobe-inverted (its raw mode `CMYK;I`),
/// then `convert("RGB")` gives `255 - k - c * (255 - k) / 255` per channel, in its integer
/// arithmetic (`MULDIV255`).
fn cmyk_to_rgb(cmy: [u8; 3], k: u8) -> [u8; 3] {
    let inverse_k = i32::from(k); // 255 - (255 - k)
    cmy.map(|v| {
        let c = 255 - i32::from(v);
        let t = c * inverse_k + 128;
        let scaled = ((t >> 8) + t) >> 8;
        (inverse_k - scaled).clamp(0, 255) as u8
    })
}

/// A zeroed buffer of `len` bytes, or an error where the allocator has no room.
fn buffer(len: usize, width: usize, height: usize) -> Result<Vec<u8>> {
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(len).map_err(|_| {
        error(format!(
            "cannot allocate {len} bytes for a {width}x{height} image"
        ))
    })?;
    buffer.resize(len, 0);
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG built from `(marker, body)` segments, then `data` as entropy-coded bytes and EOI.
    fn jpeg(segments: &[(u8, Vec<u8>)], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0xFF, 0xD8];
        for (marker, body) in segments {
            out.extend_from_slice(&[0xFF, *marker]);
            out.extend_from_slice(&(body.len() as u16 + 2).to_be_bytes());
            out.extend_from_slice(body);
        }
        out.extend_from_slice(data);
        out.extend_from_slice(&[0xFF, 0xD9]);
        out
    }

    fn frame(sof: u8, precision: u8, width: u16, height: u16, components: &[(u8, u8, u8)]) -> (u8, Vec<u8>) {
        let mut body = vec![precision];
        body.extend_from_slice(&height.to_be_bytes());
        body.extend_from_slice(&width.to_be_bytes());
        body.push(components.len() as u8);
        for &(id, sampling, table) in components {
            body.extend_from_slice(&[id, sampling, table]);
        }
        (sof, body)
    }

    fn quant() -> (u8, Vec<u8>) {
        (0xDB, [&[0u8][..], &[2u8; 64]].concat())
    }

    /// One code (`0`, length 1) for symbol 0: zero bits decode as DC 0 and end-of-block.
    fn one_code(class_id: u8) -> (u8, Vec<u8>) {
        (0xC4, [&[class_id][..], &[1], &[0; 15], &[0]].concat())
    }

    fn scan(ids: &[u8]) -> (u8, Vec<u8>) {
        let mut body = vec![ids.len() as u8];
        for &id in ids {
            body.extend_from_slice(&[id, 0x00]);
        }
        body.extend_from_slice(&[0, 63, 0]);
        (0xDA, body)
    }

    fn gray(width: u16, height: u16, data: &[u8]) -> Vec<u8> {
        jpeg(
            &[
                quant(),
                frame(0xC0, 8, width, height, &[(1, 0x11, 0)]),
                one_code(0x00),
                one_code(0x10),
                scan(&[1]),
            ],
            data,
        )
    }

    fn message(bytes: &[u8]) -> String {
        decode(bytes).unwrap_err().to_string()
    }

    /// All-zero data decodes every block to DC 0: mid-gray, at the declared size.
    #[test]
    fn a_minimal_gray_file_decodes_to_mid_gray() {
        let (mode, width, height, pixels) = decode(&gray(9, 3, &[0; 8])).unwrap();
        assert_eq!((mode, width, height), (ImageMode::L, 9, 3));
        assert!(pixels.iter().all(|&p| p == 128), "{pixels:?}");
        assert_eq!(dimensions(&gray(9, 3, &[0; 8])).unwrap(), (9, 3));
    }

    /// Features Pillow's libjpeg-turbo has but kiln does not are named, never guessed at.
    #[test]
    fn unsupported_variants_are_named() {
        let cases = [
            (
                frame(0xC3, 8, 8, 8, &[(1, 0x11, 0)]),
                "lossless JPEG is not supported",
            ),
            (
                frame(0xC9, 8, 8, 8, &[(1, 0x11, 0)]),
                "arithmetic-coded JPEG is not supported",
            ),
            (
                frame(0xC5, 8, 8, 8, &[(1, 0x11, 0)]),
                "hierarchical JPEG is not supported",
            ),
            (
                frame(0xC1, 12, 8, 8, &[(1, 0x11, 0)]),
                "12-bit samples are not supported",
            ),
            (
                frame(0xC0, 8, 8, 8, &[(1, 0x11, 0), (2, 0x11, 0)]),
                "cannot handle 2-component images",
            ),
            (
                frame(0xC0, 8, 8, 0, &[(1, 0x11, 0)]),
                "a height given by a DNL marker is not supported",
            ),
            (frame(0xC0, 8, 8, 8, &[(1, 0x51, 0)]), "bad sampling factors 5x1"),
            (
                frame(0xC0, 8, 8, 8, &[(1, 0x11, 7)]),
                "bad quantization table index 7",
            ),
            (
                frame(0xC0, 8, 8, 8, &[(1, 0x31, 0), (2, 0x21, 0), (3, 0x11, 0)]),
                "fractional sampling (2x1 against 3x1) is not supported",
            ),
        ];
        for (sof, expected) in cases {
            let bytes = jpeg(
                &[quant(), sof, one_code(0x00), one_code(0x10), scan(&[1])],
                &[0; 4],
            );
            let got = message(&bytes);
            assert!(got.starts_with("JPEG: ") || got.contains("JPEG"), "{got}");
            assert!(got.contains(expected), "expected {expected:?} in {got:?}");
        }
    }

    #[test]
    fn broken_structure_gives_clear_errors() {
        let f = frame(0xC0, 8, 8, 8, &[(1, 0x11, 0)]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"\xFF\xD9".to_vec(), "not a JPEG file (no SOI marker)"),
            (jpeg(&[quant()], &[]), "no frame header (SOF)"),
            (
                jpeg(&[f.clone(), one_code(0x00), one_code(0x10), scan(&[1])], &[0; 4]),
                "quantization table 0 is not defined",
            ),
            (
                jpeg(&[quant(), f.clone(), one_code(0x10), scan(&[1])], &[0; 4]),
                "DC Huffman table 0, which the file does not define",
            ),
            (
                jpeg(
                    &[quant(), f.clone(), one_code(0x00), one_code(0x10), scan(&[9])],
                    &[0; 4],
                ),
                "a scan names component 9 that the frame lacks",
            ),
            (
                jpeg(&[quant(), scan(&[1])], &[0; 4]),
                "a scan (SOS) before the frame header",
            ),
            (
                jpeg(&[quant(), f.clone(), f.clone()], &[]),
                "a second frame header (SOF)",
            ),
            (
                jpeg(&[quant(), f.clone(), (0xC4, vec![0x00, 0, 1])], &[]),
                "the DHT segment is too short",
            ),
            (
                jpeg(
                    &[
                        quant(),
                        f.clone(),
                        (0xC4, [&[0x00u8][..], &[3], &[0; 15], &[0, 1, 2]].concat()),
                    ],
                    &[],
                ),
                "the code lengths overflow",
            ),
            (
                jpeg(
                    &[
                        quant(),
                        f.clone(),
                        (0xC4, [&[0x00u8][..], &[1], &[0; 15], &[16]].concat()),
                    ],
                    &[],
                ),
                "a DC category above 15",
            ),
            (
                jpeg(&[(0xDB, vec![0x20, 1, 2])], &[]),
                "bad quantization table header 0x20",
            ),
            (
                jpeg(
                    &[
                        quant(),
                        f.clone(),
                        one_code(0x00),
                        one_code(0x10),
                        (0xDA, vec![1, 1, 0, 0]),
                    ],
                    &[],
                ),
                "bad SOS segment",
            ),
            (
                vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00],
                "image file is truncated (inside marker 0xC0)",
            ),
            (
                vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x01],
                "marker 0xC0 has a bad length 1",
            ),
        ];
        for (bytes, expected) in cases {
            let got = message(&bytes);
            assert!(got.contains(expected), "expected {expected:?} in {got:?}");
        }
    }

    #[test]
    fn progressive_scans_are_checked() {
        let f = frame(0xC2, 8, 8, 8, &[(1, 0x11, 0), (2, 0x11, 0), (3, 0x11, 0)]);
        let sos = |ids: &[u8], ss: u8, se: u8, a: u8| {
            let mut body = vec![ids.len() as u8];
            for &id in ids {
                body.extend_from_slice(&[id, 0x00]);
            }
            body.extend_from_slice(&[ss, se, a]);
            (0xDA, body)
        };
        for (scan, expected) in [
            (
                sos(&[1, 2], 1, 5, 0),
                "bad progression parameters Ss=1 Se=5 Ah=0 Al=0",
            ),
            (sos(&[1], 0, 5, 0), "bad progression parameters Ss=0 Se=5"),
            (sos(&[1], 6, 5, 0), "bad progression parameters Ss=6 Se=5"),
            (sos(&[1], 1, 64, 0), "bad progression parameters Ss=1 Se=64"),
            (sos(&[1], 0, 0, 0x0E), "Al=14"),
        ] {
            let got = message(&jpeg(
                &[quant(), f.clone(), one_code(0x00), one_code(0x10), scan],
                &[0; 4],
            ));
            assert!(got.contains(expected), "expected {expected:?} in {got:?}");
        }
        // A progressive file that ends before EOI is truncated, even between scans.
        let mut cut = jpeg(&[quant(), f, one_code(0x00), sos(&[1, 2, 3], 0, 0, 0)], &[0; 4]);
        cut.truncate(cut.len() - 2);
        assert!(message(&cut).contains("image file is truncated"));
    }

    /// A header declaring a large image over a few bytes stops at the first row of MCUs past
    /// the data rather than decoding the whole padded image.
    #[test]
    fn truncated_data_is_an_error_found_early() {
        let mut bytes = gray(8000, 8000, &[0; 16]);
        bytes.truncate(bytes.len() - 2);
        let start = std::time::Instant::now();
        assert!(message(&bytes).contains("image file is truncated"));
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        // With the EOI in place, the same data is complete: a sequential scan ends at a marker,
        // and libjpeg reads the missing bits as zeros.
        let (_, width, height, _) = decode(&gray(64, 8, &[0; 2])).unwrap();
        assert_eq!((width, height), (64, 8));
    }

    /// Invalid Huffman codes decode as zero and a stray marker ends the data, as in libjpeg:
    /// damage inside a complete file still gives an image of the declared size.
    #[test]
    fn damaged_entropy_data_still_decodes() {
        // Only code "0" exists, so 0xFE... holds invalid codes.
        let (_, width, height, pixels) =
            decode(&gray(16, 16, &[0xFE, 0xFE, 0x00, 0xFF, 0xD3, 0x12])).unwrap();
        assert_eq!((width, height, pixels.len()), (16, 16, 256));
    }

    /// CMYK as Pillow converts it: white paper with no ink, black ink alone is black.
    #[test]
    fn cmyk_conversion_follows_pillow() {
        // Adobe-inverted samples: 255 means no ink.
        assert_eq!(cmyk_to_rgb([255, 255, 255], 255), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb([255, 255, 255], 0), [0, 0, 0]);
        assert_eq!(cmyk_to_rgb([0, 255, 255], 255), [0, 255, 255]);
        // Half ink on half black: 127 - 128 * 127 / 255 (64 in Pillow's MULDIV255) = 63.
        assert_eq!(cmyk_to_rgb([127, 127, 127], 127), [63, 63, 63]);
    }
}

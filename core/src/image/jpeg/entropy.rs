//! Huffman entropy decoding: the bit reader over entropy-coded segments, Huffman tables, and
//! the four kinds of block decoding (sequential, progressive DC first/refine, AC first/refine).
//!
//! Damage is handled as libjpeg does, so a damaged file decodes to what Pillow shows: an
//! invalid Huffman code decodes as zero, and a marker found inside a segment ends the data
//! there, the missing bits reading as zeros. Running out of bytes altogether is reported
//! instead (see [`BitReader::read_past_end`]): the rest of the image would be invented.

use crate::error::{Error, Result};

/// Zigzag position -> natural (row-major) position, with 16 extra entries pointing at the
/// last coefficient so that a corrupt run length past 63 lands there, as in libjpeg.
pub(super) const NATURAL_ORDER: [usize; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7,
    14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39,
    46, 53, 60, 61, 54, 47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
];

/// Bits looked up at once; longer codes take the slow path.
const LOOKAHEAD: u32 = 9;

/// One Huffman table from a DHT segment, ready for decoding.
#[derive(Debug, Clone)]
pub(super) struct HuffmanTable {
    /// For each `LOOKAHEAD`-bit prefix: `(length << 8) | symbol`, or 0 when the code is longer.
    fast: Vec<u16>,
    /// Largest code of each length (index 1..=16), -1 when none; index 17 ends the search.
    max_code: [i32; 18],
    /// `values` index of the first code of each length, minus that code.
    offset: [i32; 17],
    values: Vec<u8>,
}

impl HuffmanTable {
    /// Builds the table from the 16 code-length counts and the symbols of a DHT segment.
    /// DC tables may only hold the categories 0..=15 (libjpeg's rule).
    pub(super) fn new(counts: &[u8; 16], values: &[u8], dc: bool) -> Result<Self> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total > 256 || total != values.len() {
            return Err(Error::decode("JPEG", "bad Huffman table: more than 256 codes"));
        }
        if dc && values.iter().any(|&v| v > 15) {
            return Err(Error::decode("JPEG", "bad Huffman table: a DC category above 15"));
        }
        let mut fast = vec![0u16; 1 << LOOKAHEAD];
        let mut max_code = [-1i32; 18];
        let mut offset = [0i32; 17];
        let mut code: u32 = 0;
        let mut index = 0usize;
        for length in 1..=16u32 {
            let count = usize::from(counts[length as usize - 1]);
            offset[length as usize] = index as i32 - code as i32;
            for _ in 0..count {
                // Codes of this length must fit in `length` bits.
                if code >= 1 << length {
                    return Err(Error::decode(
                        "JPEG",
                        "bad Huffman table: the code lengths overflow",
                    ));
                }
                if length <= LOOKAHEAD {
                    let shift = LOOKAHEAD - length;
                    let first = (code << shift) as usize;
                    let entry = (length as u16) << 8 | u16::from(values[index]);
                    fast[first..first + (1 << shift)].fill(entry);
                }
                code += 1;
                index += 1;
            }
            if count > 0 {
                max_code[length as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        max_code[17] = i32::MAX;
        Ok(HuffmanTable {
            fast,
            max_code,
            offset,
            values: values.to_vec(),
        })
    }
}

/// Reads the bits of one entropy-coded segment, removing stuffed zero bytes.
pub(super) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    bits: u64,
    count: u32,
    /// Zero bits appended because a marker (or the end of the data) was reached.
    padding: u32,
    at_marker: bool,
    at_end: bool,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(data: &'a [u8], pos: usize) -> Self {
        BitReader {
            data,
            pos,
            bits: 0,
            count: 0,
            padding: 0,
            at_marker: false,
            at_end: false,
        }
    }

    /// Position of the first byte not consumed: where the next marker starts.
    pub(super) fn position(&self) -> usize {
        self.pos
    }

    fn fill(&mut self) {
        while self.count <= 56 {
            let mut byte = 0u8;
            if self.at_marker || self.at_end {
                self.padding += 8;
            } else if let Some(&b) = self.data.get(self.pos) {
                if b == 0xFF {
                    // 0xFF 0x00 is a data byte; 0xFF (0xFF)* X is a marker left for the caller.
                    let mut next = self.pos + 1;
                    while self.data.get(next) == Some(&0xFF) {
                        next += 1;
                    }
                    match self.data.get(next) {
                        Some(0) => {
                            byte = 0xFF;
                            self.pos = next + 1;
                        }
                        Some(_) => {
                            self.at_marker = true;
                            self.padding += 8;
                        }
                        None => {
                            self.at_end = true;
                            self.padding += 8;
                        }
                    }
                } else {
                    byte = b;
                    self.pos += 1;
                }
            } else {
                self.at_end = true;
                self.padding += 8;
            }
            self.bits |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    /// Whether bits beyond the end of the file were consumed: the file is truncated.
    pub(super) fn read_past_end(&self) -> bool {
        self.at_end && self.padding > self.count
    }

    #[inline]
    fn peek(&mut self, n: u32) -> u32 {
        if self.count < n {
            self.fill();
        }
        (self.bits >> (64 - n)) as u32
    }

    #[inline]
    fn consume(&mut self, n: u32) {
        self.bits <<= n;
        self.count -= n;
    }

    #[inline]
    pub(super) fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let value = self.peek(n);
        self.consume(n);
        value
    }

    #[inline]
    pub(super) fn bit(&mut self) -> bool {
        self.bits(1) == 1
    }

    /// `n` bits as a signed value (the JPEG "EXTEND" of a magnitude category).
    #[inline]
    pub(super) fn signed(&mut self, n: u32) -> i32 {
        if n == 0 {
            return 0;
        }
        let value = self.bits(n) as i32;
        if value < 1 << (n - 1) {
            value - (1 << n) + 1
        } else {
            value
        }
    }

    /// The next Huffman symbol; an invalid code decodes as 0, as libjpeg does.
    #[inline]
    pub(super) fn decode(&mut self, table: &HuffmanTable) -> u8 {
        let prefix = self.peek(16);
        let entry = table.fast[(prefix >> (16 - LOOKAHEAD)) as usize];
        if entry != 0 {
            self.consume(u32::from(entry >> 8));
            return entry as u8;
        }
        for length in LOOKAHEAD + 1..=16 {
            let code = (prefix >> (16 - length)) as i32;
            if code <= table.max_code[length as usize] {
                self.consume(length);
                let index = table.offset[length as usize] + code;
                return table.values.get(index as usize).copied().unwrap_or(0);
            }
        }
        self.peek(17);
        self.consume(17);
        0
    }

    /// Moves past the restart marker that ends a restart interval: the bits left in the
    /// current byte are padding, and bytes up to the next marker are skipped (libjpeg warns
    /// and does the same). A marker that is not a restart marker is left for the caller, so
    /// the rest of the scan reads as zeros.
    pub(super) fn restart(&mut self) {
        self.bits = 0;
        self.count = 0;
        self.padding = 0;
        if let Some((at, marker)) = next_marker(self.data, self.pos) {
            if (0xD0..=0xD7).contains(&marker) {
                self.pos = at + 2;
                self.at_marker = false;
                self.at_end = false;
            } else {
                self.pos = at;
                self.at_marker = true;
            }
        } else {
            self.pos = self.data.len();
            self.at_end = true;
        }
    }
}

/// The next marker at or after `from`: the offset of its last 0xFF fill byte and its code
/// (neither 0x00, a stuffed data byte, nor 0xFF).
pub(super) fn next_marker(data: &[u8], from: usize) -> Option<(usize, u8)> {
    let mut at = from;
    loop {
        let offset = data.get(at..)?.iter().position(|&b| b == 0xFF)?;
        at += offset;
        let mut code_at = at + 1;
        while data.get(code_at) == Some(&0xFF) {
            code_at += 1;
        }
        match data.get(code_at) {
            None => return None,
            Some(0) => at = code_at + 1,
            Some(&code) => return Some((code_at - 1, code)),
        }
    }
}

/// What one scan decodes.
#[derive(Debug, Clone, Copy)]
pub(super) struct ScanParams {
    pub start: usize,
    pub end: usize,
    pub high: u32,
    pub low: u32,
}

/// Sequential (baseline or extended) block: DC difference then the AC run-lengths.
pub(super) fn decode_sequential(
    reader: &mut BitReader,
    block: &mut [i16; 64],
    dc: &HuffmanTable,
    ac: &HuffmanTable,
    prediction: &mut i32,
) {
    let category = u32::from(reader.decode(dc));
    *prediction = prediction.wrapping_add(reader.signed(category));
    block[0] = *prediction as i16;
    let mut k = 1;
    while k < 64 {
        let rs = reader.decode(ac);
        let (run, size) = (usize::from(rs >> 4), u32::from(rs & 15));
        if size != 0 {
            k += run;
            block[NATURAL_ORDER[k]] = reader.signed(size) as i16;
            k += 1;
        } else if run == 15 {
            k += 16;
        } else {
            break;
        }
    }
}

/// Progressive DC scan, first pass: the DC value shifted left by the successive-approximation
/// low bit.
pub(super) fn decode_dc_first(
    reader: &mut BitReader,
    block: &mut [i16; 64],
    dc: &HuffmanTable,
    prediction: &mut i32,
    low: u32,
) {
    let category = u32::from(reader.decode(dc));
    *prediction = prediction.wrapping_add(reader.signed(category));
    block[0] = (*prediction << low) as i16;
}

/// Progressive DC scan, refinement: one more bit of each DC value.
pub(super) fn decode_dc_refine(reader: &mut BitReader, block: &mut [i16; 64], low: u32) {
    if reader.bit() {
        block[0] |= (1i32 << low) as i16;
    }
}

/// Progressive AC scan, first pass, with end-of-band runs across blocks.
pub(super) fn decode_ac_first(
    reader: &mut BitReader,
    block: &mut [i16; 64],
    ac: &HuffmanTable,
    scan: ScanParams,
    eob_run: &mut u32,
) {
    if *eob_run > 0 {
        *eob_run -= 1;
        return;
    }
    let mut k = scan.start;
    while k <= scan.end {
        let rs = reader.decode(ac);
        let (run, size) = (u32::from(rs >> 4), u32::from(rs & 15));
        if size != 0 {
            k += run as usize;
            let value = reader.signed(size);
            block[NATURAL_ORDER[k.min(79)]] = (value << scan.low) as i16;
        } else if run == 15 {
            k += 15;
        } else {
            *eob_run = (1 << run) - 1;
            if run > 0 {
                *eob_run += reader.bits(run);
            }
            break;
        }
        k += 1;
    }
}

/// Progressive AC scan, refinement: correction bits for coefficients already non-zero and
/// new coefficients of magnitude 1, following the order of the standard (G.1.2.3).
pub(super) fn decode_ac_refine(
    reader: &mut BitReader,
    block: &mut [i16; 64],
    ac: &HuffmanTable,
    scan: ScanParams,
    eob_run: &mut u32,
) {
    let plus = 1i16 << scan.low;
    let minus = (-1i32 << scan.low) as i16;
    let refine = |reader: &mut BitReader, coef: &mut i16| {
        if reader.bit() && *coef & plus == 0 {
            *coef = if *coef >= 0 {
                coef.wrapping_add(plus)
            } else {
                coef.wrapping_add(minus)
            };
        }
    };
    let mut k = scan.start;
    if *eob_run == 0 {
        while k <= scan.end {
            let rs = reader.decode(ac);
            let (mut run, size) = (i32::from(rs >> 4), rs & 15);
            let mut value = 0i16;
            if size != 0 {
                // Only magnitude 1 is valid here; libjpeg reads the sign bit whatever it is.
                value = if reader.bit() { plus } else { minus };
            } else if run != 15 {
                *eob_run = 1 << run;
                if run > 0 {
                    *eob_run += reader.bits(run as u32);
                }
                break;
            }
            while k <= scan.end {
                let coef = &mut block[NATURAL_ORDER[k]];
                if *coef != 0 {
                    refine(reader, coef);
                } else {
                    run -= 1;
                    if run < 0 {
                        break;
                    }
                }
                k += 1;
            }
            if value != 0 {
                block[NATURAL_ORDER[k.min(79)]] = value;
            }
            k += 1;
        }
    }
    if *eob_run > 0 {
        while k <= scan.end {
            let coef = &mut block[NATURAL_ORDER[k]];
            if *coef != 0 {
                refine(reader, coef);
            }
            k += 1;
        }
        *eob_run -= 1;
    }
}

//! Which audio format a file is, from its first bytes (never from a file name: `load_audio`
//! receives bytes), as libsndfile tells formats apart.

use crate::error::{Error, Result};

/// The formats `load_audio` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioFormat {
    /// RIFF/WAVE, PCM 8/16/24/32-bit or IEEE float 32/64-bit.
    Wav,
    /// Native FLAC (`fLaC`), optionally after an ID3v2 tag.
    Flac,
    /// MPEG-1/2/2.5 Layer III, optionally after an ID3v2 tag.
    Mp3,
    /// Vorbis in Ogg.
    OggVorbis,
}

/// What kiln lists when it does not recognise a file.
const KNOWN: &str = "kiln reads WAV, FLAC, MP3 and Ogg Vorbis";

impl AudioFormat {
    /// The format's name as errors give it (`corrupt or unsupported FLAC: ...`).
    pub fn name(self) -> &'static str {
        match self {
            AudioFormat::Wav => "WAV",
            AudioFormat::Flac => "FLAC",
            AudioFormat::Mp3 => "MP3",
            AudioFormat::OggVorbis => "Ogg Vorbis",
        }
    }

    /// The format of `bytes`, from their signature: `RIFF` (WAV), `fLaC` (FLAC), `OggS` with a
    /// Vorbis identification header, an ID3v2 tag (before MP3 or FLAC) or an MPEG Layer III
    /// frame header. Anything else, Ogg Opus included, is an error that says what the bytes are
    /// or start with.
    pub fn sniff(bytes: &[u8]) -> Result<AudioFormat> {
        if bytes.starts_with(b"RIFF") {
            return Ok(AudioFormat::Wav);
        }
        if bytes.starts_with(b"fLaC") {
            return Ok(AudioFormat::Flac);
        }
        if bytes.starts_with(b"OggS") {
            return ogg_codec(bytes);
        }
        if let Some(after) = skip_id3v2(bytes) {
            // libFLAC skips an ID3v2 tag before `fLaC`, as mpg123 does before MP3 frames.
            return Ok(if after.starts_with(b"fLaC") {
                AudioFormat::Flac
            } else {
                AudioFormat::Mp3
            });
        }
        if is_layer3_header(bytes) {
            return Ok(AudioFormat::Mp3);
        }
        Err(unknown(bytes))
    }
}

fn unknown(bytes: &[u8]) -> Error {
    if bytes.is_empty() {
        return Error::decode("audio", format!("the input is empty; {KNOWN}"));
    }
    let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Error::decode(
        "audio",
        format!(
            "not a format kiln recognises (the bytes start {}); {KNOWN}",
            head.join(" ")
        ),
    )
}

/// The codec of an Ogg file's first logical stream, from the first packet on its first page.
fn ogg_codec(bytes: &[u8]) -> Result<AudioFormat> {
    // Page header: "OggS", version, flags, granule (8), serial (4), sequence (4), CRC (4),
    // segment count; then the segment table and the packet data.
    let first = bytes
        .get(26)
        .map(|&segments| 27 + usize::from(segments))
        .and_then(|start| bytes.get(start..))
        .ok_or_else(|| Error::decode("Ogg", "truncated: the file ends inside the first page header"))?;
    if first.starts_with(b"\x01vorbis") {
        return Ok(AudioFormat::OggVorbis);
    }
    let codec = if first.starts_with(b"OpusHead") {
        "Opus"
    } else if first.starts_with(b"\x7fFLAC") {
        "FLAC"
    } else if first.starts_with(b"Speex   ") {
        "Speex"
    } else {
        "an unknown codec"
    };
    Err(Error::decode(
        "Ogg",
        format!("the first stream is {codec}; kiln reads Vorbis in Ogg"),
    ))
}

/// The bytes after an ID3v2 tag at the start of `bytes`, or `None` if there is none.
pub(crate) fn skip_id3v2(bytes: &[u8]) -> Option<&[u8]> {
    // "ID3", version (2), flags, then the tag's size as four 7-bit bytes; a footer (flag 0x10)
    // adds 10 bytes.
    let header = bytes.get(..10).filter(|h| h.starts_with(b"ID3"))?;
    if header[6..10].iter().any(|&b| b & 0x80 != 0) {
        return None;
    }
    let size = header[6..10]
        .iter()
        .fold(0usize, |size, &b| (size << 7) | usize::from(b));
    let footer = if header[5] & 0x10 != 0 { 10 } else { 0 };
    Some(bytes.get(10 + size + footer..).unwrap_or_default())
}

/// The MPEG audio frames of an MP3 file: without a leading ID3v2 tag, nor a trailing ID3v1
/// tag (`TAG` and 125 bytes), whose text could otherwise pass for a frame header.
pub(crate) fn mp3_frames(bytes: &[u8]) -> &[u8] {
    let frames = skip_id3v2(bytes).unwrap_or(bytes);
    match frames.len().checked_sub(128) {
        Some(at) if frames[at..].starts_with(b"TAG") => &frames[..at],
        _ => frames,
    }
}

/// An MPEG Layer III frame header: 11 sync bits, a valid version, layer III, and neither the
/// reserved bitrate nor the reserved sample rate.
fn is_layer3_header(bytes: &[u8]) -> bool {
    let Some(&[a, b, c, _]) = bytes.get(..4) else {
        return false;
    };
    let version = (b >> 3) & 0b11;
    let layer = (b >> 1) & 0b11;
    a == 0xFF
        && b & 0xE0 == 0xE0
        && version != 0b01
        && layer == 0b01
        && c >> 4 != 0xF
        && (c >> 2) & 0b11 != 0b11
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_decide_the_format() {
        assert_eq!(AudioFormat::sniff(b"RIFF\0\0\0\0WAVE").unwrap(), AudioFormat::Wav);
        assert_eq!(AudioFormat::sniff(b"fLaC\0\0\0\x22").unwrap(), AudioFormat::Flac);
        // MPEG-1 Layer III, 128 kbit/s, 44.1 kHz.
        assert_eq!(
            AudioFormat::sniff(&[0xFF, 0xFB, 0x90, 0x44]).unwrap(),
            AudioFormat::Mp3
        );
        // MPEG-2 Layer III, 16 kHz.
        assert_eq!(
            AudioFormat::sniff(&[0xFF, 0xF3, 0x58, 0xC4]).unwrap(),
            AudioFormat::Mp3
        );
        // An ID3v2 tag of 5 bytes, then FLAC or anything (mpg123 then looks for frames).
        let tagged = |rest: &[u8]| [b"ID3\x04\0\0\0\0\0\x05hello".as_slice(), rest].concat();
        assert_eq!(AudioFormat::sniff(&tagged(b"fLaC")).unwrap(), AudioFormat::Flac);
        assert_eq!(
            AudioFormat::sniff(&tagged(&[0xFF, 0xFB, 0x90, 0x44])).unwrap(),
            AudioFormat::Mp3
        );
        let mut ogg = b"OggS\0\x02".to_vec();
        ogg.extend_from_slice(&[0; 20]);
        ogg.extend_from_slice(&[1, 30]);
        ogg.extend_from_slice(b"\x01vorbis");
        assert_eq!(AudioFormat::sniff(&ogg).unwrap(), AudioFormat::OggVorbis);
    }

    #[test]
    fn what_is_not_recognised_is_named() {
        let message = |bytes: &[u8]| AudioFormat::sniff(bytes).unwrap_err().to_string();
        assert_eq!(
            message(b""),
            "corrupt or unsupported audio: the input is empty; kiln reads WAV, FLAC, MP3 and Ogg Vorbis"
        );
        assert_eq!(
            message(b"\x89PNG\r\n\x1a\n...."),
            "corrupt or unsupported audio: not a format kiln recognises (the bytes start 89 50 4e 47 0d 0a \
             1a 0a); kiln reads WAV, FLAC, MP3 and Ogg Vorbis"
        );
        // MPEG-1 Layer II and a reserved sample rate are not MP3.
        assert!(message(&[0xFF, 0xFD, 0x90, 0x44]).contains("not a format kiln recognises"));
        assert!(message(&[0xFF, 0xFB, 0x9C, 0x44]).contains("not a format kiln recognises"));
        let mut opus = b"OggS\0\x02".to_vec();
        opus.extend_from_slice(&[0; 20]);
        opus.extend_from_slice(&[1, 19]);
        opus.extend_from_slice(b"OpusHead\x01\x02");
        assert_eq!(
            message(&opus),
            "corrupt or unsupported Ogg: the first stream is Opus; kiln reads Vorbis in Ogg"
        );
        assert_eq!(
            message(b"OggS\0\x02\0\0"),
            "corrupt or unsupported Ogg: truncated: the file ends inside the first page header"
        );
    }

    #[test]
    fn id3_tags_are_skipped_within_bounds() {
        // A tag claiming 256 MiB in a 14-byte file leaves nothing, not a panic.
        assert_eq!(skip_id3v2(b"ID3\x04\0\0\x7f\x7f\x7f\x7fabcd"), Some(&b""[..]));
        // A size byte with its top bit set is not a tag.
        assert_eq!(skip_id3v2(b"ID3\x04\0\0\x80\0\0\0"), None);
        let mut file = b"ID3\x04\0\x10\0\0\0\x01x".to_vec();
        file.extend_from_slice(b"3DI\x04\0\x10\0\0\0\x01");
        file.extend_from_slice(&[0xFF, 0xFB]);
        let mut id3v1 = b"TAG".to_vec();
        id3v1.resize(128, b' ');
        file.extend_from_slice(&id3v1);
        assert_eq!(mp3_frames(&file), &[0xFF, 0xFB]);
    }
}

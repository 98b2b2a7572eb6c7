//! FLAC, MP3 and Ogg Vorbis decoding to f32 with symphonia, as soundfile (libsndfile with
//! libFLAC, mpg123 and libvorbis) reads them, and so as `librosa.load` does.
//!
//! - FLAC: the integer samples scaled by `2^-(bits - 1)`, as libsndfile scales them: exact.
//! - MP3: gapless, as mpg123 decodes for libsndfile: the encoder delay and padding that the
//!   LAME/Info tag records (plus the decoder's 529-sample delay) are removed, so the sample count
//!   and alignment are librosa's; values within about 1e-6 of mpg123's float synthesis.
//! - Ogg Vorbis: gapless from the granule positions (the first page's start and the last
//!   page's end), as libvorbisfile; values within about 1e-6 of libvorbis.
//!
//! Bounds: a file decodes to at most [`MAX_TENSOR_ELEMENTS`] samples over all channels, memory
//! is reserved as frames are decoded (fallibly, never from a header's claim), sample rates are
//! `1..=`[`MAX_SAMPLE_RATE`] as for WAV, and a stream that ends before the length its header
//! declares (FLAC's STREAMINFO, MP3's Xing/Info frame count) or inside an Ogg page is truncated,
//! an error rather than shorter audio (as kiln treats WAV).

use std::io::Cursor;

use symphonia::core::audio::{Audio as _, GenericAudioBufferRef};
use symphonia::core::codecs::audio::well_known::{
    CODEC_ID_FLAC, CODEC_ID_MP3, CODEC_ID_OPUS, CODEC_ID_VORBIS,
};
use symphonia::core::codecs::audio::{AudioCodecId, AudioCodecParameters, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::default::formats::{FlacReader, MpaReader, OggReader};

use super::decode::Audio;
use super::format::{mp3_frames, AudioFormat};
use crate::error::{Error, Result};
use crate::limits::{MAX_SAMPLE_RATE, MAX_TENSOR_ELEMENTS};

/// The symphonia codec of a compressed format.
fn codec(format: AudioFormat) -> Option<AudioCodecId> {
    match format {
        AudioFormat::Flac => Some(CODEC_ID_FLAC),
        AudioFormat::Mp3 => Some(CODEC_ID_MP3),
        AudioFormat::OggVorbis => Some(CODEC_ID_VORBIS),
        AudioFormat::Wav => None,
    }
}

/// Decodes a whole FLAC, MP3 or Ogg Vorbis file (the caller has sniffed which) to one `Vec` per
/// channel.
pub(crate) fn decode(bytes: &[u8], format: AudioFormat) -> Result<Audio> {
    guarded(format, || decode_limited(bytes, format, MAX_TENSOR_ELEMENTS))
}

/// Runs a decode, turning a panic inside symphonia into this file's error. Its parsers assert on
/// some hostile headers: a Vorbis setup header whose codebook lookup table overflows panics in
/// symphonia-format-ogg 0.6.1 (`lookup1_values`), found by corrupting reference files with valid
/// page CRCs. The decoder's state is local and dropped, so nothing half-updated is seen again.
/// Where panics abort (wasm32, `panic = "abort"`), this cannot help.
fn guarded(format: AudioFormat, decode: impl FnOnce() -> Result<Audio>) -> Result<Audio> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        Err(Error::decode(
            format.name(),
            format!("malformed stream: the decoder failed ({what})"),
        ))
    })
}

/// [`decode`], stopping with an error past `max_samples` samples over all channels.
fn decode_limited(bytes: &[u8], format: AudioFormat, max_samples: usize) -> Result<Audio> {
    let name = format.name();
    let fail = |reason: String| Error::decode(name, reason);
    let expected = codec(format).ok_or_else(|| fail("not a compressed format".into()))?;
    let bytes = if format == AudioFormat::Mp3 {
        mp3_frames(bytes)
    } else {
        bytes
    };
    let stream = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let options = FormatOptions::default();
    let opened = match format {
        AudioFormat::Flac => {
            FlacReader::try_new(stream, options).map(|r| Box::new(r) as Box<dyn FormatReader>)
        }
        AudioFormat::Mp3 => MpaReader::try_new(stream, options).map(|r| Box::new(r) as Box<dyn FormatReader>),
        _ => OggReader::try_new(stream, options).map(|r| Box::new(r) as Box<dyn FormatReader>),
    };
    let mut reader = opened.map_err(|e| fail(format!("cannot read the header: {}", describe(&e))))?;
    let track = reader
        .default_track(TrackType::Audio)
        .ok_or_else(|| fail("no audio stream".into()))?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| fail("no audio stream".into()))?
        .clone();
    if params.codec != expected {
        let what = if params.codec == CODEC_ID_OPUS {
            "Opus".to_owned()
        } else if params.codec == CODEC_ID_FLAC {
            "FLAC".to_owned()
        } else {
            format!("codec {:?}", params.codec)
        };
        return Err(fail(format!("the stream holds {what}, not {name}")));
    }
    let (track_id, declared) = (track.id, track.num_frames);
    let rate = check_rate(name, &params)?;
    let channel_count = params.channels.as_ref().map_or(0, |c| c.count());
    if channel_count == 0 {
        return Err(fail("header declares 0 channels".into()));
    }
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| fail(describe(&e)))?;

    let mut channels = vec![Vec::<f32>::new(); channel_count];
    let mut frames = 0usize;
    loop {
        let packet = match reader.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(SymphoniaError::ResetRequired) => {
                return Err(fail(format!(
                    "a second stream starts after sample {frames} (chained streams are not read)"
                )))
            }
            Err(e) => return Err(fail(format!("after sample {frames}: {}", describe(&e)))),
        };
        if packet.track_id != track_id {
            continue;
        }
        let decoded = decoder
            .decode(&packet)
            .map_err(|e| fail(format!("frame after sample {frames}: {}", describe(&e))))?;
        let spec = decoded.spec();
        if spec.rate() != rate || spec.channels().count() != channel_count {
            return Err(fail(format!(
                "the stream changes from {channel_count} channels at {rate} Hz to {} at {} Hz after sample \
                 {frames}; kiln reads streams of one format",
                spec.channels().count(),
                spec.rate()
            )));
        }
        frames = append(name, &decoded, &mut channels, frames, max_samples)?;
    }
    if let Some(declared) = declared {
        if (frames as u64) < declared {
            return Err(fail(format!(
                "truncated or corrupt: the header declares {declared} samples per channel, the frames hold \
                 {frames}"
            )));
        }
    }
    Ok(Audio {
        sample_rate: rate,
        channels,
    })
}

/// The stream's sample rate, refused outside `1..=`[`MAX_SAMPLE_RATE`] as a WAV header's.
fn check_rate(name: &'static str, params: &AudioCodecParameters) -> Result<u32> {
    match params.sample_rate {
        Some(rate) if (1..=MAX_SAMPLE_RATE).contains(&rate) => Ok(rate),
        Some(rate) => Err(Error::decode(
            name,
            format!("header declares a sample rate of {rate} Hz; kiln reads 1 to {MAX_SAMPLE_RATE} Hz"),
        )),
        None => Err(Error::decode(name, "header declares no sample rate")),
    }
}

/// Appends one decoded packet to `channels`, which hold `frames` frames so far; returns the new
/// count. Memory is reserved fallibly, and past `max_samples` samples over all channels
/// ([`MAX_TENSOR_ELEMENTS`]) decoding stops with an error: a few bytes of FLAC can encode
/// 65535 frames.
fn append(
    name: &'static str,
    decoded: &GenericAudioBufferRef<'_>,
    channels: &mut [Vec<f32>],
    frames: usize,
    max_samples: usize,
) -> Result<usize> {
    let added = decoded.frames();
    let total = frames
        .checked_add(added)
        .filter(|&t| t.checked_mul(channels.len()).is_some_and(|s| s <= max_samples))
        .ok_or_else(|| {
            Error::decode(
                name,
                format!(
                    "decodes to more than {max_samples} samples over its {} channels (kiln's limit)",
                    channels.len()
                ),
            )
        })?;
    for channel in channels.iter_mut() {
        channel
            .try_reserve(added)
            .map_err(|_| Error::decode(name, format!("out of memory holding {total} samples per channel")))?;
    }
    match decoded {
        GenericAudioBufferRef::F32(buffer) => {
            for (c, channel) in channels.iter_mut().enumerate() {
                channel.extend_from_slice(buffer.plane(c).unwrap_or_default());
            }
        }
        // FLAC's samples, shifted left to fill 32 bits: libsndfile scales the same integers by
        // 2^-31, exact for up to 24 significant bits.
        GenericAudioBufferRef::S32(buffer) => {
            for (c, channel) in channels.iter_mut().enumerate() {
                let plane = buffer.plane(c).unwrap_or_default();
                channel.extend(plane.iter().map(|&v| v as f32 * (1.0 / 2_147_483_648.0)));
            }
        }
        other => {
            let mut planes = Vec::new();
            other.copy_to_vecs_planar::<f32>(&mut planes);
            for (channel, plane) in channels.iter_mut().zip(&planes) {
                channel.extend_from_slice(plane);
            }
        }
    }
    if channels.iter().any(|c| c.len() != total) {
        return Err(Error::decode(
            name,
            "a frame holds fewer samples in one channel than another",
        ));
    }
    Ok(total)
}

/// symphonia's error in kiln's words: what is wrong with the bytes.
fn describe(error: &SymphoniaError) -> String {
    match error {
        SymphoniaError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            // A reader that skips a frame failing its CRC looks for the next one and finds the end:
            // a cut file and a corrupt frame read the same.
            "truncated or corrupt: the data ends inside a frame or page".to_owned()
        }
        SymphoniaError::IoError(e) => format!("read error: {e}"),
        SymphoniaError::DecodeError(what) => format!("malformed stream: {what}"),
        SymphoniaError::Unsupported(what) => format!("unsupported feature: {what}"),
        SymphoniaError::LimitError(what) => format!("limit reached: {what}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::audio::decode::decode_audio;

    /// FLAC's CRC-8 (polynomial 0x07) of a frame header and CRC-16 (0x8005) of a whole frame.
    fn crc(bytes: &[u8], width: u32, poly: u32) -> u32 {
        let top = 1 << (width - 1);
        let mask = (1u64 << width) as u32 - 1;
        bytes.iter().fold(0u32, |mut c, &b| {
            c ^= u32::from(b) << (width - 8);
            for _ in 0..8 {
                c = if c & top != 0 { (c << 1) ^ poly } else { c << 1 } & mask;
            }
            c
        })
    }

    /// A 16-bit FLAC file whose STREAMINFO declares `rate` Hz, `channels` and `declared` total
    /// frames, holding `blocks` frames of `block` samples each, every channel the constant
    /// `value` (a CONSTANT subframe: a few bytes for up to 65535 samples).
    fn flac(rate: u32, channels: u8, declared: u64, blocks: u32, block: u16, value: i16) -> Vec<u8> {
        let mut out = b"fLaC".to_vec();
        // Last metadata block (0x80), STREAMINFO, 34 bytes.
        out.extend_from_slice(&[0x80, 0, 0, 34]);
        out.extend_from_slice(&block.to_be_bytes());
        out.extend_from_slice(&block.to_be_bytes());
        // Frame sizes unknown.
        out.extend_from_slice(&[0; 6]);
        // 20 bits rate, 3 bits channels - 1, 5 bits bits per sample - 1, 36 bits total frames.
        let packed = (u64::from(rate) << 44)
            | (u64::from(channels - 1) << 41)
            | (15u64 << 36)
            | (declared & 0xF_FFFF_FFFF);
        out.extend_from_slice(&packed.to_be_bytes());
        out.extend_from_slice(&[0; 16]); // no MD5
        for number in 0..blocks {
            // Fixed block size; block size from the 16 bits after the header (0111); rate
            // from STREAMINFO (0000); independent channels; 16 bits (100); frame number.
            let mut frame = vec![0xFF, 0xF8, 0x70, ((channels - 1) << 4) | 0b1000];
            assert!(number < 0x80, "one-byte frame numbers only");
            frame.push(number as u8);
            frame.extend_from_slice(&(block - 1).to_be_bytes());
            frame.push(crc(&frame, 8, 0x07) as u8);
            for _ in 0..channels {
                frame.push(0); // CONSTANT subframe
                frame.extend_from_slice(&value.to_be_bytes());
            }
            let crc16 = crc(&frame, 16, 0x8005) as u16;
            frame.extend_from_slice(&crc16.to_be_bytes());
            out.extend_from_slice(&frame);
        }
        out
    }

    #[test]
    fn a_panic_in_the_decoder_is_the_files_error() {
        let error = guarded(AudioFormat::OggVorbis, || {
            panic!("assertion failed: x <= entries")
        });
        assert_eq!(
            error.unwrap_err().to_string(),
            "corrupt or unsupported Ogg Vorbis: malformed stream: the decoder failed (assertion failed: x \
             <= entries)"
        );
    }

    #[test]
    fn a_hand_built_flac_decodes_as_libsndfile_scales_it() {
        let audio = decode_audio(&flac(8000, 2, 300, 3, 100, -16384)).unwrap();
        assert_eq!(audio.sample_rate, 8000);
        assert_eq!(audio.channels, vec![vec![-0.5f32; 300]; 2]);
    }

    #[test]
    fn flac_bombs_stop_at_the_sample_limit() {
        // 100 frames of 65535 constant samples: 6.5 million samples from 1.7 KB.
        let bomb = flac(48_000, 2, 0, 100, 65535, 1);
        assert!(bomb.len() < 2000);
        let start = Instant::now();
        let error = decode_limited(&bomb, AudioFormat::Flac, 1_000_000)
            .unwrap_err()
            .to_string();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(
            error,
            "corrupt or unsupported FLAC: decodes to more than 1000000 samples over its 2 channels \
             (kiln's limit)"
        );
        assert_eq!(
            decode_limited(&bomb, AudioFormat::Flac, 13_107_000)
                .unwrap()
                .frames(),
            6_553_500
        );
    }

    #[test]
    fn flac_headers_are_checked() {
        let message = |bytes: &[u8]| decode_audio(bytes).unwrap_err().to_string();
        // STREAMINFO's 20-bit rate goes to 1048575 Hz; symphonia refuses above FLAC's 655350.
        assert_eq!(
            message(&flac(1_000_000, 1, 16, 1, 16, 0)),
            "corrupt or unsupported FLAC: cannot read the header: malformed stream: flac: stream sample \
             rate out of bounds"
        );
        assert!(message(&flac(0, 1, 16, 1, 16, 0)).starts_with("corrupt or unsupported FLAC: "));
        // A header declaring 2^36 - 1 frames over a file holding 16: no allocation, an error.
        let start = Instant::now();
        assert_eq!(
            message(&flac(16_000, 1, (1 << 36) - 1, 1, 16, 0)),
            "corrupt or unsupported FLAC: after sample 16: truncated or corrupt: the data ends inside a \
             frame or page"
        );
        assert!(start.elapsed() < Duration::from_millis(500));
        // Cut inside the second frame.
        let whole = flac(16_000, 1, 32, 2, 16, 0);
        assert_eq!(
            message(&whole[..whole.len() - 3]),
            "corrupt or unsupported FLAC: after sample 16: truncated or corrupt: the data ends inside a \
             frame or page"
        );
        // A frame whose CRC fails is skipped; the reader finds the end looking for the next.
        let mut bad = whole.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(
            message(&bad),
            "corrupt or unsupported FLAC: after sample 16: truncated or corrupt: the data ends inside a \
             frame or page"
        );
        // Cut inside STREAMINFO.
        assert_eq!(
            message(&whole[..20]),
            "corrupt or unsupported FLAC: cannot read the header: truncated or corrupt: the data ends \
             inside a frame or page"
        );
    }
}

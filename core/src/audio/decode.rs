//! Audio decoding to f32 as `soundfile.read(path, dtype='float32')` (WAV and FLAC exactly; MP3
//! and Ogg Vorbis gapless, as librosa loads them: see [`super::compressed`]), librosa's
//! `to_mono`, `fix_length`, and resampling.

use std::io::{Cursor, Read as _};

use super::compressed;
use super::format::AudioFormat;
use super::resample::Resampler;

use crate::error::{Error, Result};
use crate::limits::{MAX_RESAMPLE_RATIO, MAX_SAMPLE_RATE, MAX_TENSOR_ELEMENTS};

/// Decoded audio, one `Vec` per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub sample_rate: u32,
    pub channels: Vec<Vec<f32>>,
}

/// Decodes a WAV, FLAC, MP3 or Ogg Vorbis file, told apart by its first bytes
/// ([`AudioFormat::sniff`]), to one `Vec` of f32 per channel: what `load_audio` runs.
///
/// WAV and FLAC give soundfile's samples exactly; MP3 and Vorbis librosa's sample count and
/// alignment (gapless: the encoder's delay and padding removed, as mpg123 and libvorbisfile
/// through libsndfile) with values within about 1e-6. Every format is bounded as [`decode_wav`]:
/// errors name the format and the problem, and no header's claim is allocated.
pub fn decode_audio(bytes: &[u8]) -> Result<Audio> {
    match AudioFormat::sniff(bytes)? {
        AudioFormat::Wav => decode_wav(bytes),
        format => compressed::decode(bytes, format),
    }
}

/// Decodes PCM 8/16/24/32-bit and float 32/64-bit WAV of any channel count.
///
/// Scaling matches libsndfile's float conversion: 8-bit (unsigned) `(u - 128) / 128`,
/// 16-bit `/ 2^15`, 24-bit `/ 2^23`, 32-bit `float(i) / 2^31`, float32 as stored, float64
/// rounded to the nearest f32. As in libsndfile, the container decides: 24 valid bits in 4-byte
/// containers (`WAVE_FORMAT_EXTENSIBLE`) are read as 32-bit samples, which gives `/ 2^23` for
/// the left-aligned samples the format specifies. Unknown RIFF chunks (`fact`, `PEAK`, `LIST`)
/// are skipped. A data chunk shorter than its header says is an error rather than silently
/// shorter audio; memory is reserved for the samples the file holds, never for what its header
/// claims. Sample rates
/// outside `1..=`[`MAX_SAMPLE_RATE`] are errors. Float samples are returned as stored, NaN and
/// infinity included (as soundfile); the spectral ops and resampling refuse them
/// ([`check_finite`]).
pub fn decode_wav(bytes: &[u8]) -> Result<Audio> {
    // hound parses and checks the header (RIFF/WAVE tags, the `fmt ` chunk, a data length that
    // is whole frames); the samples are then converted in bulk from the data chunk's bytes,
    // about 100 times faster than hound's per-sample reader (`tests::decode_speed`).
    let (mut spec, sample_count, start) = read_header(bytes)?;
    if float64_bits_field(bytes).is_some() {
        spec.bits_per_sample = 64;
    }
    let channel_count = usize::from(spec.channels);
    if channel_count == 0 {
        return Err(Error::decode("WAV", "header declares 0 channels"));
    }
    if !(1..=MAX_SAMPLE_RATE).contains(&spec.sample_rate) {
        return Err(Error::decode(
            "WAV",
            format!(
                "header declares a sample rate of {} Hz; kiln reads 1 to {MAX_SAMPLE_RATE} Hz",
                spec.sample_rate
            ),
        ));
    }
    // hound stops on the first byte of the data chunk, right after its 8-byte chunk header
    // (`data` and the chunk's length in bytes), so the header's byte count is the 4 bytes before.
    let declared = start
        .checked_sub(4)
        .and_then(|at| bytes.get(at..start))
        .map(|len| u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize)
        .ok_or_else(|| Error::decode("WAV", "no data chunk header before the samples"))?;
    // hound checked that the data length is a whole number of samples; the container width is
    // what each takes (24-bit samples come in 3- or 4-byte containers).
    let container = declared.checked_div(sample_count);
    let format = PcmFormat::new(spec.sample_format, spec.bits_per_sample, container)?;
    // The header's length is a claim; the bytes present bound what is read and allocated.
    let rest = bytes.get(start..).unwrap_or_default();
    let present = rest.len();
    if present < declared {
        return Err(Error::decode(
            "WAV",
            format!(
                "data chunk is truncated (shorter than its header says): the header declares {declared} \
                 bytes of samples, the file holds {present}"
            ),
        ));
    }
    let data = &rest[..declared];
    if !sample_count.is_multiple_of(channel_count) {
        return Err(Error::decode("WAV", "data chunk ends in the middle of a frame"));
    }
    let channels = match format {
        None => vec![Vec::new(); channel_count],
        Some(PcmFormat::U8) => deinterleave::<1>(data, channel_count, |[b]| (f32::from(b) - 128.0) / 128.0),
        Some(PcmFormat::I16) => deinterleave::<2>(data, channel_count, |b| {
            f32::from(i16::from_le_bytes(b)) / 32768.0
        }),
        // Sign-extended from the top byte by shifting it into place, then back.
        Some(PcmFormat::I24) => deinterleave::<3>(data, channel_count, |[a, b, c]| {
            (i32::from_le_bytes([0, a, b, c]) >> 8) as f32 / 8_388_608.0
        }),
        // libsndfile reads the whole container (`sf.read` of a 24-in-32 file equals its read as
        // PCM_32), so its low byte counts, which hound's reader ignores.
        Some(PcmFormat::I32) => deinterleave::<4>(data, channel_count, |b| {
            i32::from_le_bytes(b) as f32 * (1.0 / 2_147_483_648.0)
        }),
        Some(PcmFormat::F32) => deinterleave::<4>(data, channel_count, f32::from_le_bytes),
        // Rounded to the nearest f32, as libsndfile's `(float)` cast.
        Some(PcmFormat::F64) => deinterleave::<8>(data, channel_count, |b| f64::from_le_bytes(b) as f32),
    };
    Ok(Audio {
        sample_rate: spec.sample_rate,
        channels,
    })
}

/// hound's reading of a WAV header: the format, the number of samples (all channels) and the
/// offset of the first sample. hound reads IEEE float of 32 bits only; a 64-bit one is shown to
/// it as 32-bit float in 8-byte containers (its `wBitsPerSample` patched in a copy of the header
/// up to that field), which the caller knows from [`float64_bits_field`].
fn read_header(bytes: &[u8]) -> Result<(hound::WavSpec, usize, usize)> {
    let fail = |e: hound::Error| Error::decode("WAV", e);
    let Some(field) = float64_bits_field(bytes) else {
        let reader = hound::WavReader::new(Cursor::new(bytes)).map_err(fail)?;
        let (spec, samples) = (reader.spec(), reader.len() as usize);
        let start = usize::try_from(reader.into_inner().position()).unwrap_or(usize::MAX);
        return Ok((spec, samples, start));
    };
    let mut head = bytes[..field + 2].to_vec();
    head[field..].copy_from_slice(&32u16.to_le_bytes());
    let rest = Cursor::new(&bytes[field + 2..]);
    let reader = hound::WavReader::new(Cursor::new(head).chain(rest)).map_err(fail)?;
    let (spec, samples) = (reader.spec(), reader.len() as usize);
    let (_, rest) = reader.into_inner().into_inner();
    let start = usize::try_from(rest.position())
        .ok()
        .and_then(|p| p.checked_add(field + 2))
        .unwrap_or(usize::MAX);
    Ok((spec, samples, start))
}

/// The offset of `wBitsPerSample` in a plain IEEE-float (`WAVE_FORMAT_IEEE_FLOAT`) `fmt `
/// chunk that declares 64-bit samples (what `soundfile.write(subtype='DOUBLE')` writes), found
/// by walking the chunks before it as hound does; `None` for any other file.
fn float64_bits_field(bytes: &[u8]) -> Option<usize> {
    if bytes.get(8..12) != Some(b"WAVE") {
        return None;
    }
    let mut at = 12usize;
    while let Some(header) = bytes.get(at..at.checked_add(8)?) {
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        match &header[..4] {
            b"fmt " => {
                let fmt = bytes.get(at + 8..at + 24)?;
                let (tag, bits) = (
                    u16::from_le_bytes([fmt[0], fmt[1]]),
                    u16::from_le_bytes([fmt[14], fmt[15]]),
                );
                return (tag == 3 && bits == 64).then_some(at + 22);
            }
            b"data" => return None,
            // hound skips a chunk's length, without the pad byte of odd lengths.
            _ => at = at.checked_add(8)?.checked_add(len)?,
        }
    }
    None
}

/// The sample encodings kiln reads, by what each takes in the data chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PcmFormat {
    /// Unsigned, offset by 128.
    U8,
    I16,
    I24,
    /// Also 24 valid bits in a 4-byte container (`WAVE_FORMAT_EXTENSIBLE`), as libsndfile.
    I32,
    F32,
    /// IEEE double, plain or `WAVE_FORMAT_EXTENSIBLE`.
    F64,
}

impl PcmFormat {
    /// The format for a header's sample format, valid bits and container width in bytes
    /// (`None` when the file has no samples to measure it by: any supported width will do).
    fn new(format: hound::SampleFormat, bits: u16, container: Option<usize>) -> Result<Option<Self>> {
        use hound::SampleFormat::{Float, Int};
        let chosen = match (format, bits, container) {
            (Int, 8, Some(1)) => PcmFormat::U8,
            (Int, 16, Some(2)) => PcmFormat::I16,
            (Int, 24, Some(3)) => PcmFormat::I24,
            (Int, 24 | 32, Some(4)) => PcmFormat::I32,
            (Float, 32, Some(4)) => PcmFormat::F32,
            (Float, 64, Some(8)) => PcmFormat::F64,
            (Int, 8 | 16 | 24 | 32, None) | (Float, 32 | 64, None) => return Ok(None),
            (Int, 8 | 16 | 24 | 32, Some(width)) | (Float, 32 | 64, Some(width)) => {
                return Err(Error::decode(
                    "WAV",
                    format!(
                        "unsupported sample format {format:?} with {bits} bits in {width}-byte containers"
                    ),
                ))
            }
            (format, bits, _) => {
                return Err(Error::decode(
                    "WAV",
                    format!("unsupported sample format {format:?} with {bits} bits"),
                ))
            }
        };
        Ok(Some(chosen))
    }
}

/// Splits interleaved `W`-byte samples into one `Vec` per channel, converting each with
/// `to_f32`. `data` holds whole frames.
fn deinterleave<const W: usize>(
    data: &[u8],
    channels: usize,
    to_f32: impl Fn([u8; W]) -> f32 + Copy,
) -> Vec<Vec<f32>> {
    let (samples, _) = data.as_chunks::<W>();
    if channels == 1 {
        return vec![samples.iter().map(|&s| to_f32(s)).collect()];
    }
    (0..channels)
        .map(|c| {
            samples
                .iter()
                .skip(c)
                .step_by(channels)
                .map(|&s| to_f32(s))
                .collect()
        })
        .collect()
}

/// librosa's `util.valid_audio` check, which its `stft` and `resample` run: NaN or infinite
/// samples are an error (`ParameterError: Audio buffer is not finite everywhere`) rather than a
/// spectrogram of NaN or a silent -100 dB.
pub fn check_finite(op: &'static str, samples: &[f32]) -> Result<()> {
    // A branch-free pass (it vectorizes) first; the position only when something is wrong.
    if samples.iter().fold(true, |all, v| all & v.is_finite()) {
        return Ok(());
    }
    match samples.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::input(
            op,
            format!(
                "audio buffer is not finite everywhere (sample {i} is {})",
                samples[i]
            ),
        )),
    }
}

impl Audio {
    pub fn frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    /// librosa `to_mono`: the mean over channels, summed in f32 channel by channel as NumPy's
    /// `mean(axis=0)` does, then divided by the count.
    pub fn to_mono(&self) -> Vec<f32> {
        let count = self.channels.len() as f32;
        let Some(first) = self.channels.first() else {
            return Vec::new();
        };
        let mut sum = first.clone();
        for channel in &self.channels[1..] {
            for (s, &x) in sum.iter_mut().zip(channel) {
                *s += x;
            }
        }
        sum.iter_mut().for_each(|s| *s /= count);
        sum
    }
}

/// Resamples every channel from `from` Hz to `to` Hz to librosa's length `ceil(n * to / from)`
/// (see [`super::resample`]).
///
/// Both rates must be in `1..=`[`MAX_SAMPLE_RATE`] and differ by at most
/// [`MAX_RESAMPLE_RATIO`] either way, which bounds the work per input sample; non-finite
/// samples are an error, as librosa's `resample`.
pub fn resample(channels: &[Vec<f32>], from: u32, to: u32) -> Result<Vec<Vec<f32>>> {
    for (what, rate) in [("the file's", from), ("the target", to)] {
        if !(1..=MAX_SAMPLE_RATE).contains(&rate) {
            return Err(Error::input(
                "load_audio",
                format!("{what} sample rate is {rate} Hz; kiln resamples 1 to {MAX_SAMPLE_RATE} Hz"),
            ));
        }
    }
    if from == to {
        return Ok(channels.to_vec());
    }
    let (high, low) = (from.max(to), from.min(to));
    if u64::from(high) > u64::from(low) * u64::from(MAX_RESAMPLE_RATIO) {
        return Err(Error::input(
            "load_audio",
            format!(
                "resampling from {from} Hz to {to} Hz is a factor of {:.1}; kiln resamples by at most \
                 {MAX_RESAMPLE_RATIO}x either way",
                f64::from(high) / f64::from(low)
            ),
        ));
    }
    channels.iter().try_for_each(|c| check_finite("load_audio", c))?;
    let frames = channels.first().map_or(0, Vec::len) as u64;
    let out_frames = (frames * u64::from(to)).div_ceil(u64::from(from));
    let total = out_frames.saturating_mul(channels.len() as u64);
    if total > MAX_TENSOR_ELEMENTS as u64 {
        return Err(Error::input(
            "load_audio",
            format!(
                "resampling {frames} frames from {from} Hz to {to} Hz gives {total} samples, above the \
                 limit of {MAX_TENSOR_ELEMENTS}"
            ),
        ));
    }
    let resampler = Resampler::new(from, to);
    Ok(channels.iter().map(|c| resampler.process(c)).collect())
}

/// librosa `util.fix_length(y, size=size)` on every channel: samples past `size` are dropped,
/// a shorter channel is padded with zeros at the end (`np.pad(mode='constant')`).
///
/// An output of more than [`MAX_TENSOR_ELEMENTS`] samples over all channels is an error before
/// anything is allocated (a file of a few bytes may declare thousands of channels).
pub fn fix_length(channels: &mut [Vec<f32>], size: usize) -> Result<()> {
    match size.checked_mul(channels.len()) {
        Some(total) if total <= MAX_TENSOR_ELEMENTS => {}
        _ => {
            return Err(Error::input(
                "fix_length",
                format!(
                    "{} channels of {size} samples exceed the limit of {MAX_TENSOR_ELEMENTS} samples",
                    channels.len()
                ),
            ))
        }
    }
    for channel in channels {
        channel.resize(size, 0.0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{CpuBackend, Pipeline, Spec};

    /// A mono WAV whose header declares `rate` Hz and a data chunk of `declared` bytes, holding
    /// `samples` as `bits`-bit PCM (8 or 16), or float32 with `bits` 0.
    fn wav(rate: u32, bits: u16, samples: &[f32], declared: Option<u32>) -> Vec<u8> {
        let data: Vec<u8> = match bits {
            0 => samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
            8 => samples.iter().map(|s| (s * 127.0 + 128.0) as u8).collect(),
            _ => samples
                .iter()
                .flat_map(|s| ((s * 32767.0) as i16).to_le_bytes())
                .collect(),
        };
        let (format, bits) = if bits == 0 { (3u16, 32u16) } else { (1, bits) };
        let block = bits / 8;
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&format.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&rate.wrapping_mul(u32::from(block)).to_le_bytes());
        out.extend_from_slice(&block.to_le_bytes());
        out.extend_from_slice(&bits.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&declared.unwrap_or(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    fn run(spec: &str, bytes: &[u8]) -> Result<crate::Tensor> {
        Pipeline::new(Spec::from_json(spec).unwrap()).run(&CpuBackend, bytes)
    }

    const LOAD_16K: &str = r#"{"ops": [{"op": "load_audio", "sample_rate": 16000}]}"#;

    #[test]
    fn header_sample_rates_outside_the_audio_range_are_refused() {
        // The 144-byte file that made resampling run 44 s to 3.9 GB.
        let bomb = wav(4_294_967_248, 8, &[0.0; 100], None);
        assert_eq!(bomb.len(), 144);
        let start = Instant::now();
        let error = run(LOAD_16K, &bomb).unwrap_err().to_string();
        assert!(start.elapsed() < Duration::from_millis(100));
        assert_eq!(
            error,
            "corrupt or unsupported WAV: header declares a sample rate of 4294967248 Hz; kiln reads 1 to \
             768000 Hz"
        );
        let error = decode_wav(&wav(0, 16, &[0.0; 4], None)).unwrap_err().to_string();
        assert!(error.contains("sample rate of 0 Hz"), "{error}");
        assert_eq!(
            decode_wav(&wav(768_000, 16, &[0.0; 4], None))
                .unwrap()
                .sample_rate,
            768_000
        );
    }

    #[test]
    fn resampling_ratios_are_bounded() {
        // 1 Hz -> 16 kHz cost 87 ms of CPU per input byte.
        let error = run(LOAD_16K, &wav(1, 16, &[0.5; 64], None))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "load_audio: resampling from 1 Hz to 16000 Hz is a factor of 16000.0; kiln resamples by at \
             most 128x either way"
        );
        let error = run(
            r#"{"ops": [{"op": "load_audio", "sample_rate": 5000}]}"#,
            &wav(768_000, 16, &[0.5; 64], None),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("from 768000 Hz to 5000 Hz is a factor of 153.6"),
            "{error}"
        );
        // 768 kHz -> 8 kHz is 96x: allowed.
        let out = run(
            r#"{"ops": [{"op": "load_audio", "sample_rate": 8000}]}"#,
            &wav(768_000, 16, &[0.5; 960], None),
        )
        .unwrap();
        assert_eq!(out.shape, vec![10]);
        // 125 -> 16000 is exactly 128x: allowed, and the output length is librosa's.
        let out = run(LOAD_16K, &wav(125, 16, &[0.5; 3], None)).unwrap();
        assert_eq!(out.shape, vec![384]);
    }

    #[test]
    fn a_data_chunk_longer_than_the_file_is_truncation_not_an_allocation() {
        let liar = wav(16_000, 16, &[0.25; 10], Some(u32::MAX - 1));
        let start = Instant::now();
        let error = decode_wav(&liar).unwrap_err().to_string();
        assert!(start.elapsed() < Duration::from_millis(100));
        assert!(error.contains("data chunk is truncated"), "{error}");
    }

    #[test]
    fn non_finite_audio_is_an_error_for_spectral_ops_and_resampling() {
        let stft = r#"{"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 8, "hop_length": 4},
            {"op": "magnitude", "power": 2}, {"op": "power_to_db"}]}"#;
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut samples = vec![0.1f32; 32];
            samples[5] = bad;
            let bytes = wav(16_000, 0, &samples, None);
            let error = run(stft, &bytes).unwrap_err().to_string();
            assert_eq!(
                error,
                format!("stft: audio buffer is not finite everywhere (sample 5 is {bad})")
            );
            let error = run(r#"{"ops": [{"op": "load_audio", "sample_rate": 8000}]}"#, &bytes)
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with("load_audio: audio buffer is not finite everywhere"),
                "{error}"
            );
            // Loading alone keeps the samples, as soundfile/librosa.load do.
            let loaded = run(r#"{"ops": [{"op": "load_audio"}]}"#, &bytes).unwrap();
            assert!(!loaded.as_f32().unwrap()[5].is_finite());
        }
    }

    /// The decoder before bulk conversion: hound's per-sample iterator with the same scaling
    /// (24 valid bits in 4-byte containers are the whole container as a 32-bit sample, as
    /// libsndfile reads them: hound's writer stores them low-aligned with a zero top byte, so
    /// that is the 24-bit pattern read as unsigned, over 2^31).
    /// The bulk decoder must give the same bits.
    fn decode_per_sample(bytes: &[u8]) -> Audio {
        let container = bytes.len() > 44
            && u16::from_le_bytes([bytes[32], bytes[33]]) / u16::from_le_bytes([bytes[22], bytes[23]]) == 4;
        fn collect<S: hound::Sample>(
            reader: hound::WavReader<Cursor<&[u8]>>,
            to_f32: impl Fn(S) -> f32,
        ) -> Vec<f32> {
            reader.into_samples::<S>().map(|s| to_f32(s.unwrap())).collect()
        }
        let reader = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        let spec = reader.spec();
        let interleaved = match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Float, 32) => collect(reader, |v: f32| v),
            (hound::SampleFormat::Int, 8) => collect(reader, |v: i8| f32::from(v) / 128.0),
            (hound::SampleFormat::Int, 16) => collect(reader, |v: i16| f32::from(v) / 32768.0),
            (hound::SampleFormat::Int, 24) if container => collect(reader, |v: i32| {
                ((v as u32) & 0x00FF_FFFF) as f32 * (1.0 / 2_147_483_648.0)
            }),
            (hound::SampleFormat::Int, 24) => collect(reader, |v: i32| v as f32 / 8_388_608.0),
            (hound::SampleFormat::Int, 32) => collect(reader, |v: i32| v as f32 * (1.0 / 2_147_483_648.0)),
            other => panic!("not a format kiln reads: {other:?}"),
        };
        let count = usize::from(spec.channels);
        let frames = interleaved.len() / count;
        Audio {
            sample_rate: spec.sample_rate,
            channels: (0..count)
                .map(|c| (0..frames).map(|i| interleaved[i * count + c]).collect())
                .collect(),
        }
    }

    /// A WAV written by hound with `bits` valid bits in `bytes`-byte containers (float when
    /// `float`), holding `frames` frames of every bit pattern a sample can take, in order.
    fn hound_wav(float: bool, bits: u16, bytes: u16, channels: u16, frames: usize) -> Vec<u8> {
        let spec = hound::WavSpecEx {
            spec: hound::WavSpec {
                channels,
                sample_rate: 16_000,
                bits_per_sample: bits,
                sample_format: if float {
                    hound::SampleFormat::Float
                } else {
                    hound::SampleFormat::Int
                },
            },
            bytes_per_sample: bytes,
        };
        let mut cursor = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new_with_spec_ex(&mut cursor, spec).unwrap();
        // xorshift over the whole range, with the extremes first.
        let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(bits);
        for i in 0..frames * usize::from(channels) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if float {
                let v = match i {
                    0 => 1.0,
                    1 => -1.0,
                    2 => f32::MIN_POSITIVE / 2.0,
                    3 => f32::NAN,
                    _ => f32::from_bits(state as u32),
                };
                writer.write_sample(v).unwrap();
            } else {
                let (min, max) = (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1);
                let v = match i {
                    0 => min,
                    1 => max,
                    2 => 0,
                    3 => -1,
                    _ => min + (state % (1u64 << bits)) as i64,
                };
                writer.write_sample(v as i32).unwrap();
            }
        }
        writer.finalize().unwrap();
        cursor.into_inner()
    }

    const FORMATS: [(bool, u16, u16); 6] = [
        (false, 8, 1),
        (false, 16, 2),
        (false, 24, 3),
        (false, 24, 4),
        (false, 32, 4),
        (true, 32, 4),
    ];

    #[test]
    fn bulk_decoding_is_bit_identical_to_the_per_sample_reader() {
        for (float, bits, bytes) in FORMATS {
            for channels in [1u16, 2, 3, 8] {
                let wav = hound_wav(float, bits, bytes, channels, 1001);
                let got = decode_wav(&wav).unwrap();
                let want = decode_per_sample(&wav);
                assert_eq!(got.sample_rate, want.sample_rate);
                assert_eq!(got.channels.len(), usize::from(channels));
                for (g, w) in got.channels.iter().zip(&want.channels) {
                    assert_eq!(g.len(), 1001);
                    // Bits, so NaN payloads count too.
                    let bits_of = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert!(
                        bits_of(g) == bits_of(w),
                        "{bits}-bit in {bytes} bytes (float: {float}), {channels} channels: values differ"
                    );
                }
                if !float && (bits, bytes) != (24, 4) {
                    // The most negative value is -1; nothing leaves [-1, 1] (the largest 32-bit
                    // value rounds to 1.0 in f32, as in libsndfile).
                    assert_eq!(got.channels[0][0], -1.0);
                    assert!(got.channels.iter().flatten().all(|v| (-1.0..=1.0).contains(v)));
                }
            }
        }
    }

    #[test]
    fn empty_and_truncated_data_chunks_of_every_format() {
        for (float, bits, bytes) in FORMATS {
            let empty = decode_wav(&hound_wav(float, bits, bytes, 2, 0)).unwrap();
            assert_eq!(empty.channels, vec![Vec::<f32>::new(); 2]);
            let mut wav = hound_wav(float, bits, bytes, 2, 10);
            wav.truncate(wav.len() - 1);
            let error = decode_wav(&wav).unwrap_err().to_string();
            let declared = 2 * 10 * usize::from(bytes);
            assert_eq!(
                error,
                format!(
                    "corrupt or unsupported WAV: data chunk is truncated (shorter than its header says): \
                     the header declares {declared} bytes of samples, the file holds {}",
                    declared - 1
                )
            );
        }
    }

    #[test]
    fn containers_kiln_does_not_read_are_named() {
        // 16 valid bits in 3-byte containers: hound accepts the header; no format stores it so.
        let mut wav = wav(8000, 16, &[0.0; 4], Some(12));
        wav[28..32].copy_from_slice(&(8000u32 * 3).to_le_bytes());
        wav[32..34].copy_from_slice(&3u16.to_le_bytes());
        wav.truncate(44);
        wav.extend_from_slice(&[0; 12]);
        assert_eq!(
            decode_wav(&wav).unwrap_err().to_string(),
            "corrupt or unsupported WAV: unsupported sample format Int with 16 bits in 3-byte containers"
        );
    }

    /// Decode speed of the bulk decoder against the per-sample reader it replaced, for 1 s and
    /// 10 s of 16 kHz 16-bit mono. Figures, not asserts:
    /// `cargo test -p kiln-core --release -- --ignored --nocapture decode_speed`.
    #[test]
    #[ignore]
    fn decode_speed() {
        for seconds in [1usize, 10] {
            let wav = hound_wav(false, 16, 2, 1, 16_000 * seconds);
            let time = |f: &dyn Fn() -> usize| {
                let rounds = 2000 / seconds;
                let start = Instant::now();
                let mut total = 0;
                for _ in 0..rounds {
                    total += std::hint::black_box(f());
                }
                assert_eq!(total, rounds * 16_000 * seconds);
                start.elapsed().as_secs_f64() / rounds as f64
            };
            let old = time(&|| decode_per_sample(std::hint::black_box(&wav)).channels[0].len());
            let new = time(&|| decode_wav(std::hint::black_box(&wav)).unwrap().channels[0].len());
            eprintln!(
                "{seconds:>2} s 16-bit mono: per-sample {:8.1} us, bulk {:8.1} us ({:.1}x)",
                old * 1e6,
                new * 1e6,
                old / new
            );
        }
    }

    #[test]
    fn many_channels_do_not_mean_many_threads() {
        // 3000 channels of 16 frames: one STFT job per channel, run on at most one thread a core.
        let channels = 3000u16;
        let mut out = b"RIFF".to_vec();
        let data = vec![0u8; usize::from(channels) * 2 * 16];
        out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&8000u32.to_le_bytes());
        out.extend_from_slice(&(8000u32 * 2 * u32::from(channels)).to_le_bytes());
        out.extend_from_slice(&(2 * channels).to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        let spec =
            r#"{"ops": [{"op": "load_audio", "mono": false}, {"op": "stft", "n_fft": 8, "hop_length": 4}]}"#;
        assert_eq!(run(spec, &out).unwrap().shape, vec![3000, 5, 5]);
        // Padding every channel to a long clip is refused before anything is allocated.
        let spec = r#"{"ops": [{"op": "load_audio", "mono": false}, {"op": "fix_length", "size": 1000000}]}"#;
        assert_eq!(
            run(spec, &out).unwrap_err().to_string(),
            "fix_length: 3000 channels of 1000000 samples exceed the limit of 1073741824 samples"
        );
        let spec = r#"{"ops": [{"op": "load_audio", "mono": false}, {"op": "fix_length", "size": 100}]}"#;
        assert_eq!(run(spec, &out).unwrap().shape, vec![3000, 100]);
    }

    #[test]
    fn fix_length_is_librosas() {
        // librosa.util.fix_length([1, 2, 3], size=5) == [1, 2, 3, 0, 0]; size=2 == [1, 2].
        let mut channels = vec![vec![1.0f32, 2.0, 3.0], vec![4.0, 5.0, 6.0]];
        fix_length(&mut channels, 5).unwrap();
        assert_eq!(
            channels,
            vec![vec![1.0, 2.0, 3.0, 0.0, 0.0], vec![4.0, 5.0, 6.0, 0.0, 0.0]]
        );
        fix_length(&mut channels, 2).unwrap();
        assert_eq!(channels, vec![vec![1.0, 2.0], vec![4.0, 5.0]]);
        let mut empty = vec![Vec::new()];
        fix_length(&mut empty, 3).unwrap();
        assert_eq!(empty, vec![vec![0.0; 3]]);
    }
}

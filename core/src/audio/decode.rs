//! WAV decoding to f32 exactly as `soundfile.read(path, dtype='float32')`, librosa's `to_mono`,
//! and resampling.

use std::io::Cursor;

use super::resample::Resampler;

use crate::error::{Error, Result};
use crate::limits::{MAX_RESAMPLE_RATIO, MAX_SAMPLE_RATE, MAX_TENSOR_ELEMENTS};

/// Decoded audio, one `Vec` per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub sample_rate: u32,
    pub channels: Vec<Vec<f32>>,
}

/// Decodes PCM 8/16/24/32-bit and float32 WAV of any channel count.
///
/// Scaling matches libsndfile's float conversion: 8-bit (unsigned) `(u - 128) / 128`,
/// 16-bit `/ 2^15`, 24-bit `/ 2^23`, 32-bit `float(i) / 2^31`, float32 as stored.
/// Unknown RIFF chunks (`fact`, `PEAK`, `LIST`) are skipped. A data chunk shorter than its header
/// says is an error rather than silently shorter audio; memory is reserved for the samples the
/// file holds, never for what its header claims. Sample rates outside
/// `1..=`[`MAX_SAMPLE_RATE`] are errors. Float samples are returned as stored, NaN and infinity
/// included (as soundfile); the spectral ops and resampling refuse them ([`check_finite`]).
pub fn decode_wav(bytes: &[u8]) -> Result<Audio> {
    let reader = hound::WavReader::new(Cursor::new(bytes)).map_err(|e| Error::decode("WAV", e))?;
    let spec = reader.spec();
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
    // The header's sample count is a claim; the bytes present bound what can be read.
    let bytes_per_sample = usize::from(spec.bits_per_sample.div_ceil(8)).max(1);
    let capacity = (reader.len() as usize).min(bytes.len() / bytes_per_sample);
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => collect(reader.into_samples::<f32>(), capacity, |v| v)?,
        (hound::SampleFormat::Int, 8) => {
            collect(reader.into_samples::<i8>(), capacity, |v| f32::from(v) / 128.0)?
        }
        (hound::SampleFormat::Int, 16) => {
            collect(reader.into_samples::<i16>(), capacity, |v| f32::from(v) / 32768.0)?
        }
        (hound::SampleFormat::Int, 24) => {
            collect(reader.into_samples::<i32>(), capacity, |v| v as f32 / 8_388_608.0)?
        }
        (hound::SampleFormat::Int, 32) => collect(reader.into_samples::<i32>(), capacity, |v| {
            v as f32 * (1.0 / 2_147_483_648.0)
        })?,
        (format, bits) => {
            return Err(Error::decode(
                "WAV",
                format!("unsupported sample format {format:?} with {bits} bits"),
            ))
        }
    };
    if !interleaved.len().is_multiple_of(channel_count) {
        return Err(Error::decode("WAV", "data chunk ends in the middle of a frame"));
    }
    let frames = interleaved.len() / channel_count;
    let channels = (0..channel_count)
        .map(|c| (0..frames).map(|i| interleaved[i * channel_count + c]).collect())
        .collect();
    Ok(Audio {
        sample_rate: spec.sample_rate,
        channels,
    })
}

fn collect<S, R: std::io::Read>(
    samples: hound::WavIntoSamples<R, S>,
    capacity: usize,
    to_f32: impl Fn(S) -> f32,
) -> Result<Vec<f32>>
where
    S: hound::Sample,
{
    let mut out = Vec::with_capacity(capacity);
    for sample in samples {
        // The header parsed, so a failure here is missing sample data.
        let sample = sample.map_err(|e| {
            Error::decode(
                "WAV",
                format!("data chunk is truncated (shorter than its header says): {e}"),
            )
        })?;
        out.push(to_f32(sample));
    }
    Ok(out)
}

/// librosa's `util.valid_audio` check, which its `stft` and `resample` run: NaN or infinite
/// samples are an error (`ParameterError: Audio buffer is not finite everywhere`) rather than a
/// spectrogram of NaN or a silent -100 dB.
pub fn check_finite(op: &'static str, samples: &[f32]) -> Result<()> {
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
    }
}

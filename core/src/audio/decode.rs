//! WAV decoding to f32 exactly as `soundfile.read(path, dtype='float32')`, librosa's `to_mono`,
//! and resampling.

use std::io::Cursor;

use super::resample::Resampler;

use crate::error::{Error, Result};

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
/// says is an error rather than silently shorter audio.
pub fn decode_wav(bytes: &[u8]) -> Result<Audio> {
    let reader = hound::WavReader::new(Cursor::new(bytes)).map_err(|e| Error::decode("WAV", e))?;
    let spec = reader.spec();
    let channel_count = usize::from(spec.channels);
    if channel_count == 0 {
        return Err(Error::decode("WAV", "header declares 0 channels"));
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => collect(reader.into_samples::<f32>(), |v| v)?,
        (hound::SampleFormat::Int, 8) => collect(reader.into_samples::<i8>(), |v| f32::from(v) / 128.0)?,
        (hound::SampleFormat::Int, 16) => collect(reader.into_samples::<i16>(), |v| f32::from(v) / 32768.0)?,
        (hound::SampleFormat::Int, 24) => collect(reader.into_samples::<i32>(), |v| v as f32 / 8_388_608.0)?,
        (hound::SampleFormat::Int, 32) => collect(reader.into_samples::<i32>(), |v| {
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
    to_f32: impl Fn(S) -> f32,
) -> Result<Vec<f32>>
where
    S: hound::Sample,
{
    samples
        .map(|s| {
            // The header parsed, so a failure here is missing sample data.
            s.map(&to_f32).map_err(|e| {
                Error::decode(
                    "WAV",
                    format!("data chunk is truncated (shorter than its header says): {e}"),
                )
            })
        })
        .collect()
}

impl Audio {
    pub fn frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    /// librosa `to_mono`: the mean over channels, summed in f32 channel by channel as NumPy's
    /// `mean(axis=0)` does, then divided by the count.
    pub fn to_mono(&self) -> Vec<f32> {
        let count = self.channels.len() as f32;
        let mut sum = self.channels[0].clone();
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
pub fn resample(channels: &[Vec<f32>], from: u32, to: u32) -> Result<Vec<Vec<f32>>> {
    if from == to {
        return Ok(channels.to_vec());
    }
    if from == 0 {
        return Err(Error::input(
            "load_audio",
            "the file declares a sample rate of 0 Hz",
        ));
    }
    let resampler = Resampler::new(from, to);
    Ok(channels.iter().map(|c| resampler.process(c)).collect())
}

//! WAV sample formats beyond the reference set: 8/16/24/32-bit PCM and float32, any channel
//! count, decoded with libsndfile's scaling, and mono as librosa's channel mean.

use kiln_core::audio::decode::decode_wav;
use kiln_core::{CpuBackend, Pipeline, Spec};
use serde_json::json;

/// A WAV file written by hound from samples in [-1, 1].
pub fn wav_bytes(bits: u16, channels: u16, rate: u32, interleaved: &[f32]) -> Vec<u8> {
    let float = bits == 0;
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: if float { 32 } else { bits },
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
    for &x in interleaved {
        match bits {
            0 => writer.write_sample(x).unwrap(),
            8 => writer.write_sample((x * 127.0).round() as i8).unwrap(),
            16 => writer.write_sample((x * 32767.0).round() as i16).unwrap(),
            24 => writer.write_sample((x * 8_388_607.0).round() as i32).unwrap(),
            32 => writer
                .write_sample((f64::from(x) * 2_147_483_647.0).round() as i32)
                .unwrap(),
            _ => unreachable!(),
        }
    }
    writer.finalize().unwrap();
    cursor.into_inner()
}

#[test]
fn every_pcm_width_decodes_with_soundfile_scaling() {
    let samples = [0.0f32, 0.5, -0.5, 0.999, -1.0, 0.25];
    for (bits, scale) in [
        (8u16, 127.0f64),
        (16, 32767.0),
        (24, 8_388_607.0),
        (32, 2_147_483_647.0),
    ] {
        let full = 2f64.powi(i32::from(bits) - 1);
        let audio = decode_wav(&wav_bytes(bits, 1, 8000, &samples)).unwrap();
        assert_eq!(audio.sample_rate, 8000);
        for (&x, &got) in samples.iter().zip(&audio.channels[0]) {
            let int = (f64::from(x) * scale).round();
            assert_eq!(got, (int as f32) * (1.0 / full as f32), "{bits}-bit sample {x}");
        }
    }
    let audio = decode_wav(&wav_bytes(0, 1, 8000, &samples)).unwrap();
    assert_eq!(audio.channels[0], samples, "float32 WAV decodes as stored");
}

#[test]
fn multichannel_layouts_and_mono_mean() {
    // Three channels, interleaved.
    let frames = [[0.1f32, 0.2, 0.3], [-0.5, 0.25, 0.125], [1.0, -1.0, 0.5]];
    let interleaved: Vec<f32> = frames.iter().flatten().copied().collect();
    let wav = wav_bytes(0, 3, 22_050, &interleaved);
    let stereo = Spec::from_value(&json!({"ops": [{"op": "load_audio", "mono": false}]})).unwrap();
    let out = Pipeline::new(stereo).run(&CpuBackend, &wav).unwrap();
    assert_eq!(out.shape, vec![3, 3]);
    assert_eq!(
        out.as_f32().unwrap(),
        &[0.1, -0.5, 1.0, 0.2, 0.25, -1.0, 0.3, 0.125, 0.5]
    );
    let mono = Spec::from_value(&json!({"ops": [{"op": "load_audio"}]})).unwrap();
    let out = Pipeline::new(mono).run(&CpuBackend, &wav).unwrap();
    assert_eq!(out.shape, vec![3]);
    let expected: Vec<f32> = frames.iter().map(|f| (f[0] + f[1] + f[2]) / 3.0).collect();
    assert_eq!(out.as_f32().unwrap(), expected.as_slice());
}

#[test]
fn resampling_keeps_length_frequency_and_level() {
    let rate_in = 44_100u32;
    let n = 44_100;
    let tone: Vec<f32> = (0..n)
        .map(|i| 0.5 * (std::f32::consts::TAU * 1000.0 * i as f32 / rate_in as f32).sin())
        .collect();
    let wav = wav_bytes(0, 1, rate_in, &tone);
    let spec = Spec::from_value(&json!({"ops": [{"op": "load_audio", "sample_rate": 16000}]})).unwrap();
    let out = Pipeline::new(spec).run(&CpuBackend, &wav).unwrap();
    // librosa: ceil(n * 16000 / 44100) samples.
    assert_eq!(out.shape, vec![16_000]);
    let y = out.as_f32().unwrap();
    // Compare with the ideal 1 kHz sine at 16 kHz away from the edges.
    let worst = (1000..15_000)
        .map(|i| (y[i] - 0.5 * (std::f32::consts::TAU * 1000.0 * i as f32 / 16_000.0).sin()).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 2e-3, "resampled sine deviates by {worst}");
}

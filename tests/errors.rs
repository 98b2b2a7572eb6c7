//! Bad specs and bad inputs give errors that name the op/field or the format and problem, on
//! every backend, and never panic.

use std::time::{Duration, Instant};

use kiln_core::{Backend, Pipeline, Spec, Warning};
use serde_json::json;

use crate::for_each_backend;
use crate::wav_formats::wav_bytes;

fn spec_error(spec: serde_json::Value) -> String {
    Spec::from_value(&spec)
        .expect_err("spec should be rejected")
        .to_string()
}

#[test]
fn spec_errors_name_the_op_and_field() {
    let cases = [
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stfft"}]}),
            "ops[1] (stfft): unknown op",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft", "nfft": 512}]}),
            "ops[1] (stft) field `nfft`: unknown field",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": "512"}]}),
            "ops[1] (stft) field `n_fft`: must be a positive integer",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 0}]}),
            "ops[1] (stft) field `n_fft`: must be a positive integer",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 256, "win_length": 400}]}),
            "field `win_length`: must be <= n_fft (256)",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft", "window": "kaiser"}]}),
            "field `window`: must be one of",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft"}, {"op": "magnitude", "power": -1}]}),
            "(magnitude) field `power`: must be > 0",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft"}, {"op": "magnitude"}, {"op": "mel", "fmin": 500, "fmax": 100}]}),
            "(mel) field `fmax`: must be > fmin",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft"}, {"op": "magnitude"}, {"op": "mel", "norm": "l2"}]}),
            "(mel) field `norm`",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft"}, {"op": "magnitude"}, {"op": "power_to_db", "top_db": -3}]}),
            "(power_to_db) field `top_db`",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "mel"}]}),
            "ops[1] (mel): needs a magnitude/power spectrogram",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft"}, {"op": "magnitude"}, {"op": "mfcc"}]}),
            "(mfcc): needs a log-power mel spectrogram",
        ),
        (
            json!({"ops": [{"op": "stft"}]}),
            "ops[0] (stft): the first op must be",
        ),
        (json!({"ops": []}), "field `ops`: must contain at least one op"),
        (
            json!({"ops": [{"op": "decode_image", "mode": "CMYK"}]}),
            "(decode_image) field `mode`: must be one of",
        ),
        (
            json!({"ops": [{"op": "decode_image"}, {"op": "resize", "height": 10}]}),
            "(resize) field `width`: is required",
        ),
        (
            json!({"ops": [{"op": "decode_image"}, {"op": "resize", "height": 10, "width": 10, "shorter_side": 5}]}),
            "give either `shorter_side` or `height`+`width`",
        ),
        (
            json!({"ops": [{"op": "decode_image"}, {"op": "resize", "shorter_side": 8, "filter": "hamming"}]}),
            "(resize) field `filter`",
        ),
        (
            json!({"ops": [{"op": "decode_image"}, {"op": "normalize", "mean": [0.5], "std": [0.2]}]}),
            "(normalize): needs a float image",
        ),
        (
            json!({"ops": [{"op": "decode_image"}, {"op": "to_float"}, {"op": "normalize", "mean": [0.5, 0.5], "std": [0.2]}]}),
            "(normalize) field `std`: must have as many values as `mean`",
        ),
        (
            json!({"ops": [{"op": "decode_image"}, {"op": "to_float"}, {"op": "resize", "shorter_side": 8}]}),
            "(resize): needs a uint8 HWC image",
        ),
        (
            json!({"ops": [{"op": "decode_image"}, {"op": "layout"}]}),
            "(layout) field `to`: is required",
        ),
        (
            json!({"ops": [{"op": "decode_image"}], "extra": 1}),
            "field `extra`: unknown field",
        ),
        // Hostile values: bounded, never truncated, overflowed or looped over.
        (
            json!({"ops": [{"op": "decode_image"}, {"op": "center_crop", "height": 6148914691236517206u64, "width": 8}]}),
            "ops[1] (center_crop) field `height`: must be at most 1048576, got 6148914691236517206",
        ),
        (
            json!({"ops": [{"op": "decode_image"}, {"op": "resize", "height": 1000000, "width": 1000000}]}),
            "ops[1] (resize) field `width`: 1000000 x 1000000 is 1000000000000 pixels, above the limit of 268435456",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft"}, {"op": "magnitude"}, {"op": "mel", "sample_rate": 4294967297u64}]}),
            "ops[3] (mel) field `sample_rate`: must be at most 768000, got 4294967297",
        ),
        (
            json!({"ops": [{"op": "load_audio", "sample_rate": 4294967248u64}]}),
            "ops[0] (load_audio) field `sample_rate`: must be at most 768000, got 4294967248",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 1u64 << 40}]}),
            "ops[1] (stft) field `n_fft`: must be at most 1048576, got 1099511627776",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft", "win_length": 1u64 << 40}]}),
            "ops[1] (stft) field `win_length`: must be at most 1048576",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft", "hop_length": u64::MAX}]}),
            "ops[1] (stft) field `hop_length`: must be at most 16777216, got 18446744073709551615",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft"}, {"op": "magnitude"}, {"op": "mel", "n_mels": 1u64 << 33}]}),
            "ops[3] (mel) field `n_mels`: must be at most 1024, got 8589934592",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft"}, {"op": "magnitude"}, {"op": "mel"}, {"op": "power_to_db"}, {"op": "mfcc", "n_mfcc": 5000}]}),
            "ops[5] (mfcc) field `n_mfcc`: must be at most 1024, got 5000",
        ),
        (
            json!({"ops": [{"op": "decode_image", "max_pixels": -1}]}),
            "ops[0] (decode_image) field `max_pixels`: must be a positive integer or null (no limit), got -1",
        ),
        // fix_length: a positive, bounded size, directly after load_audio.
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "fix_length"}]}),
            "spec: ops[1] (fix_length) field `size`: is required",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "fix_length", "size": 0}]}),
            "spec: ops[1] (fix_length) field `size`: must be a positive integer, got 0",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "fix_length", "size": 16000.5}]}),
            "spec: ops[1] (fix_length) field `size`: must be a positive integer, got 16000.5",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "fix_length", "size": -16000}]}),
            "spec: ops[1] (fix_length) field `size`: must be a positive integer, got -16000",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "fix_length", "size": u64::MAX}]}),
            "spec: ops[1] (fix_length) field `size`: must be at most 268435456, got 18446744073709551615",
        ),
        (
            json!({"ops": [{"op": "load_audio"}, {"op": "stft"}, {"op": "fix_length", "size": 16000}]}),
            "spec: ops[2] (fix_length): must come directly after `load_audio`: it cuts or pads the decoded \
             waveform before any other op",
        ),
        (
            json!({"ops": [{"op": "decode_image"}, {"op": "fix_length", "size": 16000}]}),
            "spec: ops[1] (fix_length): must come directly after `load_audio`",
        ),
    ];
    for (spec, expected) in cases {
        let message = spec_error(spec.clone());
        assert!(
            message.contains(expected),
            "{spec}\n  got:      {message}\n  expected: …{expected}…"
        );
    }
    assert!(Spec::from_json("{\"ops\": [")
        .unwrap_err()
        .to_string()
        .contains("invalid JSON"));
}

fn run(backend: &dyn Backend, spec: serde_json::Value, bytes: &[u8]) -> String {
    let pipeline = Pipeline::new(Spec::from_value(&spec).expect("valid spec"));
    pipeline
        .run(backend, bytes)
        .expect_err("input should be rejected")
        .to_string()
}

fn bad_inputs_give_clear_errors(backend: &dyn Backend) {
    let audio = json!({"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 400, "center": false}, {"op": "magnitude"}]});
    let image =
        json!({"ops": [{"op": "decode_image", "mode": "RGB"}, {"op": "resize", "height": 8, "width": 8}]});
    assert!(run(backend, audio.clone(), b"RIFF....WAVEjunk").contains("corrupt or unsupported WAV"));
    assert!(run(backend, audio.clone(), b"").contains("WAV"));
    let wav = wav_bytes(16, 1, 16_000, &[0.1; 100]);
    let truncated = &wav[..wav.len() - 20];
    assert!(
        run(backend, audio.clone(), truncated).contains("truncated"),
        "{}",
        run(backend, audio.clone(), truncated)
    );
    // librosa: "n_fft=400 is too large for uncentered analysis of input signal of length=100".
    let short = run(backend, audio, &wav);
    assert!(
        short.contains("stft: n_fft=400 is too large for uncentered analysis of a signal of length 100"),
        "{short}"
    );
    assert!(run(backend, image.clone(), b"\x89PNG\r\n\x1a\n garbage").contains("corrupt or unsupported PNG"));
    let jpeg =
        std::fs::read(crate::refdata::public_set().join("inputs/img_jpeg_rgb_640x480_q90.jpg")).unwrap();
    let message = run(backend, image.clone(), &jpeg[..2000]);
    assert!(message.contains("JPEG"), "{message}");
    assert!(message.contains("image file is truncated"), "{message}");
    assert!(
        run(backend, image.clone(), b"GIF89a....").contains("Gif is not supported (PNG, JPEG and WebP are)")
    );
    assert!(run(backend, image, b"hello, world").contains("not a PNG, JPEG or WebP file"));
    // Padding thousands of declared channels is refused before anything is allocated.
    let many =
        json!({"ops": [{"op": "load_audio", "mono": false}, {"op": "fix_length", "size": 1u64 << 28}]});
    assert_eq!(
        run(backend, many, &wav_bytes(16, 8, 16_000, &[0.0; 8])),
        "fix_length: 8 channels of 268435456 samples exceed the limit of 1073741824 samples"
    );
}

for_each_backend!(bad_inputs_give_clear_errors);

/// An 8-bit gray PNG declaring `width` x `height` whose IDAT (one stored zlib block) holds only
/// `rows`: a complete image when `rows` has `height` rows, a bomb's header otherwise.
fn gray_png(width: u32, height: u32, rows: &[Vec<u8>]) -> Vec<u8> {
    let raw: Vec<u8> = rows.iter().flat_map(|row| [&[0u8][..], row].concat()).collect();
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    let len = u16::try_from(raw.len()).expect("one stored block");
    let zlib = [
        &[0x78, 0x01, 0x01][..],
        &len.to_le_bytes(),
        &(!len).to_le_bytes(),
        &raw,
        &((b << 16) | a).to_be_bytes(),
    ]
    .concat();
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let body = [kind, data].concat();
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    };
    chunk(
        b"IHDR",
        &[&width.to_be_bytes()[..], &height.to_be_bytes(), &[8, 0, 0, 0, 0]].concat(),
    );
    chunk(b"IDAT", &zlib);
    chunk(b"IEND", &[]);
    png
}

/// A baseline gray JPEG declaring `width` x `height`, with one-code Huffman tables and `data`
/// bytes of entropy data (each zero byte is four mid-gray blocks).
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
    let one_code = [&[1u8][..], &[0; 15], &[0]].concat();
    segment(0xC4, &[&[0x00u8][..], &one_code].concat());
    segment(0xC4, &[&[0x10u8][..], &one_code].concat());
    segment(0xDA, &[1, 1, 0x00, 0, 63, 0]);
    jpeg.extend(std::iter::repeat_n(0u8, data));
    jpeg.extend_from_slice(&[0xFF, 0xD9]);
    jpeg
}

/// The error and how long it took to get it.
fn timed_error(backend: &dyn Backend, spec: serde_json::Value, bytes: &[u8]) -> (String, Duration) {
    let start = Instant::now();
    let message = run(backend, spec, bytes);
    (message, start.elapsed())
}

fn decompression_bombs_are_refused_before_decoding(backend: &dyn Backend) {
    let spec =
        json!({"ops": [{"op": "decode_image", "mode": "RGB"}, {"op": "resize", "height": 8, "width": 8}]});
    let bomb = gray_jpeg(60000, 60000, 1200);
    assert!(bomb.len() < 1400, "a 1.3 KB file: {}", bomb.len());
    let cases = [
        ("JPEG", bomb, 60000u64),
        ("JPEG", gray_jpeg(20000, 20000, 200), 20000),
        ("PNG", gray_png(20000, 20000, &[vec![0; 20000]]), 20000),
    ];
    for (format, bytes, side) in cases {
        let (message, elapsed) = timed_error(backend, spec.clone(), &bytes);
        assert_eq!(
            message,
            format!(
                "{format} image is {side}x{side}: image size ({} pixels) exceeds limit of 178956970 pixels, \
                 could be decompression bomb DOS attack (decode_image `max_pixels` is 89478485: raise it, \
                 or set it to null for no limit)",
                side * side
            )
        );
        assert!(
            elapsed < Duration::from_millis(100),
            "{format} {side}: {elapsed:?}"
        );
    }
    // `max_pixels` moves both thresholds, as Pillow's MAX_IMAGE_PIXELS: 8x8 = 64 pixels warns
    // above 32 and fails above 2 * 31.
    let image = gray_png(8, 8, &vec![vec![200; 8]; 8]);
    let with_limit = |limit: serde_json::Value| {
        let spec = json!({"ops": [{"op": "decode_image", "max_pixels": limit}, {"op": "to_float"}]});
        Pipeline::new(Spec::from_value(&spec).unwrap()).run_with_warnings(backend, &image)
    };
    let (tensor, warnings) = with_limit(json!(32)).expect("within twice the limit");
    assert_eq!(tensor.shape, vec![8, 8]);
    assert!(matches!(
        warnings.as_slice(),
        [Warning::DecompressionBomb {
            pixels: 64,
            limit: 32,
            ..
        }]
    ));
    assert_eq!(
        warnings[0].to_string(),
        "image is 8x8: image size (64 pixels) exceeds limit of 32 pixels, could be decompression bomb DOS attack"
    );
    let message = with_limit(json!(31)).unwrap_err().to_string();
    assert!(
        message.contains("image size (64 pixels) exceeds limit of 62 pixels"),
        "{message}"
    );
    for quiet in [json!(64), json!(null)] {
        let (_, warnings) = with_limit(quiet.clone()).unwrap();
        assert!(warnings.is_empty(), "{quiet}: {warnings:?}");
    }
}

for_each_backend!(decompression_bombs_are_refused_before_decoding);

fn hostile_wav_headers_are_bounded(backend: &dyn Backend) {
    let resample = json!({"ops": [{"op": "load_audio", "sample_rate": 16000}]});
    // 8-bit mono, 100 samples: the 144-byte file that ran 44 s to 3.9 GB and aborted.
    let bomb = wav_bytes(8, 1, 4_294_967_248, &[0.0; 100]);
    assert_eq!(bomb.len(), 144);
    let (message, elapsed) = timed_error(backend, resample.clone(), &bomb);
    assert_eq!(
        message,
        "corrupt or unsupported WAV: header declares a sample rate of 4294967248 Hz; kiln reads 1 to 768000 Hz"
    );
    assert!(elapsed < Duration::from_millis(100), "{elapsed:?}");
    // A 1 Hz header cost 87 ms of CPU per input byte resampled to 16 kHz.
    let (message, elapsed) = timed_error(backend, resample, &wav_bytes(16, 1, 1, &[0.5; 1000]));
    assert_eq!(
        message,
        "load_audio: resampling from 1 Hz to 16000 Hz is a factor of 16000.0; kiln resamples by at most \
         128x either way"
    );
    assert!(elapsed < Duration::from_millis(100), "{elapsed:?}");
    // A data chunk that claims 4 GB but holds 20 bytes: truncated, not a 4 GB allocation.
    let mut liar = wav_bytes(16, 1, 16000, &[0.25; 10]);
    let at = liar.len() - 20 - 8;
    assert_eq!(&liar[at..at + 4], b"data");
    liar[at + 4..at + 8].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
    let stft = json!({"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 4}, {"op": "magnitude"}]});
    let (message, elapsed) = timed_error(backend, stft, &liar);
    assert!(
        message.contains("corrupt or unsupported WAV: data chunk is truncated"),
        "{message}"
    );
    assert!(elapsed < Duration::from_millis(100), "{elapsed:?}");
}

for_each_backend!(hostile_wav_headers_are_bounded);

fn non_finite_audio_is_librosas_parameter_error(backend: &dyn Backend) {
    let mel = json!({"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 16, "hop_length": 4},
        {"op": "magnitude", "power": 2.0}, {"op": "mel", "n_mels": 4}, {"op": "power_to_db"}]});
    for (at, bad) in [(0, f32::NAN), (17, f32::INFINITY), (63, f32::NEG_INFINITY)] {
        let mut samples = vec![0.1f32; 64];
        samples[at] = bad;
        let wav = wav_bytes(0, 1, 16000, &samples);
        assert_eq!(
            run(backend, mel.clone(), &wav),
            format!("stft: audio buffer is not finite everywhere (sample {at} is {bad})")
        );
        let resampled = json!({"ops": [{"op": "load_audio", "sample_rate": 8000}]});
        assert_eq!(
            run(backend, resampled, &wav),
            format!("load_audio: audio buffer is not finite everywhere (sample {at} is {bad})")
        );
    }
}

for_each_backend!(non_finite_audio_is_librosas_parameter_error);

fn outputs_beyond_the_tensor_limit_are_errors(backend: &dyn Backend) {
    // 2^20 samples with hop 1 and n_fft 2048: 1025 x 1048577 values, above 2^30.
    let wav = wav_bytes(16, 1, 16000, &vec![0.0; 1 << 20]);
    let stft = json!({"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 2048, "hop_length": 1}]});
    assert_eq!(
        run(backend, stft, &wav),
        "stft: 1048577 frames x 1025 bins exceeds the limit of 1073741824 values (raise hop_length or lower n_fft)"
    );
}

for_each_backend!(outputs_beyond_the_tensor_limit_are_errors);

//! Bad specs and bad inputs give errors that name the op/field or the format and problem, on
//! every backend, and never panic.

use kiln_core::{Backend, Pipeline, Spec};
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
    assert!(run(backend, image.clone(), b"GIF89a....").contains("Gif is not supported (PNG and JPEG are)"));
    assert!(run(backend, image, b"hello, world").contains("not a PNG or JPEG file"));
}

for_each_backend!(bad_inputs_give_clear_errors);

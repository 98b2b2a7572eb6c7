//! The bodies of kiln's fuzz targets, one function per target, shared by the libFuzzer binaries
//! (`fuzz_targets/*.rs`, built by `cargo fuzz`) and the corpus replay test (`tests/replay.rs`,
//! a plain `cargo test` that needs neither nightly features nor sanitizers).
//!
//! Each function takes arbitrary bytes. It may find them invalid (kiln returns an error); it
//! panics only where kiln broke a promise: a panic inside kiln, or a result that contradicts
//! what kiln documents (checked with `assert!`s below). Aborts, hangs and unbounded allocation
//! are caught by libFuzzer's `-timeout`, `-rss_limit_mb` and `-malloc_limit_mb`.
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use kiln_core::{CpuBackend, Pipeline, Spec};

/// The spec a target runs, built once per process (plans are cached per input kind).
fn pipeline(text: &str) -> Pipeline {
    Pipeline::new(Spec::from_json(text).expect("the fuzz target's own spec is valid"))
}

/// `examples/log_mel.json`: resample to 16 kHz, mono, STFT, mel, power_to_db.
const LOG_MEL: &str = include_str!("../../examples/log_mel.json");
/// The file as stored: every channel, at its own rate.
const RAW_AUDIO: &str = r#"{"ops": [{"op": "load_audio", "mono": false}]}"#;

/// Largest sample magnitude for which the log-mel output must be finite. Integer formats decode
/// to [-1, 1]; a float WAV stores anything, and a finite sample near 1e19 overflows f32 once
/// squared (librosa, computing in float32 as well, returns inf too), so beyond this bound only
/// "no panic" is checked.
const FINITE_PEAK: f32 = 1e4;

/// WAV bytes through `load_audio`: the header parser, every sample format, down-mixing,
/// resampling from whatever rate the header declares, then (log-mel spec) the STFT, mel
/// filterbank and dB conversion on the CPU backend. A log-mel spectrogram of audio within
/// +-[`FINITE_PEAK`] must be finite: non-finite audio is an error (librosa's "audio buffer is
/// not finite everywhere"), never silent NaN or infinity in the output.
pub fn wav_decode(bytes: &[u8]) {
    static PIPELINES: OnceLock<(Pipeline, Pipeline)> = OnceLock::new();
    let (log_mel, raw) = PIPELINES.get_or_init(|| (pipeline(LOG_MEL), pipeline(RAW_AUDIO)));
    let mut peak = f32::INFINITY;
    if let Ok((tensor, _key)) = raw.decode(bytes) {
        // (samples,) for mono, (channels, samples) otherwise; `Tensor::new` already checked
        // that the data matches the shape.
        assert!(
            matches!(tensor.shape.len(), 1 | 2),
            "raw audio shape {:?}",
            tensor.shape
        );
        let samples = tensor.as_f32().expect("load_audio produces f32");
        peak = samples.iter().fold(0.0f32, |peak, s| peak.max(s.abs()));
    }
    if let Ok(tensor) = log_mel.run(&CpuBackend, bytes) {
        assert_eq!(
            tensor.shape.first(),
            Some(&80),
            "log-mel shape {:?}",
            tensor.shape
        );
        let values = tensor.as_f32().expect("power_to_db produces f32");
        assert!(
            peak > FINITE_PEAK || values.iter().all(|v| v.is_finite()),
            "log-mel output of audio peaking at {peak} holds non-finite values"
        );
    }
}

/// `examples/imagenet.json`: RGB, resize shorter side to 256, crop 224, normalize, CHW.
const IMAGENET: &str = include_str!("../../examples/imagenet.json");
/// `decode_image`'s modes.
const MODES: [&str; 3] = ["L", "RGB", "RGBA"];
/// Above this many pixels the ImageNet spec is skipped: resizing a 10-megapixel image per
/// input would slow the fuzzer a hundredfold without reaching code smaller inputs don't.
const RUN_MAX_PIXELS: usize = 1 << 20;

struct ImagePipelines {
    native: Pipeline,
    modes: Vec<Pipeline>,
    imagenet: Pipeline,
}

/// PNG/JPEG bytes through `decode_image`: format sniffing, the declared-size check against
/// `max_pixels` (Pillow's decompression-bomb rule, default 89,478,485 pixels) before any pixel
/// is allocated, both decoders and every mode conversion. Small images then run the whole
/// ImageNet spec (resize, crop, normalize, layout) on the CPU backend, so odd sizes (1xN,
/// palette, 16-bit, grey+alpha, CMYK) reach the kernels too.
pub fn image_decode(bytes: &[u8]) {
    static PIPELINES: OnceLock<ImagePipelines> = OnceLock::new();
    let pipelines = PIPELINES.get_or_init(|| ImagePipelines {
        native: pipeline(r#"{"ops": [{"op": "decode_image"}]}"#),
        modes: MODES
            .iter()
            .map(|mode| {
                pipeline(&format!(
                    r#"{{"ops": [{{"op": "decode_image", "mode": "{mode}"}}]}}"#
                ))
            })
            .collect(),
        imagenet: pipeline(IMAGENET),
    });
    let Ok((image, _key)) = pipelines.native.decode(bytes) else {
        return;
    };
    // (H, W) for L, (H, W, C) otherwise.
    let pixels = image.shape[0] * image.shape[1];
    assert!(pixels > 0, "decoded an empty image: {:?}", image.shape);
    // A file that decodes in its own mode decodes in every other mode, to the same size.
    for (mode, pipeline) in MODES.iter().zip(&pipelines.modes) {
        let (converted, _) = pipeline
            .decode(bytes)
            .unwrap_or_else(|e| panic!("decoded natively but not as {mode}: {e}"));
        assert_eq!(
            converted.shape[..2],
            image.shape[..2],
            "mode {mode} changed the size"
        );
    }
    if pixels <= RUN_MAX_PIXELS {
        // A very thin image may still be refused (1x100000 resized to a shorter side of 256
        // exceeds the output bound): an error, which is allowed.
        let Ok(out) = pipelines.imagenet.run(&CpuBackend, bytes) else {
            return;
        };
        assert_eq!(out.shape, [3, 224, 224]);
        let values = out.as_f32().expect("normalize produces f32");
        assert!(
            values.iter().all(|v| v.is_finite()),
            "non-finite normalized pixels"
        );
    }
}

/// Arbitrary text through `Spec::from_json` (JSON syntax, every op and field, type and range
/// checks, the op-order check), then `Spec::output()` on what parsed. Parsing is a pure
/// function, so the same text parses to the same spec again.
pub fn spec_parse(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(spec) = Spec::from_json(text) else {
        return;
    };
    let output = spec.output();
    if let Some(shape) = &output.shape {
        assert!(!shape.is_empty(), "a fixed output shape has no dimensions");
        assert!(
            shape.iter().all(|&d| d > 0),
            "fixed output shape {shape:?} has a zero side"
        );
    }
    let _ = spec.source_kind();
    let again = Spec::from_json(text).expect("the same text parsed once");
    assert_eq!(again, spec);
}

#[cfg(feature = "shards")]
mod shards;
#[cfg(feature = "shards")]
pub use shards::shard_read;

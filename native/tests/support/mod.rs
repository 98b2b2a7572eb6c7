//! Shared helpers for the end-to-end tests: generated datasets and the `kiln` binary.

#![allow(dead_code)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln")
}

pub fn kiln_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run kiln")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Parses the single JSON object a `--json` command prints, failing with its stderr.
pub fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "kiln failed: {}", stderr(out));
    serde_json::from_str(stdout(out).trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// `kiln convert SOURCE --spec SPEC --cache CACHE --json EXTRA...`.
pub fn convert_output(source: &Path, spec: &str, cache: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "convert",
        source.to_str().unwrap(),
        "--spec",
        spec,
        "--cache",
        cache.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    kiln(&args)
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// xorshift64*, for reproducible test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn wav(rng: &mut Rng, samples: usize) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
    let f = 200.0 + rng.below(2000) as f32;
    for i in 0..samples {
        let x = 0.3 * (std::f32::consts::TAU * f * i as f32 / 16_000.0).sin()
            + (rng.below(1000) as f32 / 1000.0 - 0.5) * 0.05;
        writer.write_sample((x * 32767.0) as i16).unwrap();
    }
    writer.finalize().unwrap();
    cursor.into_inner()
}

pub fn image(rng: &mut Rng, format: image::ImageFormat) -> Vec<u8> {
    let (w, h) = (20 + rng.below(50) as u32, 20 + rng.below(50) as u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 7) as u8, rng.below(256) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// `labels` class directories of `per_class` WAV + PNG + JPEG files each, plus one corrupt file
/// of each kind.
pub fn make_dataset(root: &Path, labels: &[&str], per_class: usize, seed: u64) {
    let mut rng = Rng(seed | 1);
    for label in labels {
        let dir = root.join(label);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let samples = 2000 + rng.below(6000) as usize;
            std::fs::write(dir.join(format!("{i:03}.wav")), wav(&mut rng, samples)).unwrap();
            std::fs::write(
                dir.join(format!("{i:03}.png")),
                image(&mut rng, image::ImageFormat::Png),
            )
            .unwrap();
            std::fs::write(
                dir.join(format!("{i:03}.jpg")),
                image(&mut rng, image::ImageFormat::Jpeg),
            )
            .unwrap();
        }
    }
    std::fs::write(
        root.join(labels[0]).join("corrupt.wav"),
        b"RIFF\x24\x00\x00\x00WAVEfmt nonsense",
    )
    .unwrap();
    std::fs::write(
        root.join(labels[0]).join("corrupt.png"),
        b"\x89PNG\r\n\x1a\ntruncated",
    )
    .unwrap();
    let jpeg = image(&mut rng, image::ImageFormat::Jpeg);
    std::fs::write(root.join(labels[0]).join("corrupt.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
}

pub const IMAGE_SPEC: &str = r#"{"ops": [{"op": "decode_image", "mode": "RGB"}, {"op": "resize", "shorter_side": 24},
    {"op": "center_crop", "height": 16, "width": 16}, {"op": "to_float"}, {"op": "layout", "to": "chw"}]}"#;
pub const AUDIO_SPEC: &str = r#"{"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 256, "hop_length": 128},
    {"op": "magnitude", "power": 2.0}, {"op": "mel", "n_mels": 16}, {"op": "power_to_db"}]}"#;

pub fn write_spec(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// The Python with the test-only packages (tfrecord, wsgidav), as scripts/setup installs it.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("KILN_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/kiln-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/setup (or set KILN_VENV)",
        python.display()
    );
    python
}

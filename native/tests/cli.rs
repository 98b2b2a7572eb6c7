//! End-to-end runs of the `kiln` binary: outputs, exit codes and error messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_core::npy;

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn example(name: &str) -> String {
    examples().join(name).to_string_lossy().into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn transform_writes_npy_on_both_backends() {
    let dir = temp_dir("ok");
    for (spec, input, shape) in [
        ("log_mel.json", "tones_16k.wav", vec![80usize, 101]),
        ("imagenet.json", "gradient_240x180.png", vec![3, 224, 224]),
        ("mfcc.json", "tones_16k.wav", vec![13, 101]),
    ] {
        let mut results = Vec::new();
        for backend in ["cpu", "gpu"] {
            let out = dir.join(format!("{spec}.{backend}.npy"));
            let run = kiln(&[
                "transform",
                "--spec",
                &example(spec),
                &example(input),
                "-o",
                out.to_str().unwrap(),
                "--backend",
                backend,
            ]);
            assert!(run.status.success(), "{spec} on {backend}: {}", stderr(&run));
            let tensor = npy::decode(&std::fs::read(&out).unwrap()).unwrap();
            assert_eq!(tensor.shape, shape, "{spec} on {backend}");
            assert!(tensor.as_f32().unwrap().iter().all(|v| v.is_finite()));
            results.push(tensor);
        }
        let (cpu, gpu) = (results[0].as_f32().unwrap(), results[1].as_f32().unwrap());
        let worst = cpu
            .iter()
            .zip(gpu)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        // dB and MFCC values: 0.05 dB; the image tensor: one rounding of the normalisation.
        assert!(worst < 0.05, "{spec}: CPU and GPU differ by {worst}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_input_names_the_file_and_fails() {
    let dir = temp_dir("missing");
    let out = dir.join("x.npy");
    let run = kiln(&[
        "transform",
        "--spec",
        &example("log_mel.json"),
        "/nonexistent/clip.wav",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(
        stderr(&run).contains("kiln: error: reading /nonexistent/clip.wav"),
        "{}",
        stderr(&run)
    );
    assert!(!out.exists(), "no output for a failed run");
}

#[test]
fn corrupt_input_names_the_file_and_the_problem() {
    let dir = temp_dir("corrupt");
    let wav = dir.join("broken.wav");
    std::fs::write(&wav, b"RIFF\x10\x00\x00\x00WAVEfmt garbage").unwrap();
    let png = dir.join("broken.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let out = dir.join("x.npy");
    for backend in ["cpu", "gpu"] {
        let run = kiln(&[
            "transform",
            "--spec",
            &example("log_mel.json"),
            wav.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--backend",
            backend,
        ]);
        assert!(!run.status.success());
        let message = stderr(&run);
        assert!(
            message.contains("broken.wav") && message.contains("corrupt or unsupported WAV"),
            "{message}"
        );
        let run = kiln(&[
            "transform",
            "--spec",
            &example("imagenet.json"),
            png.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--backend",
            backend,
        ]);
        let message = stderr(&run);
        assert!(!run.status.success());
        assert!(
            message.contains("broken.png") && message.contains("corrupt or unsupported PNG"),
            "{message}"
        );
    }
    // An image through an audio spec is a WAV decode error, not a panic.
    let run = kiln(&[
        "transform",
        "--spec",
        &example("log_mel.json"),
        &example("gradient_240x180.png"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(stderr(&run).contains("gradient_240x180.png"), "{}", stderr(&run));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_spec_names_the_spec_op_and_field() {
    let dir = temp_dir("spec");
    let spec = dir.join("bad.json");
    std::fs::write(
        &spec,
        r#"{"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 512, "hop": 128}]}"#,
    )
    .unwrap();
    let run = kiln(&[
        "transform",
        "--spec",
        spec.to_str().unwrap(),
        &example("tones_16k.wav"),
        "-o",
        dir.join("x.npy").to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let message = stderr(&run);
    assert!(
        message.contains("bad.json") && message.contains("ops[1] (stft) field `hop`: unknown field"),
        "{message}"
    );
    let run = kiln(&[
        "transform",
        "--spec",
        "/nonexistent/spec.json",
        &example("tones_16k.wav"),
        "-o",
        "x.npy",
    ]);
    assert!(
        stderr(&run).contains("reading spec /nonexistent/spec.json"),
        "{}",
        stderr(&run)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unwritable_output_is_an_error() {
    let run = kiln(&[
        "transform",
        "--spec",
        &example("log_mel.json"),
        &example("tones_16k.wav"),
        "-o",
        "/nonexistent-dir/out.npy",
    ]);
    assert!(!run.status.success());
    assert!(
        stderr(&run).contains("writing /nonexistent-dir/out.npy"),
        "{}",
        stderr(&run)
    );
}

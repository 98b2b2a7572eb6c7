//! Every case of the reference manifests (librosa, soundfile, Pillow, torchvision), run on every
//! backend. The cases are read from `manifest.json`, so other sets in the same format are
//! checked the same way: set `KILN_REFDATA` to a colon-separated list of set directories
//! (default: `../shared/refdata/public`; CI adds a set generated with librosa/Pillow at test time).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kiln_core::audio::mel::MelFilterbank;
use kiln_core::image::decode::convert;
use kiln_core::image::ImageDims;
use kiln_core::spec::ImageMode;
use kiln_core::{npy, Backend, Pipeline, PlanKey, Spec, Tensor};
use serde_json::{json, Value};

use crate::compare::{close_f32, diff_u8, expect_shape, f32s, u8s};
use crate::for_each_backend;

pub fn set_dirs() -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = match std::env::var("KILN_REFDATA") {
        Ok(list) if !list.is_empty() => list.split(':').map(PathBuf::from).collect(),
        _ => vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/refdata/public")],
    };
    for d in &dirs {
        assert!(
            d.join("manifest.json").is_file(),
            "reference set {} has no manifest.json",
            d.display()
        );
    }
    dirs
}

pub fn public_set() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/refdata/public")
}

struct Set {
    dir: PathBuf,
    cases: Vec<Value>,
}

impl Set {
    fn load(dir: &Path) -> Set {
        let text = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest");
        let manifest: Value = serde_json::from_str(&text).expect("manifest JSON");
        Set {
            dir: dir.to_owned(),
            cases: manifest["cases"].as_array().expect("cases").clone(),
        }
    }

    fn array(&self, case: &Value) -> Tensor {
        let path = self.dir.join(case["output"].as_str().expect("output"));
        npy::decode(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("npy")
    }

    fn input(&self, case: &Value) -> Vec<u8> {
        std::fs::read(self.dir.join(case["input"].as_str().expect("input"))).expect("input file")
    }

    /// Pillow's decoded pixels for the case's input, to test resizing apart from decoding.
    fn decoded_pixels(&self, case: &Value) -> (Tensor, ImageMode) {
        let decode = self
            .cases
            .iter()
            .find(|c| c["category"] == "image_decode" && c["input"] == case["input"])
            .unwrap_or_else(|| panic!("no image_decode case for {}", case["input"]));
        let mode = match decode["params"]["mode"].as_str() {
            Some("L") => ImageMode::L,
            Some("RGB") => ImageMode::Rgb,
            Some("RGBA") => ImageMode::Rgba,
            other => panic!("unsupported reference mode {other:?}"),
        };
        (self.array(decode), mode)
    }
}

fn param<'a>(case: &'a Value, key: &str) -> Option<&'a Value> {
    case["params"].get(key).filter(|v| !v.is_null())
}

fn stft_op(p: &Value) -> Value {
    let mut op = json!({"op": "stft"});
    for key in [
        "n_fft",
        "hop_length",
        "win_length",
        "window",
        "center",
        "pad_mode",
    ] {
        if let Some(v) = p.get(key).filter(|v| !v.is_null()) {
            op[key] = v.clone();
        }
    }
    op
}

fn mel_op(p: &Value) -> Value {
    let mut op = json!({"op": "mel"});
    for (key, to) in [
        ("sr", "sample_rate"),
        ("n_mels", "n_mels"),
        ("fmin", "fmin"),
        ("fmax", "fmax"),
        ("htk", "htk"),
    ] {
        if let Some(v) = p.get(key).filter(|v| !v.is_null()) {
            op[to] = v.clone();
        }
    }
    if p.get("norm").is_some() {
        op["norm"] = p["norm"].clone();
    }
    op
}

/// The spec that reproduces an audio case, or `None` for categories handled elsewhere. A case
/// whose params have `fix_length` (librosa `util.fix_length(y, size=...)` right after loading)
/// gets a `fix_length` op after `load_audio`.
fn audio_spec(case: &Value) -> Option<Value> {
    let mut spec = audio_ops(case)?;
    if let Some(size) = param(case, "fix_length") {
        let ops = spec["ops"].as_array_mut()?;
        ops.insert(1, json!({"op": "fix_length", "size": size}));
    }
    Some(spec)
}

fn audio_ops(case: &Value) -> Option<Value> {
    let load = json!({"op": "load_audio", "mono": false});
    let p = &case["params"];
    let power = |default: f64| json!({"op": "magnitude", "power": p.get("power").and_then(Value::as_f64).unwrap_or(default)});
    Some(match case["category"].as_str()? {
        "audio_decode" | "audio_fix_length" => json!({"ops": [load]}),
        "stft_magnitude" => json!({"ops": [load, stft_op(p), power(1.0)]}),
        "stft_power" => json!({"ops": [load, stft_op(p), power(2.0)]}),
        "mel_spectrogram" if case["library"] == "torchaudio" => {
            let stft = json!({"op": "stft", "n_fft": p["n_fft"], "hop_length": p["hop_length"],
                "win_length": p["win_length"], "center": p["center"], "pad_mode": p["pad_mode"]});
            let htk = p["mel_scale"] == "htk";
            let mel = json!({"op": "mel", "sample_rate": p["sample_rate"], "n_mels": p["n_mels"],
                "fmin": p["f_min"], "fmax": p["f_max"], "htk": htk, "norm": p["norm"]});
            json!({"ops": [load, stft, power(2.0), mel]})
        }
        "mel_spectrogram" => json!({"ops": [load, stft_op(p), power(2.0), mel_op(p)]}),
        "power_to_db" => {
            let up = &p["upstream"];
            let db = json!({"op": "power_to_db", "ref": p["ref"], "amin": p["amin"], "top_db": p["top_db"]});
            json!({"ops": [load, stft_op(up), power_from(up), mel_op(up), db]})
        }
        "mfcc" => {
            let up = &p["upstream"];
            let d = &p["db"];
            let db = json!({"op": "power_to_db", "ref": d["ref"], "amin": d["amin"], "top_db": d["top_db"]});
            let mfcc = json!({"op": "mfcc", "n_mfcc": p["n_mfcc"]});
            json!({"ops": [load, stft_op(up), power_from(up), mel_op(up), db, mfcc]})
        }
        "audio_resample" => {
            json!({"ops": [{"op": "load_audio", "mono": false, "sample_rate": p["target_sr"]}]})
        }
        _ => return None,
    })
}

fn power_from(p: &Value) -> Value {
    json!({"op": "magnitude", "power": p.get("power").and_then(Value::as_f64).unwrap_or(2.0)})
}

fn run_spec(backend: &dyn Backend, spec: &Value, bytes: &[u8]) -> kiln_core::Result<Tensor> {
    Pipeline::new(Spec::from_value(spec)?).run(backend, bytes)
}

/// Runs the steps after decoding on already-decoded pixels.
fn run_on_pixels(backend: &dyn Backend, spec: &Value, pixels: Tensor, mode: ImageMode) -> Tensor {
    let pipeline = Pipeline::new(Spec::from_value(spec).expect("spec"));
    let channels = mode.channels();
    let dims = ImageDims {
        height: pixels.shape[0],
        width: pixels.shape[1],
        channels,
        chw: false,
        channel_axis: channels > 1,
    };
    let plan = pipeline.plan(PlanKey::Image(dims)).expect("plan");
    backend.execute(&plan, pixels).expect("execute")
}

fn tolerance(case: &Value, key: &str) -> f64 {
    case["tolerance"][key].as_f64().unwrap_or(0.0)
}

/// Checks one case; returns a one-line summary of the measured difference.
fn check_case(backend: &dyn Backend, set: &Set, case: &Value) -> Result<String, String> {
    let category = case["category"].as_str().unwrap_or_default();
    if case["expect_error"] == true {
        let spec = audio_spec(case).ok_or("expect_error case of unknown category")?;
        return match run_spec(backend, &spec, &set.input(case)) {
            Err(e) => Ok(format!("error as expected: {e}")),
            Ok(t) => Err(format!("expected an error, got shape {:?}", t.shape)),
        };
    }
    let reference = set.array(case);
    let shape: Vec<usize> = reference.shape.clone();
    match category {
        "audio_decode" => {
            let got =
                run_spec(backend, &audio_spec(case).unwrap(), &set.input(case)).map_err(|e| e.to_string())?;
            // soundfile gives (frames, channels); librosa.load(mono=False) and kiln give
            // (channels, frames).
            let (expected, kiln_shape): (Vec<f32>, Vec<usize>) = match shape[..] {
                [frames, channels] if case["library"] != "librosa" => (
                    (0..channels)
                        .flat_map(|c| (0..frames).map(move |i| (c, i)))
                        .map(|(c, i)| f32s(&reference)[i * channels + c])
                        .collect(),
                    vec![channels, frames],
                ),
                _ => (f32s(&reference).to_vec(), shape.clone()),
            };
            // Same shape: for MP3 and Vorbis, the sample count and alignment of gapless decoding.
            expect_shape(&got, &kiln_shape)?;
            let atol = tolerance(case, "atol");
            let max = close_f32(f32s(&got), &expected, atol, 0.0)?;
            if atol == 0.0 {
                Ok(format!("max |diff| {max:e} (exact)"))
            } else {
                Ok(format!("max |diff| {max:e} (atol {atol:e})"))
            }
        }
        "audio_fix_length" => {
            // librosa's array is already (channels, samples), as kiln's.
            let got =
                run_spec(backend, &audio_spec(case).unwrap(), &set.input(case)).map_err(|e| e.to_string())?;
            expect_shape(&got, &shape)?;
            let max = close_f32(f32s(&got), f32s(&reference), 0.0, 0.0)?;
            Ok(format!("max |diff| {max:e} (exact)"))
        }
        "audio_resample" => {
            let got =
                run_spec(backend, &audio_spec(case).unwrap(), &set.input(case)).map_err(|e| e.to_string())?;
            expect_shape(&got, &shape)?;
            let samples = shape[shape.len() - 1];
            let edge = case["tolerance"]["edge"].as_u64().unwrap_or(0) as usize;
            let atol = tolerance(case, "atol");
            let mut worst = 0.0f64;
            for (g, r) in f32s(&got).chunks(samples).zip(f32s(&reference).chunks(samples)) {
                let interior = edge..samples.saturating_sub(edge);
                worst = worst.max(close_f32(&g[interior.clone()], &r[interior], atol, 0.0)?);
            }
            Ok(format!(
                "interior max |diff| {worst:e} vs soxr_hq (atol {atol:e})"
            ))
        }
        "stft_magnitude" | "stft_power" | "mel_spectrogram" | "power_to_db" | "mfcc" => {
            let got =
                run_spec(backend, &audio_spec(case).unwrap(), &set.input(case)).map_err(|e| e.to_string())?;
            expect_shape(&got, &shape)?;
            let (atol, rtol) = (tolerance(case, "atol"), tolerance(case, "rtol"));
            let max = close_f32(f32s(&got), f32s(&reference), atol, rtol)?;
            Ok(format!("max |diff| {max:e} (atol {atol:e}, rtol {rtol:e})"))
        }
        "mel_filterbank" => {
            let p = &case["params"];
            let sr = p["sr"].as_f64().unwrap();
            let fmax = p.get("fmax").and_then(Value::as_f64).unwrap_or(sr / 2.0);
            let bank = MelFilterbank::new(
                sr,
                p["n_fft"].as_u64().unwrap() as usize,
                p["n_mels"].as_u64().unwrap() as usize,
                p.get("fmin").and_then(Value::as_f64).unwrap_or(0.0),
                fmax,
                p["htk"] == true,
                p.get("norm").is_none_or(|n| n == "slaney"),
            );
            let max = close_f32(
                &bank.dense(),
                f32s(&reference),
                tolerance(case, "atol"),
                tolerance(case, "rtol"),
            )?;
            Ok(format!(
                "max |diff| {max:e} (filterbank is shared by both backends)"
            ))
        }
        "image_decode" => {
            let mode = param(case, "mode").and_then(Value::as_str).unwrap_or("RGB");
            let spec = json!({"ops": [{"op": "decode_image", "mode": mode}]});
            let got = run_spec(backend, &spec, &set.input(case)).map_err(|e| e.to_string())?;
            expect_shape(&got, &shape)?;
            let (max, mean) = diff_u8(u8s(&got), u8s(&reference))?;
            // Every decoder is exact, JPEG included (kiln's decoder follows libjpeg-turbo).
            if max != 0 {
                return Err(format!("max {max} mean {mean:.4} (exact expected)"));
            }
            Ok("exact".to_owned())
        }
        "image_resize" => {
            let p = &case["params"];
            let (w, h) = (p["size_wh"][0].clone(), p["size_wh"][1].clone());
            let filter = p["resample"].as_str().unwrap().to_ascii_lowercase();
            let (pixels, mode) = set.decoded_pixels(case);
            let spec = json!({"ops": [{"op": "decode_image"}, {"op": "resize", "height": h, "width": w, "filter": filter}]});
            let got = run_on_pixels(backend, &spec, pixels, mode);
            expect_shape(&got, &shape)?;
            let (max, mean) = diff_u8(u8s(&got), u8s(&reference))?;
            if max != 0 {
                return Err(format!(
                    "resize from Pillow's decoded pixels differs: max {max} mean {mean:.4}"
                ));
            }
            let from_file = run_spec(backend, &spec, &set.input(case)).map_err(|e| e.to_string())?;
            let (fmax, fmean) = diff_u8(u8s(&from_file), u8s(&reference))?;
            // Decoding is exact too, so the whole path from the file is.
            if fmax != 0 {
                return Err(format!(
                    "resize from the file differs: max {fmax} mean {fmean:.4}"
                ));
            }
            Ok("bit-exact from reference pixels and from the file".into())
        }
        "image_pipeline" => {
            let p = &case["params"];
            let mut ops = vec![
                json!({"op": "decode_image", "mode": "RGB"}),
                json!({"op": "resize", "shorter_side": p["resize"], "filter": p["interpolation"].as_str().unwrap_or("bilinear").to_ascii_lowercase()}),
                json!({"op": "center_crop", "height": p["crop"], "width": p["crop"]}),
            ];
            let normalized = p.get("mean").is_some();
            if normalized {
                ops.push(json!({"op": "to_float"}));
                ops.push(json!({"op": "normalize", "mean": p["mean"], "std": p["std"]}));
                ops.push(json!({"op": "layout", "to": "chw"}));
            }
            let spec = json!({"ops": ops});
            let (pixels, mode) = set.decoded_pixels(case);
            let rgb = convert(u8s(&pixels), mode, ImageMode::Rgb);
            let rgb = Tensor::u8(vec![pixels.shape[0], pixels.shape[1], 3], rgb);
            let got = run_on_pixels(backend, &spec, rgb, ImageMode::Rgb);
            expect_shape(&got, &shape)?;
            // And the whole path from the file, decoding included.
            let from_file = run_spec(backend, &spec, &set.input(case)).map_err(|e| e.to_string())?;
            expect_shape(&from_file, &shape)?;
            if normalized {
                let atol = case["tolerance"]["strict"]["atol"].as_f64().unwrap_or(1e-6);
                let max = close_f32(f32s(&got), f32s(&reference), atol, 0.0)?;
                let fmax = close_f32(f32s(&from_file), f32s(&reference), atol, 0.0)?;
                Ok(format!(
                    "max |diff| {max:e} from reference pixels, {fmax:e} from the file (strict atol {atol:e})"
                ))
            } else {
                for (what, tensor) in [("reference pixels", &got), ("the file", &from_file)] {
                    let (max, mean) = diff_u8(u8s(tensor), u8s(&reference))?;
                    if max != 0 {
                        return Err(format!("from {what}: max {max} mean {mean:.4}"));
                    }
                }
                Ok("bit-exact from reference pixels and from the file".into())
            }
        }
        other => Err(format!("unknown category {other}")),
    }
}

fn check_reference_sets(backend: &dyn Backend) {
    let mut report = String::new();
    let mut failures = Vec::new();
    let mut checked = 0;
    for dir in set_dirs() {
        let set = Set::load(&dir);
        for case in &set.cases {
            let id = case["id"].as_str().unwrap_or("?");
            checked += 1;
            match check_case(backend, &set, case) {
                Ok(summary) => writeln!(report, "  ok   {id}: {summary}").unwrap(),
                Err(e) => {
                    writeln!(report, "  FAIL {id}: {e}").unwrap();
                    failures.push(format!("{}: {id}", dir.display()));
                }
            }
        }
    }
    eprintln!("{} backend, {checked} reference cases:\n{report}", backend.name());
    assert!(checked > 0, "no reference cases found");
    assert!(
        failures.is_empty(),
        "{} reference cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

for_each_backend!(check_reference_sets);

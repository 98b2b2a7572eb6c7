//! The backend interface and the CPU reference backend.

use crate::audio::mel::MelFilterbank;
use crate::audio::stft::StftPlan;
use crate::audio::{db::power_to_db, mfcc::apply_dct, stft::magnitude};
use crate::error::{Error, Result};
use crate::image::ops;
use crate::limits::MAX_TENSOR_ELEMENTS;
use crate::plan::{Plan, Step};
use crate::tensor::{Tensor, TensorData};

/// Runs the steps of a [`Plan`] on a decoded tensor.
pub trait Backend {
    fn name(&self) -> &'static str;
    fn execute(&self, plan: &Plan, input: Tensor) -> Result<Tensor>;
}

/// The plain-Rust reference backend. Every other backend is tested against it.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn execute(&self, plan: &Plan, mut tensor: Tensor) -> Result<Tensor> {
        let mut rest = &plan.steps[..];
        while !rest.is_empty() {
            // A mel spectrogram is computed frame by frame, never holding the complex STFT.
            if let [Step::Stft(stft), Step::Magnitude { power }, Step::Mel(bank), ..] = rest {
                tensor = stft_to_mel(stft, *power, bank, tensor)?;
                rest = &rest[3..];
                continue;
            }
            tensor = run_step(&rest[0], tensor)?;
            rest = &rest[1..];
        }
        Ok(tensor)
    }
}

/// Splits a shape into (leading channels, the last `inner` dims), or an error naming `op` when
/// the tensor has fewer than `inner` dims.
fn split_leading(shape: &[usize], inner: usize, op: &'static str) -> Result<(Vec<usize>, usize)> {
    let split = shape.len().checked_sub(inner).ok_or_else(|| {
        Error::input(
            op,
            format!("expects at least {inner} dimensions, got shape {shape:?}"),
        )
    })?;
    let lead = shape[..split].to_vec();
    let count = lead.iter().product();
    Ok((lead, count))
}

/// The element count of an output of shape `dims`, or an error past [`MAX_TENSOR_ELEMENTS`].
fn output_len(op: &'static str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
        .ok_or_else(|| {
            Error::input(
                op,
                format!("an output of shape {dims:?} exceeds the limit of {MAX_TENSOR_ELEMENTS} values"),
            )
        })
}

/// An image step's input must be the image its plan was made for.
fn check_len(op: &'static str, got: usize, planned: usize) -> Result<()> {
    if got == planned {
        return Ok(());
    }
    Err(Error::input(
        op,
        format!("the plan is for {planned} values, the tensor holds {got}"),
    ))
}

fn with_tail(lead: &[usize], tail: &[usize]) -> Vec<usize> {
    lead.iter().chain(tail).copied().collect()
}

fn expect_f32(tensor: Tensor, op: &'static str) -> Result<(Vec<usize>, Vec<f32>)> {
    match tensor.data {
        TensorData::F32(v) => Ok((tensor.shape, v)),
        _ => Err(Error::input(
            op,
            format!("expects float32 input, got {}", tensor.dtype().name()),
        )),
    }
}

/// Runs independent per-channel jobs on scoped threads where threads exist, at most one per
/// core (a WAV header may declare 65535 channels), each taking every `threads`-th job.
fn run_per_channel<J: Send>(jobs: Vec<J>, work: impl Fn(J) -> Result<()> + Sync) -> Result<()> {
    #[cfg(not(target_arch = "wasm32"))]
    if jobs.len() > 1 {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = jobs.len().min(cores);
        let mut shares: Vec<Vec<J>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, job) in jobs.into_iter().enumerate() {
            shares[i % threads].push(job);
        }
        return std::thread::scope(|scope| {
            let work = &work;
            let mut handles = Vec::with_capacity(threads);
            for share in shares {
                let handle = std::thread::Builder::new()
                    .spawn_scoped(scope, move || share.into_iter().try_for_each(work))
                    .map_err(|e| Error::input("stft", format!("cannot start a worker thread: {e}")))?;
                handles.push(handle);
            }
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::input("stft", "a channel worker panicked")))
            })
        });
    }
    jobs.into_iter().try_for_each(work)
}

/// `stft` -> `magnitude` -> `mel` fused (see [`StftPlan::process_mel`]); same results.
fn stft_to_mel(plan: &StftPlan, power: f32, bank: &MelFilterbank, tensor: Tensor) -> Result<Tensor> {
    let (shape, signal) = expect_f32(tensor, "stft")?;
    let (lead, channels) = split_leading(&shape, 1, "stft")?;
    let samples = shape[shape.len() - 1];
    let n_frames = plan.n_frames(samples)?;
    // The complex STFT is never made, but it would have been: keep its limit.
    output_len("stft", &[channels, plan.n_freq(), n_frames, 2])?;
    let per_channel = bank.n_mels() * n_frames;
    let mut out = vec![0.0f32; output_len("mel", &[channels, bank.n_mels(), n_frames])?];
    let jobs: Vec<_> = signal
        .chunks_exact(samples)
        .zip(out.chunks_exact_mut(per_channel))
        .collect();
    run_per_channel(jobs, |(signal, out)| plan.process_mel(signal, power, bank, out))?;
    Ok(Tensor::f32(with_tail(&lead, &[bank.n_mels(), n_frames]), out))
}

fn run_step(step: &Step, tensor: Tensor) -> Result<Tensor> {
    Ok(match step {
        Step::Stft(plan) => {
            let (shape, signal) = expect_f32(tensor, "stft")?;
            let (lead, channels) = split_leading(&shape, 1, "stft")?;
            let samples = shape[shape.len() - 1];
            let n_frames = plan.n_frames(samples)?;
            let len = output_len("stft", &[channels, plan.n_freq(), n_frames])?;
            // Interleaved (re, im).
            let per_channel = 2 * plan.n_freq() * n_frames;
            let mut out = vec![0.0f32; 2 * len];
            let jobs: Vec<_> = signal
                .chunks_exact(samples)
                .zip(out.chunks_exact_mut(per_channel))
                .collect();
            run_per_channel(jobs, |(signal, out)| plan.process(signal, out))?;
            Tensor::c64(with_tail(&lead, &[plan.n_freq(), n_frames]), out)
        }
        Step::Magnitude { power } => {
            let TensorData::C64(complex) = &tensor.data else {
                return Err(Error::input("magnitude", "expects a complex STFT"));
            };
            let mut out = vec![0.0f32; complex.len() / 2];
            magnitude(complex, *power, &mut out);
            Tensor::f32(tensor.shape, out)
        }
        Step::Mel(bank) => {
            let (shape, spec) = expect_f32(tensor, "mel")?;
            let (lead, channels) = split_leading(&shape, 2, "mel")?;
            let (n_freq, n_frames) = (shape[shape.len() - 2], shape[shape.len() - 1]);
            if n_freq != bank.n_freq || n_frames == 0 {
                return Err(Error::input(
                    "mel",
                    format!(
                        "filterbank expects {} bins and frames, got shape {shape:?}",
                        bank.n_freq
                    ),
                ));
            }
            let mut out = vec![0.0f32; output_len("mel", &[channels, bank.n_mels(), n_frames])?];
            let per_out = bank.n_mels() * n_frames;
            for (s, o) in spec
                .chunks_exact(n_freq * n_frames)
                .zip(out.chunks_exact_mut(per_out))
            {
                bank.apply(s, n_frames, o);
            }
            Tensor::f32(with_tail(&lead, &[bank.n_mels(), n_frames]), out)
        }
        Step::PowerToDb(params) => {
            let (shape, mut values) = expect_f32(tensor, "power_to_db")?;
            power_to_db(params, &mut values);
            Tensor::f32(shape, values)
        }
        Step::Mfcc { dct, n_mfcc, n_mels } => {
            let (shape, values) = expect_f32(tensor, "mfcc")?;
            let (lead, channels) = split_leading(&shape, 2, "mfcc")?;
            let n_frames = shape[shape.len() - 1];
            if shape[shape.len() - 2] != *n_mels || n_frames == 0 {
                return Err(Error::input(
                    "mfcc",
                    format!("expects {n_mels} mel bands and frames, got shape {shape:?}"),
                ));
            }
            let mut out = vec![0.0f32; output_len("mfcc", &[channels, *n_mfcc, n_frames])?];
            for (s, o) in values
                .chunks_exact(n_mels * n_frames)
                .zip(out.chunks_exact_mut(n_mfcc * n_frames))
            {
                apply_dct(dct, *n_mels, s, n_frames, o);
            }
            Tensor::f32(with_tail(&lead, &[*n_mfcc, n_frames]), out)
        }
        Step::Resize(plan) => {
            let pixels = tensor
                .as_u8()
                .ok_or_else(|| Error::input("resize", "expects a uint8 image"))?;
            check_len(
                "resize",
                pixels.len(),
                plan.in_height * plan.in_width * plan.channels,
            )?;
            let out = plan.process(pixels);
            let mut shape = vec![plan.out_height, plan.out_width];
            if tensor.shape.len() == 3 {
                shape.push(plan.channels);
            }
            Tensor::u8(shape, out)
        }
        Step::CenterCrop {
            input,
            top,
            left,
            output,
        } => {
            let shape = output.shape();
            check_len("center_crop", tensor.element_count(), input.len())?;
            match &tensor.data {
                TensorData::U8(v) => Tensor::u8(
                    shape,
                    ops::crop(v, input, *top, *left, output.height, output.width),
                ),
                TensorData::F32(v) => Tensor::f32(
                    shape,
                    ops::crop(v, input, *top, *left, output.height, output.width),
                ),
                TensorData::C64(_) => return Err(Error::input("center_crop", "expects an image")),
            }
        }
        Step::ToFloat => {
            let pixels = tensor
                .as_u8()
                .ok_or_else(|| Error::input("to_float", "expects a uint8 image"))?;
            Tensor::f32(tensor.shape.clone(), ops::to_float(pixels))
        }
        Step::Normalize { dims, mean, std } => {
            let (shape, mut values) = expect_f32(tensor, "normalize")?;
            check_len("normalize", values.len(), dims.len())?;
            ops::normalize(&mut values, dims, mean, std);
            Tensor::f32(shape, values)
        }
        Step::Layout { input, output } => {
            let shape = output.shape();
            check_len("layout", tensor.element_count(), input.len())?;
            let convert = |v: &TensorData| -> TensorData {
                match (v, input.chw, output.chw) {
                    (TensorData::U8(d), false, true) => TensorData::U8(ops::hwc_to_chw(d, input)),
                    (TensorData::U8(d), true, false) => TensorData::U8(ops::chw_to_hwc(d, input)),
                    (TensorData::F32(d), false, true) => TensorData::F32(ops::hwc_to_chw(d, input)),
                    (TensorData::F32(d), true, false) => TensorData::F32(ops::chw_to_hwc(d, input)),
                    (other, _, _) => other.clone(),
                }
            };
            Tensor::new(shape, convert(&tensor.data))
        }
    })
}

#[cfg(test)]
mod fused_tests {
    use super::*;
    use crate::{Pipeline, PlanKey, Spec};

    /// The fused mel path gives exactly what the three steps give one after another.
    #[test]
    fn fused_stft_mel_equals_the_steps_bit_for_bit() {
        let cases = [
            (r#"{"op": "stft", "n_fft": 400, "hop_length": 160}"#, 2.0, None),
            (
                r#"{"op": "stft", "n_fft": 512, "hop_length": 128, "center": false}"#,
                1.0,
                Some(2),
            ),
            (
                r#"{"op": "stft", "n_fft": 256, "hop_length": 100, "pad_mode": "reflect"}"#,
                1.5,
                Some(3),
            ),
        ];
        for (stft, power, channels) in cases {
            let spec = format!(
                r#"{{"ops": [{{"op": "load_audio"}}, {stft}, {{"op": "magnitude", "power": {power}}},
                    {{"op": "mel", "n_mels": 40}}, {{"op": "power_to_db"}}]}}"#
            );
            let pipeline = Pipeline::new(Spec::from_json(&spec).unwrap());
            let plan = pipeline
                .plan(PlanKey::Audio {
                    channels,
                    sample_rate: 16_000,
                })
                .unwrap();
            let count = channels.unwrap_or(1);
            let shape: Vec<usize> = channels.into_iter().chain([5000]).collect();
            let signal: Vec<f32> = (0..count * 5000)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i as f32 * 0.001).sin()))
                .collect();
            let input = Tensor::f32(shape, signal);
            let fused = CpuBackend.execute(&plan, input.clone()).unwrap();
            let mut stepwise = input;
            for step in &plan.steps {
                stepwise = run_step(step, stepwise).unwrap();
            }
            assert_eq!(fused.shape, stepwise.shape, "{spec}");
            let bits = |t: &Tensor| {
                t.as_f32()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            assert!(bits(&fused) == bits(&stepwise), "{spec}: fused differs");
        }
    }
}

//! The backend interface and the CPU reference backend.

use crate::audio::{db::power_to_db, mfcc::apply_dct, stft::magnitude};
use crate::error::{Error, Result};
use crate::image::ops;
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
        for step in &plan.steps {
            tensor = run_step(step, tensor)?;
        }
        Ok(tensor)
    }
}

/// Splits a shape into (leading channels, the last `inner` dims).
fn split_leading(shape: &[usize], inner: usize) -> (Vec<usize>, usize) {
    let lead = shape[..shape.len() - inner].to_vec();
    let count = lead.iter().product();
    (lead, count)
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

/// Runs independent per-channel jobs, one scoped thread each where threads exist.
fn run_per_channel<J: Send>(jobs: Vec<J>, work: impl Fn(J) -> Result<()> + Sync) -> Result<()> {
    #[cfg(not(target_arch = "wasm32"))]
    if jobs.len() > 1 {
        return std::thread::scope(|scope| {
            let work = &work;
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|job| scope.spawn(move || work(job)))
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().expect("channel worker panicked"))
        });
    }
    jobs.into_iter().try_for_each(work)
}

fn run_step(step: &Step, tensor: Tensor) -> Result<Tensor> {
    Ok(match step {
        Step::Stft(plan) => {
            let (shape, signal) = expect_f32(tensor, "stft")?;
            let samples = *shape.last().expect("waveform has a sample axis");
            let (lead, channels) = split_leading(&shape, 1);
            let n_frames = plan.n_frames(samples)?;
            let per_channel = 2 * plan.n_freq() * n_frames;
            let mut out = vec![0.0f32; channels * per_channel];
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
            let (lead, channels) = split_leading(&shape, 2);
            let (n_freq, n_frames) = (shape[shape.len() - 2], shape[shape.len() - 1]);
            if n_freq != bank.n_freq {
                return Err(Error::input(
                    "mel",
                    format!("filterbank expects {} bins, got {n_freq}", bank.n_freq),
                ));
            }
            let per_out = bank.n_mels() * n_frames;
            let mut out = vec![0.0f32; channels * per_out];
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
            let (lead, channels) = split_leading(&shape, 2);
            let n_frames = shape[shape.len() - 1];
            let mut out = vec![0.0f32; channels * n_mfcc * n_frames];
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
            ops::normalize(&mut values, dims, mean, std);
            Tensor::f32(shape, values)
        }
        Step::Layout { input, output } => {
            let shape = output.shape();
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

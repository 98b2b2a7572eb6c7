//! Audio kernels on the device: STFT (framing, padding, window, DFT of any length), |X|^p,
//! sparse mel, power_to_db and the MFCC DCT.

use std::sync::Arc;

use kiln_core::audio::{db::reference_db, mel::MelFilterbank, stft::StftPlan};
use kiln_core::spec::{DbParams, DbRef, PadMode};
use kiln_core::DType;

use crate::kernel::{flat_groups, groups, shader, DeviceTensor, Kernel, Recorder, Slot};
use crate::{BackendError, Resources};

pub(crate) const STFT_WGSL: &str = concat!(include_str!("padding.wgsl"), include_str!("stft.wgsl"));
pub(crate) const FFT_WGSL: &str = concat!(include_str!("padding.wgsl"), include_str!("fft.wgsl"));
pub(crate) const MAGNITUDE_WGSL: &str = include_str!("magnitude.wgsl");
pub(crate) const MEL_WGSL: &str = include_str!("mel.wgsl");
pub(crate) const DB_WGSL: &str = include_str!("db.wgsl");
pub(crate) const DCT_WGSL: &str = include_str!("dct.wgsl");

pub(crate) struct AudioKernels {
    stft: Kernel,
    stft_fft: Kernel,
    magnitude: Kernel,
    mel: Kernel,
    max_reduce: Kernel,
    to_db: Kernel,
    dct: Kernel,
}

/// Device copies of a plan's tables, built once per plan.
pub(crate) struct StftTables {
    window: wgpu::Buffer,
    twiddles: wgpu::Buffer,
    /// Radices of the packed half-length FFT, when `fft.wgsl` can take this `n_fft`.
    fft_factors: Option<(wgpu::Buffer, usize)>,
}

/// Largest packed (complex) FFT length `fft.wgsl` holds in workgroup memory.
const MAX_FFT_HALF: usize = 1024;

/// Radices (4, 2, 3, 5) of `n_fft / 2`, or `None` when the FFT kernel cannot take `n_fft`.
fn fft_radices(n_fft: usize) -> Option<Vec<u32>> {
    if !n_fft.is_multiple_of(2) || n_fft / 2 > MAX_FFT_HALF {
        return None;
    }
    let mut m = n_fft / 2;
    let mut radices = Vec::new();
    for radix in [4, 2, 3, 5] {
        while m.is_multiple_of(radix) {
            radices.push(radix as u32);
            m /= radix;
        }
    }
    (m == 1).then_some(radices)
}

pub(crate) struct MelTables {
    filters: wgpu::Buffer,
    weights: wgpu::Buffer,
}

impl AudioKernels {
    pub(crate) fn new(device: &wgpu::Device) -> Self {
        use Slot::{Read, ReadWrite, Uniform};
        let stft = shader(device, "stft.wgsl", STFT_WGSL);
        let magnitude = shader(device, "magnitude.wgsl", MAGNITUDE_WGSL);
        let mel = shader(device, "mel.wgsl", MEL_WGSL);
        let db = shader(device, "db.wgsl", DB_WGSL);
        let dct = shader(device, "dct.wgsl", DCT_WGSL);
        AudioKernels {
            stft: Kernel::new(device, &stft, "stft_dft", &[Uniform, Read, Read, Read, ReadWrite]),
            stft_fft: Kernel::new(
                device,
                &shader(device, "fft.wgsl", FFT_WGSL),
                "stft_fft",
                &[Uniform, Read, Read, Read, ReadWrite, Read],
            ),
            magnitude: Kernel::new(device, &magnitude, "magnitude", &[Uniform, Read, ReadWrite]),
            mel: Kernel::new(device, &mel, "mel_apply", &[Uniform, Read, Read, Read, ReadWrite]),
            max_reduce: Kernel::new(device, &db, "max_reduce", &[Uniform, ReadWrite, ReadWrite]),
            to_db: Kernel::new(device, &db, "to_db", &[Uniform, ReadWrite, ReadWrite]),
            dct: Kernel::new(device, &dct, "dct_apply", &[Uniform, Read, Read, ReadWrite]),
        }
    }

    pub(crate) fn stft(
        &self,
        rec: &mut Recorder,
        resources: &Resources,
        plan: &Arc<StftPlan>,
        input: DeviceTensor,
    ) -> Result<DeviceTensor, BackendError> {
        let tables = resources.get(plan, || {
            let n = plan.params.n_fft;
            let twiddles: Vec<f32> = (0..n)
                .flat_map(|j| {
                    let angle = -2.0 * std::f64::consts::PI * j as f64 / n as f64;
                    [angle.cos() as f32, angle.sin() as f32]
                })
                .collect();
            StftTables {
                window: rec.upload("window", bytemuck::cast_slice(&plan.window)),
                twiddles: rec.upload("twiddles", bytemuck::cast_slice(&twiddles)),
                fft_factors: fft_radices(n)
                    .map(|r| (rec.upload("fft radices", bytemuck::cast_slice(&r)), r.len())),
            }
        });
        let samples = *input.shape.last().expect("waveform has a sample axis");
        let lead = &input.shape[..input.shape.len() - 1];
        let channels: usize = lead.iter().product();
        let n_frames = plan.n_frames(samples).map_err(BackendError::Kernel)?;
        let n_freq = plan.n_freq();
        let out = rec.storage("stft", 2 * channels * n_freq * n_frames);
        // One dispatch covers at most 65535 frames (the per-dimension workgroup limit).
        for offset in (0..n_frames).step_by(65_535) {
            let count = (n_frames - offset).min(65_535);
            let (factors, factor_count) = tables
                .fft_factors
                .as_ref()
                .map_or((None, 0), |(b, n)| (Some(b), *n));
            let params = rec.uniform(&[
                plan.params.n_fft as u32,
                plan.params.hop_length as u32,
                plan.pad() as u32,
                samples as u32,
                n_frames as u32,
                n_freq as u32,
                u32::from(plan.params.pad_mode == PadMode::Reflect),
                offset as u32,
                (plan.params.n_fft / 2) as u32,
                factor_count as u32,
                0,
                0,
            ]);
            let common = [&params, &input.buffer, &tables.window, &tables.twiddles, &out];
            match factors {
                Some(factors) => {
                    let bindings = [common.as_slice(), &[factors]].concat();
                    rec.dispatch(&self.stft_fft, &bindings, (1, count as u32, channels as u32));
                }
                None => rec.dispatch(
                    &self.stft,
                    &common,
                    (groups(n_freq, 64), count as u32, channels as u32),
                ),
            }
        }
        let shape = lead.iter().copied().chain([n_freq, n_frames]).collect();
        Ok(DeviceTensor {
            buffer: out,
            shape,
            dtype: DType::C64,
        })
    }

    pub(crate) fn magnitude(&self, rec: &mut Recorder, power: f32, input: DeviceTensor) -> DeviceTensor {
        let count = input.len();
        let out = rec.storage("magnitude", count);
        let params = rec.uniform(&[count as u32, power.to_bits(), 0, 0]);
        rec.dispatch(
            &self.magnitude,
            &[&params, &input.buffer, &out],
            flat_groups(count),
        );
        DeviceTensor {
            buffer: out,
            shape: input.shape,
            dtype: DType::F32,
        }
    }

    pub(crate) fn mel(
        &self,
        rec: &mut Recorder,
        resources: &Resources,
        bank: &Arc<MelFilterbank>,
        input: DeviceTensor,
    ) -> DeviceTensor {
        let tables = resources.get(bank, || {
            let mut filters = Vec::with_capacity(bank.n_mels() * 4);
            let mut weights = Vec::new();
            for f in &bank.filters {
                filters.extend([
                    f.first_bin as u32,
                    f.weights.len() as u32,
                    weights.len() as u32,
                    0,
                ]);
                weights.extend_from_slice(&f.weights);
            }
            MelTables {
                filters: rec.upload("mel filters", bytemuck::cast_slice(&filters)),
                weights: rec.upload("mel weights", bytemuck::cast_slice(&weights)),
            }
        });
        let rank = input.shape.len();
        let (n_freq, n_frames) = (input.shape[rank - 2], input.shape[rank - 1]);
        let channels: usize = input.shape[..rank - 2].iter().product();
        let n_mels = bank.n_mels();
        let out = rec.storage("mel", channels * n_mels * n_frames);
        let params = rec.uniform(&[n_freq as u32, n_mels as u32, n_frames as u32, channels as u32]);
        rec.dispatch(
            &self.mel,
            &[&params, &tables.filters, &tables.weights, &input.buffer, &out],
            (groups(n_frames, 64), groups(n_mels, 4), channels as u32),
        );
        let shape = input.shape[..rank - 2]
            .iter()
            .copied()
            .chain([n_mels, n_frames])
            .collect();
        DeviceTensor {
            buffer: out,
            shape,
            dtype: DType::F32,
        }
    }

    pub(crate) fn power_to_db(
        &self,
        rec: &mut Recorder,
        db: &DbParams,
        values: DeviceTensor,
    ) -> DeviceTensor {
        let count = values.len();
        let ref_db = reference_db(db, 0.0) as f32;
        let params = rec.uniform(&[
            count as u32,
            u32::from(db.reference == DbRef::Max),
            u32::from(db.top_db.is_some()),
            0,
            (db.amin as f32).to_bits(),
            ref_db.to_bits(),
            (db.top_db.unwrap_or(0.0) as f32).to_bits(),
            0,
        ]);
        let peak = rec.upload("peak", &[0u8; 4]);
        rec.dispatch(
            &self.max_reduce,
            &[&params, &values.buffer, &peak],
            flat_groups(count),
        );
        rec.dispatch(&self.to_db, &[&params, &values.buffer, &peak], flat_groups(count));
        values
    }

    pub(crate) fn mfcc(
        &self,
        rec: &mut Recorder,
        resources: &Resources,
        dct: &Arc<Vec<f32>>,
        n_mfcc: usize,
        n_mels: usize,
        input: DeviceTensor,
    ) -> DeviceTensor {
        let matrix = resources.get(dct, || rec.upload("dct", bytemuck::cast_slice(dct)));
        let rank = input.shape.len();
        let n_frames = input.shape[rank - 1];
        let channels: usize = input.shape[..rank - 2].iter().product();
        let out = rec.storage("mfcc", channels * n_mfcc * n_frames);
        let params = rec.uniform(&[n_mels as u32, n_mfcc as u32, n_frames as u32, channels as u32]);
        rec.dispatch(
            &self.dct,
            &[&params, &matrix, &input.buffer, &out],
            (groups(n_frames, 64), groups(n_mfcc, 4), channels as u32),
        );
        let shape = input.shape[..rank - 2]
            .iter()
            .copied()
            .chain([n_mfcc, n_frames])
            .collect();
        DeviceTensor {
            buffer: out,
            shape,
            dtype: DType::F32,
        }
    }
}

//! Audio kernels on the device: STFT (framing, padding, window, DFT of any length), |X|^p,
//! sparse mel, power_to_db and the MFCC DCT.

use std::sync::Arc;

use kiln_core::audio::{db::reference_db, mel::MelFilterbank, stft::StftPlan};
use kiln_core::spec::{DbParams, DbRef, PadMode};
use kiln_core::DType;

use crate::kernel::{elements, groups, shader, DeviceTensor, Kernel, Recorder, Slot};
use crate::uniform::field;
use crate::{BackendError, Resources, Result};

pub(crate) mod params;

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
    ) -> Result<DeviceTensor> {
        const OP: &str = "stft";
        let tables = resources.get(plan, || {
            let n = plan.params.n_fft;
            let twiddles: Vec<f32> = (0..n)
                .flat_map(|j| {
                    let angle = -2.0 * std::f64::consts::PI * j as f64 / n as f64;
                    [angle.cos() as f32, angle.sin() as f32]
                })
                .collect();
            let fft_factors = match fft_radices(n) {
                Some(r) => Some((rec.upload("fft radices", bytemuck::cast_slice(&r))?, r.len())),
                None => None,
            };
            Ok(StftTables {
                window: rec.upload("stft window", bytemuck::cast_slice(&plan.window))?,
                twiddles: rec.upload("stft twiddles", bytemuck::cast_slice(&twiddles))?,
                fft_factors,
            })
        })?;
        let (&samples, lead) = input.shape.split_last().ok_or_else(|| {
            BackendError::Kernel(kiln_core::Error::Input {
                op: OP,
                reason: "the input has no sample axis".into(),
            })
        })?;
        let channels = elements(OP, lead)?;
        let n_frames = plan.n_frames(samples).map_err(BackendError::Kernel)?;
        let n_freq = plan.n_freq();
        let out = rec.storage(
            "stft output",
            elements("stft output", &[2, channels, n_freq, n_frames])?,
        )?;
        let p = &plan.params;
        let stft = params::Stft {
            n_fft: field(OP, "n_fft", p.n_fft)?,
            hop: field(OP, "hop_length", p.hop_length)?,
            pad: field(OP, "pad", plan.pad())?,
            n_samples: field(OP, "samples", samples)?,
            n_frames: field(OP, "n_frames", n_frames)?,
            n_freq: field(OP, "n_freq", n_freq)?,
            reflect: u32::from(p.pad_mode == PadMode::Reflect),
            frame_offset: 0,
        };
        // One dispatch covers at most the per-dimension workgroup limit of frames.
        let chunk = rec.max_groups();
        for offset in (0..n_frames).step_by(chunk) {
            let count = (n_frames - offset).min(chunk);
            let frame_offset = field(OP, "frame_offset", offset)?;
            match &tables.fft_factors {
                Some((factors, factor_count)) => {
                    let params = rec.uniform(&params::Fft {
                        n_fft: stft.n_fft,
                        hop: stft.hop,
                        pad: stft.pad,
                        n_samples: stft.n_samples,
                        n_frames: stft.n_frames,
                        n_freq: stft.n_freq,
                        reflect: stft.reflect,
                        frame_offset,
                        half: field(OP, "n_fft", p.n_fft / 2)?,
                        n_factors: field(OP, "radices", *factor_count)?,
                        _pad0: 0,
                        _pad1: 0,
                    });
                    rec.dispatch(
                        OP,
                        &self.stft_fft,
                        &[
                            &params,
                            &input.buffer,
                            &tables.window,
                            &tables.twiddles,
                            &out,
                            factors,
                        ],
                        (1, count, channels),
                    )?;
                }
                None => {
                    let params = rec.uniform(&params::Stft { frame_offset, ..stft });
                    rec.dispatch(
                        OP,
                        &self.stft,
                        &[&params, &input.buffer, &tables.window, &tables.twiddles, &out],
                        (groups(n_freq, 64), count, channels),
                    )?;
                }
            }
        }
        let shape = lead.iter().copied().chain([n_freq, n_frames]).collect();
        Ok(DeviceTensor {
            buffer: out,
            shape,
            dtype: DType::C64,
        })
    }

    pub(crate) fn magnitude(
        &self,
        rec: &mut Recorder,
        power: f32,
        input: DeviceTensor,
    ) -> Result<DeviceTensor> {
        let count = input.len();
        let out = rec.storage("magnitude output", count)?;
        let params = rec.uniform(&params::Magnitude {
            count: field("magnitude", "count", count)?,
            power,
            _pad0: 0,
            _pad1: 0,
        });
        rec.dispatch(
            "magnitude",
            &self.magnitude,
            &[&params, &input.buffer, &out],
            rec.flat_groups(count),
        )?;
        Ok(DeviceTensor {
            buffer: out,
            shape: input.shape,
            dtype: DType::F32,
        })
    }

    pub(crate) fn mel(
        &self,
        rec: &mut Recorder,
        resources: &Resources,
        bank: &Arc<MelFilterbank>,
        input: DeviceTensor,
    ) -> Result<DeviceTensor> {
        const OP: &str = "mel";
        let tables = resources.get(bank, || {
            let mut filters = Vec::with_capacity(bank.n_mels() * 4);
            let mut weights = Vec::new();
            for f in &bank.filters {
                filters.extend([
                    field(OP, "first_bin", f.first_bin)?,
                    field(OP, "bins", f.weights.len())?,
                    field(OP, "weights", weights.len())?,
                    0,
                ]);
                weights.extend_from_slice(&f.weights);
            }
            Ok(MelTables {
                filters: rec.upload("mel filters", bytemuck::cast_slice(&filters))?,
                weights: rec.upload("mel weights", bytemuck::cast_slice(&weights))?,
            })
        })?;
        let (lead, n_freq, n_frames) = spectrogram_dims(OP, &input.shape)?;
        let channels = elements(OP, lead)?;
        let n_mels = bank.n_mels();
        let out = rec.storage(
            "mel output",
            elements("mel output", &[channels, n_mels, n_frames])?,
        )?;
        let params = rec.uniform(&params::Mel {
            n_freq: field(OP, "n_freq", n_freq)?,
            n_mels: field(OP, "n_mels", n_mels)?,
            n_frames: field(OP, "n_frames", n_frames)?,
            channels: field(OP, "channels", channels)?,
        });
        rec.dispatch(
            OP,
            &self.mel,
            &[&params, &tables.filters, &tables.weights, &input.buffer, &out],
            (groups(n_frames, 64), groups(n_mels, 4), channels),
        )?;
        let shape = lead.iter().copied().chain([n_mels, n_frames]).collect();
        Ok(DeviceTensor {
            buffer: out,
            shape,
            dtype: DType::F32,
        })
    }

    pub(crate) fn power_to_db(
        &self,
        rec: &mut Recorder,
        db: &DbParams,
        values: DeviceTensor,
    ) -> Result<DeviceTensor> {
        // One peak per item of the batch (the leading axis), as librosa takes one per array.
        let batch = values.shape.first().copied().unwrap_or(1).max(1);
        let count = values.len() / batch;
        let params = rec.uniform(&params::Db {
            count: field("power_to_db", "count", count)?,
            ref_is_max: u32::from(db.reference == DbRef::Max),
            clip_top: u32::from(db.top_db.is_some()),
            _pad: 0,
            amin: db.amin as f32,
            ref_db: reference_db(db, 0.0) as f32,
            top_db: db.top_db.unwrap_or(0.0) as f32,
            _pad2: 0.0,
        });
        let peak = rec.upload("power_to_db peaks", &vec![0u8; 4 * batch])?;
        let (x, y, _) = rec.flat_groups(count);
        let grid = (x, y, batch);
        rec.dispatch(
            "power_to_db",
            &self.max_reduce,
            &[&params, &values.buffer, &peak],
            grid,
        )?;
        rec.dispatch(
            "power_to_db",
            &self.to_db,
            &[&params, &values.buffer, &peak],
            grid,
        )?;
        Ok(values)
    }

    pub(crate) fn mfcc(
        &self,
        rec: &mut Recorder,
        resources: &Resources,
        dct: &Arc<Vec<f32>>,
        n_mfcc: usize,
        n_mels: usize,
        input: DeviceTensor,
    ) -> Result<DeviceTensor> {
        const OP: &str = "mfcc";
        let matrix = resources.get(dct, || rec.upload("mfcc dct", bytemuck::cast_slice(dct)))?;
        let (lead, _, n_frames) = spectrogram_dims(OP, &input.shape)?;
        let channels = elements(OP, lead)?;
        let out = rec.storage(
            "mfcc output",
            elements("mfcc output", &[channels, n_mfcc, n_frames])?,
        )?;
        let params = rec.uniform(&params::Dct {
            n_mels: field(OP, "n_mels", n_mels)?,
            n_mfcc: field(OP, "n_mfcc", n_mfcc)?,
            n_frames: field(OP, "n_frames", n_frames)?,
            channels: field(OP, "channels", channels)?,
        });
        rec.dispatch(
            OP,
            &self.dct,
            &[&params, &matrix, &input.buffer, &out],
            (groups(n_frames, 64), groups(n_mfcc, 4), channels),
        )?;
        let shape = lead.iter().copied().chain([n_mfcc, n_frames]).collect();
        Ok(DeviceTensor {
            buffer: out,
            shape,
            dtype: DType::F32,
        })
    }
}

/// `(leading axes, rows, frames)` of a `(..., rows, frames)` spectrogram.
fn spectrogram_dims<'s>(op: &'static str, shape: &'s [usize]) -> Result<(&'s [usize], usize, usize)> {
    match shape {
        [lead @ .., rows, frames] => Ok((lead, *rows, *frames)),
        _ => Err(BackendError::Kernel(kiln_core::Error::Input {
            op,
            reason: format!("expected a (..., bins, frames) spectrogram, got shape {shape:?}"),
        })),
    }
}

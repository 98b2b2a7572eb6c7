//! Plans: a spec resolved for one kind of input (channel count and rate, or image size), with
//! every table precomputed (window, FFT, filterbank, DCT, resize coefficients). Plans are shared
//! (`Arc`) so backends can key their device-side copies on them.

use std::sync::Arc;

use crate::audio::{mel::MelFilterbank, mfcc::dct_matrix, stft::StftPlan};
use crate::error::{Error, Result};
use crate::image::ops::center_crop_offset;
use crate::image::resize::{coefficient_count, output_size, ResizePlan};
use crate::image::ImageDims;
use crate::limits::{MAX_OUTPUT_PIXELS, MAX_RESIZE_COEFFICIENTS};
use crate::spec::{DbParams, MelNorm, Op, ResizeParams, Spec};

/// What a plan depends on besides the spec. Audio plans do not depend on the clip length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlanKey {
    /// `channels: None` is a 1-D mono waveform; `Some(c)` is `(c, samples)`.
    Audio {
        channels: Option<usize>,
        sample_rate: u32,
    },
    Image(ImageDims),
}

#[derive(Debug)]
pub enum Step {
    Stft(Arc<StftPlan>),
    Magnitude {
        power: f32,
    },
    Mel(Arc<MelFilterbank>),
    PowerToDb(DbParams),
    Mfcc {
        dct: Arc<Vec<f32>>,
        n_mfcc: usize,
        n_mels: usize,
    },
    Resize(Arc<ResizePlan>),
    CenterCrop {
        input: ImageDims,
        top: isize,
        left: isize,
        output: ImageDims,
    },
    ToFloat,
    Normalize {
        dims: ImageDims,
        mean: Vec<f32>,
        std: Vec<f32>,
    },
    Layout {
        input: ImageDims,
        output: ImageDims,
    },
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Stft(_) => "stft",
            Step::Magnitude { .. } => "magnitude",
            Step::Mel(_) => "mel",
            Step::PowerToDb(_) => "power_to_db",
            Step::Mfcc { .. } => "mfcc",
            Step::Resize(_) => "resize",
            Step::CenterCrop { .. } => "center_crop",
            Step::ToFloat => "to_float",
            Step::Normalize { .. } => "normalize",
            Step::Layout { .. } => "layout",
        }
    }
}

/// The steps after decoding, ready to run on any backend.
#[derive(Debug)]
pub struct Plan {
    pub key: PlanKey,
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn new(spec: &Spec, key: PlanKey) -> Result<Self> {
        let mut steps = Vec::with_capacity(spec.ops.len());
        let mut n_fft = 0;
        let mut mel_bands = 0;
        let mut dims = match key {
            PlanKey::Image(d) => Some(d),
            PlanKey::Audio { .. } => None,
        };
        let sample_rate = match key {
            PlanKey::Audio { sample_rate, .. } => sample_rate,
            PlanKey::Image(_) => 0,
        };
        for op in spec.ops.iter().skip(1) {
            let step = match op {
                Op::Stft(params) => {
                    n_fft = params.n_fft;
                    Step::Stft(Arc::new(StftPlan::new(params.clone())))
                }
                Op::Magnitude { power } => Step::Magnitude { power: *power },
                Op::Mel(p) => {
                    let sr = p.sample_rate.unwrap_or(sample_rate);
                    let fmax = p.fmax.unwrap_or(f64::from(sr) / 2.0);
                    if fmax <= p.fmin {
                        return Err(Error::input(
                            "mel",
                            format!("fmax ({fmax} Hz) must be above fmin ({} Hz)", p.fmin),
                        ));
                    }
                    mel_bands = p.n_mels;
                    Step::Mel(Arc::new(MelFilterbank::new(
                        f64::from(sr),
                        n_fft,
                        p.n_mels,
                        p.fmin,
                        fmax,
                        p.htk,
                        p.norm == MelNorm::Slaney,
                    )))
                }
                Op::PowerToDb(p) => Step::PowerToDb(*p),
                Op::Mfcc { n_mfcc } => {
                    if *n_mfcc > mel_bands {
                        return Err(Error::input(
                            "mfcc",
                            format!("n_mfcc ({n_mfcc}) exceeds the number of mel bands ({mel_bands})"),
                        ));
                    }
                    Step::Mfcc {
                        dct: Arc::new(dct_matrix(*n_mfcc, mel_bands)),
                        n_mfcc: *n_mfcc,
                        n_mels: mel_bands,
                    }
                }
                Op::Resize(params) => {
                    let d = image_dims(dims, op)?;
                    check_resize(params, d)?;
                    let plan = ResizePlan::new(params, d.height, d.width, d.channels);
                    dims = Some(d.with_size(plan.out_height, plan.out_width));
                    Step::Resize(Arc::new(plan))
                }
                Op::CenterCrop { height, width } => {
                    let d = image_dims(dims, op)?;
                    let output = d.with_size(*height, *width);
                    dims = Some(output);
                    Step::CenterCrop {
                        input: d,
                        top: center_crop_offset(d.height, *height),
                        left: center_crop_offset(d.width, *width),
                        output,
                    }
                }
                Op::ToFloat => Step::ToFloat,
                Op::Normalize { mean, std } => {
                    let d = image_dims(dims, op)?;
                    let per_channel = |v: &[f32], field: &str| match v.len() {
                        1 => Ok(vec![v[0]; d.channels]),
                        n if n == d.channels => Ok(v.to_vec()),
                        n => Err(Error::input(
                            "normalize",
                            format!(
                                "`{field}` has {n} values but the image has {} channels",
                                d.channels
                            ),
                        )),
                    };
                    Step::Normalize {
                        dims: d,
                        mean: per_channel(mean, "mean")?,
                        std: per_channel(std, "std")?,
                    }
                }
                Op::Layout { to } => {
                    let d = image_dims(dims, op)?;
                    let output = d.laid_out(*to);
                    dims = Some(output);
                    Step::Layout { input: d, output }
                }
                // Applied while decoding (`Pipeline::decode`), so no step of its own.
                Op::FixLength { .. } => continue,
                Op::LoadAudio(_) | Op::DecodeImage { .. } => {
                    return Err(Error::input(
                        "plan",
                        format!("`{}` may only be the first op", op.name()),
                    ))
                }
            };
            steps.push(step);
        }
        Ok(Plan { key, steps })
    }
}

/// The image an image op receives, or an error for a plan keyed on audio.
fn image_dims(dims: Option<ImageDims>, op: &Op) -> Result<ImageDims> {
    dims.ok_or_else(|| {
        Error::input(
            "plan",
            format!("`{}` needs an image, the plan is for audio", op.name()),
        )
    })
}

/// Refuses a resize whose output is empty or above [`MAX_OUTPUT_PIXELS`], or whose filter
/// tables would be huge (an image thousands of times longer than wide, resized across its length).
fn check_resize(params: &ResizeParams, d: ImageDims) -> Result<()> {
    let (height, width) = output_size(params, d.height, d.width);
    let pixels = height.saturating_mul(width);
    if d.height == 0 || d.width == 0 || pixels == 0 {
        return Err(Error::input(
            "resize",
            format!("a {}x{} image would resize to an empty image", d.width, d.height),
        ));
    }
    if pixels > MAX_OUTPUT_PIXELS {
        return Err(Error::input(
            "resize",
            format!(
                "a {}x{} image would resize to {width}x{height}, above the limit of {MAX_OUTPUT_PIXELS} pixels",
                d.width, d.height
            ),
        ));
    }
    let table =
        coefficient_count(d.height, height, params).saturating_add(coefficient_count(d.width, width, params));
    if table > MAX_RESIZE_COEFFICIENTS {
        return Err(Error::input(
            "resize",
            format!(
                "resizing a {}x{} image to {width}x{height} needs {table} filter coefficients, above the \
                 limit of {MAX_RESIZE_COEFFICIENTS}",
                d.width, d.height
            ),
        ));
    }
    Ok(())
}

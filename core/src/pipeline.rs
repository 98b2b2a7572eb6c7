//! A spec ready to run on many inputs: decodes on the host, caches one [`Plan`] per kind of
//! input, and hands the rest to a [`Backend`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::audio::decode::{check_finite, decode_audio, fix_length, resample};
use crate::backend::Backend;
use crate::error::{Error, Result, Warning};
use crate::image::{decode::decode_image_limited, ImageDims};
use crate::plan::{Plan, PlanKey};
use crate::spec::{Op, Spec};
use crate::tensor::Tensor;

/// Plans kept per pipeline; image datasets of many sizes start over past this rather than grow.
const MAX_PLANS: usize = 1024;

#[derive(Debug)]
pub struct Pipeline {
    spec: Spec,
    plans: Mutex<HashMap<PlanKey, Arc<Plan>>>,
}

impl Pipeline {
    pub fn new(spec: Spec) -> Self {
        Pipeline {
            spec,
            plans: Mutex::new(HashMap::new()),
        }
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Runs the spec's first op (`load_audio` or `decode_image`) on file bytes.
    ///
    /// Audio comes out `(samples,)` when mono (or `mono: true`) and `(channels, samples)`
    /// otherwise, `samples` being `fix_length`'s `size` where the spec has one; images `(H, W)` for mode `L` and `(H, W, C)` otherwise. Warnings are dropped;
    /// [`Pipeline::decode_with_warnings`] returns them.
    pub fn decode(&self, bytes: &[u8]) -> Result<(Tensor, PlanKey)> {
        self.decode_with_warnings(bytes)
            .map(|decoded| (decoded.tensor, decoded.key))
    }

    /// [`Pipeline::decode`], with what the decoder warned about (e.g. an image above
    /// `max_pixels` but within twice it, Pillow's `DecompressionBombWarning`).
    pub fn decode_with_warnings(&self, bytes: &[u8]) -> Result<Decoded> {
        match self.spec.ops.first() {
            Some(Op::LoadAudio(load)) => {
                let audio = decode_audio(bytes)?;
                let mut channels = if load.mono && audio.channels.len() > 1 {
                    vec![audio.to_mono()]
                } else {
                    audio.channels
                };
                let mut rate = audio.sample_rate;
                if let Some(target) = load.sample_rate {
                    channels = resample(&channels, rate, target)?;
                    rate = target;
                }
                // Here rather than in a plan step, so that every backend receives clips of one
                // length (and batches them) and `Spec::output` knows the shape.
                if let Some(size) = self.spec.fix_length() {
                    fix_length(&mut channels, size)?;
                }
                // librosa's stft refuses non-finite audio (`util.valid_audio`); resample checked
                // its own input above. Samples `fix_length` cut off are not checked, as librosa.
                if self.spec.ops.iter().any(|op| matches!(op, Op::Stft(_))) {
                    channels.iter().try_for_each(|c| check_finite("stft", c))?;
                }
                let samples = channels[0].len();
                let count = channels.len();
                let data: Vec<f32> = channels.into_iter().flatten().collect();
                let (shape, layout) = if count == 1 {
                    (vec![samples], None)
                } else {
                    (vec![count, samples], Some(count))
                };
                Ok(Decoded {
                    tensor: Tensor::f32(shape, data),
                    key: PlanKey::Audio {
                        channels: layout,
                        sample_rate: rate,
                    },
                    warnings: Vec::new(),
                })
            }
            Some(Op::DecodeImage { mode }) => {
                let (image, warnings) = decode_image_limited(bytes, *mode, self.spec.max_pixels())?;
                let dims = ImageDims::decoded(image.height, image.width, image.mode);
                Ok(Decoded {
                    tensor: Tensor::u8(dims.shape(), image.pixels),
                    key: PlanKey::Image(dims),
                    warnings,
                })
            }
            other => Err(Error::input(
                "pipeline",
                format!(
                    "a spec must start with `load_audio` or `decode_image`, not {}",
                    other.map_or("nothing", Op::name)
                ),
            )),
        }
    }

    /// The plan for inputs like `key`, built on first use.
    pub fn plan(&self, key: PlanKey) -> Result<Arc<Plan>> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plan) = plans.get(&key) {
            return Ok(plan.clone());
        }
        let plan = Arc::new(Plan::new(&self.spec, key)?);
        if plans.len() >= MAX_PLANS {
            plans.clear();
        }
        plans.insert(key, plan.clone());
        Ok(plan)
    }

    /// Decodes `bytes` and runs the whole spec on `backend`.
    pub fn run(&self, backend: &dyn Backend, bytes: &[u8]) -> Result<Tensor> {
        self.run_with_warnings(backend, bytes).map(|(tensor, _)| tensor)
    }

    /// [`Pipeline::run`], with the decoder's warnings (see [`Pipeline::decode_with_warnings`]).
    pub fn run_with_warnings(&self, backend: &dyn Backend, bytes: &[u8]) -> Result<(Tensor, Vec<Warning>)> {
        let decoded = self.decode_with_warnings(bytes)?;
        let plan = self.plan(decoded.key)?;
        Ok((backend.execute(&plan, decoded.tensor)?, decoded.warnings))
    }
}

/// A decoded input: the tensor, the key of the plan it needs, and what the decoder warned about.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub tensor: Tensor,
    pub key: PlanKey,
    pub warnings: Vec<Warning>,
}

//! A spec ready to run on many inputs: decodes on the host, caches one [`Plan`] per kind of
//! input, and hands the rest to a [`Backend`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::audio::decode::{decode_wav, resample};
use crate::backend::Backend;
use crate::error::Result;
use crate::image::{decode::decode_image, ImageDims};
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
    /// otherwise; images `(H, W)` for mode `L` and `(H, W, C)` otherwise.
    pub fn decode(&self, bytes: &[u8]) -> Result<(Tensor, PlanKey)> {
        match &self.spec.ops[0] {
            Op::LoadAudio(load) => {
                let audio = decode_wav(bytes)?;
                let mut channels = if load.mono && audio.channels.len() > 1 {
                    vec![audio.to_mono()]
                } else {
                    audio.channels.clone()
                };
                let mut rate = audio.sample_rate;
                if let Some(target) = load.sample_rate {
                    channels = resample(&channels, rate, target)?;
                    rate = target;
                }
                let samples = channels[0].len();
                let count = channels.len();
                let data: Vec<f32> = channels.into_iter().flatten().collect();
                let (shape, layout) = if count == 1 {
                    (vec![samples], None)
                } else {
                    (vec![count, samples], Some(count))
                };
                Ok((
                    Tensor::f32(shape, data),
                    PlanKey::Audio {
                        channels: layout,
                        sample_rate: rate,
                    },
                ))
            }
            Op::DecodeImage { mode } => {
                let image = decode_image(bytes, *mode)?;
                let dims = ImageDims::decoded(image.height, image.width, image.mode);
                Ok((Tensor::u8(dims.shape(), image.pixels), PlanKey::Image(dims)))
            }
            _ => unreachable!("Spec guarantees a decode op first"),
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
        let (tensor, key) = self.decode(bytes)?;
        let plan = self.plan(key)?;
        backend.execute(&plan, tensor)
    }
}

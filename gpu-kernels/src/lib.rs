//! kiln-gpu: the GPU backend. WGSL compute kernels, run through `wgpu`, that produce the same
//! numbers as the CPU reference in `kiln-core`.
//!
//! [`GpuBackend::new`] opens the first adapter `wgpu` finds (a GPU, or Mesa's lavapipe on
//! machines without one); [`GpuBackend::from_device`] takes a caller's device. Pipelines are
//! built once per backend, plan tables (window, twiddles, filterbank, resize coefficients) once
//! per plan, and every step of a plan is recorded into one command buffer with a single
//! readback at the end. Decoding (WAV, PNG, JPEG) stays on the host.
//!
//! ```no_run
//! use kiln_core::{Pipeline, Spec};
//! use kiln_gpu::GpuBackend;
//!
//! let spec = Spec::from_json(r#"{"ops": [{"op": "decode_image", "mode": "RGB"},
//!     {"op": "resize", "height": 224, "width": 224, "filter": "bicubic"}]}"#)?;
//! let gpu = GpuBackend::new()?;
//! let image = Pipeline::new(spec).run(&gpu, &std::fs::read("cat.jpg")?)?;
//! assert_eq!(image.shape, vec![224, 224, 3]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod audio;
mod image;
mod kernel;
mod resources;

#[cfg(not(target_arch = "wasm32"))]
use kiln_core::Backend;
use kiln_core::{DType, Plan, Step, Tensor, TensorData};

use audio::AudioKernels;
use image::ImageKernels;
use kernel::{BufferPool, DeviceTensor, Recorder};
use resources::Resources;

/// The WGSL modules as the device compiles them (fragments already prepended), for validation
/// and for embedding elsewhere.
pub const SHADERS: &[(&str, &str)] = &[
    ("audio/stft.wgsl", audio::STFT_WGSL),
    ("audio/fft.wgsl", audio::FFT_WGSL),
    ("audio/magnitude.wgsl", audio::MAGNITUDE_WGSL),
    ("audio/mel.wgsl", audio::MEL_WGSL),
    ("audio/db.wgsl", audio::DB_WGSL),
    ("audio/dct.wgsl", audio::DCT_WGSL),
    ("image/resize.wgsl", image::RESIZE_WGSL),
    ("image/pixels.wgsl", image::PIXELS_WGSL),
];

/// WGSL files that are not modules of their own but are prepended to some of [`SHADERS`].
pub const SHADER_FRAGMENTS: &[&str] = &["audio/padding.wgsl"];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("no GPU adapter available (install a Vulkan driver such as Mesa's lavapipe): {0}")]
    NoAdapter(String),
    #[error("could not open the GPU device: {0}")]
    Device(String),
    #[error("GPU execution failed: {0}")]
    Execution(String),
    #[error(transparent)]
    Kernel(kiln_core::Error),
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// A tensor left on the device: `buffer` holds its elements row-major, one 4-byte word each
/// (`u32` for uint8 images, `f32`, or two `f32` per complex value).
#[derive(Debug, Clone)]
pub struct GpuTensor {
    pub buffer: wgpu::Buffer,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl GpuTensor {
    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }

    fn words(&self) -> usize {
        self.element_count() * if self.dtype == DType::C64 { 2 } else { 1 }
    }
}

/// Runs kiln plans on a `wgpu` device.
pub struct GpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter_name: String,
    audio: AudioKernels,
    image: ImageKernels,
    resources: Resources,
    pool: BufferPool,
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBackend")
            .field("adapter", &self.adapter_name)
            .finish_non_exhaustive()
    }
}

impl GpuBackend {
    /// Opens the default adapter (honouring `WGPU_BACKEND` and friends) and builds the kernels.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    pub async fn new_async() -> Result<Self> {
        // Vulkan/Metal/DX12 first; GL only when asked for (`WGPU_BACKEND=gl`), since probing it
        // on headless machines prints display-server errors.
        let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        descriptor.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
        let instance = wgpu::Instance::new(descriptor);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| BackendError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        // Large images and long clips need the adapter's full buffer sizes, not the defaults.
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: adapter.limits().max_storage_buffer_binding_size,
            max_buffer_size: adapter.limits().max_buffer_size,
            ..wgpu::Limits::default()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("kiln"),
                required_features: wgpu::Features::empty(),
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| BackendError::Device(e.to_string()))?;
        let name = format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type);
        Ok(Self::from_device(device, queue, name))
    }

    /// Uses a device the caller already has (tests, or an application sharing its GPU).
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, adapter_name: String) -> Self {
        let audio = AudioKernels::new(&device);
        let image = ImageKernels::new(&device);
        GpuBackend {
            device,
            queue,
            adapter_name,
            audio,
            image,
            resources: Resources::default(),
            pool: BufferPool::default(),
        }
    }

    pub fn adapter_name(&self) -> &str {
        &self.adapter_name
    }

    /// How many plan tables live on the device (shows plans being reused).
    pub fn cached_tables(&self) -> usize {
        self.resources.len()
    }

    fn upload(&self, rec: &mut Recorder, tensor: &Tensor) -> DeviceTensor {
        let buffer = match &tensor.data {
            TensorData::U8(v) => {
                let words: Vec<u32> = v.iter().map(|&b| u32::from(b)).collect();
                rec.upload_input(&words)
            }
            TensorData::F32(v) | TensorData::C64(v) => rec.upload_input(bytemuck::cast_slice(v)),
        };
        DeviceTensor {
            buffer,
            shape: tensor.shape.clone(),
            dtype: tensor.dtype(),
        }
    }

    /// Runs a plan with device errors (validation, out of memory) captured and returned rather
    /// than sent to wgpu's default handler, which panics.
    /// Runs a plan and reads the result back; the browser awaits this, native code blocks on it
    /// through [`Backend::execute`].
    pub async fn execute_async(&self, plan: &Plan, input: Tensor) -> Result<Tensor> {
        let out_of_memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let result = self.record_and_read(plan, input).await;
        let validation = validation.pop().await;
        let out_of_memory = out_of_memory.pop().await;
        match (validation.or(out_of_memory), result) {
            (Some(device_error), _) => Err(BackendError::Execution(device_error.to_string())),
            (None, result) => result,
        }
    }

    fn record<'a>(&'a self, plan: &Plan, input: Tensor) -> Result<(Recorder<'a>, DeviceTensor)> {
        let mut rec = Recorder::new(&self.device, &self.queue, &self.pool);
        let mut t = self.upload(&mut rec, &input);
        drop(input);
        for step in &plan.steps {
            t = match step {
                Step::Stft(p) => self.audio.stft(&mut rec, &self.resources, p, t)?,
                Step::Magnitude { power } => self.audio.magnitude(&mut rec, *power, t),
                Step::Mel(bank) => self.audio.mel(&mut rec, &self.resources, bank, t),
                Step::PowerToDb(db) => self.audio.power_to_db(&mut rec, db, t),
                Step::Mfcc { dct, n_mfcc, n_mels } => {
                    self.audio
                        .mfcc(&mut rec, &self.resources, dct, *n_mfcc, *n_mels, t)
                }
                Step::Resize(p) => self.image.resize(&mut rec, &self.resources, p, t),
                Step::CenterCrop {
                    input,
                    top,
                    left,
                    output,
                } => self.image.center_crop(&mut rec, input, *top, *left, output, t),
                Step::ToFloat => self.image.to_float(&mut rec, t),
                Step::Normalize { dims, mean, std } => self.image.normalize(&mut rec, dims, mean, std, t),
                Step::Layout { input, output } => self.image.layout(&mut rec, input, output, t),
            };
        }
        Ok((rec, t))
    }

    async fn record_and_read(&self, plan: &Plan, input: Tensor) -> Result<Tensor> {
        let (rec, t) = self.record(plan, input)?;
        let words = rec
            .finish(&t.buffer, t.len() * if t.dtype == DType::C64 { 2 } else { 1 })
            .await
            .map_err(BackendError::Execution)?;
        Ok(tensor_from_words(t.shape, t.dtype, words))
    }

    /// Runs a plan and leaves the result on the device (no readback): the GPU-resident form a
    /// training loop consumes.
    pub fn execute_resident(&self, plan: &Plan, input: Tensor) -> Result<GpuTensor> {
        let (rec, t) = self.record(plan, input)?;
        rec.finish_resident(&t.buffer);
        Ok(GpuTensor {
            buffer: t.buffer,
            shape: t.shape,
            dtype: t.dtype,
        })
    }

    /// Uploads a host tensor (uint8 widened to one u32 per element).
    pub fn upload_tensor(&self, tensor: &Tensor) -> GpuTensor {
        let mut rec = Recorder::new(&self.device, &self.queue, &self.pool);
        let t = self.upload(&mut rec, tensor);
        rec.finish_resident(&t.buffer);
        GpuTensor {
            buffer: t.buffer,
            shape: t.shape,
            dtype: t.dtype,
        }
    }

    /// Stacks equally shaped tensors into one `(n, ...shape)` batch buffer.
    pub fn stack(&self, parts: &[GpuTensor]) -> Result<GpuTensor> {
        let first = parts
            .first()
            .ok_or_else(|| BackendError::Execution("nothing to stack".into()))?;
        if let Some(odd) = parts
            .iter()
            .find(|p| p.shape != first.shape || p.dtype != first.dtype)
        {
            return Err(BackendError::Execution(format!(
                "cannot stack a {:?} {} tensor onto {:?} {}",
                odd.shape,
                odd.dtype.name(),
                first.shape,
                first.dtype.name()
            )));
        }
        let rec = Recorder::new(&self.device, &self.queue, &self.pool);
        let buffers: Vec<&wgpu::Buffer> = parts.iter().map(|p| &p.buffer).collect();
        let buffer = rec.concat(&buffers, first.words() as u64 * 4);
        let shape = std::iter::once(parts.len())
            .chain(first.shape.iter().copied())
            .collect();
        Ok(GpuTensor {
            buffer,
            shape,
            dtype: first.dtype,
        })
    }

    /// Reads a device tensor back to the host.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(&self, tensor: &GpuTensor) -> Result<Tensor> {
        pollster::block_on(self.read_async(tensor))
    }

    pub async fn read_async(&self, tensor: &GpuTensor) -> Result<Tensor> {
        let rec = Recorder::new(&self.device, &self.queue, &self.pool);
        let words = rec
            .finish(&tensor.buffer, tensor.words())
            .await
            .map_err(BackendError::Execution)?;
        Ok(tensor_from_words(tensor.shape.clone(), tensor.dtype, words))
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }
}

fn tensor_from_words(shape: Vec<usize>, dtype: DType, words: Vec<u32>) -> Tensor {
    let data = match dtype {
        DType::U8 => TensorData::U8(words.into_iter().map(|w| w as u8).collect()),
        DType::F32 => TensorData::F32(bytemuck::cast_vec(words)),
        DType::C64 => TensorData::C64(bytemuck::cast_vec(words)),
    };
    Tensor::new(shape, data)
}

/// Blocking use, natively; the browser calls [`GpuBackend::execute_async`].
#[cfg(not(target_arch = "wasm32"))]
impl Backend for GpuBackend {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn execute(&self, plan: &Plan, input: Tensor) -> kiln_core::Result<Tensor> {
        pollster::block_on(self.execute_async(plan, input)).map_err(|e| match e {
            BackendError::Kernel(inner) => inner,
            other => kiln_core::Error::Backend {
                backend: "gpu",
                reason: other.to_string(),
            },
        })
    }
}

//! kiln-gpu: the GPU backend. WGSL compute kernels, run through `wgpu`, that produce the same
//! numbers as the CPU reference in `kiln-core`.
//!
//! [`AnyBackend::open`] opens the backend a CLI flag or the page chose ([`BackendChoice`]): the
//! CPU reference or the GPU, one handle either way; [`AnyBackend::gpu`] hands the
//! [`GpuBackend`] to callers that keep results on the device ([`GpuBackend::execute_resident`],
//! [`GpuBackend::stack`]). [`GpuBackend::new`] opens the first adapter `wgpu` finds (a GPU, or
//! Mesa's lavapipe on machines without one); [`GpuBackend::from_device`] takes a caller's
//! device. Pipelines are built once per backend, plan tables (window, twiddles, filterbank,
//! resize coefficients) once per plan, and every step of a plan is recorded into one command
//! buffer with a single readback at the end. Decoding (WAV, PNG, JPEG, WebP) stays on the host.
//!
//! Every submission runs inside error scopes, and every buffer and dispatch is checked against
//! the device's limits before it is made: a device error or an input too large for the device
//! is a [`BackendError`], never a panic. Each shader's parameters are a `#[repr(C)]` struct
//! laid out exactly as its WGSL uniform (a test compares the two through naga).
//!
//! ```no_run
//! use kiln_core::{Pipeline, Spec};
//! use kiln_gpu::{AnyBackend, BackendChoice};
//!
//! let spec = Spec::from_json(r#"{"ops": [{"op": "decode_image", "mode": "RGB"},
//!     {"op": "resize", "height": 224, "width": 224, "filter": "bicubic"}]}"#)?;
//! let backend = AnyBackend::open("gpu".parse::<BackendChoice>()?)?;
//! let image = Pipeline::new(spec).run(&backend, &std::fs::read("cat.jpg")?)?;
//! assert_eq!(image.shape, vec![224, 224, 3]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod any;
mod audio;
mod image;
mod kernel;
mod quiet;
mod resources;
mod scope;
mod uniform;

#[cfg(not(target_arch = "wasm32"))]
use kiln_core::Backend;
use kiln_core::{DType, Plan, Step, Tensor, TensorData};

pub use any::{AnyBackend, BackendChoice};
use audio::AudioKernels;
use image::ImageKernels;
use kernel::{BufferPool, Counters, DeviceTensor, Recorder};
pub use quiet::quiet_vulkan_env;
use resources::Resources;
use scope::captured;

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

/// Errors from the GPU backend. Device errors (validation, out of memory) and sizes beyond the
/// device's limits are errors here, never panics.
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
    /// The device reported an error (validation, internal, a lost device) during `operation`.
    #[error("GPU {operation} failed: {message}")]
    Submission {
        operation: &'static str,
        message: String,
    },
    /// The device ran out of memory during `operation`.
    #[error("GPU {operation} ran out of device memory: {message}")]
    OutOfMemory {
        operation: &'static str,
        message: String,
    },
    /// A buffer would exceed one of the device's limits (`limit` is the `wgpu::Limits` field).
    #[error("{what} needs a {bytes}-byte GPU buffer, over this device's {limit} ({max} bytes)")]
    BufferTooLarge {
        what: String,
        bytes: u64,
        limit: &'static str,
        max: u64,
    },
    /// A size computation overflowed: far beyond any device.
    #[error("{what} is too large for the GPU: its size overflows")]
    SizeOverflow { what: String },
    /// A dispatch would exceed the device's `max_compute_workgroups_per_dimension`.
    #[error(
        "{op} needs {groups} workgroups along {axis}, over this device's \
         max_compute_workgroups_per_dimension ({max})"
    )]
    TooManyWorkgroups {
        op: &'static str,
        axis: char,
        groups: usize,
        max: u32,
    },
    /// A value does not fit the 32-bit field of a shader's uniform block.
    #[error("{op}: {field} = {value} does not fit the shader's 32-bit field")]
    FieldOverflow {
        op: &'static str,
        field: &'static str,
        value: String,
    },
    /// A backend name that is neither `cpu` nor `gpu`.
    #[error("unknown backend `{0}` (expected `cpu` or `gpu`)")]
    UnknownBackend(String),
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// Errors reach `kiln_core` callers as they are: kernel errors unchanged, device errors as
/// `Error::Backend { backend: "gpu" }` with this crate's message.
impl From<BackendError> for kiln_core::Error {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Kernel(inner) => inner,
            other => kiln_core::Error::Backend {
                backend: "gpu",
                reason: other.to_string(),
            },
        }
    }
}

/// A tensor left on the device: `buffer` holds its elements row-major, one 4-byte word each
/// (`u32` for uint8 images, `f32`, or two `f32` per complex value).
#[derive(Debug, Clone)]
pub struct GpuTensor {
    pub buffer: wgpu::Buffer,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

/// A recorded result handed out as a resident tensor.
impl From<DeviceTensor> for GpuTensor {
    fn from(t: DeviceTensor) -> Self {
        GpuTensor {
            buffer: t.buffer,
            shape: t.shape,
            dtype: t.dtype,
        }
    }
}

impl GpuTensor {
    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// 4-byte words the shape needs, checked against the buffer: the fields are public, so a
    /// caller's tensor may not match its buffer.
    fn words(&self, operation: &str) -> Result<usize> {
        let per_element = if self.dtype == DType::C64 { 2 } else { 1 };
        let words = kernel::elements(operation, &self.shape)?
            .checked_mul(per_element)
            .ok_or_else(|| BackendError::SizeOverflow {
                what: operation.to_owned(),
            })?;
        let needed = (words as u64).saturating_mul(4);
        if needed > self.buffer.size() {
            return Err(BackendError::Execution(format!(
                "{operation}: a {:?} {} tensor needs {needed} bytes, its buffer holds {}",
                self.shape,
                self.dtype.name(),
                self.buffer.size()
            )));
        }
        Ok(words)
    }
}

/// Runs kiln plans on a `wgpu` device.
pub struct GpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    /// The device's limits, read once: every buffer and dispatch is checked against them.
    limits: wgpu::Limits,
    adapter_name: String,
    audio: AudioKernels,
    image: ImageKernels,
    resources: Resources,
    pool: BufferPool,
    counters: Counters,
}

/// What a [`GpuBackend`] has sent to its device since it was opened ([`GpuBackend::stats`]).
/// A batch of any size costs one input upload, one submission and, unless it stays on the
/// device, one readback.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GpuStats {
    /// Plans run, each over a batch of one or more inputs.
    pub batches: u64,
    /// Inputs those batches held.
    pub items: u64,
    /// Input tensors copied to the device (one per batch).
    pub uploads: u64,
    pub submissions: u64,
    pub readbacks: u64,
}

impl GpuStats {
    /// The work done between an earlier reading, `before`, and this one.
    pub fn since(self, before: GpuStats) -> GpuStats {
        GpuStats {
            batches: self.batches.saturating_sub(before.batches),
            items: self.items.saturating_sub(before.items),
            uploads: self.uploads.saturating_sub(before.uploads),
            submissions: self.submissions.saturating_sub(before.submissions),
            readbacks: self.readbacks.saturating_sub(before.readbacks),
        }
    }
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
        Self::from_device_async(device, queue, name).await
    }

    /// Uses a device the caller already has (tests, or an application sharing its GPU).
    ///
    /// Panics (through wgpu's default error handler) if the kernels do not compile on this
    /// device; [`GpuBackend::from_device_async`] returns that as an error instead.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, adapter_name: String) -> Self {
        let audio = AudioKernels::new(&device);
        let image = ImageKernels::new(&device);
        GpuBackend {
            limits: device.limits(),
            device,
            queue,
            adapter_name,
            audio,
            image,
            resources: Resources::default(),
            pool: BufferPool::default(),
            counters: Counters::default(),
        }
    }

    /// [`GpuBackend::from_device`] with the kernels built inside an error scope: a device that
    /// cannot compile them gives an error.
    pub async fn from_device_async(
        device: wgpu::Device,
        queue: wgpu::Queue,
        adapter_name: String,
    ) -> Result<Self> {
        let (audio, image) = captured(&device, "kernel build", || {
            Ok((AudioKernels::new(&device), ImageKernels::new(&device)))
        })
        .await?;
        Ok(GpuBackend {
            limits: device.limits(),
            device,
            queue,
            adapter_name,
            audio,
            image,
            resources: Resources::default(),
            pool: BufferPool::default(),
            counters: Counters::default(),
        })
    }

    pub fn adapter_name(&self) -> &str {
        &self.adapter_name
    }

    /// How many plan tables live on the device (shows plans being reused).
    pub fn cached_tables(&self) -> usize {
        self.resources.len()
    }

    /// The limits every buffer and dispatch is checked against.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    fn recorder(&self) -> Recorder<'_> {
        Recorder::new(
            &self.device,
            &self.queue,
            &self.limits,
            &self.pool,
            &self.counters,
        )
    }

    /// What this backend has sent to its device so far.
    pub fn stats(&self) -> GpuStats {
        let c = &self.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        GpuStats {
            batches: get(&c.batches),
            items: get(&c.items),
            uploads: get(&c.uploads),
            submissions: get(&c.submissions),
            readbacks: get(&c.readbacks),
        }
    }

    /// Runs `work` inside error scopes (see [`scope::captured`]). After a device error the
    /// cached tables and pooled buffers are dropped, since some of them may be invalid.
    async fn guarded<T>(&self, operation: &'static str, work: impl FnOnce() -> Result<T>) -> Result<T> {
        let result = captured(&self.device, operation, work).await;
        if let Err(BackendError::Submission { .. } | BackendError::OutOfMemory { .. }) = &result {
            self.resources.clear();
            self.pool.clear();
        }
        result
    }

    /// Queues the inputs' elements end to end into one pooled buffer (uint8 widened to one u32
    /// each): the batch's single upload. The inputs must share shape and dtype.
    fn upload(&self, rec: &mut Recorder, inputs: &[Tensor]) -> Result<DeviceTensor> {
        let first = inputs
            .first()
            .ok_or_else(|| BackendError::Execution("an empty batch".into()))?;
        if let Some(odd) = inputs
            .iter()
            .find(|t| t.shape != first.shape || t.dtype() != first.dtype())
        {
            return Err(BackendError::Execution(format!(
                "a batch holds one shape: got a {:?} {} tensor beside {:?} {}",
                odd.shape,
                odd.dtype().name(),
                first.shape,
                first.dtype().name()
            )));
        }
        let words_each = match &first.data {
            TensorData::C64(v) | TensorData::F32(v) => v.len(),
            TensorData::U8(v) => v.len(),
        };
        let total = kernel::elements("input batch", &[words_each, inputs.len()])?;
        let buffer = if let TensorData::U8(_) = &first.data {
            // Bytes travel packed four to a word (a quarter of the widened size over the bus)
            // and are widened on the device.
            let words = total.div_ceil(4);
            let packed = rec.storage("input tensor", words)?;
            let mut bytes: Vec<u8> = Vec::with_capacity(words * 4);
            for t in inputs {
                if let TensorData::U8(v) = &t.data {
                    bytes.extend_from_slice(v);
                }
            }
            bytes.resize(words * 4, 0);
            if !bytes.is_empty() {
                rec.queue.write_buffer(&packed, 0, &bytes);
            }
            self.image.unpack_bytes(rec, &packed, total)?
        } else {
            // Sized before the host copy is made, so an oversized batch fails first.
            let buffer = rec.storage("input tensor", total)?;
            if total > 0 {
                let mut words: Vec<u32> = Vec::with_capacity(total);
                for t in inputs {
                    if let TensorData::F32(v) | TensorData::C64(v) = &t.data {
                        words.extend_from_slice(bytemuck::cast_slice(v));
                    }
                }
                rec.queue.write_buffer(&buffer, 0, bytemuck::cast_slice(&words));
            }
            buffer
        };
        Ok(DeviceTensor {
            buffer,
            shape: std::iter::once(inputs.len())
                .chain(first.shape.iter().copied())
                .collect(),
            dtype: first.dtype(),
        })
    }

    /// Runs a plan and reads the result back; the browser awaits this, native code blocks on it
    /// through [`Backend::execute`]. Device errors (validation, out of memory) are captured and
    /// returned rather than sent to wgpu's default handler, which panics.
    pub async fn execute_async(&self, plan: &Plan, input: Tensor) -> Result<Tensor> {
        let mut out = self.execute_batch_async(plan, vec![input]).await?;
        Ok(out.pop().expect("one output per input"))
    }

    /// Runs one plan over a batch of same-shape inputs (one upload, one submission, one
    /// readback) and splits the result back into one tensor per input, in order.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn execute_batch(&self, plan: &Plan, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        pollster::block_on(self.execute_batch_async(plan, inputs))
    }

    /// [`GpuBackend::execute_batch`] for async callers (the browser). A batch too large for
    /// the device's buffer or dispatch limits runs as smaller batches (halved until they fit).
    pub async fn execute_batch_async(&self, plan: &Plan, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let mut outputs = Vec::with_capacity(inputs.len());
        let mut rest: &[Tensor] = &inputs;
        let mut chunk = inputs.len();
        while !rest.is_empty() || outputs.is_empty() {
            let take = chunk.min(rest.len());
            match self.execute_batch_once(plan, &rest[..take]).await {
                Ok(mut done) => {
                    outputs.append(&mut done);
                    rest = &rest[take..];
                }
                Err(e) if take > 1 && exceeds_limits(&e) => chunk = take / 2,
                Err(e) => return Err(e),
            }
        }
        Ok(outputs)
    }

    async fn execute_batch_once(&self, plan: &Plan, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let count = inputs.len();
        let (readback, shape, dtype) = self
            .guarded("execute", || {
                let (rec, t) = self.record(plan, inputs)?;
                let words = t.len() * if t.dtype == DType::C64 { 2 } else { 1 };
                Ok((rec.readback(&t.buffer, words)?, t.shape, t.dtype))
            })
            .await?;
        let words = readback.wait(&self.device).await?;
        let item_shape = shape[1..].to_vec();
        let each = words.len() / count.max(1);
        Ok(words
            .chunks(each.max(1))
            .take(count)
            .map(|part| tensor_from_words(item_shape.clone(), dtype, part.to_vec()))
            .collect())
    }

    /// Records the plan over a batch; the result's shape is `(batch, ...)`.
    fn record<'a>(&'a self, plan: &Plan, inputs: &[Tensor]) -> Result<(Recorder<'a>, DeviceTensor)> {
        let mut rec = self.recorder();
        // Every kernel indexes the batch: audio kernels treat it as a leading axis like
        // channels, image kernels as workgroup z.
        let mut t = self.upload(&mut rec, inputs)?;
        // Normalize steps folded into an earlier ToTensor lookup (see `float_image_table`).
        let mut folded = vec![false; plan.steps.len()];
        for (index, step) in plan.steps.iter().enumerate() {
            if folded[index] {
                continue;
            }
            t = match step {
                Step::Stft(p) => self.audio.stft(&mut rec, &self.resources, p, t)?,
                Step::Magnitude { power } => self.audio.magnitude(&mut rec, *power, t)?,
                Step::Mel(bank) => self.audio.mel(&mut rec, &self.resources, bank, t)?,
                Step::PowerToDb(db) => self.audio.power_to_db(&mut rec, db, t)?,
                Step::Mfcc { dct, n_mfcc, n_mels } => {
                    self.audio
                        .mfcc(&mut rec, &self.resources, dct, *n_mfcc, *n_mels, t)?
                }
                Step::Resize(p) => self.image.resize(&mut rec, &self.resources, p, t)?,
                Step::CenterCrop {
                    input,
                    top,
                    left,
                    output,
                } => self.image.center_crop(&mut rec, input, *top, *left, output, t)?,
                Step::ToFloat => {
                    let (dims, table, normalizes) = float_image_table(&plan.steps[index + 1..]);
                    normalizes.iter().for_each(|&n| folded[index + 1 + n] = true);
                    self.image.lookup_float(&mut rec, dims.as_ref(), &table, t)?
                }
                Step::Normalize { dims, mean, std } => self.image.normalize(&mut rec, dims, mean, std, t)?,
                Step::Layout { input, output } => self.image.layout(&mut rec, input, output, t)?,
            };
        }
        // Counted once the whole batch is recorded: a batch refused for the device's limits
        // (and split by the caller) submits nothing.
        Counters::add(&self.counters.uploads, 1);
        Counters::add(&self.counters.batches, 1);
        Counters::add(&self.counters.items, inputs.len() as u64);
        Ok((rec, t))
    }

    /// Runs a plan and leaves the result on the device (no readback): the GPU-resident form a
    /// training loop consumes.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn execute_resident(&self, plan: &Plan, input: Tensor) -> Result<GpuTensor> {
        pollster::block_on(self.execute_resident_async(plan, input))
    }

    /// [`GpuBackend::execute_resident`] for async callers (the browser).
    pub async fn execute_resident_async(&self, plan: &Plan, input: Tensor) -> Result<GpuTensor> {
        let mut batch = self.execute_batch_resident_async(plan, vec![input]).await?;
        batch.shape.remove(0);
        Ok(batch)
    }

    /// Runs one plan over a batch of same-shape inputs and leaves the `(batch, ...)` result on
    /// the device: one upload, one submission, no readback.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn execute_batch_resident(&self, plan: &Plan, inputs: Vec<Tensor>) -> Result<GpuTensor> {
        pollster::block_on(self.execute_batch_resident_async(plan, inputs))
    }

    /// [`GpuBackend::execute_batch_resident`] for async callers (the browser). A batch too
    /// large for the device's limits runs in parts (halved until they fit), gathered into one
    /// tensor on the device.
    pub async fn execute_batch_resident_async(&self, plan: &Plan, inputs: Vec<Tensor>) -> Result<GpuTensor> {
        let mut parts: Vec<GpuTensor> = Vec::new();
        let mut rest: &[Tensor] = &inputs;
        let mut chunk = inputs.len();
        while !rest.is_empty() || parts.is_empty() {
            let take = chunk.min(rest.len());
            let attempt = self
                .guarded("execute_resident", || {
                    let (rec, t) = self.record(plan, &rest[..take])?;
                    rec.finish_resident(&t.buffer);
                    Ok(GpuTensor::from(t))
                })
                .await;
            match attempt {
                Ok(part) => {
                    parts.push(part);
                    rest = &rest[take..];
                }
                Err(e) if take > 1 && exceeds_limits(&e) => chunk = take / 2,
                Err(e) => return Err(e),
            }
        }
        if parts.len() == 1 {
            return Ok(parts.pop().expect("one part"));
        }
        let rows: Vec<(usize, usize)> = parts
            .iter()
            .enumerate()
            .flat_map(|(p, part)| (0..part.shape[0]).map(move |r| (p, r)))
            .collect();
        self.gather_rows_async(&parts, &rows).await
    }

    /// Uploads a host tensor (uint8 widened to one u32 per element). A tensor beyond the
    /// device's buffer limits is an error naming the limit.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn upload_tensor(&self, tensor: &Tensor) -> Result<GpuTensor> {
        pollster::block_on(self.upload_tensor_async(tensor))
    }

    /// [`GpuBackend::upload_tensor`] for async callers (the browser).
    pub async fn upload_tensor_async(&self, tensor: &Tensor) -> Result<GpuTensor> {
        self.guarded("upload_tensor", || {
            let mut rec = self.recorder();
            let mut t = self.upload(&mut rec, std::slice::from_ref(tensor))?;
            rec.finish_resident(&t.buffer);
            t.shape.remove(0);
            Ok(t.into())
        })
        .await
    }

    /// Stacks equally shaped tensors into one `(n, ...shape)` batch buffer.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn stack(&self, parts: &[GpuTensor]) -> Result<GpuTensor> {
        pollster::block_on(self.stack_async(parts))
    }

    /// [`GpuBackend::stack`] for async callers (the browser).
    pub async fn stack_async(&self, parts: &[GpuTensor]) -> Result<GpuTensor> {
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
        // Every part's buffer must hold what its (common) shape says.
        let words = first.words("stack")?;
        for part in &parts[1..] {
            part.words("stack")?;
        }
        self.guarded("stack", || {
            let buffers: Vec<&wgpu::Buffer> = parts.iter().map(|p| &p.buffer).collect();
            let buffer = self.recorder().concat(&buffers, words as u64 * 4)?;
            let shape = std::iter::once(parts.len())
                .chain(first.shape.iter().copied())
                .collect();
            Ok(GpuTensor {
                buffer,
                shape,
                dtype: first.dtype,
            })
        })
        .await
    }

    /// Rows of batched device tensors, picked in the order `rows` gives (`(part, row)`), as one
    /// `(rows.len(), ...row shape)` tensor: how a batch that ran as several same-shape groups
    /// is put back in order. Every part must have the same row shape and dtype.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn gather_rows(&self, parts: &[GpuTensor], rows: &[(usize, usize)]) -> Result<GpuTensor> {
        pollster::block_on(self.gather_rows_async(parts, rows))
    }

    /// [`GpuBackend::gather_rows`] for async callers (the browser).
    pub async fn gather_rows_async(&self, parts: &[GpuTensor], rows: &[(usize, usize)]) -> Result<GpuTensor> {
        let first = parts
            .first()
            .ok_or_else(|| BackendError::Execution("nothing to gather".into()))?;
        let row_shape = first.shape.get(1..).unwrap_or_default().to_vec();
        for part in parts {
            if part.shape.get(1..) != Some(&row_shape[..]) || part.dtype != first.dtype {
                return Err(BackendError::Execution(format!(
                    "cannot gather rows of a {:?} {} tensor with rows of {:?} {}",
                    part.shape,
                    part.dtype.name(),
                    first.shape,
                    first.dtype.name()
                )));
            }
            part.words("gather")?;
        }
        if let Some(&(part, row)) = rows
            .iter()
            .find(|&&(part, row)| parts.get(part).is_none_or(|p| row >= p.shape[0]))
        {
            return Err(BackendError::Execution(format!(
                "gather: no row {row} in part {part} of {}",
                parts.len()
            )));
        }
        let per_element = if first.dtype == DType::C64 { 2 } else { 1 };
        let row_words = kernel::elements("gather", &row_shape)? * per_element;
        self.guarded("gather", || {
            let buffers: Vec<&wgpu::Buffer> = parts.iter().map(|p| &p.buffer).collect();
            let buffer = self.recorder().gather(&buffers, rows, row_words as u64 * 4)?;
            Ok(GpuTensor {
                buffer,
                shape: std::iter::once(rows.len()).chain(row_shape).collect(),
                dtype: first.dtype,
            })
        })
        .await
    }

    /// Reads a device tensor back to the host.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(&self, tensor: &GpuTensor) -> Result<Tensor> {
        pollster::block_on(self.read_async(tensor))
    }

    pub async fn read_async(&self, tensor: &GpuTensor) -> Result<Tensor> {
        let words = tensor.words("read")?;
        let readback = self
            .guarded("read", || self.recorder().readback(&tensor.buffer, words))
            .await?;
        let words = readback.wait(&self.device).await?;
        Ok(tensor_from_words(tensor.shape.clone(), tensor.dtype, words))
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }
}

/// The table that turns uint8 values into what ToTensor and the Normalize steps after it give,
/// computed with the CPU reference's own functions, so the device's result is exact whatever
/// its float arithmetic. Normalize steps fold in when only layout changes and crops that need
/// no padding lie between (they move values without changing them; a padded crop inserts
/// zeros that a later Normalize must see; that one runs on the device, its division corrected
/// to the CPU's rounding in the shader). Returns the dims the channels are read in at the
/// ToTensor step (`None`: one channel), 256 values per channel, and the folded steps'
/// positions in `after`.
fn float_image_table(after: &[Step]) -> (Option<kiln_core::image::ImageDims>, Vec<f32>, Vec<usize>) {
    use kiln_core::image::ops;
    let all: Vec<u8> = (0..=255).collect();
    let base = ops::to_float(&all);
    let mut normalizes = Vec::new();
    // The layout at the ToTensor step, learnt from the first step that names one.
    let mut dims_at_start: Option<kiln_core::image::ImageDims> = None;
    for (i, step) in after.iter().enumerate() {
        match step {
            Step::Normalize { dims, .. } => {
                dims_at_start.get_or_insert(*dims);
                normalizes.push(i);
            }
            Step::Layout { input, .. } => {
                dims_at_start.get_or_insert(*input);
            }
            Step::CenterCrop {
                input,
                top,
                left,
                output,
            } if *top >= 0
                && *left >= 0
                && *top as usize + output.height <= input.height
                && *left as usize + output.width <= input.width =>
            {
                dims_at_start.get_or_insert(*input);
            }
            _ => break,
        }
    }
    let Some(start) = dims_at_start.filter(|_| !normalizes.is_empty()) else {
        return (None, base, Vec::new());
    };
    let mut table = Vec::with_capacity(256 * start.channels);
    for ch in 0..start.channels {
        let mut values = base.clone();
        for &n in &normalizes {
            if let Step::Normalize { mean, std, .. } = &after[n] {
                // One channel's worth, through the CPU's own normalize.
                let one = kiln_core::image::ImageDims {
                    height: 1,
                    width: values.len(),
                    channels: 1,
                    chw: false,
                    channel_axis: true,
                };
                ops::normalize(&mut values, &one, &mean[ch..=ch], &std[ch..=ch]);
            }
        }
        table.extend(values);
    }
    (Some(start), table, normalizes)
}

/// Errors that a smaller batch avoids: a buffer or dispatch beyond the device's limits.
fn exceeds_limits(e: &BackendError) -> bool {
    matches!(
        e,
        BackendError::BufferTooLarge { .. }
            | BackendError::TooManyWorkgroups { .. }
            | BackendError::SizeOverflow { .. }
    )
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
        Ok(pollster::block_on(self.execute_async(plan, input))?)
    }
}

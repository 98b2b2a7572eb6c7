//! Compute plumbing shared by every kernel: pipelines with explicit bind group layouts, device
//! tensors, and a recorder that queues dispatches into one command encoder.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use kiln_core::DType;
use wgpu::util::DeviceExt;

use crate::scope::captured;
use crate::uniform::Uniform;
use crate::{BackendError, Result};

/// How a kernel uses each binding, in binding order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot {
    Uniform,
    Read,
    ReadWrite,
}

/// One compute entry point and its bind group layout, created once per device.
#[derive(Debug)]
pub(crate) struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

impl Kernel {
    pub(crate) fn new(
        device: &wgpu::Device,
        module: &wgpu::ShaderModule,
        entry: &str,
        slots: &[Slot],
    ) -> Self {
        let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match slot {
                        Slot::Uniform => wgpu::BufferBindingType::Uniform,
                        Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Slot::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(entry),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&pipeline_layout),
            module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        Kernel { pipeline, layout }
    }
}

pub(crate) fn shader(device: &wgpu::Device, label: &str, source: &str) -> wgpu::ShaderModule {
    device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    })
}

/// A tensor resident on the device. `U8` images hold one u32 per element.
#[derive(Debug)]
pub(crate) struct DeviceTensor {
    pub buffer: wgpu::Buffer,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl DeviceTensor {
    /// Element count; shapes on the device were checked when their buffers were made.
    pub(crate) fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The product of `dims`, or an error naming `what` when it overflows.
pub(crate) fn elements(what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| BackendError::SizeOverflow {
            what: what.to_owned(),
        })
}

/// Workgroups of `size` invocations covering `count` (at least one, so a dispatch is never empty).
pub(crate) fn groups(count: usize, size: usize) -> usize {
    count.div_ceil(size).max(1)
}

/// Storage buffers kept between calls, by size, so repeated calls of a plan (a loader's steady
/// state) allocate nothing on the device.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    free: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
}

/// Device memory the pool may hold while idle; beyond it, returned buffers are dropped.
const POOL_BYTES: u64 = 256 << 20;

impl BufferPool {
    fn take(&self, device: &wgpu::Device, size: u64) -> wgpu::Buffer {
        let pooled = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&size)
            .and_then(Vec::pop);
        pooled.unwrap_or_else(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln storage"),
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
    }

    /// Drops every idle buffer: after a device error, some of them may be invalid.
    pub(crate) fn clear(&self) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn give_back(&self, buffers: Vec<wgpu::Buffer>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let mut held: u64 = free.iter().map(|(size, list)| size * list.len() as u64).sum();
        for buffer in buffers {
            if held + buffer.size() <= POOL_BYTES {
                held += buffer.size();
                free.entry(buffer.size()).or_default().push(buffer);
            }
        }
    }
}

/// What a backend has sent to its device, counted for benchmarks and for tests that check a
/// batch costs one upload, one submission and one readback.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub batches: AtomicU64,
    pub items: AtomicU64,
    pub uploads: AtomicU64,
    pub submissions: AtomicU64,
    pub readbacks: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Queues uploads and dispatches into one encoder; nothing runs until it is submitted. Every
/// buffer and dispatch is checked against the device's limits before it is created, so input
/// too large for the device is an error naming the limit (wgpu would report it as a validation
/// error at best, and a buffer the host cannot back aborts the process at worst).
pub(crate) struct Recorder<'a> {
    pub device: &'a wgpu::Device,
    pub queue: &'a wgpu::Queue,
    limits: &'a wgpu::Limits,
    encoder: wgpu::CommandEncoder,
    pool: &'a BufferPool,
    pub counters: &'a Counters,
    /// Pool buffers this call uses, returned when it is submitted.
    borrowed: Vec<wgpu::Buffer>,
}

/// Which buffer limit a buffer must respect: storage buffers are bound whole, so they must fit
/// a binding; batches and readback copies only have to exist.
#[derive(Debug, Clone, Copy)]
enum Bound {
    Binding,
    Buffer,
}

impl<'a> Recorder<'a> {
    pub(crate) fn new(
        device: &'a wgpu::Device,
        queue: &'a wgpu::Queue,
        limits: &'a wgpu::Limits,
        pool: &'a BufferPool,
        counters: &'a Counters,
    ) -> Self {
        let encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("kiln") });
        Recorder {
            device,
            queue,
            limits,
            encoder,
            pool,
            counters,
            borrowed: Vec::new(),
        }
    }

    /// `bytes` as a buffer size this device accepts, or an error naming `what` and the limit.
    fn check_size(&self, what: &str, bytes: u64, bound: Bound) -> Result<u64> {
        let mut checks = vec![("max_buffer_size", self.limits.max_buffer_size)];
        if matches!(bound, Bound::Binding) {
            checks.insert(
                0,
                (
                    "max_storage_buffer_binding_size",
                    self.limits.max_storage_buffer_binding_size,
                ),
            );
        }
        for (limit, max) in checks {
            if bytes > max {
                return Err(BackendError::BufferTooLarge {
                    what: what.to_owned(),
                    bytes,
                    limit,
                    max,
                });
            }
        }
        Ok(bytes)
    }

    /// Bytes for `words` 4-byte values (at least one, as bindings must not be empty).
    fn word_bytes(what: &str, words: usize) -> Result<u64> {
        u64::try_from(words.max(1))
            .ok()
            .and_then(|w| w.checked_mul(4))
            .ok_or_else(|| BackendError::SizeOverflow {
                what: what.to_owned(),
            })
    }

    /// The most workgroups one dispatch may have along an axis.
    pub(crate) fn max_groups(&self) -> usize {
        self.limits.max_compute_workgroups_per_dimension as usize
    }

    /// Workgroup counts for a flat kernel of `count` invocations with 256 per workgroup,
    /// folded into two dimensions to stay under the per-dimension limit.
    pub(crate) fn flat_groups(&self, count: usize) -> (usize, usize, usize) {
        let groups = groups(count, 256);
        let x = groups.min(self.max_groups());
        (x, groups.div_ceil(x), 1)
    }

    /// A storage buffer holding `data` (at least 4 bytes, as bindings must not be empty).
    pub(crate) fn upload(&self, label: &str, data: &[u8]) -> Result<wgpu::Buffer> {
        self.check_size(label, data.len().max(4) as u64, Bound::Binding)?;
        let padded;
        let contents = if data.len() < 4 {
            padded = [data, &[0u8; 4][data.len()..]].concat();
            &padded[..]
        } else {
            data
        };
        Ok(self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        }))
    }

    /// A uniform buffer holding one kernel's parameters.
    pub(crate) fn uniform<T: Uniform>(&self, params: &T) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// A storage buffer for `elements` 4-byte values, from the pool; its contents are whatever
    /// the last user left, so every kernel writes all of its output.
    pub(crate) fn storage(&mut self, what: &str, elements: usize) -> Result<wgpu::Buffer> {
        let bytes = self.check_size(what, Self::word_bytes(what, elements)?, Bound::Binding)?;
        let buffer = self.pool.take(self.device, bytes);
        self.borrowed.push(buffer.clone());
        Ok(buffer)
    }

    /// Records one dispatch of `kernel` over `groups` workgroups, binding `buffers` in order;
    /// `what` names the step in the error when the grid exceeds the device's limit.
    pub(crate) fn dispatch(
        &mut self,
        what: &'static str,
        kernel: &Kernel,
        buffers: &[&wgpu::Buffer],
        groups: (usize, usize, usize),
    ) -> Result<()> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        let mut counts = [0u32; 3];
        for (count, (axis, n)) in counts
            .iter_mut()
            .zip([('x', groups.0), ('y', groups.1), ('z', groups.2)])
        {
            *count = u32::try_from(n)
                .ok()
                .filter(|&n| n <= max)
                .ok_or(BackendError::TooManyWorkgroups {
                    op: what,
                    axis,
                    groups: n,
                    max,
                })?;
        }
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &kernel.layout,
            entries: &entries,
        });
        let mut pass = self.encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: None,
        });
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(counts[0], counts[1], counts[2]);
        Ok(())
    }

    /// Submits everything recorded; the buffers this call borrowed go back to the pool except
    /// `keep`, which leaves it. Later users of a returned buffer are queued after this work.
    fn submit(self, keep: Option<&wgpu::Buffer>) {
        self.queue.submit([self.encoder.finish()]);
        Counters::add(&self.counters.submissions, 1);
        self.pool
            .give_back(self.borrowed.into_iter().filter(|b| Some(b) != keep).collect());
    }

    /// Submits everything recorded and hands `keep` over to the caller: it leaves the pool and
    /// stays on the device; everything else this call borrowed goes back.
    pub(crate) fn finish_resident(self, keep: &wgpu::Buffer) {
        self.submit(Some(keep));
    }

    /// Copies `parts` end to end into one new buffer (not pooled) and submits.
    pub(crate) fn concat(mut self, parts: &[&wgpu::Buffer], bytes_each: u64) -> Result<wgpu::Buffer> {
        let total = u64::try_from(parts.len())
            .ok()
            .and_then(|n| bytes_each.checked_mul(n))
            .ok_or_else(|| BackendError::SizeOverflow {
                what: "stacked batch".into(),
            })?;
        let size = self.check_size("stacked batch", total.max(4), Bound::Buffer)?;
        let out = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln batch"),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        for (i, part) in parts.iter().enumerate() {
            self.encoder
                .copy_buffer_to_buffer(part, 0, &out, i as u64 * bytes_each, bytes_each);
        }
        self.submit(None);
        Ok(out)
    }

    /// Copies rows (`(part, row)`, each `bytes_each` long) from `parts` end to end into one new
    /// buffer (not pooled) and submits.
    pub(crate) fn gather(
        mut self,
        parts: &[&wgpu::Buffer],
        rows: &[(usize, usize)],
        bytes_each: u64,
    ) -> Result<wgpu::Buffer> {
        let total = u64::try_from(rows.len())
            .ok()
            .and_then(|n| bytes_each.checked_mul(n))
            .ok_or_else(|| BackendError::SizeOverflow {
                what: "gathered batch".into(),
            })?;
        let size = self.check_size("gathered batch", total.max(4), Bound::Buffer)?;
        let out = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln batch"),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        for (i, &(part, row)) in rows.iter().enumerate() {
            self.encoder.copy_buffer_to_buffer(
                parts[part],
                row as u64 * bytes_each,
                &out,
                i as u64 * bytes_each,
                bytes_each,
            );
        }
        self.submit(None);
        Ok(out)
    }

    /// Submits everything recorded plus a copy of `words` 4-byte values of `buffer` into a
    /// staging buffer, and asks for that buffer to be mapped; [`Readback::wait`] collects it.
    /// Synchronous so the caller's error scope can close before anything is awaited.
    pub(crate) fn readback(mut self, buffer: &wgpu::Buffer, words: usize) -> Result<Readback> {
        let size = self.check_size("readback", Self::word_bytes("readback", words)?, Bound::Buffer)?;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        Counters::add(&self.counters.readbacks, 1);
        self.submit(None);
        let (sender, receiver) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = sender.send(r);
        });
        Ok(Readback {
            staging,
            words,
            receiver,
        })
    }
}

/// A submitted copy of a result into host-visible memory, waiting to be mapped.
#[derive(Debug)]
pub(crate) struct Readback {
    staging: wgpu::Buffer,
    words: usize,
    receiver: futures_channel::oneshot::Receiver<Result<(), wgpu::BufferAsyncError>>,
}

impl Readback {
    /// Waits for the mapping (natively by polling the device to completion; the browser
    /// resolves it by itself) and copies the words out.
    pub(crate) async fn wait(self, device: &wgpu::Device) -> Result<Vec<u32>> {
        let failed = |what: &str, e: &dyn std::fmt::Display| BackendError::Execution(format!("{what}: {e}"));
        #[cfg(not(target_arch = "wasm32"))]
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| failed("waiting for the device", &e))?;
        self.receiver
            .await
            .map_err(|_| BackendError::Execution("the device dropped the readback".into()))?
            .map_err(|e| failed("mapping the result", &e))?;
        captured(device, "read", || {
            let view = self
                .staging
                .get_mapped_range(..)
                .map_err(|e| failed("reading the result", &e))?;
            let words: Vec<u32> = bytemuck::cast_slice(&view[..self.words * 4]).to_vec();
            drop(view);
            self.staging.unmap();
            Ok(words)
        })
        .await
    }
}

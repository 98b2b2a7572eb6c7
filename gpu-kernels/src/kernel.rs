//! Compute plumbing shared by every kernel: pipelines with explicit bind group layouts, device
//! tensors, and a recorder that queues dispatches into one command encoder.

use std::collections::HashMap;
use std::sync::Mutex;

use kiln_core::DType;
use wgpu::util::DeviceExt;

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
    pub(crate) fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Workgroup counts for a flat kernel of `count` invocations with 256 per workgroup, folded into
/// two dimensions to stay under the per-dimension limit.
pub(crate) fn flat_groups(count: usize) -> (u32, u32, u32) {
    let groups = count.div_ceil(256).max(1);
    let x = groups.min(65_535);
    (x as u32, groups.div_ceil(x) as u32, 1)
}

pub(crate) fn groups(count: usize, size: usize) -> u32 {
    count.div_ceil(size).max(1) as u32
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

/// Queues uploads and dispatches into one encoder; nothing runs until [`Recorder::finish`].
pub(crate) struct Recorder<'a> {
    pub device: &'a wgpu::Device,
    pub queue: &'a wgpu::Queue,
    encoder: wgpu::CommandEncoder,
    pool: &'a BufferPool,
    /// Pool buffers this call uses, returned when it finishes.
    borrowed: Vec<wgpu::Buffer>,
}

impl<'a> Recorder<'a> {
    pub(crate) fn new(device: &'a wgpu::Device, queue: &'a wgpu::Queue, pool: &'a BufferPool) -> Self {
        let encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("kiln") });
        Recorder {
            device,
            queue,
            encoder,
            pool,
            borrowed: Vec::new(),
        }
    }

    /// A pooled storage buffer holding `words`, written through the queue.
    pub(crate) fn upload_input(&mut self, words: &[u32]) -> wgpu::Buffer {
        let buffer = self.storage("input", words.len());
        if !words.is_empty() {
            self.queue.write_buffer(&buffer, 0, bytemuck::cast_slice(words));
        }
        buffer
    }

    /// A storage buffer holding `data` (at least 4 bytes, as bindings must not be empty).
    pub(crate) fn upload(&self, label: &str, data: &[u8]) -> wgpu::Buffer {
        let padded;
        let contents = if data.len() < 4 {
            padded = [data, &[0u8; 4][data.len()..]].concat();
            &padded[..]
        } else {
            data
        };
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        })
    }

    pub(crate) fn uniform(&self, words: &[u32]) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(words),
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// A storage buffer for `elements` 4-byte values, from the pool; its contents are whatever
    /// the last user left, so every kernel writes all of its output.
    pub(crate) fn storage(&mut self, _label: &str, elements: usize) -> wgpu::Buffer {
        let buffer = self.pool.take(self.device, (elements.max(1) * 4) as u64);
        self.borrowed.push(buffer.clone());
        buffer
    }

    pub(crate) fn dispatch(&mut self, kernel: &Kernel, buffers: &[&wgpu::Buffer], groups: (u32, u32, u32)) {
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
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
    }

    /// Submits everything recorded and hands `keep` over to the caller: it leaves the pool and
    /// stays on the device; everything else this call borrowed goes back.
    pub(crate) fn finish_resident(mut self, keep: &wgpu::Buffer) {
        self.queue.submit([self.encoder.finish()]);
        let borrowed = std::mem::take(&mut self.borrowed);
        self.pool
            .give_back(borrowed.into_iter().filter(|b| b != keep).collect());
    }

    /// Copies `parts` end to end into one new buffer (not pooled) and submits.
    pub(crate) fn concat(mut self, parts: &[&wgpu::Buffer], bytes_each: u64) -> wgpu::Buffer {
        let out = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln batch"),
            size: (bytes_each * parts.len() as u64).max(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        for (i, part) in parts.iter().enumerate() {
            self.encoder
                .copy_buffer_to_buffer(part, 0, &out, i as u64 * bytes_each, bytes_each);
        }
        self.queue.submit([self.encoder.finish()]);
        out
    }

    /// Submits everything recorded and reads `elements` 4-byte values of `buffer` back.
    /// Submits everything recorded and reads `elements` 4-byte values of `buffer` back. Async
    /// so the browser can wait for the mapping; natively the device is polled to completion.
    pub(crate) async fn finish(mut self, buffer: &wgpu::Buffer, elements: usize) -> Result<Vec<u32>, String> {
        let size = (elements.max(1) * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        self.queue.submit([self.encoder.finish()]);
        let (sender, receiver) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = sender.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| format!("waiting for the device: {e}"))?;
        receiver
            .await
            .map_err(|_| "the device dropped the readback".to_string())?
            .map_err(|e| format!("mapping the result: {e}"))?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| format!("reading the result: {e}"))?;
        let words: Vec<u32> = bytemuck::cast_slice(&view[..elements * 4]).to_vec();
        drop(view);
        staging.unmap();
        self.pool.give_back(std::mem::take(&mut self.borrowed));
        Ok(words)
    }
}

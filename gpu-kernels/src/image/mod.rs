//! Image kernels on the device: Pillow's resampling passes with premultiplied alpha, NEAREST,
//! centre crop, ToTensor scaling, Normalize and layout changes.

use std::sync::Arc;

use kiln_core::image::resize::{AxisCoefficients, ResizeKind, ResizePass, ResizePlan};
use kiln_core::image::ImageDims;
use kiln_core::DType;

use crate::kernel::{elements, groups, shader, DeviceTensor, Kernel, Recorder, Slot};
use crate::uniform::field;
use crate::{BackendError, Resources, Result};

pub(crate) mod params;

pub(crate) const RESIZE_WGSL: &str = include_str!("resize.wgsl");
pub(crate) const PIXELS_WGSL: &str = include_str!("pixels.wgsl");

pub(crate) struct ImageKernels {
    horizontal: Kernel,
    vertical: Kernel,
    premultiply: Kernel,
    unpremultiply: Kernel,
    nearest: Kernel,
    center_crop: Kernel,
    unpack_bytes: Kernel,
    lookup_float: Kernel,
    normalize: Kernel,
    relayout: Kernel,
}

struct AxisTables {
    bounds: wgpu::Buffer,
    weights: wgpu::Buffer,
    taps: u32,
}

pub(crate) struct ResizeTables {
    horizontal: Option<AxisTables>,
    vertical: Option<AxisTables>,
    nearest: Option<wgpu::Buffer>,
}

fn axis_tables(rec: &Recorder, c: &AxisCoefficients) -> Result<AxisTables> {
    let bounds: Vec<u32> = c.start.iter().zip(&c.len).flat_map(|(&s, &l)| [s, l]).collect();
    Ok(AxisTables {
        bounds: rec.upload("resize bounds", bytemuck::cast_slice(&bounds))?,
        weights: rec.upload("resize weights", bytemuck::cast_slice(&c.weights))?,
        taps: field("resize", "taps", c.taps)?,
    })
}

/// The uniform block of the per-pixel kernels (see `pixels.wgsl`) for `op`.
fn pixel_params(
    op: &'static str,
    input: &ImageDims,
    out_h: usize,
    out_w: usize,
    top: isize,
    left: isize,
    chw: bool,
) -> Result<params::Pixels> {
    Ok(params::Pixels {
        height: field(op, "height", input.height)?,
        width: field(op, "width", input.width)?,
        channels: field(op, "channels", input.channels)?,
        out_height: field(op, "out_height", out_h)?,
        out_width: field(op, "out_width", out_w)?,
        top: field(op, "top", top)?,
        left: field(op, "left", left)?,
        chw: u32::from(chw),
        ..Default::default()
    })
}

/// A device tensor's images: `(batch, per-image shape)`. Image tensors on the device always
/// carry the batch axis first (1 for a single image).
fn batched(op: &'static str, t: &DeviceTensor) -> Result<(usize, Vec<usize>)> {
    match t.shape.split_first() {
        Some((&batch, image)) if batch > 0 => Ok((batch, image.to_vec())),
        _ => Err(BackendError::Kernel(kiln_core::Error::Input {
            op,
            reason: format!("expects a batch of images, got shape {:?}", t.shape),
        })),
    }
}

fn with_batch(batch: usize, image: Vec<usize>) -> Vec<usize> {
    std::iter::once(batch).chain(image).collect()
}

/// `count` values as a one-channel, one-row image: how the per-value kernels see a tensor.
fn flat(count: usize) -> ImageDims {
    ImageDims {
        height: 1,
        width: count,
        channels: 1,
        chw: false,
        channel_axis: true,
    }
}

/// Values in an image of `dims` (checked: crop and layout dims come from the spec).
fn pixels(op: &'static str, dims: &ImageDims) -> Result<usize> {
    elements(op, &[dims.height, dims.width, dims.channels])
}

/// A plan invariant that failed: an error rather than a panic, naming the op.
fn missing(op: &'static str, what: &str) -> BackendError {
    BackendError::Kernel(kiln_core::Error::Input {
        op,
        reason: format!("the plan has no {what}"),
    })
}

impl ImageKernels {
    pub(crate) fn new(device: &wgpu::Device) -> Self {
        use Slot::{Read, ReadWrite, Uniform};
        let resize = shader(device, "resize.wgsl", RESIZE_WGSL);
        let pixels = shader(device, "pixels.wgsl", PIXELS_WGSL);
        let conv = [Uniform, Read, Read, Read, ReadWrite];
        let pix = [Uniform, Read, ReadWrite, Read];
        ImageKernels {
            horizontal: Kernel::new(device, &resize, "resample_horizontal", &conv),
            vertical: Kernel::new(device, &resize, "resample_vertical", &conv),
            premultiply: Kernel::new(device, &pixels, "premultiply", &pix),
            unpremultiply: Kernel::new(device, &pixels, "unpremultiply", &pix),
            nearest: Kernel::new(device, &pixels, "nearest", &pix),
            center_crop: Kernel::new(device, &pixels, "center_crop", &pix),
            unpack_bytes: Kernel::new(device, &pixels, "unpack_bytes", &pix),
            lookup_float: Kernel::new(device, &pixels, "lookup_float", &pix),
            normalize: Kernel::new(device, &pixels, "normalize", &pix),
            relayout: Kernel::new(device, &pixels, "relayout", &pix),
        }
    }

    /// Runs one per-pixel kernel over `count` outputs per image, for `batch` images whose
    /// inputs are `src_stride` values apart, into a new buffer.
    #[allow(clippy::too_many_arguments)]
    fn per_pixel(
        &self,
        rec: &mut Recorder,
        op: &'static str,
        kernel: &Kernel,
        params: &params::Pixels,
        src: &wgpu::Buffer,
        table: Option<&wgpu::Buffer>,
        count: usize,
        src_stride: usize,
        batch: usize,
    ) -> Result<wgpu::Buffer> {
        let out = rec.storage(op, elements(op, &[count, batch])?)?;
        let params = rec.uniform(&params::Pixels {
            src_stride: field(op, "src_stride", src_stride)?,
            dst_stride: field(op, "dst_stride", count)?,
            ..*params
        });
        let dummy;
        let table = match table {
            Some(t) => t,
            None => {
                dummy = rec.upload("unused", &[0u8; 4])?;
                &dummy
            }
        };
        let (x, y, _) = rec.flat_groups(count);
        rec.dispatch(op, kernel, &[&params, src, &out, table], (x, y, batch))?;
        Ok(out)
    }

    pub(crate) fn resize(
        &self,
        rec: &mut Recorder,
        resources: &Resources,
        plan: &Arc<ResizePlan>,
        input: DeviceTensor,
    ) -> Result<DeviceTensor> {
        const OP: &str = "resize";
        let c = plan.channels;
        let (batch, image) = batched(OP, &input)?;
        let mut shape = vec![plan.out_height, plan.out_width];
        if image.len() == 3 {
            shape.push(c);
        }
        let shape = with_batch(batch, shape);
        let in_stride = elements(OP, &[plan.in_height, plan.in_width, c])?;
        let tables = resources.get(plan, || match &plan.kind {
            ResizeKind::Copy => Ok(ResizeTables {
                horizontal: None,
                vertical: None,
                nearest: None,
            }),
            ResizeKind::Nearest { rows, cols } => {
                let table: Vec<u32> = rows.iter().chain(cols).copied().collect();
                Ok(ResizeTables {
                    horizontal: None,
                    vertical: None,
                    nearest: Some(rec.upload("nearest", bytemuck::cast_slice(&table))?),
                })
            }
            ResizeKind::Convolution {
                horizontal, vertical, ..
            } => Ok(ResizeTables {
                horizontal: horizontal.as_ref().map(|h| axis_tables(rec, h)).transpose()?,
                vertical: vertical.as_ref().map(|v| axis_tables(rec, v)).transpose()?,
                nearest: None,
            }),
        })?;
        let in_dims = ImageDims {
            height: plan.in_height,
            width: plan.in_width,
            channels: c,
            chw: false,
            channel_axis: true,
        };
        let buffer = match &plan.kind {
            ResizeKind::Copy => input.buffer,
            ResizeKind::Nearest { .. } => {
                let params = pixel_params(OP, &in_dims, plan.out_height, plan.out_width, 0, 0, false)?;
                let count = elements(OP, &[plan.out_height, plan.out_width, c])?;
                self.per_pixel(
                    rec,
                    OP,
                    &self.nearest,
                    &params,
                    &input.buffer,
                    tables.nearest.as_ref(),
                    count,
                    in_stride,
                    batch,
                )?
            }
            ResizeKind::Convolution { .. } => {
                let mut img = input.buffer;
                // Values per image of what `img` holds now.
                let mut stride = in_stride;
                for pass in plan.passes() {
                    img = match pass {
                        ResizePass::Premultiply | ResizePass::Unpremultiply => {
                            let (kernel, dims) = if matches!(pass, ResizePass::Premultiply) {
                                (&self.premultiply, in_dims)
                            } else {
                                let out = ImageDims {
                                    height: plan.out_height,
                                    width: plan.out_width,
                                    ..in_dims
                                };
                                (&self.unpremultiply, out)
                            };
                            let params = pixel_params(OP, &dims, 0, 0, 0, 0, false)?;
                            let count = pixels(OP, &dims)?;
                            let out =
                                self.per_pixel(rec, OP, kernel, &params, &img, None, count, stride, batch)?;
                            stride = count;
                            out
                        }
                        ResizePass::Horizontal {
                            coeffs,
                            row_offset,
                            rows,
                        } => {
                            let t = tables
                                .horizontal
                                .as_ref()
                                .ok_or_else(|| missing(OP, "horizontal coefficients"))?;
                            let count = elements(OP, &[rows, coeffs.out_size, c])?;
                            let out = rec.storage("resize output", elements(OP, &[count, batch])?)?;
                            let params = rec.uniform(&params::Resize {
                                in_width: field(OP, "in_width", coeffs.in_size)?,
                                out_width: field(OP, "out_width", coeffs.out_size)?,
                                rows: field(OP, "rows", rows)?,
                                channels: field(OP, "channels", c)?,
                                taps: t.taps,
                                row_offset: field(OP, "row_offset", row_offset)?,
                                src_stride: field(OP, "src_stride", stride)?,
                                dst_stride: field(OP, "dst_stride", count)?,
                                ..Default::default()
                            });
                            rec.dispatch(
                                OP,
                                &self.horizontal,
                                &[&params, &t.bounds, &t.weights, &img, &out],
                                (
                                    groups(elements(OP, &[coeffs.out_size, c])?, 64),
                                    groups(rows, 4),
                                    batch,
                                ),
                            )?;
                            stride = count;
                            out
                        }
                        ResizePass::Vertical { coeffs, width } => {
                            let t = tables
                                .vertical
                                .as_ref()
                                .ok_or_else(|| missing(OP, "vertical coefficients"))?;
                            let count = elements(OP, &[coeffs.out_size, width, c])?;
                            let out = rec.storage("resize output", elements(OP, &[count, batch])?)?;
                            let params = rec.uniform(&params::Resize {
                                in_width: field(OP, "width", width)?,
                                out_width: field(OP, "width", width)?,
                                channels: field(OP, "channels", c)?,
                                taps: t.taps,
                                out_rows: field(OP, "out_rows", coeffs.out_size)?,
                                src_stride: field(OP, "src_stride", stride)?,
                                dst_stride: field(OP, "dst_stride", count)?,
                                ..Default::default()
                            });
                            rec.dispatch(
                                OP,
                                &self.vertical,
                                &[&params, &t.bounds, &t.weights, &img, &out],
                                (
                                    groups(elements(OP, &[width, c])?, 64),
                                    groups(coeffs.out_size, 4),
                                    batch,
                                ),
                            )?;
                            stride = count;
                            out
                        }
                    };
                }
                img
            }
        };
        Ok(DeviceTensor {
            buffer,
            shape,
            dtype: DType::U8,
        })
    }

    pub(crate) fn center_crop(
        &self,
        rec: &mut Recorder,
        input_dims: &ImageDims,
        top: isize,
        left: isize,
        output: &ImageDims,
        input: DeviceTensor,
    ) -> Result<DeviceTensor> {
        const OP: &str = "center_crop";
        let (batch, _) = batched(OP, &input)?;
        let params = pixel_params(
            OP,
            input_dims,
            output.height,
            output.width,
            top,
            left,
            input_dims.chw,
        )?;
        let buffer = self.per_pixel(
            rec,
            OP,
            &self.center_crop,
            &params,
            &input.buffer,
            None,
            pixels(OP, output)?,
            pixels(OP, input_dims)?,
            batch,
        )?;
        Ok(DeviceTensor {
            buffer,
            shape: with_batch(batch, output.shape()),
            dtype: input.dtype,
        })
    }

    /// Widens `count` uint8 values packed four to a word in `packed` to one u32 each.
    pub(crate) fn unpack_bytes(
        &self,
        rec: &mut Recorder,
        packed: &wgpu::Buffer,
        count: usize,
    ) -> Result<wgpu::Buffer> {
        const OP: &str = "input tensor";
        let dims = flat(count);
        let params = pixel_params(OP, &dims, 0, 0, 0, 0, false)?;
        self.per_pixel(rec, OP, &self.unpack_bytes, &params, packed, None, count, 0, 1)
    }

    /// uint8 values to floats through `table` (256 f32 per channel of `dims`; one channel when
    /// `dims` is `None`, for a bare ToTensor): see `lookup_float` in `pixels.wgsl`.
    pub(crate) fn lookup_float(
        &self,
        rec: &mut Recorder,
        dims: Option<&ImageDims>,
        table: &[f32],
        input: DeviceTensor,
    ) -> Result<DeviceTensor> {
        const OP: &str = "to_float";
        let (batch, image) = batched(OP, &input)?;
        let count = elements(OP, &image)?;
        let one_channel = flat(count);
        let dims = dims.unwrap_or(&one_channel);
        if pixels(OP, dims)? != count {
            return Err(missing(OP, "image of the normalize step's size"));
        }
        let params = pixel_params(OP, dims, 0, 0, 0, 0, dims.chw)?;
        let bits: Vec<u32> = table.iter().map(|v| v.to_bits()).collect();
        let table = rec.upload("to_float table", bytemuck::cast_slice(&bits))?;
        let buffer = self.per_pixel(
            rec,
            OP,
            &self.lookup_float,
            &params,
            &input.buffer,
            Some(&table),
            count,
            count,
            batch,
        )?;
        Ok(DeviceTensor {
            buffer,
            shape: input.shape,
            dtype: DType::F32,
        })
    }

    pub(crate) fn normalize(
        &self,
        rec: &mut Recorder,
        dims: &ImageDims,
        mean: &[f32],
        std: &[f32],
        input: DeviceTensor,
    ) -> Result<DeviceTensor> {
        let (batch, _) = batched("normalize", &input)?;
        let table: Vec<u32> = mean.iter().chain(std).map(|v| v.to_bits()).collect();
        let table = rec.upload("normalize", bytemuck::cast_slice(&table))?;
        let params = pixel_params("normalize", dims, 0, 0, 0, 0, dims.chw)?;
        let buffer = self.per_pixel(
            rec,
            "normalize",
            &self.normalize,
            &params,
            &input.buffer,
            Some(&table),
            pixels("normalize", dims)?,
            pixels("normalize", dims)?,
            batch,
        )?;
        Ok(DeviceTensor {
            buffer,
            shape: input.shape,
            dtype: DType::F32,
        })
    }

    pub(crate) fn layout(
        &self,
        rec: &mut Recorder,
        input_dims: &ImageDims,
        output: &ImageDims,
        input: DeviceTensor,
    ) -> Result<DeviceTensor> {
        let (batch, _) = batched("layout", &input)?;
        if input_dims.chw == output.chw {
            return Ok(DeviceTensor {
                buffer: input.buffer,
                shape: with_batch(batch, output.shape()),
                dtype: input.dtype,
            });
        }
        let params = pixel_params("layout", input_dims, 0, 0, 0, 0, output.chw)?;
        let buffer = self.per_pixel(
            rec,
            "layout",
            &self.relayout,
            &params,
            &input.buffer,
            None,
            pixels("layout", output)?,
            pixels("layout", input_dims)?,
            batch,
        )?;
        Ok(DeviceTensor {
            buffer,
            shape: with_batch(batch, output.shape()),
            dtype: input.dtype,
        })
    }
}

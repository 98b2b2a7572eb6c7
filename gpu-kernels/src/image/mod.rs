//! Image kernels on the device: Pillow's resampling passes with premultiplied alpha, NEAREST,
//! centre crop, ToTensor scaling, Normalize and layout changes.

use std::sync::Arc;

use kiln_core::image::resize::{AxisCoefficients, ResizeKind, ResizePass, ResizePlan};
use kiln_core::image::ImageDims;
use kiln_core::DType;

use crate::kernel::{flat_groups, groups, shader, DeviceTensor, Kernel, Recorder, Slot};
use crate::Resources;

pub(crate) const RESIZE_WGSL: &str = include_str!("resize.wgsl");
pub(crate) const PIXELS_WGSL: &str = include_str!("pixels.wgsl");

pub(crate) struct ImageKernels {
    horizontal: Kernel,
    vertical: Kernel,
    premultiply: Kernel,
    unpremultiply: Kernel,
    nearest: Kernel,
    center_crop: Kernel,
    to_float: Kernel,
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

fn axis_tables(rec: &Recorder, c: &AxisCoefficients) -> AxisTables {
    let bounds: Vec<u32> = c.start.iter().zip(&c.len).flat_map(|(&s, &l)| [s, l]).collect();
    AxisTables {
        bounds: rec.upload("resize bounds", bytemuck::cast_slice(&bounds)),
        weights: rec.upload("resize weights", bytemuck::cast_slice(&c.weights)),
        taps: c.taps as u32,
    }
}

/// Uniform words for the per-pixel kernels (see `pixels.wgsl`).
fn pixel_params(
    rec: &Recorder,
    input: &ImageDims,
    out_h: usize,
    out_w: usize,
    top: i32,
    left: i32,
    chw: bool,
) -> wgpu::Buffer {
    rec.uniform(&[
        input.height as u32,
        input.width as u32,
        input.channels as u32,
        out_h as u32,
        out_w as u32,
        top as u32,
        left as u32,
        u32::from(chw),
    ])
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
            to_float: Kernel::new(device, &pixels, "to_float", &pix),
            normalize: Kernel::new(device, &pixels, "normalize", &pix),
            relayout: Kernel::new(device, &pixels, "relayout", &pix),
        }
    }

    fn per_pixel(
        &self,
        rec: &mut Recorder,
        kernel: &Kernel,
        params: &wgpu::Buffer,
        src: &wgpu::Buffer,
        table: Option<&wgpu::Buffer>,
        count: usize,
    ) -> wgpu::Buffer {
        let out = rec.storage("image", count);
        let dummy;
        let table = match table {
            Some(t) => t,
            None => {
                dummy = rec.upload("unused", &[0u8; 4]);
                &dummy
            }
        };
        rec.dispatch(kernel, &[params, src, &out, table], flat_groups(count));
        out
    }

    pub(crate) fn resize(
        &self,
        rec: &mut Recorder,
        resources: &Resources,
        plan: &Arc<ResizePlan>,
        input: DeviceTensor,
    ) -> DeviceTensor {
        let c = plan.channels;
        let mut shape = vec![plan.out_height, plan.out_width];
        if input.shape.len() == 3 {
            shape.push(c);
        }
        let tables = resources.get(plan, || match &plan.kind {
            ResizeKind::Copy => ResizeTables {
                horizontal: None,
                vertical: None,
                nearest: None,
            },
            ResizeKind::Nearest { rows, cols } => {
                let table: Vec<u32> = rows.iter().chain(cols).copied().collect();
                ResizeTables {
                    horizontal: None,
                    vertical: None,
                    nearest: Some(rec.upload("nearest", bytemuck::cast_slice(&table))),
                }
            }
            ResizeKind::Convolution {
                horizontal, vertical, ..
            } => ResizeTables {
                horizontal: horizontal.as_ref().map(|h| axis_tables(rec, h)),
                vertical: vertical.as_ref().map(|v| axis_tables(rec, v)),
                nearest: None,
            },
        });
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
                let params = pixel_params(rec, &in_dims, plan.out_height, plan.out_width, 0, 0, false);
                let count = plan.out_height * plan.out_width * c;
                self.per_pixel(
                    rec,
                    &self.nearest,
                    &params,
                    &input.buffer,
                    tables.nearest.as_ref(),
                    count,
                )
            }
            ResizeKind::Convolution { .. } => {
                let mut img = input.buffer;
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
                            let params = pixel_params(rec, &dims, 0, 0, 0, 0, false);
                            self.per_pixel(rec, kernel, &params, &img, None, dims.len())
                        }
                        ResizePass::Horizontal {
                            coeffs,
                            row_offset,
                            rows,
                        } => {
                            let t = tables.horizontal.as_ref().expect("horizontal tables");
                            let out = rec.storage("resize h", rows * coeffs.out_size * c);
                            let params = rec.uniform(&[
                                coeffs.in_size as u32,
                                coeffs.out_size as u32,
                                rows as u32,
                                c as u32,
                                t.taps,
                                row_offset as u32,
                                0,
                                0,
                            ]);
                            rec.dispatch(
                                &self.horizontal,
                                &[&params, &t.bounds, &t.weights, &img, &out],
                                (groups(coeffs.out_size * c, 64), groups(rows, 4), 1),
                            );
                            out
                        }
                        ResizePass::Vertical { coeffs, width } => {
                            let t = tables.vertical.as_ref().expect("vertical tables");
                            let out = rec.storage("resize v", coeffs.out_size * width * c);
                            let params = rec.uniform(&[
                                width as u32,
                                width as u32,
                                0,
                                c as u32,
                                t.taps,
                                0,
                                coeffs.out_size as u32,
                                0,
                            ]);
                            rec.dispatch(
                                &self.vertical,
                                &[&params, &t.bounds, &t.weights, &img, &out],
                                (groups(width * c, 64), groups(coeffs.out_size, 4), 1),
                            );
                            out
                        }
                    };
                }
                img
            }
        };
        DeviceTensor {
            buffer,
            shape,
            dtype: DType::U8,
        }
    }

    pub(crate) fn center_crop(
        &self,
        rec: &mut Recorder,
        input_dims: &ImageDims,
        top: isize,
        left: isize,
        output: &ImageDims,
        input: DeviceTensor,
    ) -> DeviceTensor {
        let params = pixel_params(
            rec,
            input_dims,
            output.height,
            output.width,
            top as i32,
            left as i32,
            input_dims.chw,
        );
        let buffer = self.per_pixel(rec, &self.center_crop, &params, &input.buffer, None, output.len());
        DeviceTensor {
            buffer,
            shape: output.shape(),
            dtype: input.dtype,
        }
    }

    pub(crate) fn to_float(&self, rec: &mut Recorder, input: DeviceTensor) -> DeviceTensor {
        let count = input.len();
        let dims = ImageDims {
            height: 1,
            width: count,
            channels: 1,
            chw: false,
            channel_axis: true,
        };
        let params = pixel_params(rec, &dims, 0, 0, 0, 0, false);
        let buffer = self.per_pixel(rec, &self.to_float, &params, &input.buffer, None, count);
        DeviceTensor {
            buffer,
            shape: input.shape,
            dtype: DType::F32,
        }
    }

    pub(crate) fn normalize(
        &self,
        rec: &mut Recorder,
        dims: &ImageDims,
        mean: &[f32],
        std: &[f32],
        input: DeviceTensor,
    ) -> DeviceTensor {
        let table: Vec<u32> = mean.iter().chain(std).map(|v| v.to_bits()).collect();
        let table = rec.upload("normalize", bytemuck::cast_slice(&table));
        let params = pixel_params(rec, dims, 0, 0, 0, 0, dims.chw);
        let buffer = self.per_pixel(
            rec,
            &self.normalize,
            &params,
            &input.buffer,
            Some(&table),
            dims.len(),
        );
        DeviceTensor {
            buffer,
            shape: input.shape,
            dtype: DType::F32,
        }
    }

    pub(crate) fn layout(
        &self,
        rec: &mut Recorder,
        input_dims: &ImageDims,
        output: &ImageDims,
        input: DeviceTensor,
    ) -> DeviceTensor {
        if input_dims.chw == output.chw {
            return DeviceTensor {
                buffer: input.buffer,
                shape: output.shape(),
                dtype: input.dtype,
            };
        }
        let params = pixel_params(rec, input_dims, 0, 0, 0, 0, output.chw);
        let buffer = self.per_pixel(rec, &self.relayout, &params, &input.buffer, None, output.len());
        DeviceTensor {
            buffer,
            shape: output.shape(),
            dtype: input.dtype,
        }
    }
}

//! Image kernels with Pillow/torchvision semantics: decode and mode conversion, Pillow's
//! resampling, centre crop, scaling to float, normalisation and layout.

pub mod decode;
pub mod jpeg;
pub mod ops;
pub mod resize;

use crate::spec::{ImageMode, Layout};

/// Geometry of an image tensor as it moves through a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageDims {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    /// Channels first `(C, H, W)` rather than `(H, W, C)`.
    pub chw: bool,
    /// Mode `L` images are `(H, W)` until `layout` gives them a channel axis.
    pub channel_axis: bool,
}

impl ImageDims {
    /// A freshly decoded image: `(H, W)` for mode `L`, `(H, W, C)` otherwise.
    pub fn decoded(height: usize, width: usize, mode: ImageMode) -> Self {
        let channels = mode.channels();
        ImageDims {
            height,
            width,
            channels,
            chw: false,
            channel_axis: channels > 1,
        }
    }

    /// The same image at another size (`resize`, `center_crop`).
    pub fn with_size(self, height: usize, width: usize) -> Self {
        ImageDims {
            height,
            width,
            ..self
        }
    }

    /// After `layout`: channels first or last, and always a channel axis (mode `L` too).
    pub fn laid_out(self, to: Layout) -> Self {
        ImageDims {
            chw: to == Layout::Chw,
            channel_axis: true,
            ..self
        }
    }

    pub fn shape(&self) -> Vec<usize> {
        match (self.channel_axis, self.chw) {
            (false, _) => vec![self.height, self.width],
            (true, false) => vec![self.height, self.width, self.channels],
            (true, true) => vec![self.channels, self.height, self.width],
        }
    }

    pub fn len(&self) -> usize {
        self.height * self.width * self.channels
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

//! Image kernels with Pillow/torchvision semantics: decode and mode conversion, Pillow's
//! resampling, centre crop, scaling to float, normalisation and layout.

pub mod decode;
pub mod ops;
pub mod resize;

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

use std::fmt;

/// Errors from spec validation, decoding and the CPU kernels.
///
/// Messages name the op and field (spec errors) or the format and problem (decode errors), so a
/// caller only has to add the file name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec JSON is malformed or an op/field is unknown, mistyped or impossible.
    #[error("spec: {location}: {message}")]
    Spec { location: SpecLocation, message: String },
    /// Input bytes could not be decoded as the expected format.
    #[error("corrupt or unsupported {format}: {reason}")]
    Decode { format: &'static str, reason: String },
    /// The input is valid but the requested operation cannot be applied to it.
    #[error("{op}: {reason}")]
    Input { op: &'static str, reason: String },
    /// An image declares more pixels than twice `decode_image`'s `max_pixels` (Pillow's
    /// `DecompressionBombError`, worded as Pillow words it); found before any pixel is decoded.
    #[error(
        "{format} image is {width}x{height}: image size ({pixels} pixels) exceeds limit of {limit} \
         pixels, could be decompression bomb DOS attack (decode_image `max_pixels` is {max_pixels}: \
         raise it, or set it to null for no limit)"
    )]
    DecompressionBomb {
        format: &'static str,
        width: u64,
        height: u64,
        pixels: u64,
        /// Twice `max_pixels`: Pillow refuses what exceeds this.
        limit: u64,
        max_pixels: u64,
    },
    /// A backend other than the CPU reference failed (device lost, out of memory, ...).
    #[error("{backend} backend: {reason}")]
    Backend { backend: &'static str, reason: String },
}

/// Where in a spec an error was found: op index and name, and the field if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecLocation {
    pub index: Option<usize>,
    pub op: Option<String>,
    pub field: Option<String>,
}

impl fmt::Display for SpecLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.index, &self.op) {
            (Some(i), Some(op)) => write!(f, "ops[{i}] ({op})")?,
            (Some(i), None) => write!(f, "ops[{i}]")?,
            (None, _) => write!(f, "spec")?,
        }
        if let Some(field) = &self.field {
            write!(f, " field `{field}`")?;
        }
        Ok(())
    }
}

/// Something a caller may want to tell the user about an input that still decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Warning {
    /// More pixels than `decode_image`'s `max_pixels` but at most twice that (Pillow's
    /// `DecompressionBombWarning`, worded as Pillow words it).
    #[error(
        "image is {width}x{height}: image size ({pixels} pixels) exceeds limit of {limit} pixels, \
         could be decompression bomb DOS attack"
    )]
    DecompressionBomb {
        width: u64,
        height: u64,
        pixels: u64,
        /// `max_pixels`.
        limit: u64,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn input(op: &'static str, reason: impl Into<String>) -> Self {
        Error::Input {
            op,
            reason: reason.into(),
        }
    }
    pub(crate) fn decode(format: &'static str, reason: impl fmt::Display) -> Self {
        Error::Decode {
            format,
            reason: reason.to_string(),
        }
    }
}

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

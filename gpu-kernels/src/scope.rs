//! Error scopes: every piece of work kiln submits runs inside one, so a device error (an invalid
//! buffer, out of memory, a lost device) comes back as a [`BackendError`] instead of reaching
//! wgpu's default handler, which panics.

use crate::{BackendError, Result};

/// Runs `work` (synchronous: it records and submits, nothing is awaited) with out-of-memory,
/// validation and internal errors captured, then waits for the scopes' verdict. A device error
/// wins over `work`'s own result, which it usually explains.
///
/// Scopes are per thread and must be popped in reverse order: nothing awaits while they are
/// open, so concurrent calls (browser promises, loader threads) cannot interleave them.
pub(crate) async fn captured<T>(
    device: &wgpu::Device,
    operation: &'static str,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let out_of_memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let result = work();
    let validation = validation.pop();
    let out_of_memory = out_of_memory.pop();
    let internal = internal.pop();
    let errors = [out_of_memory.await, validation.await, internal.await];
    match errors.into_iter().flatten().next() {
        Some(wgpu::Error::OutOfMemory { source }) => Err(BackendError::OutOfMemory {
            operation,
            message: source.to_string(),
        }),
        Some(other) => Err(BackendError::Submission {
            operation,
            message: error_text(&other),
        }),
        None => result,
    }
}

/// wgpu's description (a "Validation Error / Caused by:" tree over several lines) as one line.
fn error_text(error: &wgpu::Error) -> String {
    error
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "Caused by:" && *l != "Validation Error")
        .collect::<Vec<_>>()
        .join(": ")
}

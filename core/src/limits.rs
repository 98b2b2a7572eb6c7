//! The bounds kiln puts on what a file or a spec may ask for, in one place.
//!
//! Each is far beyond what real data or a real spec uses, and low enough that the work and memory
//! an input can cause are bounded by what it holds: a few bytes of header can no longer ask for
//! gigabytes or hours. Exceeding one is an error that names the field (or the file's header) and
//! the bound, never a panic, an abort or a hang.

/// Pillow's `Image.MAX_IMAGE_PIXELS`, the default of `decode_image`'s `max_pixels`: above it
/// Pillow warns (`DecompressionBombWarning`), above twice it Pillow refuses the image
/// (`DecompressionBombError`). kiln does the same (see [`crate::image::decode::check_pixels`]).
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

/// Highest sample rate accepted in a WAV header or a spec (`load_audio.sample_rate`,
/// `mel.sample_rate`), in Hz. 768 kHz is the highest rate audio interfaces and formats offer
/// (DXD is 352.8 kHz); a header above it is corrupt or hostile (a 144-byte file declaring
/// 4,294,967,248 Hz made resampling ask for 3.9 GB).
pub const MAX_SAMPLE_RATE: u32 = 768_000;

/// Largest resampling factor either way (`load_audio.sample_rate` over the file's rate, or its
/// inverse). 8 kHz to 768 kHz is 96x; the cost per input sample grows with the factor (a 1 Hz
/// header resampled to 16 kHz cost 87 ms of CPU per input byte), so beyond this it is an error.
pub const MAX_RESAMPLE_RATIO: u32 = 128;

/// Largest `fix_length.size`, in samples per channel: 2^28, 93 minutes at 48 kHz (1 GiB of f32),
/// far above the clip lengths that batching uses; padding allocates it for every item.
pub const MAX_FIX_LENGTH: usize = 1 << 28;

/// Largest `stft.n_fft` (and so `win_length`): 2^20 samples, 22 s at 48 kHz, far above the
/// 256..=8192 used in practice; the FFT plan and window are `O(n_fft)`.
pub const MAX_N_FFT: usize = 1 << 20;

/// Largest `stft.hop_length`: 2^24 samples (about 6 minutes at 48 kHz).
pub const MAX_HOP_LENGTH: usize = 1 << 24;

/// Largest `mel.n_mels` and `mfcc.n_mfcc`. Front ends use 40..=256; the filterbank costs
/// `n_mels * (n_fft / 2 + 1)` to build.
pub const MAX_MEL_BANDS: usize = 1024;

/// Largest `height`, `width` or `shorter_side` of `resize` and `center_crop`.
pub const MAX_IMAGE_SIDE: usize = 1 << 20;

/// Largest output of `resize` or `center_crop` in pixels (height x width), 2^28: 16384 x 16384.
pub const MAX_OUTPUT_PIXELS: usize = 1 << 28;

/// Largest tensor an op may produce, in elements (per item, all channels): 2^30, 4 GiB of f32.
/// An hour of 48 kHz audio through an STFT with `n_fft` 2048 and hop 512 is 3.5e8.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 30;

/// Largest filter table a `resize` may build, in coefficients over both axes (2^26, 256 MiB of
/// i32). Pillow's tables hold about `2 * support * input_side` entries per axis when shrinking,
/// so only images millions of pixels long reach it.
pub const MAX_RESIZE_COEFFICIENTS: usize = 1 << 26;

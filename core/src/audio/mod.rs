//! Audio kernels with librosa's semantics: WAV decoding, STFT, power, mel, dB and MFCC.

pub mod db;
pub mod decode;
pub mod mel;
pub mod mfcc;
pub mod resample;
pub mod stft;
pub mod window;

//! Audio kernels with librosa's semantics: decoding (WAV, FLAC, MP3, Ogg Vorbis), STFT, power, mel,
//! dB and MFCC.

mod compressed;
pub mod db;
pub mod decode;
pub mod format;
pub mod mel;
pub mod mfcc;
pub mod resample;
pub mod stft;
pub mod window;

//! WAV decoding and the log-mel spec on the CPU: see [`kiln_fuzz::wav_decode`].
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| kiln_fuzz::wav_decode(bytes));

//! PNG/JPEG decoding and the ImageNet spec on the CPU: see [`kiln_fuzz::image_decode`].
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| kiln_fuzz::image_decode(bytes));

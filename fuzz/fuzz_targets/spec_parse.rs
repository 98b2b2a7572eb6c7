//! Spec JSON parsing and `Spec::output()`: see [`kiln_fuzz::spec_parse`].
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| kiln_fuzz::spec_parse(bytes));

//! Parquet shard reading and tensor-column decoding: see [`kiln_fuzz::shard_read`].
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    kiln_fuzz::shard_read(bytes);
});

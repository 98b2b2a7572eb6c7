//! Replays the seeds and the saved corpus (`seeds/<target>/`, `corpus/<target>/`) through each
//! target's body as a plain test: what CI runs (`bash scripts/fuzz --replay`). It needs no
//! nightly features, no sanitizer and no libFuzzer, and checks that every input the fuzzer once
//! found interesting still runs without a panic or a broken assertion; memory and time limits
//! are the fuzzer's job.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [root.join("seeds").join(target), root.join("corpus").join(target)] {
        let before = files.len();
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        files.extend(entries.map(|entry| entry.expect("a corpus directory entry").path()));
        // An empty directory would make this test pass while checking nothing.
        assert!(files.len() > before, "{} holds no inputs", dir.display());
    }
    files.sort();
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            catch_unwind(AssertUnwindSafe(|| run(&bytes))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs panicked (messages above): {failed:?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn wav_decode() {
    replay("wav_decode", kiln_fuzz::wav_decode);
}

#[test]
fn image_decode() {
    replay("image_decode", kiln_fuzz::image_decode);
}

#[test]
fn spec_parse() {
    replay("spec_parse", kiln_fuzz::spec_parse);
}

#[cfg(feature = "shards")]
#[test]
fn shard_read() {
    replay("shard_read", |bytes| {
        kiln_fuzz::shard_read(bytes);
    });
}

/// The seeds are shards `kiln convert` wrote (raw, fixed and variable u8/f32 tensors, one or
/// several row groups): each must be read to its last row, or the target would be fuzzing
/// only the early refusals (a wrong layout or row-group guess).
#[cfg(feature = "shards")]
#[test]
fn shard_seeds_read_in_full() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/shard_read");
    for entry in std::fs::read_dir(&dir).expect("the shard seeds") {
        let path = entry.expect("a seed").path();
        let rows = kiln_fuzz::shard_read(&std::fs::read(&path).expect("reading a seed"));
        assert_eq!(rows, 3, "{} decoded {rows} of its 3 rows", path.display());
    }
}

//! The content hash that names an entry, and file hashing.

use std::fs;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::manifest::FORMAT_VERSION;
use crate::error::{IoContext, Result};
use crate::items::SourceItem;

/// The content hash naming an entry: the source listing (path, size, version), the spec, the
/// label rule, the materialisation mode and the kernel and format versions.
pub fn cache_key(
    items: &[SourceItem],
    spec: &serde_json::Value,
    label_rule: &str,
    materialize: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "kiln-cache v{FORMAT_VERSION} kernels v{}\n",
        kiln_core::KERNEL_VERSION
    ));
    h.update(spec.to_string());
    h.update(format!("\nlabels {label_rule}\nmaterialize {materialize}\n"));
    for item in items {
        h.update(format!("{}\0{}\0{}\n", item.path, item.size, item.version));
    }
    hex(&h.finalize())[..24].to_owned()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).at("opening", path)?;
    let mut h = Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut chunk).at("reading", path)?;
        if n == 0 {
            break;
        }
        h.update(&chunk[..n]);
    }
    Ok(hex(&h.finalize()))
}

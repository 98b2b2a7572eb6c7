//! Every `.wgsl` file is parsed and validated by naga, without a GPU.

use std::path::Path;

fn wgsl_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            wgsl_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "wgsl") {
            out.push(path);
        }
    }
}

#[test]
fn every_wgsl_file_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gpu-kernels/src");
    let mut files = Vec::new();
    wgsl_files(&root, &mut files);
    assert!(!files.is_empty(), "no .wgsl files found under {}", root.display());
    assert_eq!(
        files.len(),
        kiln_gpu::SHADERS.len(),
        "a .wgsl file is not listed in kiln_gpu::SHADERS"
    );
    for path in &files {
        let source = std::fs::read_to_string(path).expect("read shader");
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    }
}

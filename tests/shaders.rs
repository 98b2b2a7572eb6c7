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
    // Every file on disk is a module or a fragment prepended to modules, so validating the
    // modules as the device compiles them covers every line of WGSL.
    for path in &files {
        let name = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let is_module = kiln_gpu::SHADERS.iter().any(|(n, _)| *n == name);
        let is_fragment = kiln_gpu::SHADER_FRAGMENTS.contains(&name.as_str());
        assert!(
            is_module || is_fragment,
            "{name} is not listed in kiln_gpu::SHADERS or SHADER_FRAGMENTS"
        );
        if is_fragment {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(
                kiln_gpu::SHADERS.iter().any(|(_, source)| source.contains(&text)),
                "fragment {name} is used by no module"
            );
        }
    }
    for (name, source) in kiln_gpu::SHADERS {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}

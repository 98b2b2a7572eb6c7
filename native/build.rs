//! Embeds the labeling page (`wasm/www`, with the wasm-bindgen output in `wasm/www/pkg`) into
//! the binary for `kiln serve`. Without the wasm build the page is left out and `kiln serve`
//! says so.

use std::path::Path;

const FILES: &[(&str, &str)] = &[
    ("/index.html", "text/html; charset=utf-8"),
    ("/app.js", "text/javascript"),
    ("/pkg/kiln_wasm.js", "text/javascript"),
    ("/pkg/kiln_wasm_bg.wasm", "application/wasm"),
];

fn main() {
    // Read when the script runs, not when it is compiled: a compiled build script can be
    // reused for another checkout of the same source sharing the target directory.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let www = Path::new(&manifest_dir).join("../wasm/www");
    let mut entries = String::new();
    let mut complete = true;
    for (route, mime) in FILES {
        let path = www.join(route.trim_start_matches('/'));
        println!("cargo:rerun-if-changed={}", path.display());
        if path.is_file() {
            entries.push_str(&format!(
                "    ({route:?}, {mime:?}, include_bytes!({:?})),\n",
                path.canonicalize().unwrap()
            ));
        } else {
            complete = false;
        }
    }
    let code = format!(
        "/// (route, content type, bytes) of the embedded page.\npub const ASSETS: &[(&str, &str, &[u8])] = &[\n{entries}];\n/// Whether the wasm build was present when kiln was built.\npub const PAGE_COMPLETE: bool = {complete};\n"
    );
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("assets.rs");
    std::fs::write(out, code).unwrap();
}

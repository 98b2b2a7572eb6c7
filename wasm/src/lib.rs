//! kiln in the browser: a thin `wasm-bindgen` boundary over `kiln-core` (the CPU kernels,
//! compiled to wasm) and `kiln-gpu` (the same WGSL kernels, on WebGPU). No kernel is written
//! again in JavaScript.
//!
//! JavaScript calls [`init_backend`] once (WebGPU if the browser has it and `prefer_gpu`,
//! else the CPU/wasm kernels), then [`transform`] with a spec (the same JSON as
//! `kiln transform`) and a file's bytes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Array, Float32Array, Object, Reflect, Uint8Array};
use kiln_core::{CpuBackend, Pipeline, Spec, Tensor, TensorData};
use kiln_gpu::{AnyBackend, BackendChoice};
use wasm_bindgen::prelude::*;

thread_local! {
    /// The backend [`transform`] uses; the CPU kernels until [`init_backend`] opens WebGPU.
    static BACKEND: RefCell<AnyBackend> = const { RefCell::new(AnyBackend::Cpu(CpuBackend)) };
    static PIPELINES: RefCell<HashMap<String, Rc<Pipeline>>> = RefCell::new(HashMap::new());
}

/// The page's name for a backend: the GPU here is WebGPU.
fn page_name(backend: &AnyBackend) -> &'static str {
    match backend.choice() {
        BackendChoice::Gpu => "webgpu",
        BackendChoice::Cpu => "cpu",
    }
}

fn error(e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&e.to_string())
}

/// Chooses the backend: `"webgpu"` when `prefer_gpu` and a WebGPU adapter opens, else
/// `"cpu"`. Returns the name, and the reason when WebGPU was wanted but not available.
///
/// Falling back to the CPU is the page's documented behaviour (a preview should still work
/// without WebGPU); [`AnyBackend::open_async`] itself never falls back.
#[wasm_bindgen]
pub async fn init_backend(prefer_gpu: bool) -> JsValue {
    let result = Object::new();
    let (backend, why) = if prefer_gpu {
        match AnyBackend::open_async(BackendChoice::Gpu).await {
            Ok(gpu) => (gpu, String::new()),
            Err(e) => (AnyBackend::Cpu(CpuBackend), e.to_string()),
        }
    } else {
        (AnyBackend::Cpu(CpuBackend), "not requested".to_owned())
    };
    let name = page_name(&backend);
    BACKEND.with(|b| *b.borrow_mut() = backend);
    let _ = Reflect::set(&result, &"backend".into(), &name.into());
    let _ = Reflect::set(&result, &"reason".into(), &why.into());
    result.into()
}

/// The backend [`transform`] uses now: `"webgpu"` or `"cpu"`.
#[wasm_bindgen]
pub fn backend_name() -> String {
    BACKEND.with(|b| page_name(&b.borrow())).to_owned()
}

fn pipeline(spec_json: &str) -> Result<Rc<Pipeline>, JsValue> {
    if let Some(p) = PIPELINES.with(|m| m.borrow().get(spec_json).cloned()) {
        return Ok(p);
    }
    let pipeline = Rc::new(Pipeline::new(Spec::from_json(spec_json).map_err(error)?));
    PIPELINES.with(|m| m.borrow_mut().insert(spec_json.to_owned(), pipeline.clone()));
    Ok(pipeline)
}

fn to_js(tensor: &Tensor, backend: &str) -> JsValue {
    let result = Object::new();
    let shape = Array::new();
    tensor.shape.iter().for_each(|&d| {
        shape.push(&JsValue::from(d as u32));
    });
    let data: JsValue = match &tensor.data {
        TensorData::U8(v) => Uint8Array::from(v.as_slice()).into(),
        TensorData::F32(v) | TensorData::C64(v) => Float32Array::from(v.as_slice()).into(),
    };
    let _ = Reflect::set(&result, &"shape".into(), &shape);
    let _ = Reflect::set(&result, &"dtype".into(), &tensor.dtype().name().into());
    let _ = Reflect::set(&result, &"data".into(), &data);
    let _ = Reflect::set(&result, &"backend".into(), &backend.into());
    result.into()
}

/// Decodes `bytes` (WAV, FLAC, MP3, Ogg Vorbis, PNG, JPEG, WebP) and runs `spec_json` on the chosen backend. Resolves to
/// `{shape, dtype, data, backend}`; rejects with the same messages as `kiln transform`.
#[wasm_bindgen]
pub async fn transform(spec_json: String, bytes: Vec<u8>) -> Result<JsValue, JsValue> {
    let pipeline = pipeline(&spec_json)?;
    let (tensor, key) = pipeline.decode(&bytes).map_err(error)?;
    let plan = pipeline.plan(key).map_err(error)?;
    // A clone (the GPU side is shared), so no borrow is held across the await.
    let backend = BACKEND.with(|b| b.borrow().clone());
    let out = backend.execute_async(&plan, tensor).await.map_err(error)?;
    Ok(to_js(&out, page_name(&backend)))
}

/// The decoded waveform (mono) or image, for the page's waveform and original views.
#[wasm_bindgen]
pub fn decode_preview(bytes: Vec<u8>, is_audio: bool) -> Result<JsValue, JsValue> {
    let spec = if is_audio {
        r#"{"ops":[{"op":"load_audio"}]}"#
    } else {
        r#"{"ops":[{"op":"decode_image","mode":"RGBA"}]}"#
    };
    let (tensor, key) = pipeline(spec)?.decode(&bytes).map_err(error)?;
    let out = to_js(&tensor, "cpu");
    if let kiln_core::PlanKey::Audio { sample_rate, .. } = key {
        let _ = Reflect::set(&out, &"sample_rate".into(), &JsValue::from(sample_rate));
    }
    Ok(out)
}

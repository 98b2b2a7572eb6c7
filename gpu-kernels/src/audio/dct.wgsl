// MFCC: orthonormal DCT-II over the mel axis as a small matrix product per frame.

struct Params {
    n_mels: u32,
    n_mfcc: u32,
    n_frames: u32,
    channels: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dct: array<f32>;
@group(0) @binding(2) var<storage, read> mel_db: array<f32>;
@group(0) @binding(3) var<storage, read_write> mfcc: array<f32>;

@compute @workgroup_size(64, 4)
fn dct_apply(@builtin(global_invocation_id) id: vec3<u32>) {
    let frame = id.x;
    let k = id.y;
    let channel = id.z;
    if (frame >= params.n_frames || k >= params.n_mfcc) {
        return;
    }
    let base = channel * params.n_mels * params.n_frames;
    var acc = 0.0;
    for (var i = 0u; i < params.n_mels; i = i + 1u) {
        acc = acc + dct[k * params.n_mels + i] * mel_db[base + i * params.n_frames + frame];
    }
    mfcc[(channel * params.n_mfcc + k) * params.n_frames + frame] = acc;
}

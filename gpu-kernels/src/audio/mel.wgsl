// Sparse mel filterbank: each filter is a contiguous run of FFT bins, so one output reads only
// the bins its triangle covers.

struct Params {
    n_freq: u32,
    n_mels: u32,
    n_frames: u32,
    channels: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Per filter: (first bin, bin count, offset into weights, unused).
@group(0) @binding(1) var<storage, read> filters: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read> spectrogram: array<f32>;
@group(0) @binding(4) var<storage, read_write> mel: array<f32>;

@compute @workgroup_size(64, 4)
fn mel_apply(@builtin(global_invocation_id) id: vec3<u32>) {
    let frame = id.x;
    let m = id.y;
    let channel = id.z;
    if (frame >= params.n_frames || m >= params.n_mels) {
        return;
    }
    let f = filters[m];
    let base = channel * params.n_freq * params.n_frames;
    var acc = 0.0;
    for (var j = 0u; j < f.y; j = j + 1u) {
        acc = acc + weights[f.z + j] * spectrogram[base + (f.x + j) * params.n_frames + frame];
    }
    mel[(channel * params.n_mels + m) * params.n_frames + frame] = acc;
}

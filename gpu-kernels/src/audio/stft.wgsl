// Framing + padding + windowing + DFT of any length, one workgroup per (bin block, frame,
// channel). The windowed frame is staged through workgroup memory in tiles; twiddles come from
// a table indexed by (k * n) mod n_fft, so no accuracy is lost to large phase arguments.
// reflect_index comes from padding.wgsl, prepended when the module is built.

struct Params {
    n_fft: u32,
    hop: u32,
    pad: u32,
    n_samples: u32,
    n_frames: u32,
    n_freq: u32,
    reflect: u32,
    frame_offset: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> signal: array<f32>;
@group(0) @binding(2) var<storage, read> window: array<f32>;
@group(0) @binding(3) var<storage, read> twiddles: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> spectrum: array<vec2<f32>>;

const TILE: u32 = 256u;
const GROUP: u32 = 64u;
var<workgroup> tile: array<f32, 256>;

fn padded_sample(channel_base: u32, index: u32) -> f32 {
    let i = i32(index) - i32(params.pad);
    let n = i32(params.n_samples);
    if (i >= 0 && i < n) {
        return signal[channel_base + u32(i)];
    }
    if (params.reflect == 1u) {
        return signal[channel_base + u32(reflect_index(i, n))];
    }
    return 0.0;
}

@compute @workgroup_size(64)
fn stft_dft(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
) {
    let k = group.x * GROUP + local.x;
    let frame = group.y + params.frame_offset;
    let channel = group.z;
    let channel_base = channel * params.n_samples;
    let start = frame * params.hop;
    var re = 0.0;
    var im = 0.0;
    var phase = 0u;
    for (var base = 0u; base < params.n_fft; base = base + TILE) {
        for (var j = local.x; j < TILE; j = j + GROUP) {
            let n = base + j;
            var value = 0.0;
            if (n < params.n_fft) {
                value = padded_sample(channel_base, start + n) * window[n];
            }
            tile[j] = value;
        }
        workgroupBarrier();
        if (k < params.n_freq) {
            let count = min(TILE, params.n_fft - base);
            for (var j = 0u; j < count; j = j + 1u) {
                let w = twiddles[phase];
                re = re + tile[j] * w.x;
                im = im + tile[j] * w.y;
                phase = phase + k;
                if (phase >= params.n_fft) {
                    phase = phase - params.n_fft;
                }
            }
        }
        workgroupBarrier();
    }
    if (k < params.n_freq) {
        spectrum[(channel * params.n_freq + k) * params.n_frames + frame] = vec2<f32>(re, im);
    }
}

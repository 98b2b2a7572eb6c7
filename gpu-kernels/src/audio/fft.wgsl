// Real-input STFT by FFT, one workgroup per (frame, channel): the windowed frame of n_fft = 2M
// real samples is packed as M complex values, transformed by a mixed-radix (4, 2, 3, 5)
// Stockham FFT in workgroup memory, then split into the n_fft/2 + 1 bins of the real
// transform. Twiddles come from a table of exp(-2 pi i j / n_fft), never from large angles.
// reflect_index comes from padding.wgsl, prepended when the module is built.
// Sizes outside this kernel's reach (odd, M > 1024, other prime factors) use stft.wgsl's DFT.

struct Params {
    n_fft: u32,
    hop: u32,
    pad: u32,
    n_samples: u32,
    n_frames: u32,
    n_freq: u32,
    reflect: u32,
    frame_offset: u32,
    half: u32,
    n_factors: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> signal: array<f32>;
@group(0) @binding(2) var<storage, read> window: array<f32>;
@group(0) @binding(3) var<storage, read> twiddles: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> spectrum: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read> factors: array<u32>;

const GROUP: u32 = 128u;
const MAX_HALF: u32 = 1024u;
// Two halves: source and destination of each Stockham pass.
var<workgroup> buf: array<vec2<f32>, 2048>;

fn cmul(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

// exp(-2 pi i k / M), M = n_fft / 2.
fn twiddle_half(k: u32) -> vec2<f32> {
    return twiddles[2u * k];
}

fn windowed(channel_base: u32, start: u32, n: u32) -> f32 {
    let i = i32(start + n) - i32(params.pad);
    let len = i32(params.n_samples);
    var x = 0.0;
    if (i >= 0 && i < len) {
        x = signal[channel_base + u32(i)];
    } else if (params.reflect == 1u) {
        x = signal[channel_base + u32(reflect_index(i, len))];
    }
    return x * window[n];
}

@compute @workgroup_size(128)
fn stft_fft(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
) {
    let frame = group.y + params.frame_offset;
    let channel = group.z;
    let channel_base = channel * params.n_samples;
    let start = frame * params.hop;
    let m = params.half;
    for (var n = local.x; n < m; n = n + GROUP) {
        buf[n] = vec2<f32>(windowed(channel_base, start, 2u * n), windowed(channel_base, start, 2u * n + 1u));
    }
    workgroupBarrier();
    var src = 0u;
    var dst = MAX_HALF;
    var span = 1u;
    for (var s = 0u; s < params.n_factors; s = s + 1u) {
        let radix = factors[s];
        let count = m / radix;
        let stride = m / (span * radix);
        for (var j = local.x; j < count; j = j + GROUP) {
            let k = j % span;
            var v: array<vec2<f32>, 5>;
            for (var q = 0u; q < radix; q = q + 1u) {
                v[q] = cmul(buf[src + j + q * count], twiddle_half((k * q * stride) % m));
            }
            let out_base = (j / span) * span * radix + k;
            for (var p = 0u; p < radix; p = p + 1u) {
                var acc = vec2<f32>(0.0, 0.0);
                for (var q = 0u; q < radix; q = q + 1u) {
                    acc = acc + cmul(v[q], twiddle_half(((p * q) % radix) * (m / radix)));
                }
                buf[dst + out_base + p * span] = acc;
            }
        }
        workgroupBarrier();
        let swap = src;
        src = dst;
        dst = swap;
        span = span * radix;
    }
    // Split the packed transform Z into the real transform X:
    // X[k] = (Z[k] + conj(Z[M-k])) / 2 + W^k (Z[k] - conj(Z[M-k])) / 2i, W = exp(-2 pi i / n_fft).
    for (var k = local.x; k <= m; k = k + GROUP) {
        let zk = buf[src + (k % m)];
        let zm = buf[src + ((m - k) % m)];
        let zm_conj = vec2<f32>(zm.x, -zm.y);
        let even = 0.5 * (zk + zm_conj);
        let diff = 0.5 * (zk - zm_conj);
        let odd = vec2<f32>(diff.y, -diff.x);
        spectrum[(channel * params.n_freq + k) * params.n_frames + frame] = even + cmul(twiddles[k], odd);
    }
}

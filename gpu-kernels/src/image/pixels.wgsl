// Per-pixel image kernels: Pillow's premultiplied alpha, NEAREST gathers, torchvision's centre
// crop, ToTensor (with the Normalize steps after it) as a lookup, Normalize and HWC <-> CHW.
// Values are one u32 per element (uint8 images) or f32 bits; crop and layout move bits and so
// serve both. A batch of same-size images runs in one dispatch: workgroup z is the image,
// `src_stride`/`dst_stride` the values per input and output image.

struct Params {
    height: u32,
    width: u32,
    channels: u32,
    out_height: u32,
    out_width: u32,
    top: i32,
    left: i32,
    chw: u32,
    src_stride: u32,
    dst_stride: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
// NEAREST: source rows then source columns; normalize: means then stds (as f32 bits).
@group(0) @binding(3) var<storage, read> table: array<u32>;

fn flat_index(id: vec3<u32>, groups: vec3<u32>) -> u32 {
    return id.x + id.y * groups.x * 256u;
}

// Where image `id.z` of the batch starts in the source and destination.
fn src_base(id: vec3<u32>) -> u32 {
    return id.z * params.src_stride;
}

fn dst_base(id: vec3<u32>) -> u32 {
    return id.z * params.dst_stride;
}

fn pixel_count() -> u32 {
    return params.height * params.width;
}

@compute @workgroup_size(256)
fn premultiply(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let p = flat_index(id, groups);
    let s = src_base(id);
    let d = dst_base(id);
    if (p >= pixel_count()) {
        return;
    }
    let a = src[s + p * 4u + 3u];
    for (var ch = 0u; ch < 3u; ch = ch + 1u) {
        let t = src[s + p * 4u + ch] * a + 128u;
        dst[d + p * 4u + ch] = ((t >> 8u) + t) >> 8u;
    }
    dst[d + p * 4u + 3u] = a;
}

@compute @workgroup_size(256)
fn unpremultiply(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let p = flat_index(id, groups);
    let s = src_base(id);
    let d = dst_base(id);
    if (p >= pixel_count()) {
        return;
    }
    let a = src[s + p * 4u + 3u];
    for (var ch = 0u; ch < 3u; ch = ch + 1u) {
        let c = src[s + p * 4u + ch];
        var v = c;
        if (a != 0u && a != 255u) {
            v = min(255u, (255u * c) / a);
        }
        dst[d + p * 4u + ch] = v;
    }
    dst[d + p * 4u + 3u] = a;
}

@compute @workgroup_size(256)
fn nearest(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    let s = src_base(id);
    let d = dst_base(id);
    let c = params.channels;
    if (i >= params.out_height * params.out_width * c) {
        return;
    }
    let ch = i % c;
    let x = (i / c) % params.out_width;
    let y = i / (c * params.out_width);
    let sy = table[y];
    let sx = table[params.out_height + x];
    dst[d + i] = src[s + (sy * params.width + sx) * c + ch];
}

@compute @workgroup_size(256)
fn center_crop(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    let s = src_base(id);
    let d = dst_base(id);
    let c = params.channels;
    let oh = params.out_height;
    let ow = params.out_width;
    if (i >= oh * ow * c) {
        return;
    }
    var y: u32;
    var x: u32;
    var ch: u32;
    if (params.chw == 1u) {
        ch = i / (oh * ow);
        y = (i / ow) % oh;
        x = i % ow;
    } else {
        ch = i % c;
        x = (i / c) % ow;
        y = i / (c * ow);
    }
    let sy = i32(y) + params.top;
    let sx = i32(x) + params.left;
    var v = 0u;
    if (sy >= 0 && sy < i32(params.height) && sx >= 0 && sx < i32(params.width)) {
        if (params.chw == 1u) {
            v = src[s + (ch * params.height + u32(sy)) * params.width + u32(sx)];
        } else {
            v = src[s + (u32(sy) * params.width + u32(sx)) * c + ch];
        }
    }
    dst[d + i] = v;
}

// uint8 values uploaded four to a word (a quarter of the bytes over the bus), widened to one
// u32 per value for the kernels above; little-endian, as the host wrote them.
@compute @workgroup_size(256)
fn unpack_bytes(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    let s = src_base(id);
    let d = dst_base(id);
    if (i >= pixel_count() * params.channels) {
        return;
    }
    dst[d + i] = (src[s + i / 4u] >> (8u * (i % 4u))) & 0xffu;
}

// ToTensor and the Normalize steps after it as one lookup: the input is uint8, so each channel
// has 256 possible results, computed on the host with the CPU reference's arithmetic (`table`,
// f32 bits, 256 per channel). Exact on any device, whatever its division or fused multiply-add
// do. `chw` and the dims say which channel a value belongs to.
@compute @workgroup_size(256)
fn lookup_float(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    let s = src_base(id);
    let d = dst_base(id);
    let c = params.channels;
    if (i >= pixel_count() * c) {
        return;
    }
    var ch = i % c;
    if (params.chw == 1u) {
        ch = i / pixel_count();
    }
    dst[d + i] = table[ch * 256u + min(src[s + i], 255u)];
}

@compute @workgroup_size(256)
fn normalize(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    let s = src_base(id);
    let d = dst_base(id);
    let c = params.channels;
    if (i >= pixel_count() * c) {
        return;
    }
    var ch = i % c;
    if (params.chw == 1u) {
        ch = i / pixel_count();
    }
    let mean = bitcast<f32>(table[ch]);
    let deviation = bitcast<f32>(table[c + ch]);
    dst[d + i] = bitcast<u32>(divide_exact(bitcast<f32>(src[s + i]) - mean, deviation));
}

// `n / d` correctly rounded, as the CPU divides. Vulkan lets a division be 2.5 ulp off (the
// NVIDIA H200 was, where lavapipe was exact); subtraction is exact-rounded already. The
// device's quotient is corrected by comparing exact residuals `n - q * d` (fma) of it and its
// neighbours up to 3 ulp away: the nearest quotient has the smallest, and a binary quotient is
// never exactly halfway, so there is no tie to break.
fn divide_exact(n: f32, d: f32) -> f32 {
    let q = n / d;
    if (q == 0.0 || q != q || abs(q) > 3.0e38) {
        return q;
    }
    var best = q;
    var best_residual = abs(fma(-q, d, n));
    for (var k = -3; k <= 3; k++) {
        let candidate = bitcast<f32>(bitcast<i32>(q) + k);
        let residual = abs(fma(-candidate, d, n));
        if (residual < best_residual) {
            best = candidate;
            best_residual = residual;
        }
    }
    return best;
}

// HWC -> CHW when `chw` is 1, CHW -> HWC otherwise; one invocation per destination element.
@compute @workgroup_size(256)
fn relayout(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    let s = src_base(id);
    let d = dst_base(id);
    let c = params.channels;
    let plane = pixel_count();
    if (i >= plane * c) {
        return;
    }
    if (params.chw == 1u) {
        let ch = i / plane;
        let p = i % plane;
        dst[d + i] = src[s + p * c + ch];
    } else {
        let ch = i % c;
        let p = i / c;
        dst[d + i] = src[s + ch * plane + p];
    }
}

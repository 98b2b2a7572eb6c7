// Pillow's 8-bit convolution resampling, bit-exact: 22-bit fixed-point taps accumulated in i32
// (Pillow's own type), rounded and clipped to 0..255 after each pass. Pixels travel as one u32
// per channel value. A batch of same-size images runs in one dispatch: workgroup z is the
// image, `src_stride`/`dst_stride` the values per input and output image.

struct Params {
    in_width: u32,
    out_width: u32,
    rows: u32,
    channels: u32,
    taps: u32,
    row_offset: u32,
    out_rows: u32,
    src_stride: u32,
    dst_stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Per output index: (first input index, tap count).
@group(0) @binding(1) var<storage, read> bounds: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> weights: array<i32>;
@group(0) @binding(3) var<storage, read> src: array<u32>;
@group(0) @binding(4) var<storage, read_write> dst: array<u32>;

const HALF: i32 = 2097152; // 1 << 21
const SHIFT: u32 = 22u;

fn clip8(acc: i32) -> u32 {
    return u32(clamp(acc >> SHIFT, 0, 255));
}

// One invocation per (output column * channel, row); reads rows [row_offset, row_offset + rows).
@compute @workgroup_size(64, 4)
fn resample_horizontal(@builtin(global_invocation_id) id: vec3<u32>) {
    let s = id.z * params.src_stride;
    let d = id.z * params.dst_stride;
    let c = params.channels;
    let x = id.x / c;
    let ch = id.x % c;
    let y = id.y;
    if (x >= params.out_width || y >= params.rows) {
        return;
    }
    let b = bounds[x];
    let row = (y + params.row_offset) * params.in_width * c;
    var acc = HALF;
    for (var i = 0u; i < b.y; i = i + 1u) {
        acc = acc + i32(src[s + row + (b.x + i) * c + ch]) * weights[x * params.taps + i];
    }
    dst[d + (y * params.out_width + x) * c + ch] = clip8(acc);
}

// One invocation per (column * channel, output row) over an image `in_width` wide.
@compute @workgroup_size(64, 4)
fn resample_vertical(@builtin(global_invocation_id) id: vec3<u32>) {
    let s = id.z * params.src_stride;
    let d = id.z * params.dst_stride;
    let stride = params.in_width * params.channels;
    let xc = id.x;
    let y = id.y;
    if (xc >= stride || y >= params.out_rows) {
        return;
    }
    let b = bounds[y];
    var acc = HALF;
    for (var i = 0u; i < b.y; i = i + 1u) {
        acc = acc + i32(src[s + (b.x + i) * stride + xc]) * weights[y * params.taps + i];
    }
    dst[d + y * stride + xc] = clip8(acc);
}

// |X| ** power of a complex spectrogram. A 2-D grid flattened to one index keeps large arrays
// within the 65535-workgroups-per-dimension limit.

struct Params {
    count: u32,
    power: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> complex_in: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> real_out: array<f32>;

@compute @workgroup_size(256)
fn magnitude(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = id.x + id.y * groups.x * 256u;
    if (i >= params.count) {
        return;
    }
    let c = complex_in[i];
    let power2 = c.x * c.x + c.y * c.y;
    var v: f32;
    if (params.power == 2.0) {
        v = power2;
    } else if (params.power == 1.0) {
        v = sqrt(power2);
    } else {
        v = pow(sqrt(power2), params.power);
    }
    real_out[i] = v;
}

// power_to_db in two passes: the maximum over each item's whole array (non-negative floats
// order like their bit patterns, so an atomic u32 max works), then the per-element conversion
// and clip. Workgroup z is the item of a batch: each has its own `count` values and its own
// peak, as librosa computes one per call.

struct Params {
    count: u32,
    ref_is_max: u32,
    clip_top: u32,
    _pad: u32,
    amin: f32,
    ref_db: f32,
    top_db: f32,
    _pad2: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> values: array<f32>;
@group(0) @binding(2) var<storage, read_write> peak_bits: array<atomic<u32>>;

var<workgroup> partial: array<f32, 256>;

const DB_PER_LOG2: f32 = 3.0102999566398120;

fn flat_index(id: vec3<u32>, groups: vec3<u32>) -> u32 {
    return id.x + id.y * groups.x * 256u;
}

@compute @workgroup_size(256)
fn max_reduce(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = flat_index(id, groups);
    var v = 0.0;
    if (i < params.count) {
        v = max(values[id.z * params.count + i], 0.0);
    }
    partial[local] = v;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride / 2u) {
        if (local < stride) {
            partial[local] = max(partial[local], partial[local + stride]);
        }
        workgroupBarrier();
    }
    if (local == 0u) {
        atomicMax(&peak_bits[id.z], bitcast<u32>(partial[0]));
    }
}

@compute @workgroup_size(256)
fn to_db(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(id, groups);
    if (i >= params.count) {
        return;
    }
    let peak = bitcast<f32>(atomicLoad(&peak_bits[id.z]));
    let at = id.z * params.count + i;
    var ref_db = params.ref_db;
    if (params.ref_is_max == 1u) {
        ref_db = DB_PER_LOG2 * log2(max(peak, params.amin));
    }
    var db = DB_PER_LOG2 * log2(max(values[at], params.amin)) - ref_db;
    if (params.clip_top == 1u) {
        let floor_db = DB_PER_LOG2 * log2(max(peak, params.amin)) - ref_db - params.top_db;
        db = max(db, floor_db);
    }
    values[at] = db;
}

//! Comparisons with stated tolerances, reporting the worst element.

use kiln_core::{Tensor, TensorData};

/// Max of `|a - r|` and whether every element passes `|a - r| <= atol + rtol * |r|`.
pub fn close_f32(actual: &[f32], reference: &[f32], atol: f64, rtol: f64) -> Result<f64, String> {
    if actual.len() != reference.len() {
        return Err(format!(
            "length {} != reference {}",
            actual.len(),
            reference.len()
        ));
    }
    let mut worst = 0.0f64;
    for (i, (&a, &r)) in actual.iter().zip(reference).enumerate() {
        let (a, r) = (f64::from(a), f64::from(r));
        let diff = (a - r).abs();
        // Written so NaN fails too.
        if diff.is_nan() || diff > atol + rtol * r.abs() {
            return Err(format!(
                "element {i}: {a} vs reference {r} (|diff| {diff:e} > atol {atol:e} + rtol {rtol:e} * |ref|)"
            ));
        }
        worst = worst.max(diff);
    }
    Ok(worst)
}

/// Max and mean absolute difference of two uint8 arrays.
pub fn diff_u8(actual: &[u8], reference: &[u8]) -> Result<(u8, f64), String> {
    if actual.len() != reference.len() {
        return Err(format!(
            "length {} != reference {}",
            actual.len(),
            reference.len()
        ));
    }
    let mut max = 0u8;
    let mut sum = 0u64;
    for (&a, &r) in actual.iter().zip(reference) {
        let d = a.abs_diff(r);
        max = max.max(d);
        sum += u64::from(d);
    }
    Ok((max, sum as f64 / actual.len().max(1) as f64))
}

pub fn expect_shape(actual: &Tensor, shape: &[usize]) -> Result<(), String> {
    if actual.shape != shape {
        return Err(format!("shape {:?} != reference {:?}", actual.shape, shape));
    }
    Ok(())
}

pub fn f32s(t: &Tensor) -> &[f32] {
    match &t.data {
        TensorData::F32(v) => v,
        other => panic!("expected float32, got {:?}", std::mem::discriminant(other)),
    }
}

pub fn u8s(t: &Tensor) -> &[u8] {
    t.as_u8()
        .unwrap_or_else(|| panic!("expected uint8, got {}", t.dtype().name()))
}

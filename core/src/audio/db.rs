//! `librosa.power_to_db`.

use crate::spec::{DbParams, DbRef};

/// The reference level in dB for `values` (`ref=np.max` uses the maximum over the whole array).
pub fn reference_db(params: &DbParams, max_value: f64) -> f64 {
    let reference = match params.reference {
        DbRef::Value(v) => v.abs(),
        DbRef::Max => max_value,
    };
    10.0 * reference.max(params.amin).log10()
}

/// `10 * log10(max(S, amin)) - ref_db`, clipped at `max - top_db` over the whole array.
///
/// In float32, as librosa computes it on float32 spectrograms (NumPy's float32 `log10`): the
/// float64 version cost as much as the STFT itself and was no closer to librosa.
pub fn power_to_db(params: &DbParams, values: &mut [f32]) {
    let max_value = values.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let ref_db = reference_db(params, max_value) as f32;
    let amin = params.amin as f32;
    let mut peak = f32::NEG_INFINITY;
    for v in values.iter_mut() {
        let db = 10.0 * v.max(amin).log10() - ref_db;
        peak = peak.max(db);
        *v = db;
    }
    if let Some(top_db) = params.top_db {
        let floor = (f64::from(peak) - top_db) as f32;
        values.iter_mut().for_each(|v| *v = v.max(floor));
    }
}

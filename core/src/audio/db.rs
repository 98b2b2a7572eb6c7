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
    // Comparisons rather than `f32::max` (which orders NaN) so the loops vectorize; each
    // treats NaN as `f32::max` did: skipped by the maxima, replaced by `amin`.
    let max_value = values
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m }) as f64;
    let ref_db = reference_db(params, max_value) as f32;
    let amin = params.amin as f32;
    for v in values.iter_mut() {
        *v = if *v > amin { *v } else { amin };
    }
    log10_in_place(values);
    for v in values.iter_mut() {
        *v = 10.0 * *v - ref_db;
    }
    if let Some(top_db) = params.top_db {
        let peak = values
            .iter()
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        let floor = (f64::from(peak) - top_db) as f32;
        values
            .iter_mut()
            .for_each(|v| *v = if *v > floor { *v } else { floor });
    }
}

/// `log10` of every value, in a loop the compiler vectorizes (glibc's scalar `log10f` was a
/// third of a log-mel spectrogram's time). Normal positive floats go through the identity
/// `log10(m * 2^e) = e log10(2) + ln(m) log10(e)` with `m` in `[sqrt(1/2), sqrt(2))` and
/// `ln(m) = 2 atanh((m - 1) / (m + 1))` to the t^11 term (truncation below 1e-9, so results
/// are within a few float32 steps of the exact value). A slice holding zeros, subnormals,
/// infinities or NaN (a zero `amin`, an overflowing power) takes `f32::log10` throughout.
pub(crate) fn log10_in_place(values: &mut [f32]) {
    const LOG10_2: f32 = std::f32::consts::LOG10_2;
    const LOG10_E: f32 = std::f32::consts::LOG10_E;
    let ordinary = values.iter().fold(true, |all, x| {
        all & (f32::MIN_POSITIVE..f32::INFINITY).contains(x)
    });
    if !ordinary {
        values.iter_mut().for_each(|v| *v = v.log10());
        return;
    }
    for v in values.iter_mut() {
        let bits = v.to_bits();
        let exponent = ((bits >> 23) & 0xff) as i32 - 127;
        let mantissa = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
        let high = mantissa > std::f32::consts::SQRT_2;
        let m = if high { mantissa * 0.5 } else { mantissa };
        let e = (exponent + i32::from(high)) as f32;
        let t = (m - 1.0) / (m + 1.0);
        let t2 = t * t;
        let series = 1.0
            + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 + t2 * (1.0 / 11.0)))));
        *v = e * LOG10_2 + (2.0 * t * series) * LOG10_E;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_log10_is_within_a_few_float_steps_everywhere() {
        let mut worst_steps = 0f64;
        let mut x = f32::MIN_POSITIVE;
        let mut inputs = Vec::new();
        while x < f32::MAX / 1.01 {
            inputs.push(x);
            x *= 1.000_37;
        }
        inputs.extend([
            1.0,
            2.0,
            10.0,
            0.5,
            std::f32::consts::SQRT_2,
            1e-10,
            1e10,
            f32::MAX,
        ]);
        let mut got = inputs.clone();
        log10_in_place(&mut got);
        for (&x, &g) in inputs.iter().zip(&got) {
            let exact = f64::from(x).log10();
            let step = f64::from(f32::EPSILON) * exact.abs().max(1e-3);
            worst_steps = worst_steps.max((f64::from(g) - exact).abs() / step);
        }
        // Near log10 = 0 the absolute error is what matters: within 1e-7.
        assert!(worst_steps < 4.0, "worst error {worst_steps} float steps");
    }

    #[test]
    fn unusual_values_take_the_exact_path() {
        let mut v = vec![0.0, 1e-45, f32::INFINITY, f32::NAN, 100.0];
        log10_in_place(&mut v);
        assert_eq!(v[0], f32::NEG_INFINITY);
        assert_eq!(v[1], 1e-45f32.log10());
        assert_eq!(v[2], f32::INFINITY);
        assert!(v[3].is_nan());
        assert_eq!(v[4], 2.0);
    }
}

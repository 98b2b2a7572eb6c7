//! MFCC as `librosa.feature.mfcc` from a log-power mel spectrogram: orthonormal DCT-II over the
//! mel axis, first `n_mfcc` coefficients.

/// The `(n_mfcc, n_mels)` orthonormal DCT-II matrix (scipy `dct(type=2, norm='ortho')`).
pub fn dct_matrix(n_mfcc: usize, n_mels: usize) -> Vec<f32> {
    let n = n_mels as f64;
    let mut m = Vec::with_capacity(n_mfcc * n_mels);
    for k in 0..n_mfcc {
        let scale = if k == 0 {
            (1.0 / n).sqrt()
        } else {
            (2.0 / n).sqrt()
        };
        for i in 0..n_mels {
            let angle = std::f64::consts::PI * k as f64 * (2 * i + 1) as f64 / (2.0 * n);
            m.push((scale * angle.cos()) as f32);
        }
    }
    m
}

/// Applies `dct` (`(n_mfcc, n_mels)`) to one channel `(n_mels, n_frames)`, writing `(n_mfcc, n_frames)`.
pub fn apply_dct(dct: &[f32], n_mels: usize, mel_db: &[f32], n_frames: usize, out: &mut [f32]) {
    for (k, coefficients) in dct.chunks_exact(n_mels).enumerate() {
        let row = &mut out[k * n_frames..(k + 1) * n_frames];
        for t in 0..n_frames {
            let mut acc = 0.0f64;
            for (i, &c) in coefficients.iter().enumerate() {
                acc += f64::from(c) * f64::from(mel_db[i * n_frames + t]);
            }
            row[t] = acc as f32;
        }
    }
}

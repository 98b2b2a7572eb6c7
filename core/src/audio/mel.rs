//! Mel filterbanks as `librosa.filters.mel` (float32 weights), stored sparse: each filter is a
//! contiguous run of FFT bins.

/// Hz to mel, Slaney (linear below 1 kHz, log above) or HTK.
pub fn hz_to_mel(hz: f64, htk: bool) -> f64 {
    if htk {
        return 2595.0 * (1.0 + hz / 700.0).log10();
    }
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() / logstep
    } else {
        hz / f_sp
    }
}

pub fn mel_to_hz(mel: f64, htk: bool) -> f64 {
    if htk {
        return 700.0 * (10f64.powf(mel / 2595.0) - 1.0);
    }
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

/// `n` mel-spaced frequencies from `fmin` to `fmax` (NumPy `linspace` in mel, then back to Hz).
pub fn mel_frequencies(n: usize, fmin: f64, fmax: f64, htk: bool) -> Vec<f64> {
    let lo = hz_to_mel(fmin, htk);
    let hi = hz_to_mel(fmax, htk);
    let step = if n > 1 { (hi - lo) / (n - 1) as f64 } else { 0.0 };
    (0..n)
        .map(|i| {
            if i + 1 == n && n > 1 {
                hi
            } else {
                i as f64 * step + lo
            }
        })
        .map(|m| mel_to_hz(m, htk))
        .collect()
}

/// One triangular filter: weights for bins `first_bin .. first_bin + weights.len()`.
#[derive(Debug, Clone, PartialEq)]
pub struct MelFilter {
    pub first_bin: usize,
    pub weights: Vec<f32>,
}

/// A sparse mel filterbank for a given sample rate and FFT size.
#[derive(Debug, Clone, PartialEq)]
pub struct MelFilterbank {
    pub n_freq: usize,
    pub filters: Vec<MelFilter>,
}

impl MelFilterbank {
    /// Builds the filterbank with librosa's arithmetic: triangles in f64, stored as f32, then
    /// scaled by the Slaney area norm `2 / (f[i+2] - f[i])` in f64 and stored as f32 again.
    pub fn new(
        sample_rate: f64,
        n_fft: usize,
        n_mels: usize,
        fmin: f64,
        fmax: f64,
        htk: bool,
        slaney_norm: bool,
    ) -> Self {
        let n_freq = n_fft / 2 + 1;
        let bin_hz = 1.0 / (n_fft as f64 * (1.0 / sample_rate));
        let fft_freqs: Vec<f64> = (0..n_freq).map(|k| k as f64 * bin_hz).collect();
        let mel_f = mel_frequencies(n_mels + 2, fmin, fmax, htk);
        let filters = (0..n_mels)
            .map(|i| {
                let lower_width = mel_f[i + 1] - mel_f[i];
                let upper_width = mel_f[i + 2] - mel_f[i + 1];
                let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
                let dense: Vec<f32> = fft_freqs
                    .iter()
                    .map(|&f| {
                        let lower = -(mel_f[i] - f) / lower_width;
                        let upper = (mel_f[i + 2] - f) / upper_width;
                        let tri = lower.min(upper).max(0.0) as f32;
                        if slaney_norm {
                            (f64::from(tri) * enorm) as f32
                        } else {
                            tri
                        }
                    })
                    .collect();
                let first = dense.iter().position(|&w| w != 0.0);
                match first {
                    None => MelFilter {
                        first_bin: 0,
                        weights: Vec::new(),
                    },
                    Some(first) => {
                        let last = dense.iter().rposition(|&w| w != 0.0).unwrap_or(first);
                        MelFilter {
                            first_bin: first,
                            weights: dense[first..=last].to_vec(),
                        }
                    }
                }
            })
            .collect();
        MelFilterbank { n_freq, filters }
    }

    pub fn n_mels(&self) -> usize {
        self.filters.len()
    }

    /// The dense `(n_mels, n_freq)` matrix, as librosa returns it.
    pub fn dense(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.n_mels() * self.n_freq];
        for (m, f) in self.filters.iter().enumerate() {
            out[m * self.n_freq + f.first_bin..][..f.weights.len()].copy_from_slice(&f.weights);
        }
        out
    }

    /// Applies the filterbank to one channel of a `(n_freq, n_frames)` spectrogram, writing
    /// `(n_mels, n_frames)`.
    pub fn apply(&self, spectrogram: &[f32], n_frames: usize, out: &mut [f32]) {
        for (m, filter) in self.filters.iter().enumerate() {
            let row = &mut out[m * n_frames..(m + 1) * n_frames];
            row.fill(0.0);
            for (j, &w) in filter.weights.iter().enumerate() {
                let bin = &spectrogram[(filter.first_bin + j) * n_frames..][..n_frames];
                for (o, &s) in row.iter_mut().zip(bin) {
                    *o += w * s;
                }
            }
        }
    }
}

//! Short-time Fourier transform as `librosa.stft`: centred frames padded by `n_fft // 2`
//! (zeros or reflection), windowed, real-input FFT of any length.

use std::fmt;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use super::mel::MelFilterbank;
use super::window::window;
use crate::audio::decode::check_finite;
use crate::error::{Error, Result};
use crate::limits::MAX_TENSOR_ELEMENTS;
use crate::spec::{PadMode, StftParams};

/// A reusable STFT: owns the padded window and the FFT plan. Independent of the signal length,
/// so one plan serves clips of any duration.
pub struct StftPlan {
    pub params: StftParams,
    pub window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl fmt::Debug for StftPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StftPlan")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl StftPlan {
    pub fn new(params: StftParams) -> Self {
        let window = window(params.window, params.win_length, params.n_fft);
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(params.n_fft);
        StftPlan { params, window, fft }
    }

    pub fn n_freq(&self) -> usize {
        self.params.n_fft / 2 + 1
    }

    /// Samples of padding before the signal (librosa pads `n_fft // 2` on both sides).
    pub fn pad(&self) -> usize {
        if self.params.center {
            self.params.n_fft / 2
        } else {
            0
        }
    }

    /// Number of frames for a signal of `samples`: see [`frame_count`].
    pub fn n_frames(&self, samples: usize) -> Result<usize> {
        frame_count(&self.params, samples)
    }

    /// The sample at position `index` of the padded signal.
    pub fn padded_sample(&self, signal: &[f32], index: usize) -> f32 {
        let i = index as isize - self.pad() as isize;
        let n = signal.len() as isize;
        if (0..n).contains(&i) {
            return signal[i as usize];
        }
        match self.params.pad_mode {
            PadMode::Constant => 0.0,
            PadMode::Reflect => signal[reflect_index(i, n)],
        }
    }

    /// Writes the complex STFT of one channel as interleaved (re, im) pairs in
    /// `(n_freq, n_frames)` row-major order.
    pub fn process(&self, signal: &[f32], out: &mut [f32]) -> Result<()> {
        let n_frames = self.n_frames(signal.len())?;
        let n_freq = self.n_freq();
        if out.len() != 2 * n_freq * n_frames {
            return Err(Error::input(
                "stft",
                format!(
                    "output buffer holds {} values, {} needed",
                    out.len(),
                    2 * n_freq * n_frames
                ),
            ));
        }
        self.each_frame(signal, |t, spectrum| {
            for (k, c) in spectrum.iter().enumerate() {
                out[2 * (k * n_frames + t)] = c.re;
                out[2 * (k * n_frames + t) + 1] = c.im;
            }
        })
    }

    /// `stft` -> `magnitude` -> `mel` in one pass over the frames, writing `(n_mels, n_frames)`:
    /// each frame's spectrum goes straight through the filterbank, so the complex STFT (the
    /// largest intermediate) never exists. Every value is computed with the same operations in
    /// the same order as the three steps one after another, so the results are identical.
    pub fn process_mel(
        &self,
        signal: &[f32],
        power: f32,
        bank: &MelFilterbank,
        out: &mut [f32],
    ) -> Result<()> {
        let n_frames = self.n_frames(signal.len())?;
        if bank.n_freq != self.n_freq() || out.len() != bank.n_mels() * n_frames {
            return Err(Error::input(
                "mel",
                format!(
                    "filterbank expects {} bins, the STFT gives {}",
                    bank.n_freq,
                    self.n_freq()
                ),
            ));
        }
        let mut spectrum_power = vec![0.0f32; bank.n_freq];
        self.each_frame(signal, |t, spectrum| {
            for (p, c) in spectrum_power.iter_mut().zip(spectrum) {
                *p = magnitude_of(c.re, c.im, power);
            }
            for (m, filter) in bank.filters.iter().enumerate() {
                let bins = &spectrum_power[filter.first_bin..][..filter.weights.len()];
                let mut acc = 0.0f32;
                for (&w, &s) in filter.weights.iter().zip(bins) {
                    acc += w * s;
                }
                out[m * n_frames + t] = acc;
            }
        })
    }

    /// Windows each frame (centred and padded as librosa does) and hands its spectrum to `use_frame`.
    fn each_frame(&self, signal: &[f32], mut use_frame: impl FnMut(usize, &[Complex<f32>])) -> Result<()> {
        check_finite("stft", signal)?;
        let n_frames = self.n_frames(signal.len())?;
        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let hop = self.params.hop_length;
        let pad = self.pad();
        for t in 0..n_frames {
            let start = t * hop;
            let inside = start >= pad && start + self.params.n_fft <= pad + signal.len();
            if inside {
                // Slices of equal length: the multiply vectorizes.
                let samples = &signal[start - pad..][..self.params.n_fft];
                for ((slot, &x), &w) in frame.iter_mut().zip(samples).zip(self.window.iter()) {
                    *slot = x * w;
                }
            } else {
                for (n, slot) in frame.iter_mut().enumerate() {
                    *slot = self.padded_sample(signal, start + n) * self.window[n];
                }
            }
            self.fft
                .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                .map_err(|e| Error::input("stft", e.to_string()))?;
            use_frame(t, &spectrum);
        }
        Ok(())
    }
}

/// Number of STFT frames for a signal of `samples` (the plan need not exist: [`crate::Spec::output`]
/// uses it), or librosa's error for an empty signal or an uncentred one shorter than the window. A spectrogram of more than [`MAX_TENSOR_ELEMENTS`] values
/// (frames x bins, per channel) is an error before anything is allocated.
pub fn frame_count(params: &StftParams, samples: usize) -> Result<usize> {
    let n_fft = params.n_fft;
    let pad = if params.center { n_fft / 2 } else { 0 };
    let n_freq = n_fft / 2 + 1;
    if samples == 0 {
        return Err(Error::input("stft", "the signal is empty"));
    }
    let padded = samples.saturating_add(2 * pad);
    if padded < n_fft {
        return Err(Error::input(
            "stft",
            format!(
                "n_fft={n_fft} is too large for {}analysis of a signal of length {samples}",
                if params.center { "" } else { "uncentered " }
            ),
        ));
    }
    let n_frames = 1 + (padded - n_fft) / params.hop_length;
    match n_frames.checked_mul(n_freq) {
        Some(values) if values <= MAX_TENSOR_ELEMENTS => Ok(n_frames),
        _ => Err(Error::input(
            "stft",
            format!(
                "{n_frames} frames x {n_freq} bins exceeds the limit of {MAX_TENSOR_ELEMENTS} values \
                 (raise hop_length or lower n_fft)"
            ),
        )),
    }
}

/// NumPy's `pad(mode='reflect')` index for any offset, including pads longer than the signal
/// (reflection repeats with period `2 * (n - 1)`).
pub fn reflect_index(i: isize, n: isize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - m }) as usize
}

/// `|X| ** power` of interleaved complex values.
pub fn magnitude(complex: &[f32], power: f32, out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(complex.chunks_exact(2)) {
        *o = magnitude_of(c[0], c[1], power);
    }
}

/// `|re + i im| ** power`, as `np.abs(S) ** power` (the square without a square root).
#[inline]
pub fn magnitude_of(re: f32, im: f32, power: f32) -> f32 {
    if power == 2.0 {
        re * re + im * im
    } else if power == 1.0 {
        re.hypot(im)
    } else {
        re.hypot(im).powf(power)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_matches_numpy_for_long_pads() {
        // np.pad([0, 1, 2], 5, mode='reflect') == [1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1] (NumPy 2.4)
        let got: Vec<usize> = (-5..8).map(|i| reflect_index(i, 3)).collect();
        assert_eq!(got, vec![1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1]);
    }
}

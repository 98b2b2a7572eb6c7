//! Analysis windows as `scipy.signal.get_window(name, n, fftbins=True)` (periodic), centred and
//! zero-padded to `n_fft` as librosa's `util.pad_center`.

use crate::spec::WindowKind;

pub fn window(kind: WindowKind, win_length: usize, n_fft: usize) -> Vec<f32> {
    let m = win_length as f64;
    let tau = 2.0 * std::f64::consts::PI;
    let core = (0..win_length).map(|i| {
        let phase = tau * i as f64 / m;
        match kind {
            WindowKind::Hann => 0.5 - 0.5 * phase.cos(),
            WindowKind::Hamming => 0.54 - 0.46 * phase.cos(),
            WindowKind::Ones => 1.0,
        }
    });
    let left = (n_fft - win_length) / 2;
    let mut padded = vec![0.0f32; n_fft];
    for (slot, w) in padded[left..].iter_mut().zip(core) {
        *slot = w as f32;
    }
    padded
}

// NumPy's pad(mode='reflect') index for any offset, pads longer than the signal included
// (reflection repeats with period 2 * (n - 1)). Shared by stft.wgsl and fft.wgsl: it is
// prepended to each of them, as WGSL has no includes.

fn reflect_index(i: i32, n: i32) -> i32 {
    if (n == 1) {
        return 0;
    }
    let period = 2 * (n - 1);
    var m = i % period;
    if (m < 0) {
        m = m + period;
    }
    if (m < n) {
        return m;
    }
    return period - m;
}


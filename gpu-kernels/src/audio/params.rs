//! The audio shaders' uniform blocks, field for field as each `.wgsl` declares `Params`.

use crate::uniform::uniform;

uniform! {
    /// `stft.wgsl`: framing, padding, window and a direct DFT of any length.
    Stft for crate::audio::STFT_WGSL {
        n_fft: u32,
        hop: u32,
        pad: u32,
        n_samples: u32,
        n_frames: u32,
        n_freq: u32,
        reflect: u32,
        frame_offset: u32,
    }
}

uniform! {
    /// `fft.wgsl`: the same framing with a packed half-length FFT in workgroup memory.
    Fft for crate::audio::FFT_WGSL {
        n_fft: u32,
        hop: u32,
        pad: u32,
        n_samples: u32,
        n_frames: u32,
        n_freq: u32,
        reflect: u32,
        frame_offset: u32,
        half: u32,
        n_factors: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

uniform! {
    /// `magnitude.wgsl`: |X|^power.
    Magnitude for crate::audio::MAGNITUDE_WGSL {
        count: u32,
        power: f32,
        _pad0: u32,
        _pad1: u32,
    }
}

uniform! {
    /// `mel.wgsl`: the sparse filterbank.
    Mel for crate::audio::MEL_WGSL {
        n_freq: u32,
        n_mels: u32,
        n_frames: u32,
        channels: u32,
    }
}

uniform! {
    /// `db.wgsl`: the peak reduction and power_to_db share these.
    Db for crate::audio::DB_WGSL {
        count: u32,
        ref_is_max: u32,
        clip_top: u32,
        _pad: u32,
        amin: f32,
        ref_db: f32,
        top_db: f32,
        _pad2: f32,
    }
}

uniform! {
    /// `dct.wgsl`: the MFCC DCT-II.
    Dct for crate::audio::DCT_WGSL {
        n_mels: u32,
        n_mfcc: u32,
        n_frames: u32,
        channels: u32,
    }
}

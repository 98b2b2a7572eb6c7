"""Reference cases for audio_formats: FLAC, MP3 and Ogg Vorbis written by soundfile (libsndfile with
libFLAC, LAME and libvorbis), read back the ways users read them.

- FLAC: `soundfile.read(path, dtype='float32')`, which kiln must equal exactly.
- MP3 and Vorbis: `librosa.load(path, sr=None, mono=False)` (soundfile underneath: mpg123 and
  libvorbisfile, gapless), whose sample count and alignment kiln must equal, values within 1e-5.
- A log-mel spectrogram over an MP3 (librosa.load, melspectrogram, power_to_db), the whole path.
- WAV as soundfile reads it beyond what make_refdata covers: 24 valid bits in 4-byte containers
  (WAVE_FORMAT_EXTENSIBLE, written here by hand: libsndfile writes 3-byte ones) and 64-bit float.
"""
import struct

import librosa
import numpy as np
import soundfile as sf

EXACT = {"rule": "exact", "atol": 0.0, "rtol": 0.0}
# The bound for lossy formats: two float decoders (symphonia against mpg123/libvorbis)
# differ in rounding, not in the samples they produce or where they start.
LOSSY = {"rule": "elementwise |actual - ref| <= atol, same shape (gapless: same sample count and alignment)",
         "atol": 1e-5, "rtol": 0.0}

FILES = [
    # name, format, subtype, sample rate, frames, channels
    ("g_flac16_16k_mono", "FLAC", "PCM_16", 16000, 12345, 1),
    ("g_flac24_44k_stereo", "FLAC", "PCM_24", 44100, 9999, 2),
    ("g_flac24_48k_mono", "FLAC", "PCM_24", 48000, 4801, 1),
    ("g_mp3_44k_mono", "MP3", "MPEG_LAYER_III", 44100, 22051, 1),
    ("g_mp3_44k_stereo", "MP3", "MPEG_LAYER_III", 44100, 17777, 2),
    ("g_mp3_16k_mono", "MP3", "MPEG_LAYER_III", 16000, 16001, 1),
    ("g_mp3_22k_stereo", "MP3", "MPEG_LAYER_III", 22050, 11111, 2),
    ("g_vorbis_16k_mono", "OGG", "VORBIS", 16000, 15999, 1),
    ("g_vorbis_44k_stereo", "OGG", "VORBIS", 44100, 20001, 2),
]
EXTENSION = {"FLAC": "flac", "MP3": "mp3", "OGG": "ogg"}


def cases(b):
    """Adds this family's inputs and cases to the builder `b` (see make_refdata.Builder)."""
    # Imported here: make_refdata imports this module at its top.
    from make_refdata import signal

    for name, fmt, subtype, sr, frames, channels in FILES:
        path = f"inputs/{name}.{EXTENSION[fmt]}"
        y = signal(b.rng, sr, frames, channels)
        sf.write(b.out / path, y if channels > 1 else y[:, 0], sr, format=fmt, subtype=subtype)
        b.inputs.append({"file": path, "kind": "audio", "sr": sr, "channels": channels, "frames": frames,
                         "format": fmt, "subtype": subtype})
        if fmt == "FLAC":
            y32, file_sr = sf.read(b.out / path, dtype="float32")
            assert file_sr == sr and len(y32) == frames
            b.save(f"{name}_decode", y32, {"category": "audio_decode", "input": path, "library": "soundfile",
                                           "call": "soundfile.read(path, dtype='float32')",
                                           "params": {"dtype": "float32"}, "expected_sr": file_sr,
                                           "tolerance": EXACT})
            continue
        loaded, file_sr = librosa.load(b.out / path, sr=None, mono=False)
        # Gapless decoding gives back exactly the frames that were encoded.
        assert file_sr == sr and loaded.shape[-1] == frames, (name, loaded.shape, frames)
        b.save(f"{name}_decode", loaded, {"category": "audio_decode", "input": path, "library": "librosa",
                                          "call": "librosa.load(path, sr=None, mono=False)",
                                          "params": {"sr": None, "mono": False}, "expected_sr": file_sr,
                                          "tolerance": LOSSY})
    # The whole path over an MP3: load, mel spectrogram, dB.
    name, sr = "g_mp3_16k_mono", 16000
    path = f"inputs/{name}.mp3"
    y, _ = librosa.load(b.out / path, sr=None, mono=False)
    call = dict(sr=sr, n_fft=400, hop_length=160, win_length=400, window="hann", center=True, pad_mode="constant",
                power=2.0, n_mels=80, fmin=0.0, fmax=sr / 2, htk=False, norm="slaney")
    D = librosa.power_to_db(librosa.feature.melspectrogram(y=y.astype(np.float64), **call))
    b.save(f"{name}_logmel80", D.astype(np.float32),
           {"category": "power_to_db", "input": path, "library": "librosa",
            "function": "librosa.power_to_db(librosa.feature.melspectrogram(librosa.load(path, sr=None)))",
            "params": {"ref": 1.0, "amin": 1e-10, "top_db": 80.0, "upstream": call},
            "tolerance": {"rule": "elementwise |actual - ref| <= atol (dB)", "atol": 0.002, "rtol": 0.0}})
    wav_cases(b)
    # An input without a case: kiln refuses Ogg Opus with an error naming it (tests/audio_formats.rs).
    path = "inputs/g_opus_48k_mono.opus"
    sf.write(b.out / path, signal(b.rng, 48000, 4800, 1)[:, 0], 48000, format="OGG", subtype="OPUS")
    b.inputs.append({"file": path, "kind": "audio", "sr": 48000, "channels": 1, "frames": 4800, "format": "OGG",
                     "subtype": "OPUS", "note": "no case: kiln has no Opus decoder"})


def wav_extensible_24_in_32(path, samples, sr):
    """A WAVE_FORMAT_EXTENSIBLE file of 24 valid bits in 4-byte containers, left-aligned as the
    format specifies (the value << 8); `samples` is (frames, channels) of 24-bit integers."""
    frames, channels = samples.shape
    subformat_pcm = struct.pack("<H", 1) + bytes.fromhex("000000001000800000aa00389b71")
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, sr, sr * 4 * channels, 4 * channels, 32, 22, 24,
                      (1 << channels) - 1) + subformat_pcm
    data = (samples.astype("<i4") << 8).tobytes()
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    (path).write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def wav_cases(b):
    from make_refdata import signal

    y = signal(b.rng, 22050, 3001, 2)
    ints = np.round(y * 8388607).astype(np.int64)
    ints[:4, 0] = [-8388608, 8388607, 0, -1]
    path = "inputs/g_wavex_24in32_22k_stereo.wav"
    wav_extensible_24_in_32(b.out / path, ints, 22050)
    y64 = signal(b.rng, 16000, 2999, 1)[:, 0] * 1.3
    y64[:5] = [1e-40, -3.0000001e38, 0.1, 2.0 ** -149 / 3, np.pi]  # rounded as a C cast
    path64 = "inputs/g_wav_double_16k_mono.wav"
    sf.write(b.out / path64, y64, 16000, subtype="DOUBLE")
    for name, path, subtype, sr, frames, channels in [
            ("g_wavex_24in32_22k_stereo", path, "PCM_24 in 4-byte containers (WAVE_FORMAT_EXTENSIBLE)", 22050, 3001, 2),
            ("g_wav_double_16k_mono", path64, "DOUBLE", 16000, 2999, 1)]:
        b.inputs.append({"file": path, "kind": "audio", "sr": sr, "channels": channels, "frames": frames,
                         "subtype": subtype})
        y32, file_sr = sf.read(b.out / path, dtype="float32")
        b.save(f"{name}_decode", y32, {"category": "audio_decode", "input": path, "library": "soundfile",
                                       "call": "soundfile.read(path, dtype='float32')", "params": {"dtype": "float32"},
                                       "expected_sr": file_sr, "tolerance": EXACT})

#!/usr/bin/env python3
"""Generate a reference set in the format of ../shared/refdata (manifest.json, inputs/,
outputs/) with librosa, soundfile and Pillow, over inputs and parameters that the shared public
set does not cover: 8/24/32-bit and float WAVs, 3 channels, odd FFT sizes, Hamming windows,
reflect padding, HTK and un-normalised mel, dB variants, MFCC, resampling, fix_length (padding
and trimming, alone and before a log-mel), grayscale/RGB/RGBA PNG and grayscale JPEG, up- and
down-scaling to many sizes (including Pillow 13's vertical-first case).

    python make_refdata.py OUT_DIR [--seed N]

kiln's test suite reads the set through KILN_REFDATA; nothing here is kiln code.
"""
import argparse
import json
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
from PIL import Image

import audio_formats
import jpeg_variants
import png_modes

TOL = {"rule": "elementwise |actual - ref| <= atol + rtol * |ref|"}


def spectral_tol(ref, rtol=1e-4, rel_atol=1e-5):
    return dict(TOL, rtol=rtol, atol=float(rel_atol * np.abs(ref).max()))


class Builder:
    def __init__(self, out, seed):
        self.out = Path(out)
        (self.out / "inputs").mkdir(parents=True, exist_ok=True)
        (self.out / "outputs").mkdir(parents=True, exist_ok=True)
        self.rng = np.random.default_rng(seed)
        self.cases = []
        self.inputs = []
        self.seed = seed

    def save(self, case_id, array, case):
        path = f"outputs/{case_id}.npy"
        np.save(self.out / path, np.ascontiguousarray(array))
        case.update(id=case_id, output=path, shape=list(array.shape), dtype=str(array.dtype))
        self.cases.append(case)

    def write_manifest(self):
        manifest = {
            "name": "refdata-kiln-generated",
            "set": "generated",
            "generator": f"tests/refgen/make_refdata.py (seed {self.seed})",
            "versions": {"librosa": librosa.__version__, "numpy": np.__version__, "soundfile": sf.__version__,
                         "pillow": Image.__version__},
            "inputs": self.inputs,
            "cases": self.cases,
        }
        (self.out / "manifest.json").write_text(json.dumps(manifest, indent=1))


def signal(rng, sr, frames, channels):
    t = np.arange(frames) / sr
    out = []
    for c in range(channels):
        f = rng.uniform(80, sr / 3)
        y = 0.5 * np.sin(2 * np.pi * f * t) * (0.6 + 0.4 * np.sin(2 * np.pi * (c + 1) * t))
        y += 0.2 * np.sin(2 * np.pi * rng.uniform(50, sr / 2.2) * t) + rng.normal(0, 0.03, frames)
        out.append(y)
    return np.clip(np.stack(out, axis=1), -1, 1)


def audio_cases(b):
    wavs = [
        ("g_8k_mono_u8", 8000, 5000, 1, "PCM_U8"),
        ("g_22k_stereo_pcm24", 22050, 11025, 2, "PCM_24"),
        ("g_16k_3ch_pcm32", 16000, 7777, 3, "PCM_32"),
        ("g_48k_mono_float", 48000, 12000, 1, "FLOAT"),
        ("g_16k_mono_pcm16_300", 16000, 300, 1, "PCM_16"),
    ]
    for name, sr, frames, channels, subtype in wavs:
        path = f"inputs/{name}.wav"
        sf.write(b.out / path, signal(b.rng, sr, frames, channels), sr, subtype=subtype)
        b.inputs.append({"file": path, "kind": "audio", "sr": sr, "channels": channels, "frames": frames, "subtype": subtype})
        y32, file_sr = sf.read(b.out / path, dtype="float32")
        b.save(f"{name}_decode", y32, {"category": "audio_decode", "input": path, "library": "soundfile",
                                       "call": "soundfile.read(path, dtype='float32')", "params": {"dtype": "float32"},
                                       "expected_sr": file_sr, "tolerance": {"rule": "exact", "atol": 0.0, "rtol": 0.0}})
        y = y32.T.astype(np.float64) if channels > 1 else y32.astype(np.float64)
        stfts = [
            dict(n_fft=512, hop_length=128, win_length=512, window="hamming", center=True, pad_mode="constant"),
            dict(n_fft=333, hop_length=100, win_length=300, window="hann", center=True, pad_mode="reflect"),
            dict(n_fft=1024, hop_length=256, win_length=1024, window="ones", center=False, pad_mode="constant"),
        ]
        for i, p in enumerate(stfts):
            for power in (1.0, 2.0):
                case = {"category": "stft_magnitude" if power == 1.0 else "stft_power", "input": path,
                        "library": "librosa", "function": "librosa.stft", "params": dict(p, power=power)}
                cid = f"{name}_stft{i}_p{int(power)}"
                if not p["center"] and y.shape[-1] < p["n_fft"]:
                    case.update(id=cid, expect_error=True, output=None, tolerance=None)
                    b.cases.append(case)
                    continue
                ref = (np.abs(librosa.stft(y, **p)) ** power).astype(np.float32)
                case["tolerance"] = spectral_tol(ref, 1e-4 if power == 1 else 2e-4, 1e-5 if power == 1 else 2e-5)
                b.save(cid, ref, case)
        mels = [
            dict(n_fft=1024, hop_length=256, n_mels=40, fmin=30.0, fmax=sr / 2 * 0.9, htk=True, norm="slaney"),
            dict(n_fft=400, hop_length=160, n_mels=64, fmin=0.0, fmax=sr / 2, htk=False, norm=None),
        ]
        for i, p in enumerate(mels):
            call = dict(p, sr=sr, power=2.0, center=True, pad_mode="constant", window="hann", win_length=p["n_fft"])
            S = librosa.feature.melspectrogram(y=y, **call)
            b.save(f"{name}_mel{i}", S.astype(np.float32), {"category": "mel_spectrogram", "input": path, "library": "librosa",
                                                        "function": "librosa.feature.melspectrogram", "params": call,
                                                        "tolerance": spectral_tol(S)})
            for j, db in enumerate([dict(ref=1.0, amin=1e-10, top_db=80.0), dict(ref=0.5, amin=1e-5, top_db=None)]):
                D = librosa.power_to_db(S, **db)
                b.save(f"{name}_mel{i}_db{j}", D.astype(np.float32),
                       {"category": "power_to_db", "input": path, "library": "librosa", "function": "librosa.power_to_db",
                        "params": dict(db, upstream=call), "tolerance": {"rule": "elementwise |actual - ref| <= atol (dB)", "atol": 0.002, "rtol": 0.0}})
            D = librosa.power_to_db(S)
            M = librosa.feature.mfcc(S=D, n_mfcc=13)
            b.save(f"{name}_mel{i}_mfcc13", M.astype(np.float32),
                   {"category": "mfcc", "input": path, "library": "librosa", "function": "librosa.feature.mfcc",
                    "params": {"n_mfcc": 13, "db": {"ref": 1.0, "amin": 1e-10, "top_db": 80.0}, "upstream": call},
                    "tolerance": {"rule": "elementwise |actual - ref| <= atol", "atol": float(2e-3 * max(1.0, np.abs(M).max() / 100)), "rtol": 1e-4}})
        if sr != 16000:
            r = librosa.resample(y32.T if channels > 1 else y32, orig_sr=sr, target_sr=16000)
            b.save(f"{name}_resample16k", r.astype(np.float32),
                   {"category": "audio_resample", "input": path, "library": "librosa", "function": "librosa.resample (soxr_hq)",
                    "params": {"target_sr": 16000, "mono": False},
                    "note": "kiln resamples with rubato, not soxr: compared away from the edges with a loose tolerance",
                    "tolerance": {"rule": "interior elementwise |actual - ref| <= atol", "atol": 0.01, "edge": 64}})
    for sr, n_fft, n_mels, fmin, fmax, htk, norm in [(44100, 2048, 96, 20.0, 16000.0, False, "slaney"),
                                                     (8000, 255, 20, 100.0, 3800.0, True, None)]:
        fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm)
        b.save(f"melfb_sr{sr}_nfft{n_fft}_nmels{n_mels}", fb,
               {"category": "mel_filterbank", "input": None, "library": "librosa", "function": "librosa.filters.mel",
                "params": {"sr": sr, "n_fft": n_fft, "n_mels": n_mels, "fmin": fmin, "fmax": fmax, "htk": htk, "norm": norm},
                "tolerance": dict(TOL, rtol=1e-4, atol=float(1e-6 * fb.max()))})


def fix_length_cases(b):
    """librosa.util.fix_length on the last axis (soundfile's (frames, channels) transposed), padding
    and trimming, alone and before a log-mel spectrogram: the spec op `fix_length`."""
    exact = {"rule": "exact", "atol": 0.0, "rtol": 0.0}
    for name, size in [("g_16k_mono_pcm16_300", 16000), ("g_22k_stereo_pcm24", 4000)]:
        path = f"inputs/{name}.wav"
        y32, _ = sf.read(b.out / path, dtype="float32")
        fixed = librosa.util.fix_length(y32.T, size=size)
        b.save(f"{name}_fix_length{size}", fixed,
               {"category": "audio_fix_length", "input": path, "library": "librosa", "function": "librosa.util.fix_length",
                "params": {"fix_length": size}, "tolerance": exact})
    for name, sr, size in [("g_16k_mono_pcm16_300", 16000, 16000), ("g_48k_mono_float", 48000, 10000)]:
        path = f"inputs/{name}.wav"
        y32, _ = sf.read(b.out / path, dtype="float32")
        y = librosa.util.fix_length(y32, size=size).astype(np.float64)
        call = dict(sr=sr, n_fft=400, hop_length=160, win_length=400, window="hann", center=True, pad_mode="constant",
                    power=2.0, n_mels=80, fmin=0.0, fmax=sr / 2, htk=False, norm="slaney")
        D = librosa.power_to_db(librosa.feature.melspectrogram(y=y, **call))
        b.save(f"{name}_fix_length{size}_logmel80", D.astype(np.float32),
               {"category": "power_to_db", "input": path, "library": "librosa",
                "function": "librosa.power_to_db(librosa.feature.melspectrogram(librosa.util.fix_length(y, size)))",
                "params": {"ref": 1.0, "amin": 1e-10, "top_db": 80.0, "fix_length": size, "upstream": call},
                "tolerance": {"rule": "elementwise |actual - ref| <= atol (dB)", "atol": 0.002, "rtol": 0.0}})


def image_cases(b):
    images = []
    for name, mode, (w, h), fmt in [("g_png_l_77x45", "L", (77, 45), "PNG"), ("g_png_rgb_120x200", "RGB", (120, 200), "PNG"),
                                    ("g_png_rgba_90x61", "RGBA", (90, 61), "PNG"), ("g_jpeg_l_160x96", "L", (160, 96), "JPEG"),
                                    ("g_webp_lossless_rgb_83x57", "RGB", (83, 57), "WEBP-lossless"),
                                    ("g_webp_lossless_rgba_64x40", "RGBA", (64, 40), "WEBP-lossless"),
                                    ("g_webp_lossy_rgb_97x63", "RGB", (97, 63), "WEBP-lossy"),
                                    ("g_webp_lossy_rgba_70x45", "RGBA", (70, 45), "WEBP-lossy")]:
        yy, xx = np.mgrid[0:h, 0:w]
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        planes = []
        for c in range(channels):
            base = 127 + 100 * np.sin(xx / (3 + 2 * c) + yy / 7.0) * np.cos(yy / (5 + c))
            planes.append(base + b.rng.normal(0, 12, (h, w)))
        arr = np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.uint8)
        if mode == "RGBA":
            arr[..., 3] = np.clip(xx * 255 // max(1, w - 1) + b.rng.integers(-20, 20, (h, w)), 0, 255)
            arr[:5, :, 3] = 0
        arr = arr[..., 0] if mode == "L" else arr
        path = f"inputs/{name}.{ {'PNG': 'png', 'JPEG': 'jpg'}.get(fmt, 'webp') }"
        save = {"JPEG": ("JPEG", {"quality": 85}), "WEBP-lossless": ("WEBP", {"lossless": True}),
                "WEBP-lossy": ("WEBP", {"quality": 80})}.get(fmt, (fmt, {}))
        Image.fromarray(arr, mode).save(b.out / path, save[0], **save[1])
        b.inputs.append({"file": path, "kind": "image", "mode": mode, "width": w, "height": h, "format": fmt})
        decoded = np.asarray(Image.open(b.out / path))
        tol = {"rule": "uint8 |actual - ref|", "max_abs_diff": 0}
        if fmt == "JPEG":
            tol = {"rule": "uint8 |actual - ref|", "strict": {"max_abs_diff": 0}, "lenient": {"max_abs_diff": 8, "mean_abs_diff": 0.5}}
        b.save(f"{name}_decode", decoded, {"category": "image_decode", "input": path, "library": "Pillow",
                                           "params": {"mode": mode}, "tolerance": tol})
        images.append((name, path, w, h))
    sizes = lambda w, h: [(224, 224), (w * 2 + 3, h + 17), (max(1, w // 3), max(1, h // 5)), (w + 9, max(1, h // 4)), (31, 257)]
    for name, path, w, h in images:
        for ow, oh in sizes(w, h):
            for resample in ("NEAREST", "BILINEAR", "BICUBIC", "LANCZOS"):
                out = np.asarray(Image.open(b.out / path).resize((ow, oh), getattr(Image.Resampling, resample)))
                b.save(f"{name}_resize{ow}x{oh}_{resample.lower()}", out,
                       {"category": "image_resize", "input": path, "library": "Pillow", "function": "PIL.Image.Image.resize",
                        "params": {"size_wh": [ow, oh], "resample": resample},
                        "tolerance": {"rule": "uint8 |actual - ref|", "max_abs_diff": 0}})


def png16_cases(b):
    """16-bit grayscale PNG (Pillow's I;16), decoded as L and RGB the way Pillow 13 converts it."""
    h, w = 37, 53
    yy, xx = np.mgrid[0:h, 0:w]
    arr = (xx * 1237 + yy * 311 + b.rng.integers(0, 400, (h, w))) % 65536
    arr[0, :8] = [0, 1, 254, 255, 256, 1000, 40000, 65535]
    path = "inputs/g_png_i16_53x37.png"
    Image.fromarray(arr.astype(np.uint16)).save(b.out / path, "PNG")
    assert Image.open(b.out / path).mode == "I;16"
    b.inputs.append({"file": path, "kind": "image", "mode": "I;16", "width": w, "height": h, "format": "PNG"})
    for mode in ("L", "RGB"):
        b.save(f"g_png_i16_53x37_decode_{mode.lower()}", np.asarray(Image.open(b.out / path).convert(mode)),
               {"category": "image_decode", "input": path, "library": "Pillow", "function": f"Image.convert({mode!r})",
                "params": {"mode": mode}, "tolerance": {"rule": "uint8 |actual - ref|", "max_abs_diff": 0}})


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=20261125)
    args = parser.parse_args()
    b = Builder(args.out, args.seed)
    audio_cases(b)
    fix_length_cases(b)
    image_cases(b)
    png16_cases(b)
    # Each format family has its own module (one owner per file).
    png_modes.cases(b)
    jpeg_variants.cases(b)
    audio_formats.cases(b)
    b.write_manifest()
    print(f"{len(b.cases)} cases written to {args.out}")


if __name__ == "__main__":
    main()

"""Fixtures for kiln's Python suite: small synthetic datasets written in temporary
directories (WAV through the standard library's ``wave``, PNG through zlib), the repository's
example specs, and the ``kiln`` command line to compare against.

The CLI is ``$KILN_BIN``, else ``$CARGO_TARGET_DIR/debug/kiln`` (``target/debug/kiln`` of the
repository when the variable is unset); build it with ``cargo build -p kiln``. A missing CLI
fails the tests that need it rather than skipping them.
"""
from __future__ import annotations

import copy
import json
import os
import struct
import subprocess
import wave
import zlib
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import pytest

import kiln

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

SAMPLE_RATE = 16000
# Short clips keep conversion and the debug CLI fast: 4000 samples give 26 frames at hop 160.
CLIP_SAMPLES = 4000
LABELS = ("bird", "cat", "dog")


def load_example(name: str) -> Dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


LOG_MEL = load_example("log_mel.json")
MFCC = load_example("mfcc.json")
IMAGENET = load_example("imagenet.json")
# The log-mel with every clip cut or padded to CLIP_SAMPLES: a fixed (80, 26) tensor, so the
# entry's tensor column is a FixedSizeList and batches stack into one block.
FIXED_MEL = copy.deepcopy(LOG_MEL)
FIXED_MEL["ops"].insert(1, {"op": "fix_length", "size": CLIP_SAMPLES})
FIXED_MEL_SHAPE = (80, 1 + CLIP_SAMPLES // 160)
# A bare stft: complex64 output.
COMPLEX_STFT = {"ops": [{"op": "load_audio", "sample_rate": SAMPLE_RATE}, {"op": "stft", "n_fft": 256, "hop_length": 128}]}
DECODE_U8 = {"ops": [{"op": "decode_image", "mode": "RGB"}]}


# --- writing inputs --------------------------------------------------------------------------


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """16-bit PCM WAV; ``samples`` is float in [-1, 1], shape (n,) or (n, channels)."""
    samples = np.asarray(samples, dtype=np.float64)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def tone(index: int, samples: int = CLIP_SAMPLES, rate: int = SAMPLE_RATE, channels: int = 1) -> np.ndarray:
    """A clip unique to ``index``: a tone at its own frequency plus seeded noise."""
    rng = np.random.default_rng(index)
    t = np.arange(samples) / rate
    y = 0.4 * np.sin(2 * np.pi * (180.0 + 37.0 * index) * t) + 0.05 * rng.standard_normal(samples)
    if channels == 1:
        return y
    return np.stack([y * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1)


def write_png_rgb(path: Path, pixels: np.ndarray) -> Path:
    """An 8-bit RGB PNG (no Pillow here): one IDAT, filter type 0 on every row."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def make_audio_tree(root: Path, per_label: Sequence[int], samples: int = CLIP_SAMPLES) -> List[Path]:
    """``root/<label>/<label>_<i>.wav`` with ``per_label[k]`` clips for ``LABELS[k]``; every
    clip distinct."""
    files = []
    index = 0
    for label, count in zip(LABELS, per_label):
        for i in range(count):
            files.append(write_wav(root / label / f"{label}_{i:02d}.wav", tone(index, samples)))
            index += 1
    return files


# --- the CLI -----------------------------------------------------------------------------------


def kiln_bin() -> Path:
    explicit = os.environ.get("KILN_BIN")
    if explicit:
        path = Path(explicit)
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        path = target / "debug" / "kiln"
    if not path.is_file():
        pytest.fail(f"the kiln CLI is not at {path}: build it with `cargo build -p kiln` or set KILN_BIN")
    return path


def run_cli(*args: Any, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(kiln_bin()), *map(str, args)], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"kiln {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
    return result


def cli_error(*args: Any) -> str:
    """The message the CLI prints for a failing command (``kiln: error: ...`` without the
    prefix), asserting that it fails."""
    result = run_cli(*args, check=False)
    assert result.returncode != 0, f"kiln {args} should fail; stdout: {result.stdout}"
    lines = [line for line in result.stderr.splitlines() if line.startswith("kiln: error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0][len("kiln: error: "):]


def cli_transform(spec_path: Path, source: Path, out: Path) -> np.ndarray:
    run_cli("transform", "--spec", spec_path, source, "-o", out)
    return np.load(out)


def cli_convert(source: Path, spec_path: Path, cache: Path, *extra: Any) -> Dict[str, Any]:
    result = run_cli("convert", source, "--spec", spec_path, "--cache", cache, "--json", *extra)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def cli() -> Path:
    return kiln_bin()


# --- datasets ----------------------------------------------------------------------------------


def write_spec(directory: Path, name: str, spec: Dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(spec, indent=1))
    return path


@pytest.fixture(scope="session")
def specs(tmp_path_factory) -> Dict[str, Path]:
    """The specs as files, for the CLI and for ``spec=<path>``."""
    d = tmp_path_factory.mktemp("specs")
    return {
        "log_mel": EXAMPLES / "log_mel.json",
        "mfcc": EXAMPLES / "mfcc.json",
        "imagenet": EXAMPLES / "imagenet.json",
        "fixed_mel": write_spec(d, "fixed_mel.json", FIXED_MEL),
        "complex_stft": write_spec(d, "complex_stft.json", COMPLEX_STFT),
        "decode_u8": write_spec(d, "decode_u8.json", DECODE_U8),
    }


@pytest.fixture(scope="session")
def audio_files(tmp_path_factory) -> Dict[str, Path]:
    """Single clips of several kinds for transform comparisons."""
    d = tmp_path_factory.mktemp("audio_files")
    return {
        "mono16k": write_wav(d / "mono16k.wav", tone(1, 8000)),
        # Stereo at 22050 Hz: the spec's load_audio downmixes and resamples.
        "stereo22k": write_wav(d / "stereo22k.wav", tone(2, 11025, rate=22050, channels=2), rate=22050),
    }


@pytest.fixture(scope="session")
def gradient_png() -> Path:
    return EXAMPLES / "gradient_240x180.png"


@pytest.fixture(scope="session")
def synthetic_png(tmp_path_factory) -> Path:
    y, x = np.mgrid[0:37, 0:53]
    pixels = np.stack([(x * 5) % 256, (y * 7) % 256, (x * y) % 256], axis=2)
    return write_png_rgb(tmp_path_factory.mktemp("png") / "pattern.png", pixels)


@pytest.fixture(scope="session")
def audio12(tmp_path_factory) -> Path:
    """12 clips, 4 per label: every shard count of 1..4 divides it."""
    root = tmp_path_factory.mktemp("audio12")
    make_audio_tree(root, (4, 4, 4))
    return root


@pytest.fixture(scope="session")
def audio13(tmp_path_factory) -> Path:
    """13 clips (4, 4, 5): no shard count of 2..4 divides it."""
    root = tmp_path_factory.mktemp("audio13")
    make_audio_tree(root, (4, 4, 5))
    return root


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def entry12(audio12, session_cache) -> kiln.Entry:
    return kiln.convert(audio12, FIXED_MEL, cache_dir=session_cache, progress=False)


@pytest.fixture(scope="session")
def entry13(audio13, session_cache) -> kiln.Entry:
    return kiln.convert(audio13, FIXED_MEL, cache_dir=session_cache, progress=False)


@pytest.fixture(scope="session")
def entry13_groups(audio13, specs, tmp_path_factory) -> kiln.Entry:
    """The 13 clips converted by the CLI into several shard files of several row groups each
    (2 rows per row group), so the loader's row-group shuffling and cross-file reads are
    exercised."""
    cache = tmp_path_factory.mktemp("cache_groups")
    report = cli_convert(audio13, specs["fixed_mel"], cache, "--row-group-rows", "2", "--shard-size", "40KiB")
    entry = kiln.Entry(report["entry"])
    assert len(list(entry.path.glob("*.parquet"))) >= 2, "expected several shard files"
    return entry


def row_ids(batches) -> List[int]:
    return [int(i) for b in batches for i in b["row_id"]]

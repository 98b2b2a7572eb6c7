"""kiln.transform equals the CLI's .npy bit for bit, whichever way spec and source are given."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import kiln
from conftest import COMPLEX_STFT, DECODE_U8, FIXED_MEL, IMAGENET, LOG_MEL, MFCC, cli_transform


def assert_identical(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    # Bytes, not values: NaN payloads, -0.0 and every last bit must agree.
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()


CASES = [
    # (spec name, spec dict, input fixture key, expected dtype)
    ("log_mel", LOG_MEL, "mono16k", np.float32),
    ("log_mel", LOG_MEL, "stereo22k", np.float32),
    ("fixed_mel", FIXED_MEL, "mono16k", np.float32),
    ("mfcc", MFCC, "stereo22k", np.float32),
    ("complex_stft", COMPLEX_STFT, "mono16k", np.complex64),
    ("imagenet", IMAGENET, "gradient", np.float32),
    ("decode_u8", DECODE_U8, "gradient", np.uint8),
    ("decode_u8", DECODE_U8, "synthetic_png", np.uint8),
]


@pytest.fixture(scope="module")
def inputs(audio_files, gradient_png, synthetic_png):
    return {**audio_files, "gradient": gradient_png, "synthetic_png": synthetic_png}


@pytest.mark.parametrize("name,spec,source,dtype", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_transform_equals_cli_npy(name, spec, source, dtype, inputs, specs, tmp_path):
    path = inputs[source]
    want = cli_transform(specs[name], path, tmp_path / "out.npy")
    assert want.dtype == dtype
    spec_path = specs[name]
    variants = {
        "dict+path": kiln.transform(spec, path),
        "json+path": kiln.transform(json.dumps(spec), path),
        "file+path": kiln.transform(spec_path, path),
        "file-str+path": kiln.transform(str(spec_path), str(path)),
        "dict+bytes": kiln.transform(spec, path.read_bytes()),
        "json+bytearray": kiln.transform(json.dumps(spec), bytearray(path.read_bytes())),
        "dict+memoryview": kiln.transform(spec, memoryview(path.read_bytes())),
    }
    for how, got in variants.items():
        try:
            assert_identical(got, want)
        except AssertionError as e:
            raise AssertionError(f"{name} on {source}, spec/source as {how}: {e}") from None


def test_transform_shapes_and_dtypes(inputs):
    assert kiln.transform(FIXED_MEL, inputs["mono16k"]).shape == (80, 26)
    # 8000 samples: 1 + 8000 // 160 frames.
    assert kiln.transform(LOG_MEL, inputs["mono16k"]).shape == (80, 51)
    assert kiln.transform(MFCC, inputs["mono16k"]).shape[0] == 13
    stft = kiln.transform(COMPLEX_STFT, inputs["mono16k"])
    assert stft.dtype == np.complex64 and stft.shape == (129, 1 + 8000 // 128)
    assert np.iscomplexobj(stft) and np.abs(stft.imag).max() > 0
    image = kiln.transform(IMAGENET, inputs["gradient"])
    assert image.shape == (3, 224, 224) and image.dtype == np.float32
    raw = kiln.transform(DECODE_U8, inputs["gradient"])
    assert raw.shape == (180, 240, 3) and raw.dtype == np.uint8


def test_transform_results_are_writable_and_independent(inputs):
    a = kiln.transform(FIXED_MEL, inputs["mono16k"])
    b = kiln.transform(FIXED_MEL, inputs["mono16k"])
    assert a.flags.writeable and a.flags.c_contiguous
    a[:] = 0
    assert np.abs(b).max() > 0, "two transforms shared memory"


def test_transform_from_threads_matches_sequential(inputs):
    jobs = [(LOG_MEL, "mono16k"), (MFCC, "stereo22k"), (COMPLEX_STFT, "mono16k"), (IMAGENET, "gradient"), (DECODE_U8, "synthetic_png")]
    want = [kiln.transform(spec, inputs[key]) for spec, key in jobs]
    results = {}
    errors = []
    barrier = threading.Barrier(4)

    def work(thread: int) -> None:
        try:
            barrier.wait()
            for round_ in range(3):
                for j, (spec, key) in enumerate(jobs):
                    results[(thread, round_, j)] = kiln.transform(spec, inputs[key])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a transform thread hung"
    assert not errors, errors
    assert len(results) == 4 * 3 * len(jobs)
    for (thread, round_, j), got in results.items():
        assert_identical(got, want[j])

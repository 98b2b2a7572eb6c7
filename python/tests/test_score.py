"""``kiln score`` (CLI and ``kiln.score``) against onnxruntime, in process and through a real
Open Inference Protocol v2 server (KServe from PyPI, on loopback, with injected faults).

The models are built here with ``onnx.helper``; every expected output comes from
onnxruntime's Python package run on the entry's stored tensors, read with pyarrow."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import kiln

from conftest import (
    CLIP_SAMPLES,
    FIXED_MEL,
    FIXED_MEL_SHAPE,
    cli_convert,
    cli_error,
    kiln_bin,
    run_cli,
    tone,
    write_png_rgb,
    write_spec,
    write_wav,
)

sys.path.insert(0, str(Path(__file__).parent / "oip"))
import models  # noqa: E402

OIP_SERVER = Path(__file__).parent / "oip" / "server.py"
TOLERANCE = 1e-5

# The image example's pipeline without to_float/normalize: uint8 (3, 224, 224).
IMAGENET_U8 = {
    "ops": [
        {"op": "decode_image", "mode": "RGB"},
        {"op": "resize", "shorter_side": 256, "filter": "bilinear"},
        {"op": "center_crop", "height": 224, "width": 224},
        {"op": "layout", "to": "chw"},
    ]
}


# --- helpers -----------------------------------------------------------------------------------


def entry_tensors(entry: Path) -> Dict[int, np.ndarray]:
    """Every row's stored tensor by row_id, read with pyarrow (not kiln)."""
    manifest = json.loads((entry / "manifest.json").read_text())
    shape = manifest["tensor"]["shape"]
    dtype = np.float32 if manifest["tensor"]["dtype"] == "float32" else np.uint8
    out = {}
    for shard in manifest["shards"]:
        table = pq.read_table(entry / shard["file"])
        for i, row_id in enumerate(table.column("row_id").to_pylist()):
            values = np.asarray(table.column("tensor")[i].values.to_numpy(zero_copy_only=False), dtype=dtype)
            row_shape = shape if shape is not None else table.column("shape")[i].as_py()
            out[row_id] = values.reshape(row_shape)
    return out


def ort_session(model: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def ort_outputs(model: Path, inputs: Dict[int, np.ndarray], as_type=None, reshape=None) -> Dict[str, Dict[int, np.ndarray]]:
    """onnxruntime's outputs per row (one row per run: batching must not change results)."""
    session = ort_session(model)
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    out: Dict[str, Dict[int, np.ndarray]] = {n: {} for n in names}
    for row_id, x in inputs.items():
        x = x.astype(as_type) if as_type is not None else x
        x = x.reshape(reshape) if reshape is not None else x
        for name, y in zip(names, session.run(None, {input_name: x[None]})):
            out[name][row_id] = y[0]
    return out


def read_output(out: Path) -> pa.Table:
    parts = sorted(out.glob("part-*.parquet"))
    assert parts, f"no shards in {out}"
    return pa.concat_tables([pq.read_table(p) for p in parts])


def output_rows(table: pa.Table, column: str) -> Dict[int, Optional[np.ndarray]]:
    shape = json.loads(table.schema.field(column).metadata[b"kiln.shape"])
    out = {}
    for row_id, value in zip(table.column("row_id").to_pylist(), table.column(column).to_pylist()):
        out[row_id] = None if value is None else np.asarray(value, dtype=np.float32).reshape(shape)
    return out


def assert_matches(table: pa.Table, expected: Dict[str, Dict[int, np.ndarray]], relative: bool = False) -> None:
    """Every row's outputs within TOLERANCE of onnxruntime's (times the largest output value
    with ``relative``, for models fed unnormalized values whose outputs are in the hundreds)."""
    for name, rows in expected.items():
        got = output_rows(table, name)
        assert set(got) == set(rows), name
        scale = max(1.0, max(float(np.max(np.abs(v))) for v in rows.values())) if relative else 1.0
        worst = max(float(np.max(np.abs(got[r] - rows[r]))) for r in rows)
        assert worst <= TOLERANCE * scale, f"{name}: max abs difference {worst} against onnxruntime (scale {scale})"


def score_cli(*args: Any, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli("score", *args, "--json", check=check)


def score_json(*args: Any) -> Dict[str, Any]:
    result = score_cli(*args)
    return json.loads(result.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "mlp": models.mlp(d / "mlp.onnx", ["batch", *FIXED_MEL_SHAPE]),
        # Same weights over the flattened log-mel: kiln reshapes (80, 26) rows to 2080.
        "mlp_flat": models.mlp(d / "mlp_flat.onnx", ["batch", FIXED_MEL_SHAPE[0] * FIXED_MEL_SHAPE[1]]),
        "audio": models.audio(d / "audio.onnx"),
        "cnn": models.cnn(d / "cnn.onnx"),
        "cnn_u8": models.cnn(d / "cnn_u8.onnx", uint8=True),
    }


@pytest.fixture(scope="session")
def score_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("score_cache")


@pytest.fixture(scope="session")
def mel_source(tmp_path_factory) -> Path:
    """30 clips in 3 label folders."""
    root = tmp_path_factory.mktemp("mel_source")
    for i in range(30):
        write_wav(root / ("abc"[i % 3]) / f"clip_{i:02d}.wav", tone(i))
    return root


@pytest.fixture(scope="session")
def mel_spec(tmp_path_factory) -> Path:
    return write_spec(tmp_path_factory.mktemp("score_specs"), "fixed_mel.json", FIXED_MEL)


@pytest.fixture(scope="session")
def mel_entry(mel_source, mel_spec, score_cache) -> Path:
    return Path(cli_convert(mel_source, mel_spec, score_cache)["entry"])


@pytest.fixture(scope="session")
def image_source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    for i in range(9):
        h, w = 200 + 13 * i, 260 - 9 * i
        y, x = np.mgrid[0:h, 0:w]
        pixels = np.stack([(x * (i + 2)) % 256, (y * 3 + i * 20) % 256, rng.integers(0, 256, (h, w))], axis=2)
        write_png_rgb(root / ("cat" if i % 2 else "dog") / f"img_{i}.png", pixels)
    return root


@pytest.fixture(scope="session")
def image_entry(image_source, specs, score_cache) -> Path:
    return Path(cli_convert(image_source, specs["imagenet"], score_cache)["entry"])


@pytest.fixture(scope="session")
def image_u8_entry(image_source, score_cache, tmp_path_factory) -> Path:
    spec = write_spec(tmp_path_factory.mktemp("u8spec"), "imagenet_u8.json", IMAGENET_U8)
    return Path(cli_convert(image_source, spec, score_cache)["entry"])


# --- in-process scoring --------------------------------------------------------------------------


def test_mlp_over_log_mel_matches_onnxruntime(mel_entry, onnx_models, tmp_path):
    out = tmp_path / "out"
    report = score_json(mel_entry, "--model", onnx_models["mlp"], "-o", out, "--batch-size", "8", "--workers", "2")
    assert report["rows"] == 30 and report["scored"] == 30 and report["failed"] == 0
    assert report["output"] == str(out) and report["rows_per_s"] > 0 and report["seconds"] > 0
    table = read_output(out)
    # Input order: the entry's storage order, row ids as stored.
    stored = entry_tensors(mel_entry)
    assert table.column("row_id").to_pylist() == list(stored)
    assert table.schema.field("probs").type == pa.list_(pa.field("item", pa.float32(), nullable=False), 10)
    assert json.loads(table.schema.field("probs").metadata[b"kiln.shape"]) == [10]
    assert table.column("label").to_pylist() == [p.split("/")[0] for p in table.column("path").to_pylist()]
    assert table.column("error").null_count == 30
    assert_matches(table, ort_outputs(onnx_models["mlp"], stored))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input_key"] == json.loads((mel_entry / "manifest.json").read_text())["key"]
    assert manifest["model"]["engine"] == "tract"
    import hashlib

    assert manifest["model"]["sha256"] == hashlib.sha256(onnx_models["mlp"].read_bytes()).hexdigest()
    assert manifest["rows"] == 30 and manifest["failures"] == []
    assert not (out / "progress.jsonl").exists()


def test_rows_are_reshaped_to_a_flat_model_input(mel_entry, onnx_models, tmp_path):
    out = tmp_path / "out"
    score_json(mel_entry, "--model", onnx_models["mlp_flat"], "-o", out, "--batch-size", "7")
    stored = entry_tensors(mel_entry)
    assert_matches(read_output(out), ort_outputs(onnx_models["mlp_flat"], stored, reshape=(-1,)))


def test_audio_model_binds_the_frames_dimension_per_batch(tmp_path, onnx_models, score_cache, tmp_path_factory):
    """Clips of three lengths under the variable-length log-mel: with batches of one, every
    batch has its own number of frames, and each equals onnxruntime."""
    root = tmp_path / "clips"
    for i, samples in enumerate([4000, 6000, 8000, 4000, 8000]):
        write_wav(root / "x" / f"c{i}.wav", tone(i, samples))
    from conftest import EXAMPLES

    entry = Path(cli_convert(root, EXAMPLES / "log_mel.json", score_cache)["entry"])
    out = tmp_path / "out"
    score_json(entry, "--model", onnx_models["audio"], "-o", out, "--batch-size", "1")
    stored = entry_tensors(entry)
    assert {v.shape[1] for v in stored.values()} == {26, 38, 51}
    assert_matches(read_output(out), ort_outputs(onnx_models["audio"], stored))
    # Batches mixing lengths cannot be one tensor: those rows fail, named, and the exit is 1.
    mixed = tmp_path / "mixed"
    result = score_cli(entry, "--model", onnx_models["audio"], "-o", mixed, "--batch-size", "2", check=False)
    assert result.returncode == 1
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] >= 2
    manifest = json.loads((mixed / "manifest.json").read_text())
    assert len(manifest["failures"]) == report["failed"]
    assert "rows of shapes" in manifest["failures"][0]["error"]
    assert "rows failed to score" in result.stderr


def test_cnn_over_the_image_example_matches_onnxruntime(image_entry, onnx_models, tmp_path):
    out = tmp_path / "out"
    report = score_json(image_entry, "--model", onnx_models["cnn"], "-o", out, "--batch-size", "4")
    assert report["rows"] == 9
    table = read_output(out)
    stored = entry_tensors(image_entry)
    assert_matches(table, ort_outputs(onnx_models["cnn"], stored))
    # Two outputs, each its own column with its row shape.
    assert json.loads(table.schema.field("features").metadata[b"kiln.shape"]) == [64]


def test_uint8_rows_feed_uint8_and_float_models(image_u8_entry, onnx_models, tmp_path):
    stored = entry_tensors(image_u8_entry)
    assert next(iter(stored.values())).dtype == np.uint8
    out = tmp_path / "u8"
    score_json(image_u8_entry, "--model", onnx_models["cnn_u8"], "-o", out, "--batch-size", "4")
    assert_matches(read_output(out), ort_outputs(onnx_models["cnn_u8"], stored))
    # A float model gets the pixel values as floats (0..255), as its input type says.
    out = tmp_path / "f32"
    score_json(image_u8_entry, "--model", onnx_models["cnn"], "-o", out, "--batch-size", "4")
    assert_matches(read_output(out), ort_outputs(onnx_models["cnn"], stored, as_type=np.float32), relative=True)


def test_a_source_is_converted_first_with_the_spec(mel_source, mel_spec, mel_entry, onnx_models, score_cache, tmp_path):
    from_entry = tmp_path / "a"
    from_source = tmp_path / "b"
    score_json(mel_entry, "--model", onnx_models["mlp"], "-o", from_entry)
    report = score_json(mel_source, "--spec", mel_spec, "--cache", score_cache, "--model", onnx_models["mlp"], "-o", from_source)
    assert report["input_entry"] == str(mel_entry)
    assert read_output(from_entry).equals(read_output(from_source))


def test_rerunning_the_same_scoring_rewrites_nothing(mel_entry, onnx_models, tmp_path):
    out = tmp_path / "out"
    score_json(mel_entry, "--model", onnx_models["mlp"], "-o", out, "--shard-rows", "8", "--batch-size", "4")
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["manifest.json"] + [f"part-0000{i}.parquet" for i in range(4)]
    stamps = {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}
    again = score_json(mel_entry, "--model", onnx_models["mlp"], "-o", out, "--batch-size", "16")
    assert again["scored"] == 0 and again["rows"] == 30 and again["failed"] == 0
    assert {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in sorted(out.iterdir())} == stamps


def test_an_output_of_another_model_or_input_is_refused(mel_entry, image_entry, onnx_models, tmp_path):
    out = tmp_path / "out"
    score_json(mel_entry, "--model", onnx_models["mlp"], "-o", out)
    message = cli_error("score", mel_entry, "--model", onnx_models["mlp_flat"], "-o", out)
    assert str(out) in message and "another model" in message
    message = cli_error("score", image_entry, "--model", onnx_models["cnn"], "-o", out)
    assert "another input" in message
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    message = cli_error("score", mel_entry, "--model", onnx_models["mlp"], "-o", foreign)
    assert "notes.txt" in message and "did not write" in message


def test_kill_9_then_resume_equals_an_uninterrupted_run(image_entry, onnx_models, tmp_path):
    clean = tmp_path / "clean"
    score_json(image_entry, "--model", onnx_models["cnn"], "-o", clean, "--batch-size", "1", "--shard-rows", "1", "--workers", "1")
    out = tmp_path / "killed"
    args = [str(kiln_bin()), "score", str(image_entry), "--model", str(onnx_models["cnn"]), "-o", str(out),
            "--batch-size", "1", "--shard-rows", "1", "--workers", "1", "--json"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(list(out.glob("part-*.parquet")))
    assert 3 <= written < 9, f"the run was not killed mid-way ({written} shards)"
    assert not (out / "manifest.json").exists()
    report = score_json(image_entry, "--model", onnx_models["cnn"], "-o", out, "--batch-size", "1", "--workers", "1")
    assert report["rows"] == 9
    assert report["scored"] <= 9 - written + 1, "finished shards were scored again"
    resumed, reference = read_output(out), read_output(clean)
    assert resumed.column("row_id").to_pylist() == reference.column("row_id").to_pylist()
    assert resumed.equals(reference)


def test_errors_name_the_problem(mel_entry, image_entry, onnx_models, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "missing.onnx"
    assert "missing.onnx is not a file" in cli_error("score", mel_entry, "--model", missing, "-o", out)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a model")
    assert "garbage.onnx" in cli_error("score", mel_entry, "--model", garbage, "-o", out)
    message = cli_error("score", image_entry, "--model", onnx_models["mlp"], "-o", out)
    assert '"input" takes rows of shape [80, 26]' in message and "[3, 224, 224]" in message
    message = cli_error("score", image_entry, "--model", onnx_models["cnn_u8"], "-o", out)
    assert "uint8" in message and "float32" in message
    message = cli_error("score", tmp_path, "--model", onnx_models["mlp"], "-o", out)
    assert "not a cache entry" in message and "--spec" in message
    message = cli_error("score", mel_entry, "--model", onnx_models["mlp"], "-o", out, "--input-name", "nope")
    assert '"nope"' in message and '"input"' in message
    assert "--batch-size" in cli_error("score", mel_entry, "--model", onnx_models["mlp"], "-o", out, "--batch-size", "0")
    message = run_cli("score", mel_entry, "--model", onnx_models["mlp"], "-o", out, "--engine", "onnxruntime", check=False).stderr
    assert "--ort-lib or ORT_DYLIB_PATH" in message, message
    assert not out.exists() or not list(out.glob("part-*"))


def ort_library() -> str:
    """The onnxruntime wheel's own library (what `--ort-lib` is for)."""
    return str(next(Path(ort.__file__).parent.glob("capi/libonnxruntime.so*")))


def test_the_onnxruntime_engine_equals_python_onnxruntime(mel_entry, image_entry, onnx_models, tmp_path):
    """Needs kiln built with `--features onnxruntime` (scripts/test builds it so)."""
    for entry, name in [(mel_entry, "mlp"), (image_entry, "cnn")]:
        stored = entry_tensors(entry)
        expected = ort_outputs(onnx_models[name], stored)
        out = tmp_path / name
        score_json(entry, "--model", onnx_models[name], "-o", out, "--engine", "onnxruntime", "--ort-lib", ort_library(), "--batch-size", "1")
        table = read_output(out)
        # The same library on the same rows, one at a time: the very same floats.
        for column, rows in expected.items():
            got = output_rows(table, column)
            assert all(np.array_equal(got[r], rows[r]) for r in rows), column
        assert json.loads((out / "manifest.json").read_text())["model"]["engine"] == "onnxruntime"
        batched = tmp_path / f"{name}-batched"
        score_json(entry, "--model", onnx_models[name], "-o", batched, "--engine", "onnxruntime", "--ort-lib", ort_library(), "--batch-size", "4", "--workers", "2")
        assert_matches(read_output(batched), expected)
    message = cli_error("score", mel_entry, "--model", onnx_models["mlp"], "-o", tmp_path / "x", "--engine", "onnxruntime", "--ort-lib", tmp_path / "nope.so")
    assert "--ort-lib" in message and "nope.so is not a file" in message


# --- the Python API ------------------------------------------------------------------------------


def test_python_score_equals_the_cli(mel_entry, onnx_models, tmp_path):
    cli_out = tmp_path / "cli"
    score_json(mel_entry, "--model", onnx_models["mlp"], "-o", cli_out)
    report = kiln.score(mel_entry, model=onnx_models["mlp"], output=tmp_path / "py", batch_size=16, workers=1, progress=False)
    assert report["rows"] == 30 and report["scored"] == 30 and report["failed"] == 0
    assert read_output(tmp_path / "py").equals(read_output(cli_out))
    with pytest.raises(kiln.KilnError, match="model"):
        kiln.score(mel_entry, output=tmp_path / "none")
    with pytest.raises(kiln.KilnError, match="model_name"):
        kiln.score(mel_entry, endpoint="http://127.0.0.1:9", output=tmp_path / "none")


# --- an OIP v2 server ----------------------------------------------------------------------------


class OipServer:
    """KServe serving one model through onnxruntime on a loopback port (test middleware for
    faults and counts)."""

    def __init__(self, model: Path, name: str, log: Path):
        self.model, self.name, self.log = model, name, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        python = os.environ.get("KILN_OIP_PYTHON")
        if not python:
            pytest.fail("KILN_OIP_PYTHON (the python of a venv with python/tests/oip/requirements.txt) is not set")
        self.process = subprocess.Popen(
            [python, str(OIP_SERVER), str(self.model), self.name, str(self.port)],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/v2/models/{self.name}/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
            assert self.process.poll() is None, self.log.read_text()[-3000:]
        pytest.fail(f"the OIP server did not start: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def control(self, faults: List[Dict[str, Any]], delay_s: float = 0.0) -> None:
        body = json.dumps({"faults": faults, "delay_s": delay_s}).encode()
        request = urllib.request.Request(f"{self.url}/_test/faults", body, {"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).read()

    def stats(self) -> Dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_test/stats", timeout=5) as r:
            return json.loads(r.read())


@pytest.fixture
def mlp_server(onnx_models, tmp_path):
    server = OipServer(onnx_models["mlp"], "mlp", tmp_path / "server.log")
    server.start()
    yield server
    server.stop()


def endpoint_args(server: OipServer, out: Path, *extra: Any) -> List[Any]:
    return ["--endpoint", server.url, "--model-name", server.name, "-o", out, *extra]


def test_endpoint_scores_equal_onnxruntime_and_each_row_is_sent_once(mel_entry, onnx_models, mlp_server, tmp_path):
    out = tmp_path / "out"
    report = score_json(mel_entry, *endpoint_args(mlp_server, out, "--batch-size", "4", "--concurrency", "3"))
    assert report["rows"] == 30 and report["scored"] == 30 and report["failed"] == 0
    table = read_output(out)
    stored = entry_tensors(mel_entry)
    assert table.column("row_id").to_pylist() == list(stored)
    assert_matches(table, ort_outputs(onnx_models["mlp"], stored))
    stats = mlp_server.stats()
    assert sorted(int(i) for i in stats["ids"]) == list(range(8)), stats  # 30 rows in batches of 4
    assert 1 <= stats["max_inflight"] <= 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["endpoint"] == mlp_server.url and manifest["model"]["model_name"] == "mlp"


def test_endpoint_faults_are_retried_within_the_concurrency_limit(mel_entry, onnx_models, mlp_server, tmp_path):
    mlp_server.control(
        [{"status": 503, "retry_after": "1"}, {"status": 429, "retry_after": "1"}, {"status": 500}, {"status": 502}],
        delay_s=0.2,
    )
    out = tmp_path / "out"
    report = score_json(mel_entry, *endpoint_args(mlp_server, out, "--batch-size", "2", "--concurrency", "4"))
    assert report["failed"] == 0 and report["rows"] == 30
    stats = mlp_server.stats()
    assert stats["max_inflight"] <= 4, stats
    assert stats["max_inflight"] >= 2, "concurrency was not used"
    table = read_output(out)
    assert table.column("row_id").to_pylist() == list(entry_tensors(mel_entry))
    assert_matches(table, ort_outputs(onnx_models["mlp"], entry_tensors(mel_entry)))


def test_a_request_that_times_out_is_retried(mel_entry, onnx_models, mlp_server, tmp_path):
    # One slow answer (3 s) against a 1 s timeout. (The server keeps working on the abandoned
    # request, so this test runs one request at a time: the concurrency count is above.)
    mlp_server.control([{"delay_s": 3}])
    out = tmp_path / "out"
    started = time.monotonic()
    report = score_json(mel_entry, *endpoint_args(mlp_server, out, "--batch-size", "10", "--concurrency", "1", "--timeout", "1s"))
    assert report["failed"] == 0 and report["rows"] == 30
    assert time.monotonic() - started < 30
    # The abandoned request may still finish on the server after the run: ids, not counts.
    assert {int(i) for i in mlp_server.stats()["ids"]} == {0, 1, 2}
    assert_matches(read_output(out), ort_outputs(onnx_models["mlp"], entry_tensors(mel_entry)))


def test_batches_that_keep_failing_are_recorded_and_retried_by_the_next_run(mel_entry, onnx_models, mlp_server, tmp_path):
    # --retries 2: three failures in a row fail the first batch for good.
    mlp_server.control([{"status": 503}] * 3)
    out = tmp_path / "out"
    args = endpoint_args(mlp_server, out, "--batch-size", "5", "--concurrency", "1", "--retries", "2")
    result = score_cli(mel_entry, *args, check=False)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == 5 and report["scored"] == 25 and report["rows"] == 30
    manifest = json.loads((out / "manifest.json").read_text())
    stored = entry_tensors(mel_entry)
    first_five = list(stored)[:5]
    assert [f["row_id"] for f in manifest["failures"]] == first_five
    assert "503" in manifest["failures"][0]["error"] and "after 2 retries" in manifest["failures"][0]["error"]
    table = read_output(out)
    assert table.column("probs").null_count == 5 and table.column("error").null_count == 25
    served = len(mlp_server.stats()["ids"])
    # The next run sends only the failed batch, and completes the output.
    report = score_json(mel_entry, *args)
    assert report["scored"] == 5 and report["failed"] == 0
    assert len(mlp_server.stats()["ids"]) == served + 1
    assert_matches(read_output(out), ort_outputs(onnx_models["mlp"], stored))


def test_a_server_restart_mid_run_loses_no_row(mel_entry, onnx_models, mlp_server, tmp_path):
    mlp_server.control([], delay_s=0.15)
    out = tmp_path / "out"
    args = [str(kiln_bin()), "score", str(mel_entry), *map(str, endpoint_args(mlp_server, out, "--batch-size", "1",
            "--concurrency", "2", "--retries", "8", "--timeout", "5s")), "--json"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while mlp_server.stats()["infer"] < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    mlp_server.stop()
    time.sleep(1.0)
    mlp_server.start()
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["failed"] == 0
    table = read_output(out)
    assert table.column("row_id").to_pylist() == list(entry_tensors(mel_entry))
    assert_matches(table, ort_outputs(onnx_models["mlp"], entry_tensors(mel_entry)))


def test_endpoint_errors_name_the_problem(mel_entry, image_entry, mlp_server, tmp_path):
    out = tmp_path / "out"
    closed = f"http://127.0.0.1:{free_port()}"
    message = cli_error("score", mel_entry, "--endpoint", closed, "--model-name", "mlp", "-o", out, "--retries", "1")
    assert closed in message and "not ready" in message and "cannot connect" in message
    message = cli_error("score", mel_entry, "--endpoint", mlp_server.url, "--model-name", "nope", "-o", out, "--retries", "0")
    assert "404" in message and "nope" in message
    assert "http" in cli_error("score", mel_entry, "--endpoint", "ftp://x", "--model-name", "m", "-o", out)
    message = cli_error("score", image_entry, *endpoint_args(mlp_server, out))
    assert "[3, 224, 224]" in message

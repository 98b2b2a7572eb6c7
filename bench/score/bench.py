"""kiln score against the Python baseline users write: read the entry's Parquet shards with
pyarrow, batch them with numpy, run onnxruntime, write the outputs with pyarrow. Same data,
same models, same thread count, both timed end to end as commands (process start, imports
and model loading included); prints rows/s and the ratio, and checks the outputs agree.

usage: python bench.py KILN_BIN WORKDIR [--threads N] [--ort-lib LIBONNXRUNTIME]
(run by bench/score/run, which builds kiln and finds the onnxruntime wheel's library)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python" / "tests" / "oip"))
import models  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MEL = json.loads((REPO / "examples" / "log_mel.json").read_text())
MEL["ops"].insert(1, {"op": "fix_length", "size": 16000})


def write_wavs(root: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    for i in range(count):
        y = 0.3 * np.sin(2 * np.pi * (100 + 3 * i) * t) + 0.05 * rng.standard_normal(16000)
        path = root / f"c{i % 4}" / f"{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((np.clip(y, -1, 1) * 32767).astype("<i2").tobytes())


def write_pngs(root: Path, count: int) -> None:
    import zlib, struct

    rng = np.random.default_rng(1)
    for i in range(count):
        h, w = 256, 320
        y, x = np.mgrid[0:h, 0:w]
        px = np.stack([(x + i) % 256, (y * 2) % 256, rng.integers(0, 256, (h, w))], axis=2).astype(np.uint8)
        raw = b"".join(b"\x00" + px[r].tobytes() for r in range(h))
        chunk = lambda k, d: struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xFFFFFFFF)
        png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b"")
        path = root / f"c{i % 4}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)


def convert(kiln: str, source: Path, spec: dict, work: Path) -> Path:
    spec_path = work / f"{source.name}.json"
    spec_path.write_text(json.dumps(spec))
    out = subprocess.run([kiln, "convert", str(source), "--spec", str(spec_path), "--cache", str(work / "cache"), "--json"],
                         check=True, capture_output=True, text=True)
    return Path(json.loads(out.stdout.strip().splitlines()[-1])["entry"])


def python_baseline(entry: Path, model: Path, out: Path, threads: int, batch: int = 64) -> float:
    """What users write: pyarrow over the shards, numpy batches, onnxruntime, pyarrow out."""
    start = time.perf_counter()
    manifest = json.loads((entry / "manifest.json").read_text())
    shape = manifest["tensor"]["shape"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    results = {n: [] for n in names}
    ids, paths = [], []
    pending, pending_ids, pending_paths = [], [], []

    def flush():
        x = np.concatenate(pending)
        for n, y in zip(names, session.run(None, {input_name: x})):
            results[n].append(y.reshape(len(x), -1))
        ids.extend(pending_ids)
        paths.extend(pending_paths)
        pending.clear(), pending_ids.clear(), pending_paths.clear()

    for shard in manifest["shards"]:
        parquet = pq.ParquetFile(entry / shard["file"])
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=["row_id", "path", "tensor"])
            values = table.column("tensor").combine_chunks().flatten().to_numpy()
            x = values.reshape(len(table), *shape).astype(np.float32, copy=False)
            row_ids = table.column("row_id").to_pylist()
            row_paths = table.column("path").to_pylist()
            taken = 0
            while taken < len(x):
                room = batch - sum(len(p) for p in pending)
                pending.append(x[taken:taken + room])
                pending_ids.extend(row_ids[taken:taken + room])
                pending_paths.extend(row_paths[taken:taken + room])
                taken += room
                if sum(len(p) for p in pending) == batch:
                    flush()
    if pending:
        flush()
    columns = {"row_id": pa.array(ids, pa.uint64()), "path": pa.array(paths)}
    for n in names:
        y = np.concatenate(results[n])
        columns[n] = pa.FixedSizeListArray.from_arrays(pa.array(y.reshape(-1)), y.shape[1])
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), out / "part-00000.parquet", compression="zstd")
    return time.perf_counter() - start


def python_command(entry: Path, model: Path, out: Path, threads: int) -> float:
    """The baseline as a user runs it: a Python process (imports included), timed from
    outside like kiln's."""
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--baseline", str(entry), str(model), str(out), str(threads)], check=True)
    return time.perf_counter() - start


def kiln_score(kiln: str, entry: Path, model: Path, out: Path, threads: int, engine: str, ort_lib: str | None) -> float:
    args = [kiln, "score", str(entry), "--model", str(model), "-o", str(out), "--workers", str(threads), "--json", "--engine", engine]
    if engine == "onnxruntime":
        args += ["--ort-lib", ort_lib]
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def read(out: Path, column: str) -> np.ndarray:
    table = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))])
    return np.stack([np.asarray(v, dtype=np.float32) for v in table.column(column).to_pylist()])


def main() -> None:
    if sys.argv[1:2] == ["--baseline"]:
        entry, model, out, threads = sys.argv[2:6]
        python_baseline(Path(entry), Path(model), Path(out), int(threads))
        return
    p = argparse.ArgumentParser()
    p.add_argument("kiln")
    p.add_argument("work", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ort-lib")
    p.add_argument("--clips", type=int, default=12000)
    p.add_argument("--images", type=int, default=600)
    a = p.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    if not (a.work / "clips").exists():
        write_wavs(a.work / "clips", a.clips)
        write_pngs(a.work / "images", a.images)
    mel = convert(a.kiln, a.work / "clips", MEL, a.work)
    imagenet = convert(a.kiln, a.work / "images", json.loads((REPO / "examples" / "imagenet.json").read_text()), a.work)
    mlp = models.mlp(a.work / "mlp.onnx", ["batch", 80, 101], hidden=(256, 128))
    cnn = models.cnn(a.work / "cnn.onnx")
    print(f"{'workload':28} {'rows':>6} {'python+ort':>11} {'kiln tract':>11} {'kiln ort':>11}  ratios (kiln/python)")
    for name, entry, model, column in [("MLP over log-mel (80x101)", mel, mlp, "probs"), ("CNN over imagenet 224", imagenet, cnn, "logits")]:
        rows = json.loads((entry / "manifest.json").read_text())["rows"]
        engines = ["tract"] + (["onnxruntime"] if a.ort_lib else [])
        times = {}
        # The Python loop alone (after imports, in this process), for the record.
        loop = min(python_baseline(entry, model, a.work / "out-loop", a.threads) for _ in range(2))
        for engine in ["python"] + engines:
            best = float("inf")
            for attempt in range(2):
                out = a.work / f"out-{name[:3]}-{engine}-{attempt}"
                subprocess.run(["rm", "-rf", str(out)], check=True)
                if engine == "python":
                    t = python_command(entry, model, out, a.threads)
                else:
                    t = kiln_score(a.kiln, entry, model, out, a.threads, engine, a.ort_lib)
                best = min(best, t)
            times[engine] = best
        reference = read(a.work / f"out-{name[:3]}-python-0", column)
        for engine in engines:
            diff = float(np.max(np.abs(read(a.work / f"out-{name[:3]}-{engine}-0", column) - reference)))
            assert diff < 1e-4, f"{engine} differs from onnxruntime by {diff}"
        rate = {k: rows / v for k, v in times.items()}
        ratios = "  ".join(f"{e} {rate[e] / rate['python']:.2f}x" for e in engines)
        print(f"{name:28} {rows:6d} {rate['python']:9.0f}/s {rate['tract']:9.0f}/s "
              f"{(str(round(rate['onnxruntime'])) + '/s') if 'onnxruntime' in rate else '-':>11}  {ratios}")
        print(f"{'':28} {'':6} python loop alone (imports excluded): {rows / loop:.0f}/s; "
              + "  ".join(f"{e} {rate[e] * loop / rows:.2f}x" for e in engines))


if __name__ == "__main__":
    main()

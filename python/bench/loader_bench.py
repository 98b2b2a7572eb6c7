"""Loader throughput: kiln.Loader against plain pyarrow.parquet iteration and a Petastorm-style
reader, over the same Parquet shards, in one run.

    python python/bench/loader_bench.py [--rows 2000] [--batch-size 64] [--epochs 3]

1. Writes ``--rows`` one-second 16 kHz mono WAV clips (10 labels) into a temporary directory
   and converts them with ``kiln.convert`` (the log-mel of examples/log_mel.json with
   ``fix_length`` 16000: an (80, 101) float32 tensor per row, so the tensor column is a
   FixedSizeList and every reader can hand out one (B, 80, 101) block per batch).
2. Times full epochs of each reader (one warm-up epoch first, then ``--epochs`` timed ones;
   the median is reported). Every reader delivers the same thing per batch: ``tensor`` as a
   (B, 80, 101) float32 numpy array, ``label_index`` and ``row_id`` as numpy arrays and
   ``path`` as a list of str; the loop only touches ``tensor.shape`` (no training work).

Readers:

- ``kiln.Loader`` (batch 64), unshuffled and shuffled (``seed=0``: row groups shuffled, then a
  4096-row shuffle buffer), with its default ``prefetch=4`` and threads.
- ``pyarrow iter_batches``: ``pyarrow.parquet.ParquetFile(f).iter_batches(batch_size=64)`` over
  the entry's shard files in order; each record batch's FixedSizeList tensor column becomes a
  (B, 80, 101) numpy view of its values (no copy), the other columns numpy/lists. Unshuffled;
  a batch never spans two files, so each file may end with a short batch.
- ``petastorm-style``: what Petastorm's ``make_batch_reader(..., shuffle_row_groups=True)`` +
  ``BatchedDataLoader(shuffling_queue_capacity=...)`` do, written out with pyarrow and numpy:
  the list of (file, row group) pieces is shuffled (seeded); a pool of reader threads
  (``workers_count``, default = cores, as Petastorm's thread pool) reads one row group at a
  time with ``ParquetFile.read_row_group`` ahead of the consumer (at most 2 x workers in
  flight); each row group's columns become numpy arrays and are appended to a shuffling buffer
  (numpy concatenation); whenever the buffer holds at least ``capacity`` + batch rows (and at
  the end until it is empty), a batch is drawn with random indices without replacement (a
  fancy-index gather, i.e. a copy) and the drawn rows are removed from the buffer. The same
  reader with ``--petastorm-capacity 0`` and no piece shuffle is reported as the unshuffled row.

Real Petastorm (``pip install petastorm``, 0.13.1) was tried: it imports ``pyarrow.filesystem``
(gone from current pyarrow), and under pyarrow 14 its ``make_batch_reader`` silently drops
kiln's ``fixed_size_list`` tensor column and the ``uint64`` row id, so it cannot read these
shards as they are; hence the re-implementation.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import kiln

REPO = Path(__file__).resolve().parents[2]
RATE = 16000
LABELS = 10


def write_clips(root: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(RATE) / RATE
    for i in range(rows):
        label = f"class{i % LABELS}"
        freq = 120.0 + 40.0 * (i % LABELS) + rng.uniform(0, 30)
        y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(RATE)
        pcm = np.round(np.clip(y, -1, 1) * 32767).astype("<i2")
        d = root / label
        d.mkdir(parents=True, exist_ok=True)
        with wave.open(str(d / f"{i:06d}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm.tobytes())


def spec() -> Dict[str, Any]:
    s = json.loads((REPO / "examples" / "log_mel.json").read_text())
    s["ops"].insert(1, {"op": "fix_length", "size": RATE})
    return s


# --- readers: each yields dicts of tensor (B, *shape) numpy, label_index, row_id, path ---------


def kiln_reader(entry: kiln.Entry, batch_size: int, seed) -> Callable[[], Iterator[Dict[str, Any]]]:
    def run():
        with kiln.Loader(entry, batch_size=batch_size, seed=seed, num_epochs=1) as loader:
            yield from loader
    return run


def columns_to_numpy(records, shape) -> Dict[str, Any]:
    """One pyarrow RecordBatch/Table's columns as numpy (tensor: (B, *shape) over the values)."""
    if isinstance(records, pa.Table):
        records = records.combine_chunks().to_batches()[0] if records.num_rows else None
    tensor = records.column("tensor")
    values = tensor.values.to_numpy(zero_copy_only=True)
    n = records.num_rows
    per_row = int(np.prod(shape))
    start = tensor.offset * per_row
    return {
        "tensor": values[start:start + n * per_row].reshape(n, *shape),
        "label_index": records.column("label_index").to_numpy(zero_copy_only=False),
        "row_id": records.column("row_id").to_numpy(),
        "path": records.column("path").to_pylist(),
    }


def pyarrow_reader(files: List[Path], batch_size: int, shape) -> Callable[[], Iterator[Dict[str, Any]]]:
    def run():
        for f in files:
            for records in pq.ParquetFile(f).iter_batches(batch_size=batch_size):
                yield columns_to_numpy(records, shape)
    return run


def petastorm_style_reader(files: List[Path], batch_size: int, shape, capacity: int, seed, workers: int):
    pieces = [(f, g) for f in files for g in range(pq.ParquetFile(f).metadata.num_row_groups)]

    def read_piece(piece):
        f, g = piece
        return columns_to_numpy(pq.ParquetFile(f).read_row_group(g), shape)

    def run():
        rng = np.random.default_rng(seed)
        order = list(pieces)
        if seed is not None:
            order = [order[i] for i in rng.permutation(len(order))]
        buffer: Dict[str, Any] = {}
        size = 0

        def add(part):
            nonlocal buffer, size
            if not buffer:
                buffer = {k: (np.asarray(v, dtype=object) if k == "path" else v) for k, v in part.items()}
            else:
                for k, v in part.items():
                    v = np.asarray(v, dtype=object) if k == "path" else v
                    buffer[k] = np.concatenate([buffer[k], v])
            size += len(part["row_id"])

        def draw(n):
            nonlocal buffer, size
            if seed is None:
                take = np.arange(n)
            else:
                take = rng.choice(size, size=n, replace=False)
            keep = np.ones(size, dtype=bool)
            keep[take] = False
            batch = {k: v[take] for k, v in buffer.items()}
            buffer = {k: v[keep] for k, v in buffer.items()}
            size -= n
            batch["path"] = batch["path"].tolist()
            return batch

        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            in_flight = []
            it = iter(order)
            for piece in it:
                in_flight.append(pool.submit(read_piece, piece))
                if len(in_flight) >= 2 * workers:
                    break
            while in_flight:
                add(in_flight.pop(0).result())
                nxt = next(it, None)
                if nxt is not None:
                    in_flight.append(pool.submit(read_piece, nxt))
                while size >= capacity + batch_size:
                    yield draw(batch_size)
            while size > 0:
                yield draw(min(batch_size, size))

    return run


# --- timing ------------------------------------------------------------------------------------


def time_epochs(reader, epochs: int, expected_rows: int) -> Dict[str, float]:
    times = []
    batches = rows = 0
    for e in range(epochs + 1):
        start = time.perf_counter()
        batches = rows = 0
        for batch in reader():
            t = batch["tensor"]
            rows += t.shape[0]
            batches += 1
        elapsed = time.perf_counter() - start
        if rows != expected_rows:
            raise SystemExit(f"a reader delivered {rows} rows, expected {expected_rows}")
        if e > 0:  # the first pass is a warm-up
            times.append(elapsed)
    median = statistics.median(times)
    return {"seconds": median, "batches": batches, "rows": rows,
            "batches_per_s": batches / median, "rows_per_s": rows / median,
            "spread": (max(times) - min(times)) / median if len(times) > 1 else 0.0}


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, load avg {load:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per reader (after one warm-up)")
    parser.add_argument("--petastorm-capacity", type=int, default=1000,
                        help="rows the Petastorm-style shuffling buffer keeps before drawing a batch")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Petastorm-style reader threads")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data here (default: a temporary directory)")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="kiln-loader-bench-"))
    try:
        src, cache = work / "clips", work / "cache"
        t0 = time.perf_counter()
        if not src.exists():
            write_clips(src, args.rows)
        t1 = time.perf_counter()
        entry = kiln.convert(src, spec(), cache_dir=cache, progress=False)
        t2 = time.perf_counter()
        files = [entry.path / s["file"] for s in entry.manifest["shards"]]
        groups = sum(len(s["row_groups"]) for s in entry.manifest["shards"])
        shape = entry.tensor_shape
        size = sum(f.stat().st_size for f in files)
        print(f"data: {entry.rows} clips written in {t1 - t0:.1f} s; kiln.convert {t2 - t1:.1f} s "
              f"({'cache hit' if entry.cache_hit else 'converted'}); entry {entry.path}")
        print(f"entry: {entry.rows} rows of {entry.tensor_dtype}{list(shape)}, {len(files)} shard file(s), "
              f"{groups} row groups, {size / 2**20:.1f} MiB on disk")

        b = args.batch_size
        rows = entry.rows
        cases = [
            ("kiln.Loader, unshuffled", kiln_reader(entry, b, None), rows),
            ("kiln.Loader, shuffled (seed 0)", kiln_reader(entry, b, 0), rows),
            ("pyarrow iter_batches, unshuffled", pyarrow_reader(files, b, shape), rows),
            ("petastorm-style, unshuffled", petastorm_style_reader(files, b, shape, 0, None, args.workers), rows),
            (f"petastorm-style, shuffled (buffer {args.petastorm_capacity})",
             petastorm_style_reader(files, b, shape, args.petastorm_capacity, 0, args.workers), rows),
        ]
        results = {}
        for name, reader, expected in cases:
            results[name] = time_epochs(reader, args.epochs, expected)
            r = results[name]
            print(f"  measured {name}: {r['seconds']:.3f} s/epoch", file=sys.stderr)

        print()
        print(f"machine: {machine()}")
        versions = [f"python {platform.python_version()}", f"kiln {kiln.__version__}", f"numpy {np.__version__}",
                    f"pyarrow {pa.__version__}"]
        print("versions: " + ", ".join(versions))
        print(f"batch size {b}; median of {args.epochs} epochs after a warm-up; 'spread' = (max - min) / median")
        print()
        kiln_plain = results["kiln.Loader, unshuffled"]
        kiln_shuf = results["kiln.Loader, shuffled (seed 0)"]
        header = f"{'reader':<44} {'batches/s':>10} {'rows/s':>10} {'s/epoch':>8} {'spread':>7} {'kiln (same order) x':>20}"
        print(header)
        print("-" * len(header))
        for name, r in results.items():
            mine = kiln_shuf if "shuffled (" in name and "unshuffled" not in name else kiln_plain
            ratio = "" if name.startswith("kiln") else f"{mine['rows_per_s'] / r['rows_per_s']:.2f}"
            print(f"{name:<44} {r['batches_per_s']:>10.1f} {r['rows_per_s']:>10.0f} {r['seconds']:>8.3f} "
                  f"{r['spread'] * 100:>6.1f}% {ratio:>20}")
        print()
        print("ratio = kiln.Loader rows/s / that reader's rows/s (unshuffled kiln against unshuffled readers, "
              "shuffled kiln against shuffled ones)")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

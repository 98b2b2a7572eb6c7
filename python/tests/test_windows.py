"""``kiln windows`` against a pandas implementation of the same definitions
(``windows_reference.py``) on random event tables: many entities, gaps, equal times, events
exactly on window edges, time zones, nulls. Integers must be equal; floats within 1e-12 of
the sum of absolute values the aggregate read in the window.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import kiln

from conftest import kiln_bin
from windows_reference import windows as reference_windows

DAY = 86400 * 10**9
BASE = pd.Timestamp("2024-03-01T00:00:00Z").value

FEATURES = [
    {"name": "n", "agg": "count"},
    {"name": "calls", "agg": "count", "where": {"kind": "call"}},
    {"name": "amount_n", "agg": "count", "column": "amount"},
    {"name": "spend", "agg": "sum", "column": "amount", "where": {"kind": ["pay", "sms"]}},
    {"name": "avg", "agg": "mean", "column": "amount"},
    {"name": "lo", "agg": "min", "column": "amount"},
    {"name": "hi", "agg": "max", "column": "qty"},
    {"name": "sd", "agg": "std", "column": "amount"},
    {"name": "first_q", "agg": "first", "column": "qty"},
    {"name": "last_a", "agg": "last", "column": "amount"},
    {"name": "kinds", "agg": "n_unique", "column": "kind"},
    {"name": "qtys", "agg": "n_unique", "column": "qty"},
    {"name": "since", "agg": "time_since_last"},
    {"name": "since_call", "agg": "time_since_last", "where": {"kind": "call"}},
    {"name": "flagged", "agg": "sum", "column": "qty", "where": {"flag": True}},
]


def random_events(seed: int, entities: int = 40, string_ids: bool = False) -> pd.DataFrame:
    """Events with gaps, bursts at equal times, times exactly on day edges, NaN and nulls."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(entities):
        n = int(rng.integers(0, 50))
        day0 = int(rng.integers(0, 30))
        for _ in range(n):
            day = day0 + int(rng.integers(0, 12)) + (20 if rng.random() < 0.1 else 0)
            r = rng.random()
            if r < 0.25:
                offset = 6 * 3600 * 10**9  # exactly on a grid point (offset 6h)
            elif r < 0.35:
                offset = 0
            else:
                offset = int(rng.integers(0, DAY // 10**6)) * 10**6
            ns = BASE + day * DAY + offset
            burst = 3 if rng.random() < 0.1 else 1  # equal times
            for _ in range(burst):
                amount = rng.normal(1e6, 3.0) if rng.random() < 0.5 else rng.normal(0, 50)
                rows.append({
                    "user": f"u{e:03d}" if string_ids else e * 7919 % 1000,
                    "ns": ns,
                    "amount": float("nan") if rng.random() < 0.1 else (None if rng.random() < 0.05 else amount),
                    "qty": None if rng.random() < 0.1 else int(rng.integers(-3, 8)),
                    "kind": [None, "call", "sms", "pay"][int(rng.integers(0, 4))],
                    "flag": bool(rng.random() < 0.5),
                })
    order = rng.permutation(len(rows))  # unsorted input
    frame = pd.DataFrame([rows[i] for i in order])
    frame["qty"] = frame["qty"].astype("Int64")
    frame["amount"] = frame["amount"].astype("float64")
    return frame


def write_parquet(frame: pd.DataFrame, path: Path, zone: str = "America/New_York", files: int = 3) -> Path:
    """Events as Parquet files with zoned timestamps (the same UTC instants)."""
    path.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame.drop(columns=["ns"]), preserve_index=False)
    times = pa.array(frame["ns"].to_numpy(), pa.timestamp("ns", tz="UTC")).cast(pa.timestamp("us", tz=zone))
    table = table.append_column("time", times)
    bounds = np.linspace(0, len(table), files + 1).astype(int)
    for i in range(files):
        pq.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]), path / f"part-{i}.parquet")
    return path


def run_windows(events: Path, spec: Dict[str, Any], out: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    spec_path = out.parent / (out.name + ".spec.json")
    spec_path.write_text(json.dumps(spec))
    result = subprocess.run(
        [str(kiln_bin()), "windows", str(events), "--entity", "user", "--time", "time",
         "--spec", str(spec_path), "-o", str(out), "--json", *extra],
        capture_output=True, text=True, timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def read_output(out: Path) -> pd.DataFrame:
    table = pq.read_table(sorted(out.glob("part-*.parquet")))
    frame = table.to_pandas()
    frame["t"] = frame["t"].dt.as_unit("ns").astype("int64")
    return frame.sort_values(["user", "t"]).reset_index(drop=True)


def assert_matches(got: pd.DataFrame, want: pd.DataFrame, spec: Dict[str, Any]) -> None:
    want = want.sort_values(["user", "t"]).reset_index(drop=True)
    assert len(got) == len(want), f"{len(got)} rows, reference {len(want)}"
    assert got["user"].tolist() == want["user"].tolist()
    assert got["t"].tolist() == want["t"].tolist()
    columns = [(f["name"], f["agg"]) for f in spec["features"]]
    if "label" in spec:
        columns.append(("label", spec["label"]["agg"]))
    for name, agg in columns:
        g, w = got[name].tolist(), want[name].tolist()
        if agg in ("count", "n_unique"):
            assert got[name].dtype == np.int64, name
            assert g == w, name
            continue
        assert got[name].dtype == np.float64, name
        scale = want["__mag_" + name].tolist()
        for i, (a, b) in enumerate(zip(g, w)):
            if b is None or (isinstance(b, float) and math.isnan(b)):
                assert a is None or math.isnan(a), (name, i, a, b)
            elif math.isinf(b):
                assert a == b, (name, i, a, b)
            else:
                tol = 1e-12 * max(scale[i], abs(b)) + 1e-300
                assert abs(a - b) <= tol, (name, i, a, b, tol)
    if "step" in spec:
        for i, (a, b) in enumerate(zip(got["sequence"], want["sequence"])):
            a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            assert a.shape == b.shape
            assert np.array_equal(np.isnan(a), np.isnan(b)), i
            ok = ~np.isnan(b)
            assert np.allclose(a[ok], b[ok], rtol=1e-9, atol=1e-6), i


def base_spec(**extra: Any) -> Dict[str, Any]:
    spec: Dict[str, Any] = {"period": "3d", "every": "1d", "offset": "6h", "features": FEATURES,
                            "label": {"agg": "count", "where": {"kind": "call"}, "horizon": "2d"}}
    spec.update(extra)
    return spec


@pytest.mark.parametrize("seed,extra", [
    (1, {}),
    (2, {"closed": "right", "min_events": 2}),
    (3, {"start": "2024-03-05T06:00:00Z", "end": "2024-03-20T06:00:00+00:00", "min_events": 0}),
    (4, {"closed": "both", "every": "12h", "offset": "0d"}),
    (5, {"closed": "none", "period": "2d", "label": {"agg": "mean", "column": "amount", "horizon": "36h"}}),
])
def test_matches_pandas_reference(tmp_path: Path, seed: int, extra: Dict[str, Any]) -> None:
    frame = random_events(seed)
    spec = base_spec(**extra)
    events = write_parquet(frame, tmp_path / "events")
    out = tmp_path / "out"
    report = json.loads(run_windows(events, spec, out).stdout)
    got = read_output(out)
    frame["time"] = pd.to_datetime(frame["ns"], utc=True)
    want = reference_windows(frame, "user", "time", spec)
    assert report["rows"] == len(want) > 50
    assert report["events"] == len(frame)
    assert_matches(got, want, spec)


def test_sequence_tensor_and_string_entities(tmp_path: Path) -> None:
    frame = random_events(11, string_ids=True)
    spec = base_spec(step="1d", features=FEATURES[:6] + FEATURES[10:13])
    events = write_parquet(frame, tmp_path / "events", zone="Asia/Kolkata")
    out = tmp_path / "out"
    run_windows(events, spec, out)
    got = read_output(out)
    field = pq.read_schema(sorted(out.glob("part-*.parquet"))[0]).field("sequence")
    assert json.loads(field.metadata[b"kiln.shape"]) == [3, 9]
    frame["time"] = pd.to_datetime(frame["ns"], utc=True)
    assert_matches(got, reference_windows(frame, "user", "time", spec), spec)


def test_csv_rfc3339_and_epoch_micros_with_separate_labels(tmp_path: Path) -> None:
    frame = random_events(21)
    events = tmp_path / "events"
    events.mkdir()
    # Half as RFC 3339 with a +05:30 offset, half as epoch microseconds: the same instants.
    half = len(frame) // 2
    a = frame.iloc[:half].copy()
    a["time"] = pd.to_datetime(a["ns"], utc=True).dt.tz_convert("Asia/Kolkata").map(lambda ts: ts.isoformat())
    b = frame.iloc[half:].copy()
    b["time"] = b["ns"] // 1000
    a.drop(columns=["ns"]).to_csv(events / "a.csv", index=False)
    b.drop(columns=["ns"]).to_csv(events / "b.csv", index=False)
    labels_frame = random_events(22)
    labels_dir = write_parquet(labels_frame, tmp_path / "labels", files=1)
    spec = base_spec(features=[f for f in FEATURES if f["agg"] != "n_unique"],
                     label={"agg": "sum", "column": "amount", "where": {"kind": "pay"}, "horizon": "4d"})
    out = tmp_path / "out"
    run_windows(events, spec, out, "--labels", str(labels_dir))
    got = read_output(out)
    frame["time"] = pd.to_datetime(frame["ns"], utc=True)
    labels_frame["time"] = pd.to_datetime(labels_frame["ns"], utc=True)
    assert_matches(got, reference_windows(frame, "user", "time", spec, labels=labels_frame), spec)


def test_no_feature_reads_an_event_at_or_after_t(tmp_path: Path) -> None:
    """Poison events at and after each window end: features must not change, labels must."""
    frame = random_events(31, entities=300)
    spec = base_spec(start="2024-03-04T06:00:00Z", end="2024-03-14T06:00:00Z")
    clean = tmp_path / "clean"
    run_windows(write_parquet(frame, tmp_path / "events"), spec, clean)
    cut = pd.Timestamp("2024-03-10T06:00:00Z").value  # a grid point
    poison = frame.drop_duplicates("user").copy()
    poison = pd.concat([poison.assign(ns=cut + k * DAY // 2, amount=1e15, qty=10**6, kind="call", flag=True)
                        for k in range(0, 8)])
    poisoned = tmp_path / "poisoned"
    run_windows(write_parquet(pd.concat([frame, poison]), tmp_path / "events2"), spec, poisoned)
    a, b = read_output(clean), read_output(poisoned)
    before = b[b["t"] <= cut].reset_index(drop=True)
    assert len(before) > 200
    names = [f["name"] for f in FEATURES]
    pd.testing.assert_frame_equal(a[a["t"] <= cut].reset_index(drop=True)[["user", "t", *names]],
                                  before[["user", "t", *names]])
    # The label at t = cut looks at [cut, cut + 2d): it sees the poison, as it should.
    at_cut = b[b["t"] == cut]
    assert len(at_cut) > 0 and (at_cut["label"] >= 1).all()


def bulk_events(path: Path, n: int, users: int, seed: int = 5, files: int = 4) -> Path:
    """`n` events of `users` entities over 60 days, vectorised, as Parquet files."""
    rng = np.random.default_rng(seed)
    table = pa.table({
        "user": rng.integers(0, users, n),
        "time": pa.array(BASE // 1000 + rng.integers(0, 60 * DAY // 1000, n), pa.timestamp("us", tz="UTC")),
        "amount": rng.normal(10, 3, n),
        "kind": pa.array(rng.choice(["call", "sms", "pay"], n)),
    })
    path.mkdir()
    for i in range(files):
        pq.write_table(table.slice(i * n // files, n // files), path / f"e{i}.parquet")
    return path


BULK_SPEC = {"period": "14d", "every": "1d", "features": [
    {"name": "n", "agg": "count"}, {"name": "s", "agg": "sum", "column": "amount"},
    {"name": "calls", "agg": "count", "where": {"kind": "call"}},
    {"name": "k", "agg": "n_unique", "column": "kind"}],
    "label": {"agg": "count", "where": {"kind": "pay"}, "horizon": "7d"}}


def test_resume_after_kill_and_idempotent_rerun(tmp_path: Path) -> None:
    events = bulk_events(tmp_path / "events", 1_000_000, 20_000)
    spec = BULK_SPEC
    whole = tmp_path / "whole"
    run_windows(events, spec, whole, "--memory", "128MB", "--workers", "1")
    out = tmp_path / "out"
    spec_path = tmp_path / "out.spec.json"
    spec_path.write_text(json.dumps(spec))
    args = [str(kiln_bin()), "windows", str(events), "--entity", "user", "--time", "time",
            "--spec", str(spec_path), "-o", str(out), "--workers", "1"]
    # Kill -9 once the first partition is journaled.
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "progress.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    report = json.loads(subprocess.run(args + ["--json"], capture_output=True, text=True, check=True).stdout)
    pd.testing.assert_frame_equal(read_output(out), read_output(whole))
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = json.loads(subprocess.run(args + ["--json"], capture_output=True, text=True, check=True).stdout)
    assert again["already_complete"] and again["rows"] == report["rows"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == report["rows"] and manifest["partitions"] == report["partitions"] > 1


def test_bounded_memory_spills_and_matches(tmp_path: Path) -> None:
    """Far more events than the memory budget's buffers: partitions spill, the output is equal."""
    events = bulk_events(tmp_path / "events", 2_000_000, 50_000)
    spec = BULK_SPEC
    small = run_windows(events, spec, tmp_path / "small", "--memory", "64MiB")
    big = run_windows(events, spec, tmp_path / "big", "--memory", "8GB")
    small_report, big_report = json.loads(small.stdout), json.loads(big.stdout)
    assert small_report["spilled_bytes"] > 0 and big_report["spilled_bytes"] == 0
    pd.testing.assert_frame_equal(read_output(tmp_path / "small"), read_output(tmp_path / "big"))


def test_tfrecord_output(tmp_path: Path) -> None:
    frame = random_events(51)
    spec = base_spec(features=FEATURES[:3])
    events = write_parquet(frame, tmp_path / "events")
    run_windows(events, spec, tmp_path / "pq")
    run_windows(events, spec, tmp_path / "tf", "--format", "tfrecord")
    from tfrecord.reader import tfrecord_loader  # an independent reader (PyPI `tfrecord`)
    description = {"user": "int", "t": "int", "calls": "int"}
    examples = [e for f in sorted((tmp_path / "tf").glob("part-*.tfrecord"))
                for e in tfrecord_loader(str(f), None, description)]
    parquet = read_output(tmp_path / "pq")
    assert len(examples) == len(parquet)
    got = sorted((e["user"][0], e["t"][0], e["calls"][0]) for e in examples)
    want = sorted(zip(parquet["user"], parquet["t"] // 1000, parquet["calls"]))
    assert got == want


@pytest.mark.parametrize("spec,extra,message", [
    ({"period": "14d", "every": "1d", "features": [{"name": "s", "agg": "sum"}]}, [],
     "invalid spec features[0]: `sum` needs a `column`"),
    ({"period": "1mo", "every": "1d", "features": [{"name": "n", "agg": "count"}]}, [], "calendar unit"),
    ({"period": "14d", "every": "1d", "features": [{"name": "s", "agg": "sum", "column": "nope"}]}, [],
     'has no column "nope"'),
    ({"period": "14d", "every": "1d", "features": [{"name": "s", "agg": "sum", "column": "kind"}]}, [],
     'column "kind" holds strings'),
    ({"period": "14d", "every": "1d", "features": [{"name": "n", "agg": "count", "where": {"qty": "x"}}]}, [],
     "`where` on \"qty\": the column is Int64 but the values are not all numbers"),
    ({"period": "14d", "every": "1d", "features": [{"name": "n", "agg": "count"}]}, ["--memory", "1MB"],
     "invalid --memory"),
    ({"period": "14d", "every": "1d", "features": [{"name": "n", "agg": "count"}]}, ["--labels", "/nonexistent"],
     "given, but the spec has no `label`"),
])
def test_errors_name_the_problem(tmp_path: Path, spec: Dict[str, Any], extra: list, message: str) -> None:
    events = write_parquet(random_events(61, entities=5), tmp_path / "events", files=1)
    result = run_windows(events, spec, tmp_path / "out", *extra, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "panicked" not in result.stderr


def test_bad_inputs_and_directories(tmp_path: Path) -> None:
    spec = {"period": "2d", "every": "1d", "features": [{"name": "n", "agg": "count"}]}
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "e.csv").write_text("user,time\n1,2024-01-01T00:00:00\n")
    result = run_windows(bad, spec, tmp_path / "o1", check=False)
    assert result.returncode != 0 and "e.csv" in result.stderr and "with an offset" in result.stderr
    (bad / "e.csv").write_text("garbage")
    (bad / "f.parquet").write_bytes(b"PAR1 not really")
    # Both files are bad: the first in path order is the one reported, whatever the threads did.
    result = run_windows(bad, spec, tmp_path / "o2", check=False)
    assert result.returncode != 0 and "e.csv: has no column" in result.stderr, result.stderr
    (bad / "e.csv").unlink()
    result = run_windows(bad, spec, tmp_path / "o2b", check=False)
    assert result.returncode != 0 and "f.parquet: not a readable Parquet file" in result.stderr, result.stderr
    result = run_windows(tmp_path / "missing", spec, tmp_path / "o3", check=False)
    assert result.returncode != 0 and "missing" in result.stderr
    events = write_parquet(random_events(62, entities=5), tmp_path / "events", files=1)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    result = run_windows(events, spec, foreign, check=False)
    assert result.returncode != 0 and "which kiln did not write" in result.stderr
    out = tmp_path / "o4"
    run_windows(events, spec, out)
    other = dict(spec, period="3d")
    result = run_windows(events, other, out, check=False)
    assert result.returncode != 0 and "another run" in result.stderr


def test_python_api_in_memory_and_to_files(tmp_path: Path) -> None:
    frame = random_events(71, string_ids=True)
    spec = base_spec()
    frame["time"] = pd.to_datetime(frame["ns"], utc=True).dt.tz_convert("Europe/Berlin")
    events = frame.drop(columns=["ns"])
    table = kiln.windows(events, entity="user", time="time", spec=spec)
    assert isinstance(table, pa.Table)
    assert table.schema.field("t").type == pa.timestamp("us", tz="UTC")
    got = table.to_pandas()
    got["t"] = got["t"].dt.as_unit("ns").astype("int64")
    want = reference_windows(events, "user", "time", spec)
    assert_matches(got.sort_values(["user", "t"]).reset_index(drop=True), want, spec)
    # The same from a pyarrow.Table into files, and from the CLI: identical rows.
    report = kiln.windows(pa.Table.from_pandas(events, preserve_index=False), "user", "time", spec,
                          output=tmp_path / "py", progress=False)
    assert report["rows"] == len(want)
    again = kiln.windows(pa.Table.from_pandas(events, preserve_index=False), "user", "time", spec,
                         output=tmp_path / "py", progress=False)
    assert again["already_complete"]
    pd.testing.assert_frame_equal(read_output(tmp_path / "py"),
                                  got.sort_values(["user", "t"]).reset_index(drop=True))
    with pytest.raises(kiln.ArgumentError, match="need a table, not a path"):
        kiln.windows(str(tmp_path), "user", "time", spec)
    with pytest.raises(kiln.ArgumentError, match="invalid spec features"):
        kiln.windows(events, "user", "time", {"period": "1d", "every": "1d", "features": [{"name": "s", "agg": "sum"}]})
    with pytest.raises(kiln.SourceError, match='has no column "nope"'):
        kiln.windows(events, "nope", "time", spec)
    with pytest.raises(TypeError, match="must be a path"):
        kiln.windows(42, "user", "time", spec)


def test_single_files_paths_and_type_mismatches(tmp_path: Path) -> None:
    frame = random_events(91, entities=8)
    spec = base_spec(features=FEATURES[:4])
    events = write_parquet(frame, tmp_path / "events", files=1)
    # One file instead of a directory; kiln.windows with a path equals the CLI.
    run_windows(events / "part-0.parquet", spec, tmp_path / "one")
    report = kiln.windows(events, "user", "time", spec, output=tmp_path / "py", progress=False)
    assert report["rows"] > 0
    pd.testing.assert_frame_equal(read_output(tmp_path / "one"), read_output(tmp_path / "py"))
    # Entities that are integers in one file and strings in another.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pq.write_table(pa.table({"user": [1, 2], "time": pa.array([1, 2], pa.timestamp("us", tz="UTC"))}),
                   mixed / "a.parquet")
    pq.write_table(pa.table({"user": ["x", "y"], "time": pa.array([1, 2], pa.timestamp("us", tz="UTC"))}),
                   mixed / "b.parquet")
    count_only = {"period": "2d", "every": "1d", "features": [{"name": "n", "agg": "count"}]}
    result = run_windows(mixed, count_only, tmp_path / "o1", check=False)
    assert result.returncode != 0 and "b.parquet" in result.stderr and "must agree across files" in result.stderr
    # A time column of an unusable type, and a CSV value that is not a number.
    floats = tmp_path / "floats"
    floats.mkdir()
    pq.write_table(pa.table({"user": [1], "time": [1.5]}), floats / "f.parquet")
    result = run_windows(floats, count_only, tmp_path / "o2", check=False)
    assert result.returncode != 0 and 'time column "time" is Float64' in result.stderr, result.stderr
    bad_csv = tmp_path / "badcsv"
    bad_csv.mkdir()
    (bad_csv / "e.csv").write_text("user,time,amount\n1,1,2.5\n1,2,lots\n")
    sums = {"period": "2d", "every": "1d", "features": [{"name": "s", "agg": "sum", "column": "amount"}]}
    result = run_windows(bad_csv, sums, tmp_path / "o3", check=False)
    assert result.returncode != 0 and "e.csv" in result.stderr and "lots" in result.stderr, result.stderr
    # Labels whose entity type differs from the events'.
    labels = tmp_path / "labels"
    labels.mkdir()
    pq.write_table(pa.table({"user": ["x"], "time": pa.array([1], pa.timestamp("us", tz="UTC"))}),
                   labels / "l.parquet")
    with_label = dict(count_only, label={"agg": "count", "horizon": "1d"})
    result = run_windows(events, with_label, tmp_path / "o4", "--labels", str(labels), check=False)
    assert result.returncode != 0 and "its entity column is Utf8 but the events' is Int64" in result.stderr, result.stderr


def test_labels_table_without_rows_for_the_events(tmp_path: Path) -> None:
    """A labels table with no rows (or none for a partition) gives empty labels, never the
    events' own counts."""
    frame = random_events(101, entities=10)
    events = write_parquet(frame, tmp_path / "events", files=1)
    empty = tmp_path / "labels"
    empty.mkdir()
    schema = pq.read_schema(events / "part-0.parquet")
    pq.write_table(schema.empty_table(), empty / "none.parquet")
    spec = base_spec(features=FEATURES[:2], label={"agg": "count", "horizon": "2d"})
    run_windows(events, spec, tmp_path / "out", "--labels", str(empty))
    got = read_output(tmp_path / "out")
    assert len(got) > 0 and (got["label"] == 0).all()
    table = pq.read_table(events)
    in_memory = kiln.windows(table, "user", "time", dict(spec, label={"agg": "sum", "column": "amount", "horizon": "2d"}),
                             labels=table.schema.empty_table())
    # Sums of nothing are 0, as pandas sums (not the events' own amounts).
    assert in_memory.num_rows == len(got) and in_memory.column("label").to_pylist() == [0.0] * len(got)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # pandas' std of inf
def test_infinities_do_not_poison_later_windows(tmp_path: Path) -> None:
    day = pd.Timedelta("1d")
    t0 = pd.Timestamp("2024-01-01T12:00:00Z")
    amounts = [1.0, float("inf"), 2.0, float("-inf"), 3.0, 4.0, 5.0, 6.0, 7.0]
    frame = pd.DataFrame({"user": 1, "time": [t0 + i * day for i in range(len(amounts))], "amount": amounts})
    spec = {"period": "2d", "every": "1d", "features": [
        {"name": "s", "agg": "sum", "column": "amount"}, {"name": "m", "agg": "mean", "column": "amount"},
        {"name": "sd", "agg": "std", "column": "amount"}, {"name": "hi", "agg": "max", "column": "amount"}]}
    got = kiln.windows(frame, "user", "time", spec).to_pandas()
    got["t"] = got["t"].dt.as_unit("ns").astype("int64")
    want = reference_windows(frame, "user", "time", spec)
    assert_matches(got, want, spec)
    # The last windows hold only finite values again: finite sums.
    assert np.isfinite(got["s"].iloc[-3:]).all()


def test_in_memory_checks_labels_like_the_cli() -> None:
    frame = random_events(111, entities=4)
    frame["time"] = pd.to_datetime(frame["ns"], utc=True)
    events = frame.drop(columns=["ns"])
    count_only = {"period": "2d", "every": "1d", "features": [{"name": "n", "agg": "count"}]}
    with pytest.raises(kiln.ArgumentError, match="the spec has no `label`"):
        kiln.windows(events, "user", "time", count_only, labels=events)
    strings = events.assign(user=events["user"].astype(str))
    with pytest.raises(kiln.ArgumentError, match="its entity column is Utf8 but the events' is Int64"):
        kiln.windows(events, "user", "time", dict(count_only, label={"agg": "count", "horizon": "1d"}), labels=strings)


def test_csv_column_empty_in_the_sampled_rows(tmp_path: Path) -> None:
    """Type inference samples 10,000 rows; a column first filled after them is still read."""
    events = tmp_path / "events"
    events.mkdir()
    rows = ["user,time,coupon"] + [f"1,{i * 60_000_000}," for i in range(10_050)]
    rows += [f"1,{(10_050 + i) * 60_000_000},C{i % 3}" for i in range(30)]
    rows += [f"1,{9 * 86_400_000_000},"]  # a later event, so windows reach past the coupons
    (events / "e.csv").write_text("\n".join(rows) + "\n")
    spec = {"period": "1d", "every": "1d", "features": [
        {"name": "coupons", "agg": "n_unique", "column": "coupon"},
        {"name": "used", "agg": "count", "column": "coupon"}]}
    report = json.loads(run_windows(events, spec, tmp_path / "out").stdout)
    got = read_output(tmp_path / "out")
    assert report["rows"] == len(got) and got["used"].sum() == 30 and got["coupons"].max() == 3

"""``kiln windows`` against Polars and pandas doing the same job, in one run, on generated
events: N entities, M events over 180 days, 14-day windows every day, 12 features.

Each tool reads the same Parquet files and writes its windows as Parquet; every run is a
separate process so peak memory (max RSS) is its own. Rows and a sample of values are
checked to agree before any time is reported.

    pip install -r bench/windows/requirements.txt   # Polars, into the reference venv
    python bench/windows/bench.py --kiln target/release/kiln [--entities 100000 --events 10000000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DAY_US = 86_400_000_000
START_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
KINDS = ["call", "sms", "pay", "topup", "complaint"]

SPEC = {
    "period": "14d", "every": "1d", "closed": "left",
    "features": [
        {"name": "n", "agg": "count"},
        {"name": "calls", "agg": "count", "where": {"kind": "call"}},
        {"name": "sms", "agg": "count", "where": {"kind": "sms"}},
        {"name": "complaints", "agg": "count", "where": {"kind": "complaint"}},
        {"name": "spend", "agg": "sum", "column": "amount", "where": {"kind": ["pay", "topup"]}},
        {"name": "avg_amount", "agg": "mean", "column": "amount"},
        {"name": "max_amount", "agg": "max", "column": "amount"},
        {"name": "min_call", "agg": "min", "column": "duration", "where": {"kind": "call"}},
        {"name": "std_call", "agg": "std", "column": "duration", "where": {"kind": "call"}},
        {"name": "last_amount", "agg": "last", "column": "amount"},
        {"name": "kinds", "agg": "n_unique", "column": "kind"},
        {"name": "since_last", "agg": "time_since_last"},
    ],
}


def generate(out: Path, entities: int, events: int, files: int = 8, seed: int = 0) -> None:
    """Unsorted events: entity activity is skewed (a few heavy users), times uniform over 180 days."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    per_file = events // files
    weights = rng.pareto(1.5, entities) + 1
    weights /= weights.sum()
    for i in range(files):
        user = rng.choice(entities, per_file, p=weights).astype(np.int64)
        kind = rng.choice(len(KINDS), per_file, p=[0.4, 0.3, 0.15, 0.1, 0.05])
        amount = np.where(np.isin(kind, [2, 3]), rng.gamma(2.0, 15.0, per_file), rng.gamma(1.0, 0.5, per_file))
        amount[rng.random(per_file) < 0.02] = np.nan
        table = pa.table({
            "user": user,
            "time": pa.array(START_US + rng.integers(0, 180 * DAY_US, per_file), pa.timestamp("us", tz="UTC")),
            "kind": pa.DictionaryArray.from_arrays(kind.astype(np.int32), KINDS).cast(pa.string()),
            "amount": pa.array(amount, from_pandas=True),
            "duration": rng.exponential(120.0, per_file),
        })
        pq.write_table(table, out / f"events-{i:02d}.parquet", row_group_size=1 << 20)


def run_polars(events: Path, out: Path) -> None:
    import polars as pl

    lf = pl.scan_parquet(str(events / "*.parquet")).sort(["user", "time"], maintain_order=True)
    call = pl.col("kind") == "call"
    windows = (
        lf.group_by_dynamic("time", every="1d", period="14d", offset="-13d", closed="left",
                            label="right", group_by="user", start_by="window")
        .agg([
            pl.len().alias("n"),
            call.sum().alias("calls"),
            (pl.col("kind") == "sms").sum().alias("sms"),
            (pl.col("kind") == "complaint").sum().alias("complaints"),
            pl.col("amount").filter(pl.col("kind").is_in(["pay", "topup"])).fill_nan(None).sum().alias("spend"),
            pl.col("amount").fill_nan(None).mean().alias("avg_amount"),
            pl.col("amount").fill_nan(None).max().alias("max_amount"),
            pl.col("duration").filter(call).min().alias("min_call"),
            pl.col("duration").filter(call).std(ddof=1).alias("std_call"),
            pl.col("amount").fill_nan(None).drop_nulls().last().alias("last_amount"),
            pl.col("kind").drop_nulls().n_unique().alias("kinds"),
            pl.col("time").max().alias("_last"),
        ])
        .rename({"time": "t"})
    )
    # kiln's grid: t <= each entity's last event.
    last = lf.group_by("user").agg(pl.col("time").max().alias("_end"))
    windows = (
        windows.join(last, on="user")
        .filter(pl.col("t") <= pl.col("_end"))
        .with_columns(((pl.col("t") - pl.col("_last")).dt.total_microseconds() / 1e6).alias("since_last"))
        .drop(["_last", "_end"])
    )
    windows.sink_parquet(str(out / "polars.parquet"))


def run_pandas(events: Path, out: Path) -> None:
    """pandas the efficient way it can: per-(entity, day) partial aggregates, each entity's days
    reindexed to a full calendar, then 14-day rolling windows over the days."""
    import pandas as pd

    df = pd.read_parquet(events)
    df["amount"] = df["amount"].astype("float64")
    df["t_us"] = df["time"].dt.as_unit("us").astype("int64")
    df["day"] = df["t_us"] // DAY_US
    df = df.sort_values(["user", "t_us"], kind="stable")
    is_call = df["kind"] == "call"
    parts = pd.DataFrame({
        "user": df["user"], "day": df["day"],
        "n": 1,
        "calls": is_call.astype(np.int64),
        "sms": (df["kind"] == "sms").astype(np.int64),
        "complaints": (df["kind"] == "complaint").astype(np.int64),
        "spend": df["amount"].where(df["kind"].isin(["pay", "topup"]), 0.0).fillna(0.0),
        "amount_sum": df["amount"].fillna(0.0),
        "amount_n": df["amount"].notna().astype(np.int64),
        "amount_max": df["amount"],
        "call_min": df["duration"].where(is_call),
        "call_sum": df["duration"].where(is_call, 0.0),
        "call_sq": (df["duration"] ** 2).where(is_call, 0.0),
        "last_amount": df["amount"],
        "last_t": df["t_us"],
    })
    for kind in KINDS:
        parts["k_" + kind] = (df["kind"] == kind).astype(np.int64)
    daily = parts.groupby(["user", "day"], sort=True).agg(
        {**{c: "sum" for c in ["n", "calls", "sms", "complaints", "spend", "amount_sum", "amount_n",
                                "call_sum", "call_sq"] + ["k_" + k for k in KINDS]},
         "amount_max": "max", "call_min": "min", "last_amount": "last", "last_t": "max"})
    # Every entity's calendar from its first day to its last.
    bounds = daily.reset_index().groupby("user")["day"].agg(["min", "max"])
    lengths = (bounds["max"] - bounds["min"] + 1).to_numpy()
    users = np.repeat(bounds.index.to_numpy(), lengths)
    days = np.concatenate([np.arange(a, b + 1) for a, b in zip(bounds["min"], bounds["max"])])
    full = daily.reindex(pd.MultiIndex.from_arrays([users, days], names=["user", "day"]))
    sums = [c for c in daily.columns if c not in ("amount_max", "call_min", "last_amount", "last_t")]
    full[sums] = full[sums].fillna(0)
    grouped = full.groupby(level="user", sort=False)
    rolled = grouped[sums].rolling(14, min_periods=1).sum().reset_index(level=0, drop=True)
    rolled["amount_max"] = grouped["amount_max"].rolling(14, min_periods=1).max().reset_index(level=0, drop=True)
    rolled["call_min"] = grouped["call_min"].rolling(14, min_periods=1).min().reset_index(level=0, drop=True)
    rolled["last_amount"] = grouped["last_amount"].ffill(limit=13)
    rolled["last_t"] = grouped["last_t"].ffill(limit=13)
    # The window ending at t = day + 1 covers days t-14 .. t-1.
    res = rolled.reset_index()
    res["t"] = (res["day"] + 1) * DAY_US
    last_event = df.groupby("user")["t_us"].max()
    res = res[(res["n"] > 0) & (res["t"] <= res["user"].map(last_event))]
    nc = res["calls"].astype("float64")
    var = (res["call_sq"] - res["call_sum"] ** 2 / nc) / (nc - 1)
    result = pd.DataFrame({
        "user": res["user"], "t": pd.to_datetime(res["t"], unit="us", utc=True),
        "n": res["n"].astype(np.int64), "calls": res["calls"].astype(np.int64),
        "sms": res["sms"].astype(np.int64), "complaints": res["complaints"].astype(np.int64),
        "spend": res["spend"], "avg_amount": res["amount_sum"] / res["amount_n"].where(res["amount_n"] > 0),
        "max_amount": res["amount_max"], "min_call": res["call_min"],
        "std_call": np.sqrt(var.clip(lower=0)).where(nc > 1),
        "last_amount": res["last_amount"],
        "kinds": sum((res["k_" + k] > 0).astype(np.int64) for k in KINDS),
        "since_last": (res["t"] - res["last_t"]) / 1e6,
    })
    result.to_parquet(out / "pandas.parquet", index=False)


def read_sorted(path):
    import pandas as pd

    frame = pq.read_table(path).to_pandas()
    frame["t"] = pd.to_datetime(frame["t"], utc=True)
    return frame.sort_values(["user", "t"]).reset_index(drop=True)


def check(kiln_out: Path, other: Path, name: str) -> None:
    """Rows equal; integer features equal; float features close (NaN where the other has null)."""
    a = read_sorted(sorted(kiln_out.glob("part-*.parquet")))
    b = read_sorted(other)
    assert len(a) == len(b), f"{name}: {len(b)} rows, kiln {len(a)}"
    assert (a["user"].to_numpy() == b["user"].to_numpy()).all(), name
    assert (a["t"] == b["t"]).all(), name
    for f in SPEC["features"]:
        x = a[f["name"]].to_numpy(dtype=np.float64)
        y = b[f["name"]].to_numpy(dtype=np.float64)
        same_nulls = np.isnan(x) == np.isnan(y)
        assert same_nulls.all(), (name, f["name"], np.flatnonzero(~same_nulls)[:5])
        ok = ~np.isnan(x)
        worst = np.max(np.abs(x[ok] - y[ok]) / np.maximum(np.abs(x[ok]), 1e-300), initial=0.0)
        if (name, f["name"]) == ("pandas", "std_call"):
            # pandas' std comes from rolling sums of squares, which cancel: reported, not held
            # to kiln's (and Polars') agreement.
            print(f"pandas std_call: max relative difference from kiln {worst:.2g}", file=sys.stderr)
            continue
        assert np.allclose(x[ok], y[ok], rtol=1e-9, atol=1e-9), (name, f["name"], f"max relative difference {worst:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kiln", required=True)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--workdir")
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--stage", choices=["polars", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--events-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage == "polars":
        return run_polars(Path(args.events_dir), Path(args.out))
    if args.stage == "pandas":
        return run_pandas(Path(args.events_dir), Path(args.out))

    work = Path(args.workdir or tempfile.mkdtemp(prefix="kiln-windows-bench-"))
    events = work / f"events-{args.entities}-{args.events}"
    if not events.exists():
        print(f"generating {args.events} events of {args.entities} entities in {events}", file=sys.stderr)
        generate(events, args.entities, args.events)
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(SPEC))
    results = {}
    for name in (["pandas"] if not args.skip_pandas else []) + ["polars", "kiln"]:
        out = work / f"out-{name}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        out.mkdir()
        if name == "kiln":
            command = [args.kiln, "windows", str(events), "--entity", "user", "--time", "time",
                       "--spec", str(spec_path), "-o", str(out / "w"), "--json"]
        else:
            command = [sys.executable, __file__, "--kiln", args.kiln, "--stage", name,
                       "--events-dir", str(events), "--out", str(out)]
        # Each tool in its own process, measured by /usr/bin/time-like rusage of a wrapper.
        wrapper = [sys.executable, "-c",
                   "import resource,subprocess,sys,json;r=subprocess.run(sys.argv[1:]);"
                   "print(json.dumps({'rc':r.returncode,'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}),file=sys.stderr)"]
        start = time.perf_counter()
        result = subprocess.run(wrapper + command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        stats = json.loads(result.stderr.strip().splitlines()[-1])
        if stats["rc"] != 0:
            raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
        results[name] = {"seconds": seconds, "peak_mib": stats["rss"] / 1024}
        if name == "kiln":
            results[name]["report"] = json.loads(result.stdout)
        print(f"{name}: {seconds:.1f} s, peak {stats['rss'] / 1024:.0f} MiB", file=sys.stderr)
    kiln_out = work / "out-kiln" / "w"
    check(kiln_out, work / "out-polars" / "polars.parquet", "polars")
    if not args.skip_pandas:
        check(kiln_out, work / "out-pandas" / "pandas.parquet", "pandas")
    rows = results["kiln"]["report"]["rows"]
    print(f"\n{args.events:,} events, {args.entities:,} entities, {rows:,} windows (14d every 1d, 12 features); outputs agree")
    print(f"{'tool':8} {'seconds':>8} {'events/s':>12} {'peak MiB':>9} {'kiln faster':>11} {'kiln memory':>11}")
    k = results["kiln"]
    for name, r in results.items():
        print(f"{name:8} {r['seconds']:8.1f} {args.events / r['seconds']:12,.0f} {r['peak_mib']:9.0f} "
              f"{r['seconds'] / k['seconds']:10.2f}x {k['peak_mib'] / r['peak_mib']:10.2f}x")


if __name__ == "__main__":
    main()

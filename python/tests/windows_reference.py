"""A straightforward pandas implementation of ``kiln windows``' definitions, written from the
contract (not from kiln's code), for the tests to compare against: every window is cut with
boolean masks and every aggregate is the pandas method of the same name.
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9,
         "d": 86400 * 10**9, "w": 7 * 86400 * 10**9}


def span(text: str) -> int:
    """Polars-style spans (``14d``, ``1d12h``) in nanoseconds."""
    total = 0
    for number, unit in re.findall(r"(\d+)([a-z]+)", text):
        total += int(number) * UNITS[unit]
    return total


def instant(value: Any) -> int:
    if isinstance(value, str):
        return pd.Timestamp(value).value
    return int(value) * 1000


def to_nanos(series: pd.Series) -> np.ndarray:
    """UTC nanoseconds of a time column (timestamps of any zone, or RFC 3339 strings)."""
    if pd.api.types.is_integer_dtype(series):
        return series.to_numpy(dtype=np.int64) * 1000
    return pd.to_datetime(series, utc=True).dt.as_unit("ns").astype("int64").to_numpy()


def select(window: pd.DataFrame, where: Optional[Dict[str, Any]]) -> pd.DataFrame:
    for column, wanted in (where or {}).items():
        values = wanted if isinstance(wanted, list) else [wanted]
        column_values = window[column]
        mask = column_values.notna() & column_values.isin(values)
        window = window[mask.astype(bool)]
    return window


def aggregate(window: pd.DataFrame, agg: Dict[str, Any], end: int) -> Any:
    """One aggregate over a window's events; ``None`` for a null."""
    sel = select(window, agg.get("where"))
    kind, column = agg["agg"], agg.get("column")
    if kind == "count":
        return int(len(sel)) if column is None else int(sel[column].notna().sum())
    if kind == "time_since_last":
        present = sel if column is None else sel[sel[column].notna()]
        return None if present.empty else (end - int(present["__ns"].max())) / 1e9
    if kind == "n_unique":
        return int(sel[column].nunique(dropna=True))
    values = sel[column].astype("float64")
    nonnull = values.dropna()
    if kind == "sum":
        return float(values.sum())
    if nonnull.empty:
        return None
    result = {
        "mean": lambda: values.mean(),
        "min": lambda: values.min(),
        "max": lambda: values.max(),
        "std": lambda: values.std(ddof=1),
        "first": lambda: nonnull.iloc[0],
        "last": lambda: nonnull.iloc[-1],
    }[kind]()
    return None if result is None or (isinstance(result, float) and math.isnan(result)) else float(result)


def magnitude(window: pd.DataFrame, agg: Dict[str, Any]) -> float:
    """The sum of absolute values an aggregate reads (the float tolerance's scale)."""
    column = agg.get("column")
    if column is None or agg["agg"] == "n_unique":
        return 0.0
    sel = select(window, agg.get("where"))
    values = pd.to_numeric(sel[column], errors="coerce").astype("float64").abs()
    return float(values.sum())


def windows(events: pd.DataFrame, entity: str, time: str, spec: Dict[str, Any],
            labels: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Rows (entity, t, features..., sequence, label) with ``__mag_<name>`` tolerance scales."""
    period, every = span(spec["period"]), span(spec["every"])
    offset = span(spec.get("offset", "0d"))
    closed = spec.get("closed", "left")
    start_in, end_in = closed in ("left", "both"), closed in ("right", "both")
    min_events = spec.get("min_events", 1)
    start = instant(spec["start"]) if "start" in spec else None
    end = instant(spec["end"]) if "end" in spec else None
    step = span(spec["step"]) if "step" in spec else None
    features = spec["features"]
    label = spec.get("label")
    events = events.copy()
    events["__ns"] = to_nanos(events[time])
    events = events[events[entity].notna()]
    label_events = events
    if labels is not None:
        label_events = labels.copy()
        label_events["__ns"] = to_nanos(label_events[time])

    def inside(ns: np.ndarray, lo: int, hi: int, lo_in: bool, hi_in: bool) -> np.ndarray:
        return ((ns > lo) | (lo_in & (ns == lo))) & ((ns < hi) | (hi_in & (ns == hi)))

    rows: List[Dict[str, Any]] = []
    for key, group in events.groupby(entity, sort=True):
        # A stable sort keeps input order among equal times.
        group = group.sort_values("__ns", kind="stable")
        ns = group["__ns"].to_numpy()
        lab = label_events[label_events[entity] == key].sort_values("__ns", kind="stable")
        lab_ns = lab["__ns"].to_numpy()
        k_lo = -((offset - start) // every) if start is not None else (int(ns[0]) - offset) // every + 1
        k_hi = (end - offset) // every if end is not None else (int(ns[-1]) - offset) // every
        for k in range(k_lo, k_hi + 1):
            t = offset + k * every
            window = group[inside(ns, t - period, t, start_in, end_in)]
            if len(window) < min_events:
                continue
            row: Dict[str, Any] = {entity: key, "t": t}
            for feature in features:
                row[feature["name"]] = aggregate(window, feature, t)
                row["__mag_" + feature["name"]] = magnitude(window, feature)
            if step is not None:
                sequence = []
                steps = period // step
                for j in range(steps):
                    a, b = t - period + j * step, t - period + (j + 1) * step
                    part = window[inside(window["__ns"].to_numpy(), a, b, start_in if j == 0 else not end_in,
                                         end_in if j == steps - 1 else end_in)]
                    for feature in features:
                        value = aggregate(part, feature, b)
                        sequence.append(float("nan") if value is None else float(value))
                row["sequence"] = sequence
            if label is not None:
                horizon = span(label["horizon"])
                label_window = lab[inside(lab_ns, t, t + horizon, not end_in, end_in)]
                row["label"] = aggregate(label_window, label, t + horizon)
                row["__mag_label"] = magnitude(label_window, label)
            rows.append(row)
    return pd.DataFrame(rows)

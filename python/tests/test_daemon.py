"""``kiln daemon`` end to end, driven by clients no one here wrote: ``requests`` for the JSON
API and Server-Sent Events, ``prometheus_client``'s parser for ``/metrics``. The daemon is the
CLI built for the suite (``$KILN_BIN``), started on a free loopback port."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import EXAMPLES, FIXED_MEL, kiln_bin, run_cli, tone, write_wav

LOG_MEL = json.loads((EXAMPLES / "log_mel.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, state: Path, cache: Path, token: Optional[str] = None, max_jobs: int = 2):
        self.state, self.cache, self.token, self.max_jobs = state, cache, token, max_jobs
        self.port = free_port()
        self.flight_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.flight_url = f"grpc://127.0.0.1:{self.flight_port}"
        self.process: Optional[subprocess.Popen] = None
        self.log = state.parent / f"daemon-{self.port}.log"

    def start(self) -> "Daemon":
        args = [str(kiln_bin()), "daemon", "--state", str(self.state), "--cache", str(self.cache),
                "--listen", f"127.0.0.1:{self.port}", "--flight-listen", f"127.0.0.1:{self.flight_port}",
                "--max-jobs", str(self.max_jobs)]
        env = dict(os.environ)
        if self.token:
            env["KILN_TOKEN"] = self.token
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"), env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/healthz", headers=self.headers(), timeout=1).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.05)
            assert self.process.poll() is None, self.log.read_text()
        pytest.fail(f"the daemon did not start: {self.log.read_text()}")

    def headers(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, headers=self.headers(), timeout=30, **kw)

    def post(self, path: str, body: Any) -> requests.Response:
        return requests.post(self.url + path, json=body, headers=self.headers(), timeout=30)

    def wait(self, job_id: str, timeout: float = 120) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/v1/jobs/{job_id}").json()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(0.05)
        pytest.fail(f"job {job_id} did not finish: {job}")

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path / "state", tmp_path / "cache").start()
    yield d
    d.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("daemon_clips")
    for i in range(24):
        write_wav(root / ("xyz"[i % 3]) / f"c{i:03d}.wav", tone(i))
    return root


def stream_checksum(entry: str) -> str:
    out = run_cli("stream", entry, "--batch-size", "7", "--json").stdout
    return json.loads(out.strip().splitlines()[-1])["checksum"]


def test_a_convert_job_runs_and_reports_like_the_cli(daemon, clips, tmp_path):
    response = daemon.post("/v1/jobs", {"kind": "convert", "source": str(clips), "spec": FIXED_MEL, "options": {"workers": 1}})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["state"] in ("queued", "running") and job["kind"] == "convert"
    done = daemon.wait(job["id"])
    assert done["state"] == "succeeded", done
    assert done["progress"]["done"] == done["progress"]["total"] == 24
    assert done["failures"] == [] and done["error"] is None
    # The same entry `kiln convert` makes, found in the daemon's cache.
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(FIXED_MEL))
    cli = json.loads(run_cli("convert", clips, "--spec", spec, "--cache", daemon.cache, "--json").stdout.strip().splitlines()[-1])
    assert cli["cache_hit"] and Path(cli["entry"]) == Path(done["entry"])
    listed = daemon.get("/v1/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    entries = daemon.get("/v1/entries").json()["entries"]
    assert [e["key"] for e in entries] == [Path(done["entry"]).name]


def test_a_score_job_scores_an_entry(daemon, clips, tmp_path):
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).parent / "oip"))
    import models

    from conftest import FIXED_MEL_SHAPE

    model = models.mlp(tmp_path / "mlp.onnx", ["batch", *FIXED_MEL_SHAPE])
    entry = daemon.wait(daemon.post("/v1/jobs", {"kind": "convert", "source": str(clips), "spec": FIXED_MEL}).json()["id"])["entry"]
    out = tmp_path / "scores"
    job = daemon.post("/v1/jobs", {"kind": "score", "source": entry,
                                   "options": {"model": str(model), "output": str(out), "batch_size": 5}}).json()
    done = daemon.wait(job["id"])
    assert done["state"] == "succeeded", done
    assert done["output"] == str(out) and done["rows"] == 24
    assert done["progress"]["done"] == done["progress"]["total"] == 24
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 24 and manifest["failures"] == []
    # The CLI on the same output: already complete, nothing scored again.
    again = json.loads(run_cli("score", entry, "--model", model, "-o", out, "--json").stdout.strip().splitlines()[-1])
    assert again["scored"] == 0


def test_events_stream_progress_until_the_job_finishes(daemon, clips):
    job = daemon.post("/v1/jobs", {"kind": "convert", "source": str(clips), "spec": LOG_MEL, "options": {"workers": 1}}).json()
    events = []
    with requests.get(f"{daemon.url}/v1/jobs/{job['id']}/events", stream=True, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    assert events, "no events"
    assert events[-1]["state"] == "succeeded"
    assert all(e["id"] == job["id"] for e in events)
    done = [e["progress"]["done"] for e in events]
    assert done == sorted(done)


def test_metrics_parse_and_count(daemon, clips):
    job = daemon.post("/v1/jobs", {"kind": "convert", "source": str(clips), "spec": FIXED_MEL, "options": {"include": "x/*"}}).json()
    assert daemon.wait(job["id"])["state"] == "succeeded"
    response = daemon.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    jobs = {s.labels["state"]: s.value for s in families["kiln_jobs"].samples}
    assert jobs["succeeded"] == 1 and jobs["running"] == 0
    assert families["kiln_rows_converted"].samples[0].value == 8
    assert families["kiln_bytes_read"].samples[0].value == sum(p.stat().st_size for p in (clips / "x").iterdir())
    assert families["kiln_failures"].samples[0].value == 0
    histogram = {s.name: s for s in families["kiln_job_duration_seconds"].samples}
    assert histogram["kiln_job_duration_seconds_count"].value == 1
    assert families["kiln_cache_bytes"].samples[0].value > 0


def test_bad_requests_are_refused_with_a_reason(daemon, clips):
    cases = [
        ({"kind": "train", "source": "x"}, '"train" is not "convert" or "score"'),
        ({"kind": "convert", "source": str(clips)}, "a convert job needs a spec"),
        ({"kind": "convert", "source": str(clips), "spec": FIXED_MEL, "options": {"bogus": 1}}, 'unknown key "bogus"'),
        ({"kind": "convert", "source": str(clips), "spec": FIXED_MEL, "options": {"shard_size": "3 parsecs"}}, "options.shard_size"),
        ({"kind": "convert", "source": str(clips), "spec": FIXED_MEL, "options": {"workers": -1}}, "options.workers"),
        ({"kind": "convert", "source": str(clips), "spec": {"ops": [{"op": "nope"}]}}, "nope"),
        ({"kind": "convert", "source": str(clips), "spec": FIXED_MEL, "extra": 1}, "unknown field `extra`"),
        ({"kind": "score", "source": str(clips), "options": {"model": "m.onnx"}}, "output"),
    ]
    for body, expected in cases:
        response = daemon.post("/v1/jobs", body)
        assert response.status_code == 400, (body, response.text)
        assert expected in response.json()["error"], (body, response.text)
    response = requests.post(f"{daemon.url}/v1/jobs", data=b"{not json", headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400 and "not a job request" in response.json()["error"]
    response = requests.post(f"{daemon.url}/v1/jobs", data=b"x" * (2 << 20), timeout=10)
    assert response.status_code == 413
    assert daemon.get("/v1/jobs/nope").status_code == 404
    assert requests.delete(f"{daemon.url}/v1/jobs/nope", timeout=10).status_code == 404
    # A job whose source does not exist fails when it runs, with the reason.
    job = daemon.post("/v1/jobs", {"kind": "convert", "source": str(clips / "missing"), "spec": FIXED_MEL}).json()
    failed = daemon.wait(job["id"])
    assert failed["state"] == "failed" and "missing" in failed["error"]
    assert requests.delete(f"{daemon.url}/v1/jobs/{job['id']}", timeout=10).status_code == 409


def test_foreign_origins_and_hosts_are_refused(daemon, clips):
    body = {"kind": "convert", "source": str(clips), "spec": FIXED_MEL}
    response = requests.post(f"{daemon.url}/v1/jobs", json=body, headers={"Origin": "http://evil.example"}, timeout=10)
    assert response.status_code == 403
    response = requests.get(f"{daemon.url}/v1/jobs", headers={"Host": "evil.example"}, timeout=10)
    assert response.status_code == 403
    assert daemon.get("/v1/jobs").json()["jobs"] == []


def test_a_token_is_required_when_set(tmp_path, clips):
    d = Daemon(tmp_path / "state", tmp_path / "cache", token="s3cret-token-0123456789").start()
    try:
        assert requests.get(f"{d.url}/v1/jobs", timeout=10).status_code == 401
        assert requests.get(f"{d.url}/v1/jobs", headers={"Authorization": "Bearer wrong-token-0123456789"}, timeout=10).status_code == 401
        assert d.get("/v1/jobs").status_code == 200
    finally:
        d.stop(signal.SIGKILL)
    # On a network address the daemon refuses to start without one.
    result = run_cli("daemon", "--state", tmp_path / "s2", "--listen", "0.0.0.0:0", "--flight-listen", "none", check=False)
    assert result.returncode != 0 and "token" in result.stderr


def test_one_daemon_per_state_directory(daemon):
    result = run_cli("daemon", "--state", daemon.state, "--listen", "127.0.0.1:0", "--flight-listen", "none", check=False)
    assert result.returncode != 0 and "in use by another kiln daemon" in result.stderr


def many_clips(root: Path, count: int) -> Path:
    for i in range(count):
        write_wav(root / f"k{i % 2}" / f"c{i:04d}.wav", tone(i, 16000))
    return root


def test_cancel_then_resubmit_resumes_and_kill_9_restart_completes(tmp_path):
    source = many_clips(tmp_path / "many", 300)
    spec = dict(FIXED_MEL)
    options = {"workers": 1, "shard_size": "32KiB"}
    d = Daemon(tmp_path / "state", tmp_path / "cache", max_jobs=1).start()
    job = d.post("/v1/jobs", {"kind": "convert", "source": str(source), "spec": spec, "options": options}).json()
    # Let it write some shards, then kill -9 the daemon mid-conversion.
    deadline = time.monotonic() + 120
    while d.get(f"/v1/jobs/{job['id']}").json()["progress"]["done"] < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert d.stop(signal.SIGKILL) != 0
    record = json.loads((d.state / "jobs" / f"{job['id']}.json").read_text())
    assert record["state"] == "running"
    d = Daemon(d.state, d.cache, max_jobs=1).start()
    try:
        done = d.wait(job["id"], timeout=300)
        assert done["state"] == "succeeded", done
        assert done["progress"]["done"] == done["progress"]["total"] == 300
        # The resumed entry streams exactly what a clean conversion does.
        spec_path = tmp_path / "spec.json"
        spec_path.write_text(json.dumps(spec))
        clean = json.loads(run_cli("convert", source, "--spec", spec_path, "--cache", tmp_path / "clean", "--json",
                                   "--shard-size", "32KiB", "--workers", "1").stdout.strip().splitlines()[-1])
        assert stream_checksum(done["entry"]) == stream_checksum(clean["entry"])
        # Cancel a running job: it stops at a safe point; resubmitting finishes it.
        other = many_clips(tmp_path / "other", 200)
        job = d.post("/v1/jobs", {"kind": "convert", "source": str(other), "spec": spec, "options": options}).json()
        while d.get(f"/v1/jobs/{job['id']}").json()["progress"]["done"] < 20:
            time.sleep(0.05)
        assert requests.delete(f"{d.url}/v1/jobs/{job['id']}", timeout=10).status_code == 202
        cancelled = d.wait(job["id"])
        assert cancelled["state"] == "cancelled"
        again = d.wait(d.post("/v1/jobs", {"kind": "convert", "source": str(other), "spec": spec, "options": options}).json()["id"])
        assert again["state"] == "succeeded" and again["entry"] == str(Path(d.cache).resolve() / Path(again["entry"]).name)
        # SIGTERM stops cleanly (exit 0).
        assert d.stop(signal.SIGTERM) == 0
    finally:
        d.stop(signal.SIGKILL)


def wait_for_versions(d: Daemon, name: str, count: int, timeout: float = 180) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dataset = d.get(f"/v1/datasets/{name}").json()
        if len(dataset["versions"]) >= count and dataset["job"] is None:
            return dataset
        time.sleep(0.1)
    pytest.fail(f"dataset {name} did not reach {count} versions: {dataset}")


def test_a_watched_dataset_converts_only_new_files(tmp_path):
    source = many_clips(tmp_path / "watched", 300)
    d = Daemon(tmp_path / "state", tmp_path / "cache").start()
    try:
        body = {"source": str(source), "spec": FIXED_MEL, "options": {"workers": 1}, "poll": "1s"}
        response = requests.put(f"{d.url}/v1/datasets/calls", json=body, timeout=30)
        assert response.status_code == 200, response.text
        first = wait_for_versions(d, "calls", 1)["versions"][0]
        assert first["rows"] == 300 and first["reused"] == 0
        # Ten files arrive: the next version transforms those ten and reuses 300 rows.
        for i in range(300, 310):
            write_wav(source / "k9" / f"new{i}.wav", tone(i, 16000))
        second = wait_for_versions(d, "calls", 2)["versions"][1]
        assert second["rows"] == 310 and second["reused"] == 300, second
        assert second["entry"] != first["entry"]
        spec_path = tmp_path / "spec.json"
        spec_path.write_text(json.dumps(FIXED_MEL))
        fresh = json.loads(run_cli("convert", source, "--spec", spec_path, "--cache", tmp_path / "fresh", "--json")
                           .stdout.strip().splitlines()[-1])
        assert fresh["reused"] == 0
        assert stream_checksum(second["entry"]) == stream_checksum(fresh["entry"])
        # A removed file is a new version too; nothing changed is none.
        (source / "k9" / "new300.wav").unlink()
        third = wait_for_versions(d, "calls", 3)["versions"][2]
        assert third["rows"] == 309 and third["reused"] == 309
        time.sleep(2.5)
        assert len(d.get("/v1/datasets/calls").json()["versions"]) == 3
        # Watching survives a restart.
        assert d.stop(signal.SIGTERM) == 0
        d = Daemon(d.state, d.cache).start()
        assert [v["version"] for v in d.get("/v1/datasets/calls").json()["versions"]] == [1, 2, 3]
        assert [x["name"] for x in d.get("/v1/datasets").json()["datasets"]] == ["calls"]
        assert requests.delete(f"{d.url}/v1/datasets/calls", timeout=10).status_code == 200
        assert d.get("/v1/datasets/calls").status_code == 404
        assert requests.put(f"{d.url}/v1/datasets/..%2Fx", json=body, timeout=10).status_code in (400, 404)
        bad = dict(body, poll="10ms")
        response = requests.put(f"{d.url}/v1/datasets/fast", json=bad, timeout=10)
        assert response.status_code == 400 and "minimum" in response.json()["error"]
    finally:
        d.stop(signal.SIGKILL)


# --- Arrow Flight ------------------------------------------------------------------------------


def flight_checksum(batches) -> str:
    """What `kiln stream` hashes: per batch, the row ids (u64 LE), then the tensor values
    (float32 LE), in order; the first 16 hex digits of the SHA-256."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for batch in batches:
        h.update(np.asarray(batch.column("row_id").to_numpy(), dtype="<u8").tobytes())
        tensor = batch.column("tensor")
        values = tensor.flatten() if hasattr(tensor, "flatten") else tensor.values
        h.update(np.asarray(values.to_numpy(zero_copy_only=False), dtype="<f4").tobytes())
    return h.hexdigest()[:16]


def cli_stream(entry: str, *args: Any) -> Dict[str, Any]:
    return json.loads(run_cli("stream", entry, "--json", *args).stdout.strip().splitlines()[-1])


def flight_batches(d: Daemon, command: Dict[str, Any], headers=None):
    import pyarrow.flight as fl

    client = fl.connect(d.flight_url)
    options = fl.FlightCallOptions(headers=headers or [])
    info = client.get_flight_info(fl.FlightDescriptor.for_command(json.dumps(command)), options)
    assert len(info.endpoints) == 1
    reader = client.do_get(info.endpoints[0].ticket, options)
    batches = [chunk.data for chunk in reader]
    client.close()
    return info, batches


def test_flight_streams_what_kiln_stream_gives(daemon, clips, tmp_path):
    job = daemon.wait(daemon.post("/v1/jobs", {"kind": "convert", "source": str(clips), "spec": FIXED_MEL,
                                                "options": {"row_group_rows": 3}}).json()["id"])
    entry = job["entry"]
    for shard, count, seed in [(0, 1, None), (1, 3, 7), (0, 2, 11)]:
        command = {"path": entry, "batch_size": 5, "cur_shard": shard, "shard_count": count, "seed": seed}
        info, batches = flight_batches(daemon, command)
        args = ["--batch-size", "5", "--shard", f"{shard}/{count}"] + (["--seed", str(seed)] if seed is not None else [])
        expected = cli_stream(entry, *args)
        assert info.total_records == expected["rows"]
        assert sum(b.num_rows for b in batches) == expected["rows"]
        assert flight_checksum(batches) == expected["checksum"], command
    # Epoch 1 of a seeded stream: what `kiln stream --epochs 2` gives after its first epoch.
    _, batches = flight_batches(daemon, {"path": entry, "batch_size": 5, "seed": 9, "epoch": 1})
    two = cli_stream(entry, "--batch-size", "5", "--seed", "9", "--epochs", "2", "--ids")
    assert [int(i) for b in batches for i in b.column("row_id").to_pylist()] == two["ids"][24:]
    # From a saved state: the rest of the epoch, as `kiln stream --resume`.
    state_file = tmp_path / "state.json"
    run_cli("stream", entry, "--batch-size", "4", "--seed", "3", "--max-batches", "2", "--state-out", state_file)
    state = json.loads(state_file.read_text())
    _, batches = flight_batches(daemon, {"path": entry, "batch_size": 4, "state": state})
    assert flight_checksum(batches) == cli_stream(entry, "--batch-size", "4", "--seed", "3", "--resume", state_file)["checksum"]


def test_flight_refuses_what_it_must(tmp_path, clips):
    import pyarrow as pa
    import pyarrow.flight as fl

    d = Daemon(tmp_path / "state", tmp_path / "cache", token="flight-token-0123456789").start()
    try:
        job = d.wait(d.post("/v1/jobs", {"kind": "convert", "source": str(clips), "spec": FIXED_MEL}).json()["id"])
        with pytest.raises(fl.FlightUnauthenticatedError):
            flight_batches(d, {"path": job["entry"]})
        auth = [(b"authorization", b"Bearer flight-token-0123456789")]
        _, batches = flight_batches(d, {"path": job["entry"], "batch_size": 8}, headers=auth)
        assert sum(b.num_rows for b in batches) == 24
        with pytest.raises(fl.FlightUnauthorizedError, match="not an entry of this daemon's cache"):
            flight_batches(d, {"path": str(tmp_path)}, headers=auth)
        with pytest.raises(KeyError, match="neither a dataset nor an entry"):
            flight_batches(d, {"path": "no-such-thing"}, headers=auth)
        with pytest.raises(pa.ArrowInvalid, match="not a kiln stream request"):
            flight_batches(d, {"path": job["entry"], "bogus": 1}, headers=auth)
        with pytest.raises(pa.ArrowInvalid, match="shard"):
            flight_batches(d, {"path": job["entry"], "cur_shard": 3, "shard_count": 2}, headers=auth)
    finally:
        d.stop(signal.SIGKILL)


def test_32_flight_clients_while_two_conversions_run(tmp_path, clips):
    """Load: every client gets its whole shard while conversions run; peak memory reported."""
    import concurrent.futures

    d = Daemon(tmp_path / "state", tmp_path / "cache", max_jobs=2).start()
    try:
        entry = d.wait(d.post("/v1/jobs", {"kind": "convert", "source": str(clips), "spec": FIXED_MEL}).json()["id"])["entry"]
        busy = [many_clips(tmp_path / f"busy{i}", 150) for i in range(2)]
        jobs = [d.post("/v1/jobs", {"kind": "convert", "source": str(b), "spec": FIXED_MEL, "options": {"workers": 1}}).json()["id"] for b in busy]

        def client(i: int) -> int:
            total = 0
            for _ in range(5):
                _, batches = flight_batches(d, {"path": entry, "batch_size": 2, "cur_shard": i % 4, "shard_count": 4, "seed": i})
                total += sum(b.num_rows for b in batches)
            return total

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            totals = list(pool.map(client, range(32)))
        assert totals == [5 * 6] * 32
        assert all(d.wait(j, timeout=300)["state"] == "succeeded" for j in jobs)
        peak_kb = int(next(line for line in Path(f"/proc/{d.process.pid}/status").read_text().splitlines()
                           if line.startswith("VmHWM")).split()[1])
        print(f"\n32 Flight clients x 5 streams in {time.monotonic() - started:.1f} s; daemon peak RSS {peak_kb / 1024:.0f} MiB")
        assert peak_kb < 1024 * 1024, f"peak RSS {peak_kb} kB"
        families = {f.name: f for f in text_string_to_metric_families(d.get("/metrics").text)}
        assert families["kiln_flight_streams"].samples[0].value == 0
    finally:
        d.stop(signal.SIGKILL)


def test_schemathesis_finds_no_server_error(daemon, tmp_path):
    """The OpenAPI document, fuzzed (bounded): no 5xx, and every answer matches the document
    (status codes, content types, response schemas). Requests the document allows but the
    daemon refuses with a reason (an empty source, an invalid spec) are expected: the
    document cannot say what a valid spec is."""
    import shutil
    import sys

    schemathesis = Path(sys.executable).parent / "schemathesis"
    assert schemathesis.exists() or shutil.which("schemathesis"), "schemathesis is not installed"
    result = subprocess.run(
        [str(schemathesis if schemathesis.exists() else "schemathesis"), "run", f"{daemon.url}/v1/openapi.json",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
         "--max-examples", "40", "--seed", "1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Tested: 12" in result.stdout, result.stdout[-3000:]


def test_convert_reuse_takes_only_unchanged_files(tmp_path):
    source = tmp_path / "src"
    for i in range(6):
        write_wav(source / "a" / f"c{i}.wav", tone(i))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(FIXED_MEL))

    def convert(cache: str, *extra: Any) -> Dict[str, Any]:
        return json.loads(run_cli("convert", source, "--spec", spec, "--cache", tmp_path / cache, "--json", *extra)
                          .stdout.strip().splitlines()[-1])

    first = convert("c")
    write_wav(source / "a" / "c1.wav", tone(100, 6000))   # changed (size and content)
    (source / "a" / "c2.wav").unlink()                      # removed
    write_wav(source / "b" / "new.wav", tone(101))          # added
    second = convert("c", "--reuse", first["entry"])
    assert second["rows"] == 6 and second["reused"] == 4    # c0, c3, c4, c5
    fresh = convert("fresh")
    assert fresh["reused"] == 0 and Path(fresh["entry"]).name == Path(second["entry"]).name
    assert stream_checksum(second["entry"]) == stream_checksum(fresh["entry"])
    # Another spec's entry gives nothing.
    other = tmp_path / "other.json"
    other.write_text(json.dumps(LOG_MEL))
    third = json.loads(run_cli("convert", source, "--spec", other, "--cache", tmp_path / "c3", "--json", "--reuse", first["entry"])
                       .stdout.strip().splitlines()[-1])
    assert third["reused"] == 0 and third["rows"] == 6

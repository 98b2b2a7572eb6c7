#!/usr/bin/env python3
"""kiln against torch on one GPU machine, in one run (issue 8, item 4). See README.md.

Generates the datasets (WAVs and JPEGs, deterministic), then measures `kiln convert` on the CPU
at several worker counts and on the GPU, `kiln stream` of raw entries, and the torch / Pillow
pipelines doing the same work, and writes gpu-bench.md and gpu-bench.json into --out after every
step (so a run cut short still leaves what it measured).

Needs only the standard library, numpy and Pillow; torch, torchvision and CUDA are optional:
without them their rows read "n/a (...)".
"""

import argparse
import datetime
import json
import lzma
import math
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave

import numpy as np
from PIL import Image

SAMPLE_RATE = 16_000
CLASSES = 4
JPEG_SIZE = (640, 480)
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# examples/log_mel.json: n_fft 400, hop 160, hann, center with zero padding, power 2, 80 slaney
# mel bands over 0..8000 Hz, power_to_db(ref 1, amin 1e-10, top_db 80).
N_FFT, HOP, N_MELS, FMAX, TOP_DB, AMIN = 400, 160, 80, 8000.0, 80.0, 1e-10

STARTED = time.perf_counter()


def log(msg):
    print(f"[{time.perf_counter() - STARTED:6.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Datasets


def make_wav(args):
    """One second of 16-bit mono: a class-dependent chord, a chirp, amplitude modulation and
    seeded noise, so every file differs and the spectra are not trivial."""
    path, i = args
    rng = np.random.default_rng(i)
    t = np.arange(SAMPLE_RATE, dtype=np.float64) / SAMPLE_RATE
    base = 110.0 * (1 + i % CLASSES) + (i * 7) % 200
    y = sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3, 5))
    f0, f1 = rng.uniform(300, 2000), rng.uniform(2000, 7000)
    y += 0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t * t / 2))
    y *= 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(1, 8) * t)
    y += rng.normal(0, 0.05, t.size)
    pcm = np.clip(y / np.abs(y).max() * 20_000, -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def make_jpeg(args):
    """640x480 RGB with gradients, plane waves, soft blobs and fine noise (texture that costs
    the JPEG coder what a photo does), saved by Pillow at quality 90."""
    path, i = args
    rng = np.random.default_rng(1_000_000 + i)
    w, h = JPEG_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), dtype=np.float32)
    for c in range(3):
        fx, fy = rng.uniform(0.005, 0.08, 2)
        img[..., c] = (
            90 * (xx / w if c == 0 else yy / h if c == 1 else (xx + yy) / (w + h))
            + 50 * np.sin(fx * xx + fy * yy + rng.uniform(0, 6.3))
            + 70
        )
    for _ in range(6):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(20, 120)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        img += blob[..., None] * rng.uniform(-80, 80, 3).astype(np.float32)
    img += rng.normal(0, 10, img.shape).astype(np.float32)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB").save(path, quality=90)


def make_datasets(work, wavs, jpegs, procs):
    """Builds work/wav and work/jpeg unless a marker says they already hold these sizes."""
    marker = os.path.join(work, "datasets.json")
    want = {"wavs": wavs, "jpegs": jpegs, "version": 1}
    try:
        with open(marker) as f:
            if json.load(f) == want:
                log(f"datasets already in {work}: {wavs} WAVs, {jpegs} JPEGs")
                return
    except (OSError, ValueError):
        pass
    for name in ("wav", "jpeg"):
        shutil.rmtree(os.path.join(work, name), ignore_errors=True)
    jobs = []
    for kind, n, ext in (("wav", wavs, "wav"), ("jpeg", jpegs, "jpg")):
        for c in range(CLASSES):
            os.makedirs(os.path.join(work, kind, f"class{c}"), exist_ok=True)
        jobs.append([(os.path.join(work, kind, f"class{i % CLASSES}", f"{i:05}.{ext}"), i) for i in range(n)])
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        pool.map(make_wav, jobs[0], chunksize=32)
        pool.map(make_jpeg, jobs[1], chunksize=4)
    jpeg_bytes = sum(os.path.getsize(p) for p, _ in jobs[1])
    log(
        f"generated {wavs} WAVs and {jpegs} JPEGs ({jpeg_bytes / max(jpegs, 1) / 1e3:.0f} kB each) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    with open(marker, "w") as f:
        json.dump(want, f)


def list_files(root, ext):
    return sorted(
        os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f.endswith(ext)
    )


# ---------------------------------------------------------------------------------------------
# Reference pipelines (numpy / Pillow / torch)


def mel_filterbank(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=FMAX):
    """librosa.filters.mel(htk=False, norm='slaney'): Slaney's mel scale, area-normalised
    triangles; shape (n_mels, 1 + n_fft // 2)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def hz_to_mel(f):
        return f / f_sp if f < min_log_hz else min_log_mel + math.log(f / min_log_hz) / logstep

    mels = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    hz = np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)
    fft = np.fft.rfftfreq(n_fft, 1.0 / sr)
    fdiff = np.diff(hz)
    ramps = hz[:, None] - fft[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (hz[2:] - hz[:-2]))[:, None]
    return weights.astype(np.float32)


def read_wav(path):
    """Python's `wave` reader, int16 PCM to float32 in [-1, 1)."""
    with wave.open(path, "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def read_wav_batch(paths):
    clips = [read_wav(p) for p in paths]
    n = max(c.size for c in clips)
    return np.stack([np.pad(c, (0, n - c.size)) for c in clips])


def torch_log_mel(torch, x, window, fb):
    """x: (batch, samples) on any device -> (batch, n_mels, frames) dB, as examples/log_mel.json."""
    spec = torch.stft(
        x, N_FFT, HOP, window=window, center=True, pad_mode="constant", return_complex=True
    )
    power = spec.real.square() + spec.imag.square()
    db = 10.0 * torch.log10(torch.clamp(torch.matmul(fb, power), min=AMIN))
    return torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - TOP_DB)


def pil_pipeline(path):
    """examples/imagenet.json with Pillow + numpy: RGB, shorter side 256 (bilinear, which Pillow
    antialiases when shrinking), centre crop 224, /255, normalise, CHW."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        if w <= h:
            size = (256, max(1, round(h * 256 / w)))
        else:
            size = (max(1, round(w * 256 / h)), 256)
        im = im.resize(size, Image.BILINEAR)
        left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
        im = im.crop((left, top, left + 224, top + 224))
    a = (np.asarray(im, dtype=np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def pool_warmup(_):
    """Holds a worker long enough that every worker gets one task, so all have started and
    imported numpy and Pillow before the timing begins."""
    time.sleep(0.2)
    return os.getpid()


def chunks(items, n):
    return [items[i : i + n] for i in range(0, len(items), n)]


# ---------------------------------------------------------------------------------------------
# The run


class Bench:
    def __init__(self, args):
        self.args = args
        self.nproc = os.cpu_count() or 1
        self.results = {}
        self.torch = None
        self.torch_why = None
        self.cuda_why = None
        self.meta = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(),
            "cpus": self.nproc,
            "python": platform.python_version(),
            "wavs": args.wavs,
            "jpegs": args.jpegs,
            "workers": args.workers,
            "small": args.small,
        }

    # -- bookkeeping --------------------------------------------------------------------------

    def remaining(self):
        return self.args.budget - (time.perf_counter() - STARTED)

    def record(self, key, **fields):
        self.results[key] = fields
        self.write()

    def skip_for_time(self, key, seconds_needed=5):
        if self.remaining() < seconds_needed:
            log(f"{key}: skipped, time budget spent")
            self.record(key, status="skipped (time budget)")
            return True
        return False

    # -- kiln ---------------------------------------------------------------------------------

    def run_kiln(self, argv):
        """Runs kiln, returns (exit code, stdout, stderr, wall seconds, peak RSS in MiB).

        Peak RSS comes from wait4's rusage for this one child (what /usr/bin/time -v reports),
        so each run is measured on its own rather than as the maximum over all children."""
        timeout = max(1.0, min(self.args.step_timeout, self.remaining()))
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            started = time.perf_counter()
            proc = subprocess.Popen([self.kiln, *argv], stdout=out, stderr=err)
            timer = threading.Timer(timeout, proc.kill)
            timer.start()
            _, status, usage = os.wait4(proc.pid, 0)
            timer.cancel()
            wall = time.perf_counter() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
        if proc.returncode < 0 and wall >= timeout - 0.5:
            stderr += f"\n(killed after {timeout:.0f} s)"
        return proc.returncode, stdout, stderr, wall, usage.ru_maxrss / 1024.0

    def kiln_convert(self, key, kind, backend, workers, materialize="tensor", keep=False):
        if self.skip_for_time(key):
            return None
        src = os.path.join(self.args.work, kind)
        spec = self.specs[kind]
        cache = os.path.join(self.args.work, "cache", key)
        shutil.rmtree(cache, ignore_errors=True)
        include = "*.wav" if kind == "wav" else "*.jpg"
        argv = [
            "convert", src, "--spec", spec, "--cache", cache, "--include", include,
            "--backend", backend, "--workers", str(workers), "--materialize", materialize,
            "--on-error", "fail", "--json",
        ]
        code, stdout, stderr, wall, rss = self.run_kiln(argv)
        report = None
        if code == 0:
            try:
                report = json.loads(stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                pass
        expected = self.args.wavs if kind == "wav" else self.args.jpegs
        if report is None or report.get("cache_hit") or report.get("rows") != expected:
            why = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {code}"
            if report is not None:
                why = f"rows {report.get('rows')} of {expected}, cache_hit {report.get('cache_hit')}"
            log(f"{key}: FAILED: {why}")
            self.record(key, status=f"failed: {why}", wall_s=wall, peak_rss_mib=rss)
            shutil.rmtree(cache, ignore_errors=True)
            return None
        seconds = report["seconds"]
        fields = {
            "status": "ok",
            "rate": report["rows"] / seconds,
            "unit": "files/s" if kind == "wav" else "img/s",
            "seconds": seconds,
            "wall_s": wall,
            "peak_rss_mib": rss,
            "rows": report["rows"],
        }
        if isinstance(report.get("gpu"), dict):
            fields["gpu"] = report["gpu"]
        gpu_note = f", gpu {report['gpu']}" if "gpu" in fields else ""
        log(
            f"{key}: {fields['rate']:.0f} {fields['unit']} ({seconds:.2f} s, wall {wall:.2f} s, "
            f"peak RSS {rss:.0f} MiB{gpu_note})"
        )
        self.record(key, **fields)
        if keep:
            return report["entry"]
        shutil.rmtree(cache, ignore_errors=True)
        return None

    def kiln_stream(self, key, entry, backend):
        if entry is None:
            self.record(key, status="n/a (raw convert failed)")
            return
        if self.skip_for_time(key):
            return
        argv = ["stream", entry, "--batch-size", "256", "--backend", backend, "--json"]
        code, stdout, stderr, wall, rss = self.run_kiln(argv)
        try:
            report = json.loads(stdout.strip().splitlines()[-1]) if code == 0 else None
        except (ValueError, IndexError):
            report = None
        if report is None:
            why = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {code}"
            log(f"{key}: FAILED: {why}")
            self.record(key, status=f"failed: {why}", wall_s=wall, peak_rss_mib=rss)
            return
        fields = {
            "status": "ok",
            "rate": report["rows_per_s"],
            "unit": "rows/s",
            "rows": report["rows"],
            "batches": report.get("batches"),
            "wall_s": wall,
            "peak_rss_mib": rss,
        }
        if isinstance(report.get("gpu"), dict):
            fields["gpu"] = report["gpu"]
        log(f"{key}: {fields['rate']:.0f} rows/s (wall {wall:.2f} s, peak RSS {rss:.0f} MiB)")
        self.record(key, **fields)

    # -- torch --------------------------------------------------------------------------------

    def load_torch(self):
        try:
            import torch  # noqa: PLC0415 (optional: the bench runs without it)
        except Exception as e:  # noqa: BLE001 (any import failure means "no torch")
            self.torch_why = "n/a (no torch)"
            self.cuda_why = "n/a (no CUDA)"
            log(f"torch not importable ({type(e).__name__}: {e}): torch rows are n/a")
            return
        self.torch = torch
        self.meta["torch"] = torch.__version__
        try:
            if not torch.cuda.is_available():
                self.cuda_why = "n/a (no CUDA)"
            else:
                self.meta["cuda_device"] = torch.cuda.get_device_name(0)
        except Exception as e:  # noqa: BLE001
            self.cuda_why = f"n/a (no CUDA: {e})"
        log(f"torch {torch.__version__}, CUDA: {self.meta.get('cuda_device', self.cuda_why)}")

    def guarded(self, key, needs_cuda, fn):
        """Runs one torch measurement; a missing torch/CUDA or any failure marks only this row."""
        if self.torch is None or (needs_cuda and self.cuda_why):
            why = self.cuda_why if needs_cuda else self.torch_why
            self.record(key, status=why or "n/a (no CUDA)")
            log(f"{key}: {self.results[key]['status']}")
            return
        if self.skip_for_time(key):
            return
        try:
            fields = fn()
        except Exception as e:  # noqa: BLE001 (report, keep going)
            log(f"{key}: FAILED: {type(e).__name__}: {e}")
            self.record(key, status=f"failed: {type(e).__name__}: {e}"[:200])
            return
        log(f"{key}: {fields['rate']:.0f} {fields['unit']}" + (f" ({fields['note']})" if "note" in fields else ""))
        self.record(key, status="ok", **fields)

    def torch_audio(self, device, batch, threads=None):
        torch = self.torch
        if threads:
            torch.set_num_threads(threads)
        dev = torch.device(device)
        window = torch.hann_window(N_FFT, periodic=True, device=dev)
        fb = torch.from_numpy(mel_filterbank()).to(dev)
        files = self.wav_files

        def one(paths):
            x = torch.from_numpy(read_wav_batch(paths)).to(dev, non_blocking=True)
            return torch_log_mel(torch, x, window, fb).cpu()

        one(files[:batch])  # warm-up at the timed batch size: FFT plans, kernels
        started = time.perf_counter()
        frames = 0
        for paths in chunks(files, batch):
            frames += one(paths).shape[0]
        seconds = time.perf_counter() - started
        return {"rate": frames / seconds, "unit": "files/s", "seconds": seconds, "batch": batch}

    def torch_gpu_jpeg(self, batch=128):
        torch = self.torch
        import torchvision  # noqa: PLC0415
        from torchvision.io import ImageReadMode, decode_jpeg  # noqa: PLC0415
        import torchvision.transforms.functional as TF  # noqa: PLC0415

        mean = torch.tensor(MEAN, device="cuda").view(1, 3, 1, 1)
        std = torch.tensor(STD, device="cuda").view(1, 3, 1, 1)

        def one(paths):
            data = []
            for p in paths:
                with open(p, "rb") as f:
                    data.append(torch.frombuffer(bytearray(f.read()), dtype=torch.uint8))
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device="cuda")
            # Same-size groups stack into one batch (the generated set is all 640x480).
            groups = {}
            for im in images:
                groups.setdefault(tuple(im.shape), []).append(im)
            out = []
            for group in groups.values():
                x = torch.stack(group).float()
                x = TF.resize(x, [256], antialias=True)
                x = TF.center_crop(x, [224, 224])
                out.append(((x / 255.0 - mean) / std).cpu())
            return sum(o.shape[0] for o in out)

        one(self.jpeg_files[:batch])  # warm-up at the timed batch size: nvjpeg, kernels
        started = time.perf_counter()
        done = sum(one(paths) for paths in chunks(self.jpeg_files, batch))
        seconds = time.perf_counter() - started
        return {
            "rate": done / seconds,
            "unit": "img/s",
            "seconds": seconds,
            "batch": batch,
            "torchvision": torchvision.__version__,
        }

    def torch_resident(self, clips=1024, iters=50):
        torch = self.torch
        window = torch.hann_window(N_FFT, periodic=True, device="cuda")
        fb = torch.from_numpy(mel_filterbank()).cuda()
        x = torch.randn(clips, SAMPLE_RATE, device="cuda") * 0.1
        for _ in range(5):
            torch_log_mel(torch, x, window, fb)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            torch_log_mel(torch, x, window, fb)
        end.record()
        torch.cuda.synchronize()
        ms = start.elapsed_time(end) / iters
        return {
            "rate": clips / (ms / 1e3),
            "unit": "clips/s",
            "ms_per_batch": ms,
            "clips": clips,
            "note": f"{clips} clips of 1 s in {ms:.3f} ms",
        }

    # -- Pillow -------------------------------------------------------------------------------

    def pillow(self, key, procs):
        if self.skip_for_time(key):
            return
        files = self.jpeg_files
        if procs == 1:
            pil_pipeline(files[0])
            started = time.perf_counter()
            done = sum(1 for f in files if pil_pipeline(f) is not None)
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(procs) as pool:
                pool.map(pool_warmup, range(procs), chunksize=1)
                started = time.perf_counter()
                done = len(pool.map(pil_pipeline, files, chunksize=4))
        seconds = time.perf_counter() - started
        log(f"{key}: {done / seconds:.0f} img/s ({seconds:.2f} s)")
        self.record(key, status="ok", rate=done / seconds, unit="img/s", seconds=seconds, procs=procs)

    # -- the whole run ------------------------------------------------------------------------

    def run(self):
        a = self.args
        self.kiln = prepare_kiln(a.kiln, a.work)
        self.meta["kiln"] = subprocess.run(
            [self.kiln, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        self.specs = {
            "wav": os.path.join(a.repo, "examples", "log_mel.json"),
            "jpeg": os.path.join(a.repo, "examples", "imagenet.json"),
        }
        make_datasets(a.work, a.wavs, a.jpegs, self.nproc)
        self.wav_files = list_files(os.path.join(a.work, "wav"), ".wav")
        self.jpeg_files = list_files(os.path.join(a.work, "jpeg"), ".jpg")
        top = max(a.workers)

        # Most important first, so a run cut short still has the headline rows.
        self.load_torch()
        self.guarded("torch_gpu_wav", True, lambda: self.torch_audio("cuda", 512))
        self.guarded("torch_gpu_jpeg", True, self.torch_gpu_jpeg)
        self.guarded("torch_gpu_resident_logmel", True, self.torch_resident)
        for kind in ("wav", "jpeg"):
            self.kiln_convert(f"kiln_convert_{kind}_gpu", kind, "gpu", top)
            self.kiln_convert(f"kiln_convert_{kind}_cpu_w{top}", kind, "cpu", top)
        for kind in ("wav", "jpeg"):
            entry = self.kiln_convert(f"kiln_raw_{kind}", kind, "cpu", top, "raw", keep=True)
            for backend in ("cpu", "gpu"):
                self.kiln_stream(f"kiln_stream_{kind}_{backend}", entry, backend)
            if entry:
                shutil.rmtree(os.path.dirname(entry), ignore_errors=True)
        for workers in a.workers:
            if workers != top:
                for kind in ("wav", "jpeg"):
                    self.kiln_convert(f"kiln_convert_{kind}_cpu_w{workers}", kind, "cpu", workers)
        threads = min(16, self.nproc)
        self.guarded(f"torch_cpu_wav_t{threads}", False, lambda: self.torch_audio("cpu", 256, threads))
        self.pillow(f"pillow_pool_p{min(16, self.nproc)}", min(16, self.nproc))
        self.pillow("pillow_p1", 1)
        self.meta["total_s"] = time.perf_counter() - STARTED
        self.write()
        print(self.markdown(), flush=True)
        log(f"wrote {os.path.join(a.out, 'gpu-bench.md')} and gpu-bench.json")

    # -- report -------------------------------------------------------------------------------

    def rate(self, key):
        r = self.results.get(key)
        return r["rate"] if r and r.get("status") == "ok" else None

    def cell(self, key, rss=False, extra=""):
        r = self.results.get(key)
        if r is None:
            return "not run"
        if r.get("status") != "ok":
            return r["status"]
        text = f"{r['rate']:,.0f} {r['unit']}"
        if rss and r.get("peak_rss_mib") is not None:
            text += f", peak RSS {r['peak_rss_mib']:,.0f} MiB"
        return text + extra

    def ratio(self, num, den):
        a, b = self.rate(num), self.rate(den)
        return f"{a / b:.2f}x" if a and b else "n/a"

    def markdown(self):
        a, m = self.args, self.meta
        top = max(a.workers)
        t = min(16, self.nproc)
        device = m.get("cuda_device", self.cuda_why or "?")
        lines = [
            "# kiln GPU benchmark",
            "",
            f"{m['date']}, {m.get('kiln', 'kiln ?')}, {self.nproc} CPUs, CUDA device: {device}, "
            f"torch {m.get('torch', 'n/a')}; {a.wavs} one-second 16 kHz WAVs, {a.jpegs} 640x480 "
            f"JPEGs (q90); files in the page cache; kiln rates from convert's own `seconds`, "
            f"each run into a fresh cache.",
            "",
            f"| work | kiln cpu ({top} workers) | kiln gpu | torch / Python, same run |",
            "|---|---|---|---|",
            f"| convert WAV -> log-mel 80 (examples/log_mel.json) | {self.cell(f'kiln_convert_wav_cpu_w{top}', True)} "
            f"| {self.cell('kiln_convert_wav_gpu', True)} | torch GPU (`wave`, batch 512, stft + mel "
            f"matmul + dB, to host): {self.cell('torch_gpu_wav')}; torch CPU ({t} threads, batch 256): "
            f"{self.cell(f'torch_cpu_wav_t{t}')} |",
            f"| convert JPEG -> examples/imagenet.json | {self.cell(f'kiln_convert_jpeg_cpu_w{top}', True)} "
            f"| {self.cell('kiln_convert_jpeg_gpu', True)} | torch GPU (nvjpeg batch 128, Resize(256, "
            f"antialias) + crop + normalize, to host): {self.cell('torch_gpu_jpeg')}; Pillow + numpy, "
            f"{t}-process pool: {self.cell(f'pillow_pool_p{t}')}, 1 process: {self.cell('pillow_p1')} |",
            f"| stream a raw WAV entry (spec at read time), batch 256 | {self.cell('kiln_stream_wav_cpu', True)} "
            f"| {self.cell('kiln_stream_wav_gpu', True)} | |",
            f"| stream a raw JPEG entry, batch 256 | {self.cell('kiln_stream_jpeg_cpu', True)} "
            f"| {self.cell('kiln_stream_jpeg_gpu', True)} | |",
            f"| log-mel, GPU-resident batch of 1,024 one-second clips | | | "
            f"{self.cell('torch_gpu_resident_logmel')}"
            + (
                f" ({self.results['torch_gpu_resident_logmel']['ms_per_batch']:.3f} ms per batch)"
                if self.rate("torch_gpu_resident_logmel")
                else ""
            )
            + " |",
            "",
            "## Workers (kiln convert --backend cpu)",
            "",
            "| dataset | " + " | ".join(f"{w} worker{'s' if w > 1 else ''}" for w in a.workers) + " | gpu |",
            "|---|" + "---|" * (len(a.workers) + 1),
        ]
        for kind, label in (("wav", "WAV"), ("jpeg", "JPEG")):
            keys = [f"kiln_convert_{kind}_cpu_w{w}" for w in a.workers] + [f"kiln_convert_{kind}_gpu"]
            secs, rss = [], []
            for k in keys:
                r = self.results.get(k)
                ok = r is not None and r.get("status") == "ok"
                secs.append(f"{r['seconds']:.2f} s ({r['rate']:,.0f}/s)" if ok else (r or {}).get("status", "not run"))
                rss.append(f"{r['peak_rss_mib']:,.0f} MiB" if ok else "")
            lines.append(f"| {label} | " + " | ".join(secs) + " |")
            lines.append(f"| {label} peak RSS | " + " | ".join(rss) + " |")
        lines += [
            "",
            "## GPU batching (the `gpu` object of kiln's --json report)",
            "",
            "| run | batches | items per batch | submissions per batch | readbacks per batch |",
            "|---|---|---|---|---|",
        ]
        for key in ("kiln_convert_wav_gpu", "kiln_convert_jpeg_gpu", "kiln_stream_wav_gpu", "kiln_stream_jpeg_gpu"):
            r = self.results.get(key) or {}
            g = r.get("gpu")
            if r.get("status") != "ok":
                lines.append(f"| {key} | {r.get('status', 'not run')} | | | |")
            elif not g:
                lines.append(f"| {key} | not reported | | | |")
            else:
                b = g.get("batches") or 0

                def per(field, g=g, b=b):
                    return f"{g[field] / b:.2f}" if b and isinstance(g.get(field), (int, float)) else "not reported"

                lines.append(f"| {key} | {b} | {per('items')} | {per('submissions')} | {per('readbacks')} |")
        lines += [
            "",
            "## Ratios (issue 8 targets)",
            "",
            "| ratio | measured | target |",
            "|---|---|---|",
            f"| WAV convert: kiln gpu / torch gpu | {self.ratio('kiln_convert_wav_gpu', 'torch_gpu_wav')} | >= 2x |",
            f"| JPEG convert: kiln gpu / torch gpu | {self.ratio('kiln_convert_jpeg_gpu', 'torch_gpu_jpeg')} | >= 2x |",
            f"| WAV stream: kiln gpu / torch gpu pipeline | {self.ratio('kiln_stream_wav_gpu', 'torch_gpu_wav')} | >= 2x |",
            f"| JPEG stream: kiln gpu / torch gpu pipeline | {self.ratio('kiln_stream_jpeg_gpu', 'torch_gpu_jpeg')} | >= 2x |",
            f"| WAV convert: kiln cpu {top} / 1 worker | {self.ratio(f'kiln_convert_wav_cpu_w{top}', 'kiln_convert_wav_cpu_w1')} | >= 12x at 16 |",
            f"| JPEG convert: kiln cpu {top} / 1 worker | {self.ratio(f'kiln_convert_jpeg_cpu_w{top}', 'kiln_convert_jpeg_cpu_w1')} | >= 12x at 16 |",
            f"| WAV convert: kiln cpu {top} workers / torch CPU {t} threads | {self.ratio(f'kiln_convert_wav_cpu_w{top}', f'torch_cpu_wav_t{t}')} | > 1x |",
            f"| JPEG convert: kiln cpu {top} workers / Pillow {t}-process pool | {self.ratio(f'kiln_convert_jpeg_cpu_w{top}', f'pillow_pool_p{t}')} | > 1x |",
            f"| JPEG convert: kiln cpu 1 worker / Pillow 1 process | {self.ratio('kiln_convert_jpeg_cpu_w1', 'pillow_p1')} | |",
            f"| log-mel, GPU-resident (torch) | {self.cell('torch_gpu_resident_logmel')} | kiln >= 250,000 clips/s |",
        ]
        return "\n".join(lines) + "\n"

    def write(self):
        os.makedirs(self.args.out, exist_ok=True)
        for name, text in (
            ("gpu-bench.json", json.dumps({"meta": self.meta, "results": self.results}, indent=2)),
            ("gpu-bench.md", self.markdown()),
        ):
            path = os.path.join(self.args.out, name)
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)


def prepare_kiln(path, work):
    """The kiln binary to run: PATH itself, or PATH decompressed (with Python's lzma, so no xz
    tool is needed on the machine) when it ends in .xz."""
    if not os.path.exists(path):
        sys.exit(f"kiln binary {path!r} not found (build it with `cargo build --release -p kiln`)")
    if not path.endswith(".xz"):
        return os.path.abspath(path)
    os.makedirs(work, exist_ok=True)
    target = os.path.join(work, "kiln")
    with lzma.open(path) as src, open(target + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.chmod(target + ".tmp", 0o755)
    os.replace(target + ".tmp", target)
    log(f"unpacked {path} to {target}")
    return target


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kiln", required=True, help="kiln binary (or .xz of one)")
    p.add_argument("--out", required=True, help="directory for gpu-bench.md and gpu-bench.json")
    p.add_argument("--repo", required=True, help="kiln checkout (for examples/*.json)")
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "kiln-gpu-bench"))
    p.add_argument("--small", action="store_true", help="200 WAVs, 50 JPEGs, workers 1,2")
    p.add_argument("--wavs", type=int)
    p.add_argument("--jpegs", type=int)
    p.add_argument("--workers", help="comma-separated worker counts (capped at the CPU count)")
    p.add_argument("--budget", type=float, default=480, help="seconds; later steps are skipped past it")
    p.add_argument("--step-timeout", type=float, default=150, help="seconds per kiln command")
    a = p.parse_args()
    nproc = os.cpu_count() or 1
    a.wavs = a.wavs or (200 if a.small else 4000)
    a.jpegs = a.jpegs or (50 if a.small else 1000)
    wanted = [int(w) for w in a.workers.split(",")] if a.workers else ([1, 2] if a.small else [1, 2, 4, 8, 16])
    a.workers = sorted({max(1, min(w, nproc)) for w in wanted})
    a.out = os.path.abspath(a.out)
    a.work = os.path.abspath(a.work)
    log(f"kiln GPU bench: {a.wavs} WAVs, {a.jpegs} JPEGs, workers {a.workers}, {nproc} CPUs, work dir {a.work}")
    Bench(a).run()


if __name__ == "__main__":
    main()

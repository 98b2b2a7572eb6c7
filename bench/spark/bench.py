"""kiln.spark.transform against the workflow it replaces, in one run on the same files with
Spark local[2]: binaryFile + a pandas UDF calling librosa (log-mel) or PIL + numpy (the
ImageNet preprocessing). Both are forced with Spark's `noop` sink (computed, not stored).

usage: python bench/spark/bench.py WORKDIR [--clips 600] [--images 300]"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def write_data(work: Path, clips: int, images: int) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    for i in range(clips):
        y = 0.3 * np.sin(2 * np.pi * (120 + 5 * i) * t) + 0.05 * rng.standard_normal(16000)
        path = work / "clips" / f"{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes((np.clip(y, -1, 1) * 32767).astype("<i2").tobytes())
    from PIL import Image

    for i in range(images):
        y, x = np.mgrid[0:300, 0:400]
        px = np.stack([(x + i) % 256, (y * 2) % 256, rng.integers(0, 256, (300, 400))], axis=2).astype(np.uint8)
        path = work / "images" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(px).save(path, quality=90)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("work", type=Path)
    p.add_argument("--clips", type=int, default=600)
    p.add_argument("--images", type=int, default=300)
    a = p.parse_args()
    if not (a.work / "clips").exists():
        write_data(a.work, a.clips, a.images)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import col, pandas_udf
    from pyspark.sql.types import ArrayType, FloatType

    import kiln.spark as ks

    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.driver.memory", "4g").getOrCreate())
    log_mel = json.loads((REPO / "examples" / "log_mel.json").read_text())
    imagenet = json.loads((REPO / "examples" / "imagenet.json").read_text())

    @pandas_udf(ArrayType(FloatType()))
    def librosa_log_mel(content):
        import librosa
        import soundfile

        out = []
        for data in content:
            y, sr = soundfile.read(io.BytesIO(data), dtype="float32")
            m = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=400, hop_length=160, n_mels=80, fmax=8000.0, pad_mode="constant")
            out.append(librosa.power_to_db(m, ref=1.0, amin=1e-10, top_db=80.0).astype(np.float32).ravel())
        return __import__("pandas").Series(out)

    @pandas_udf(ArrayType(FloatType()))
    def pil_imagenet(content):
        from PIL import Image

        mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
        std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
        out = []
        for data in content:
            im = Image.open(io.BytesIO(data)).convert("RGB")
            w, h = im.size
            s = 256 / min(w, h)
            im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
            w, h = im.size
            left, top = (w - 224) // 2, (h - 224) // 2
            x = (np.asarray(im.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0 - mean) / std
            out.append(x.transpose(2, 0, 1).ravel())
        return __import__("pandas").Series(out)

    def timed(df) -> float:
        start = time.perf_counter()
        df.write.format("noop").mode("overwrite").save()
        return time.perf_counter() - start

    print(f"{'workload':24} {'rows':>5} {'pandas UDF':>12} {'kiln.spark':>12}  ratio")
    for name, folder, udf, spec in [("log-mel (librosa)", "clips", librosa_log_mel, log_mel),
                                     ("ImageNet crop (PIL)", "images", pil_imagenet, imagenet)]:
        df = spark.read.format("binaryFile").load(str(a.work / folder)).repartition(4).cache()
        rows = df.count()
        timed(df.withColumn("tensor", udf(col("content"))))  # warm-up: imports, workers
        seed = min(timed(df.withColumn("tensor", udf(col("content")))) for _ in range(2))
        timed(ks.transform(df, spec))
        kiln_t = min(timed(ks.transform(df, spec)) for _ in range(2))
        print(f"{name:24} {rows:5d} {rows / seed:10.0f}/s {rows / kiln_t:10.0f}/s  {seed / kiln_t:.1f}x")
    spark.stop()


if __name__ == "__main__":
    main()

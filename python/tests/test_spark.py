"""``kiln.spark`` against real PySpark (local mode, loopback only): ``binaryFile`` through
``kiln.spark.transform`` equals ``kiln.transform`` on each file bit for bit (images and audio),
bad files become error rows, and ``write_tfrecord`` round-trips through the PyPI ``tfrecord``
reader."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import kiln

from conftest import EXAMPLES, FIXED_MEL, IMAGENET, LOG_MEL, DECODE_U8, tone, write_png_rgb, write_wav

FIXED_MEL_PATH = FIXED_MEL


def local_session():
    """The active local session, or a new one (a test before may have stopped it)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master("local[2]")
        .appName("kiln-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )


@pytest.fixture(scope="module")
def spark():
    session = local_session()
    yield session
    local_session().stop()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spark_media")
    for i in range(5):
        write_wav(root / "audio" / f"clip{i}.wav", tone(i, 3000 + 700 * i))
    rng = np.random.default_rng(3)
    for i in range(4):
        write_png_rgb(root / "images" / f"img{i}.png", rng.integers(0, 256, (40 + 9 * i, 57, 3)))
    (root / "bad").mkdir()
    (root / "bad" / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt nonsense")
    return root


def rows_by_path(df, column="tensor"):
    out = {}
    for row in df.collect():
        out[Path(row["path"].replace("file:", "")).name] = row
    return out


def test_transform_equals_kiln_transform_bit_for_bit(spark, media):
    import kiln.spark as ks

    for folder, spec, pattern in [("audio", LOG_MEL, "*.wav"), ("images", IMAGENET, "*.png"), ("images", DECODE_U8, "*.png")]:
        df = spark.read.format("binaryFile").option("pathGlobFilter", pattern).load(str(media / folder))
        out = ks.transform(df, spec)
        assert out.columns == df.columns + ["tensor", "shape", "error"]
        rows = rows_by_path(out)
        assert len(rows) == len(list((media / folder).glob(pattern)))
        for name, row in rows.items():
            expected = kiln.transform(spec, media / folder / name)
            assert row["error"] is None
            assert tuple(row["shape"]) == expected.shape
            if expected.dtype == np.uint8:
                got = np.frombuffer(row["tensor"], dtype=np.uint8).reshape(expected.shape)
            else:
                got = np.asarray(row["tensor"], dtype=np.float32).reshape(expected.shape)
            assert got.dtype == expected.dtype and np.array_equal(got, expected), (folder, name)


def test_bad_files_are_error_rows_or_fail_the_job(spark, media):
    import kiln.spark as ks

    df = spark.read.format("binaryFile").load(str(media / "bad"))
    row = ks.transform(df, LOG_MEL).collect()[0]
    assert row["tensor"] is None and row["shape"] is None
    assert "WAV" in row["error"] or "wav" in row["error"], row["error"]
    with pytest.raises(Exception, match="broken.wav"):
        ks.transform(df, LOG_MEL, on_error="fail").collect()
    with pytest.raises(kiln.ArgumentError, match="no column 'bytes'"):
        ks.transform(df, LOG_MEL, content_col="bytes")
    with pytest.raises(kiln.ArgumentError, match="already has a column 'length'"):
        ks.transform(df, LOG_MEL, output_col="length")
    with pytest.raises(kiln.SpecError):
        ks.transform(df, {"ops": [{"op": "nope"}]})


def test_write_tfrecord_round_trips(spark, media, tmp_path):
    import kiln.spark as ks
    from tfrecord.reader import tfrecord_loader

    df = spark.read.format("binaryFile").load(str(media / "audio")).repartition(3)
    features = ks.transform(df, LOG_MEL).select("path", "tensor", "shape", "length", "modificationTime", "error")
    written = ks.write_tfrecord(features, str(tmp_path / "tf"))
    assert written == 5
    files = sorted((tmp_path / "tf").glob("part-*.tfrecord"))
    assert 1 <= len(files) <= 3 and not list((tmp_path / "tf").glob("*.tmp.*"))
    seen = {}
    for f in files:
        for example in tfrecord_loader(str(f), None, {"path": "byte", "tensor": "float", "shape": "int", "length": "int"}):
            name = Path(bytes(example["path"]).decode().replace("file:", "")).name
            seen[name] = example
    assert len(seen) == 5
    for name, example in seen.items():
        expected = kiln.transform(LOG_MEL, media / "audio" / name)
        assert list(example["shape"]) == list(expected.shape)
        assert np.array_equal(np.asarray(example["tensor"], dtype=np.float32).reshape(expected.shape), expected)
        assert int(example["length"][0]) == (media / "audio" / name).stat().st_size


def test_score_equals_kiln_score(spark, media, tmp_path):
    import json as _json

    import kiln.spark as ks
    import pyarrow.parquet as pq

    sys.path.insert(0, str(Path(__file__).parent / "oip"))
    import models

    from conftest import FIXED_MEL, FIXED_MEL_SHAPE, run_cli, write_spec

    model = models.mlp(tmp_path / "mlp.onnx", ["batch", *FIXED_MEL_SHAPE])
    df = spark.read.format("binaryFile").load(str(media / "audio"))
    scored = ks.score(ks.transform(df, FIXED_MEL), model=str(model), batch_size=2)
    assert scored.columns[-2:] == ["probs", "score_error"]
    rows = rows_by_path(scored)
    spec = write_spec(tmp_path, "fixed.json", FIXED_MEL)
    entry = _json.loads(run_cli("convert", media / "audio", "--spec", spec, "--cache", tmp_path / "cache", "--json").stdout)["entry"]
    run_cli("score", entry, "--model", model, "-o", tmp_path / "out", "--batch-size", "3")
    table = pq.read_table(sorted((tmp_path / "out").glob("part-*.parquet"))[0])
    expected = {Path(p).name: v for p, v in zip(table.column("path").to_pylist(), table.column("probs").to_pylist())}
    assert set(rows) == set(expected)
    for name, row in rows.items():
        assert row["score_error"] is None
        assert np.max(np.abs(np.asarray(row["probs"]) - np.asarray(expected[name]))) <= 1e-6, name
    with pytest.raises(kiln.ArgumentError, match="no column 'nope'"):
        ks.score(df, model=str(model), input_col="nope")
    with pytest.raises(kiln.KilnError, match="missing.onnx"):
        ks.score(ks.transform(df, FIXED_MEL), model=str(tmp_path / "missing.onnx"))


def test_converter_reuses_across_sessions_and_shards_cover_the_rows(spark, media, tmp_path):
    import kiln.spark as ks
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import SparkSession

    rows = [(i, float(i) / 2, Vectors.dense([i, i + 0.5, -i]), f"name{i}") for i in range(23)]
    df = spark.createDataFrame(rows, ["id", "score", "features", "name"])
    converter = ks.make_spark_converter(df, cache_dir_url=f"file://{tmp_path / 'cache'}", parquet_row_group_size_bytes=256)
    assert len(converter) == 23
    directory = converter.cache_dir_url[len("file://"):]
    manifest = Path(directory) / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    # Two shards: disjoint, together every row (23 rows: 11 each, as kiln.Loader shards).
    seen = []
    for shard in range(2):
        with converter.make_torch_dataloader(batch_size=4, num_epochs=1, cur_shard=shard, shard_count=2, seed=5) as batches:
            part = []
            for batch in batches:
                assert batch["features"].shape[1:] == (3,)          # ML vectors: 1-D float arrays
                assert (batch["features"][:, 0] == batch["id"].float()).all()
                part.extend(int(i) for i in batch["id"])
        assert len(part) == 11
        seen.append(set(part))
    assert not (seen[0] & seen[1]) and len(seen[0] | seen[1]) == 22
    again = ks.make_spark_converter(spark.createDataFrame(rows, ["id", "score", "features", "name"]),
                                    cache_dir_url=f"file://{tmp_path / 'cache'}", parquet_row_group_size_bytes=256)
    assert again.cache_dir_url == converter.cache_dir_url and manifest.stat().st_mtime_ns == stamp
    # A new session, the same file-based DataFrame rebuilt: the same Parquet, not written again.
    df.drop("features").write.json(str(tmp_path / "table"))
    first = ks.make_spark_converter(spark.read.json(str(tmp_path / "table")).where("id > 3"),
                                    cache_dir_url=str(tmp_path / "cache"))
    first_manifest = Path(first.cache_dir_url[len("file://"):]) / "manifest.json"
    first_stamp = first_manifest.stat().st_mtime_ns
    assert len(first) == 19
    spark.stop()
    session = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
               .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
               .config("kiln.spark.cache_dir", str(tmp_path / "cache")).getOrCreate())
    second = ks.make_spark_converter(session.read.json(str(tmp_path / "table")).where("id > 3"))
    assert second.cache_dir_url == first.cache_dir_url and first_manifest.stat().st_mtime_ns == first_stamp
    other = ks.make_spark_converter(session.read.json(str(tmp_path / "table")).where("id > 4"))
    assert other.cache_dir_url != first.cache_dir_url and len(other) == 18
    # With a spec at read time: content bytes become tensors equal to kiln.transform.
    files = session.read.format("binaryFile").load(str(media / "audio")).select("path", "content")
    audio = ks.make_spark_converter(files)
    with audio.make_torch_dataloader(batch_size=5, num_epochs=1, transform_spec=FIXED_MEL_PATH) as batches:
        batch = next(iter(batches))
    for path, tensor in zip(batch["path"], batch["tensor"]):
        expected = kiln.transform(FIXED_MEL_PATH, Path(path.replace("file:", "")))
        assert np.array_equal(tensor.numpy(), expected)
    converter.delete()
    assert not Path(directory).exists()
    session.stop()


def test_windows_per_entity_group_matches_reference(tmp_path):
    """``kiln.spark.windows`` (groupBy(entity).applyInArrow) against the pandas reference."""
    spark = local_session()
    import pandas as pd
    import pyarrow as pa
    from kiln import spark as ks
    from test_windows import assert_matches, base_spec, random_events
    from windows_reference import windows as reference_windows

    spark.conf.set("spark.sql.session.timeZone", "UTC")
    frame = random_events(81)
    frame["time"] = pd.to_datetime(frame["ns"], utc=True)
    events = frame.drop(columns=["ns"])
    spec = base_spec(step="1d")
    df = spark.createDataFrame(pa.Table.from_pandas(events, preserve_index=False).to_pandas())
    got = ks.windows(df, entity="user", time="time", spec=spec).toArrow().to_pandas()
    got["t"] = pd.to_datetime(got["t"], utc=True).dt.as_unit("ns").astype("int64")
    got = got.sort_values(["user", "t"]).reset_index(drop=True)
    assert_matches(got, reference_windows(events, "user", "time", spec), spec)
    # With the label from another table (cogroup).
    labels_frame = random_events(82)
    labels_frame["time"] = pd.to_datetime(labels_frame["ns"], utc=True)
    label_events = labels_frame.drop(columns=["ns"])
    spec = base_spec(features=FEATURES_FOR_SPARK, label={"agg": "sum", "column": "amount", "horizon": "3d"})
    labels_df = spark.createDataFrame(label_events)
    got = ks.windows(df, "user", "time", spec, labels=labels_df).toArrow().to_pandas()
    got["t"] = pd.to_datetime(got["t"], utc=True).dt.as_unit("ns").astype("int64")
    got = got.sort_values(["user", "t"]).reset_index(drop=True)
    assert_matches(got, reference_windows(events, "user", "time", spec, labels=label_events), spec)


FEATURES_FOR_SPARK = [{"name": "n", "agg": "count"}, {"name": "s", "agg": "sum", "column": "amount"}]

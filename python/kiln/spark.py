"""kiln inside Spark: the exact kernels on the executors, with Spark doing the distribution.

    from kiln import spark as ks
    df = spark.read.format("binaryFile").load("/data/clips/*.wav")
    features = ks.transform(df, "log_mel.json")          # + tensor, shape, error columns
    ks.write_tfrecord(features.select("path", "tensor", "shape"), "/data/tfrecord")

Each function runs through ``mapInArrow``: Arrow batches go straight into kiln's native code
(no pandas, no per-row Python), which releases the GIL while it works. Needs ``pyspark`` only
when this module is imported; executors need the ``kiln`` wheel installed (see README).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from typing import Any, Dict, Iterator, Optional

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql.types import ArrayType, BinaryType, FloatType, IntegerType, LongType, StringType, StructField, StructType

from . import ArgumentError, ConversionError, Entry, Loader, SpecLike, _kiln, _spec_json

__all__ = ["transform", "score", "write_tfrecord", "windows", "make_spark_converter", "SparkDatasetConverter"]


def _output_fields(spec_json: str, output_col: str):
    dtype, _ = _kiln.spec_output(spec_json)
    tensor_type = BinaryType() if dtype == "uint8" else ArrayType(FloatType(), containsNull=False)
    return [
        StructField(output_col, tensor_type, True),
        StructField("shape", ArrayType(IntegerType(), containsNull=False), True),
        StructField("error", StringType(), True),
    ]


def transform(
    df: DataFrame,
    spec: SpecLike,
    content_col: str = "content",
    path_col: str = "path",
    output_col: str = "tensor",
    backend: str = "cpu",
    on_error: str = "skip",
    threads: int = 1,
) -> DataFrame:
    """``df``'s columns plus ``output_col`` (``array<float>``, or ``binary`` for uint8 specs),
    ``shape`` (``array<int>``) and ``error`` (null when the row is fine), computed on the
    executors: the same tensor as ``kiln.transform`` on each row's ``content_col`` bytes (e.g.
    ``spark.read.format("binaryFile")``).

    A row that cannot be decoded or transformed gets a null tensor and its ``error``; with
    ``on_error="fail"`` the job fails instead, naming the row's ``path_col``. ``threads``:
    native threads per task. The default is 1: Spark already runs one task per executor core,
    so more would oversubscribe. Raise it when there are fewer partitions than cores."""
    if not isinstance(threads, int) or threads < 1:
        raise ArgumentError(f"threads: {threads!r} must be a whole number of at least 1")
    if on_error not in ("skip", "fail"):
        raise ArgumentError(f"on_error: {on_error!r} is not 'skip' or 'fail'")
    spec_json = _spec_json(spec)
    names = df.schema.names
    if content_col not in names:
        raise ArgumentError(f"content_col: the DataFrame has no column {content_col!r} (columns: {names})")
    for name in (output_col, "shape", "error"):
        if name in names:
            raise ArgumentError(f"the DataFrame already has a column {name!r}; rename it or choose another output_col")
    if on_error == "fail" and path_col not in names:
        raise ArgumentError(f"path_col: the DataFrame has no column {path_col!r} to name failed rows by")
    schema = StructType(df.schema.fields + _output_fields(spec_json, output_col))

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            content = batch.column(content_col)
            tensors, shapes, errors = _kiln.transform_batch(spec_json, content, backend=backend, threads=threads)
            if on_error == "fail" and errors.null_count < len(errors):
                i = next(i for i, e in enumerate(errors.to_pylist()) if e is not None)
                path = batch.column(path_col)[i].as_py()
                raise ConversionError(f"{path}: {errors[i].as_py()} (on_error='fail')")
            columns = list(batch.columns) + [tensors, shapes, errors]
            yield pa.RecordBatch.from_arrays(columns, names=schema.names)

    return df.mapInArrow(run, schema)


# One model per Python worker process, whatever the number of tasks it runs (Spark reuses
# Python workers between tasks by default).
_SCORERS: dict = {}


def _scorer(options: dict):
    key = json.dumps(options, sort_keys=True)
    scorer = _SCORERS.get(key)
    if scorer is None:
        scorer = _SCORERS[key] = _kiln.Scorer(**options)
    return scorer


def score(
    df: DataFrame,
    model: Optional[str] = None,
    input_col: str = "tensor",
    batch_size: int = 64,
    endpoint: Optional[str] = None,
    model_name: Optional[str] = None,
    shape_col: str = "shape",
    error_col: str = "score_error",
    **options,
) -> DataFrame:
    """``kiln score`` inside Spark: ``df`` (e.g. :func:`transform`'s output) plus one
    ``array<float>`` column per model output, named as the output, and ``error_col`` (null
    when the row's batch scored). The ONNX ``model`` (a path every executor can read; tract,
    or ``engine="onnxruntime"`` with ``ort_lib=``) is loaded once per Python worker; with
    ``endpoint`` and ``model_name``, batches go to an OIP v2 server with ``kiln score``'s
    retries. Rows are scored ``batch_size`` at a time in partition order; ``input_col`` holds
    each row's tensor (``array<float>``, or ``binary`` for uint8) and ``shape_col`` its
    shape. Options: ``model_version``, ``engine``, ``ort_lib``, ``workers``, ``concurrency``,
    ``retries``, ``timeout`` (seconds), ``max_rps``, ``input_name``."""
    known = {"model_version", "engine", "ort_lib", "workers", "concurrency", "retries", "timeout", "max_rps", "input_name"}
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"score() got unexpected keyword arguments {sorted(unknown)}")
    if batch_size < 1:
        raise ArgumentError(f"batch_size: {batch_size} must be at least 1")
    names = df.schema.names
    for name in (input_col, shape_col):
        if name not in names:
            raise ArgumentError(f"the DataFrame has no column {name!r} (columns: {names})")
    scorer_options = {"model": model, "endpoint": endpoint, "model_name": model_name}
    if "timeout" in options:
        scorer_options["timeout_s"] = float(options.pop("timeout"))
    scorer_options.update(options)
    # Loaded here once too: the output columns must be known before any task runs (and a bad
    # model fails now, not in every task).
    outputs = [name for name, _ in _scorer(scorer_options).outputs()]
    for name in outputs + [error_col]:
        if name in names:
            raise ArgumentError(f"the DataFrame already has a column {name!r} (a model output or error_col)")
    schema = StructType(
        df.schema.fields
        + [StructField(name, ArrayType(FloatType(), containsNull=False), True) for name in outputs]
        + [StructField(error_col, StringType(), True)]
    )

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = _scorer(scorer_options)
        for batch in batches:
            scored, errors = scorer.score(batch.column(input_col), batch.column(shape_col), batch_size)
            columns = list(batch.columns) + [scored[name] for name in outputs] + [errors]
            yield pa.RecordBatch.from_arrays(columns, names=schema.names)

    return df.mapInArrow(run, schema)


def write_tfrecord(df: DataFrame, path: str) -> int:
    """Writes ``df`` as TFRecord under the directory ``path``: one ``part-NNNNN.tfrecord``
    per non-empty partition, one ``tf.train.Example`` per row with a feature per column
    (binary and strings as bytes_list, integers as int64_list, floats as float_list, arrays of
    them likewise, nulls left out), framed as ``kiln export`` frames them. Each file is
    written to a temporary name and renamed, so a failed task leaves no partial file.
    ``path`` must be a directory every executor can write (local mode: any local path).
    Returns the number of rows written."""
    os.makedirs(path, exist_ok=True)
    directory = os.path.abspath(path)
    schema = StructType([StructField("file", StringType(), False), StructField("rows", LongType(), False)])

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        context = TaskContext.get()
        partition = context.partitionId() if context is not None else 0
        final = os.path.join(directory, f"part-{partition:05d}.tfrecord")
        temporary = f"{final}.tmp.{uuid.uuid4().hex}"
        rows = 0
        try:
            with open(temporary, "wb") as out:
                for batch in batches:
                    if batch.num_rows:
                        out.write(_kiln.tfrecord_batch(batch))
                        rows += batch.num_rows
                out.flush()
                os.fsync(out.fileno())
            if rows:
                os.replace(temporary, final)
            else:
                os.unlink(temporary)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        if rows:
            yield pa.RecordBatch.from_arrays([pa.array([final]), pa.array([rows], pa.int64())], names=["file", "rows"])

    written = df.mapInArrow(run, schema).collect()
    return sum(r["rows"] for r in written)



_ORDER = "__kiln_order"


def _windows_spec_json(spec: Any) -> str:
    if isinstance(spec, dict):
        return json.dumps(spec)
    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        return spec
    with open(os.fspath(spec)) as f:
        return f.read()


def _spark_friendly(table: pa.Table) -> pa.Table:
    """Spark has no fixed-size lists: the sequence tensor goes out as a plain list."""
    if "sequence" not in table.column_names:
        return table
    index = table.column_names.index("sequence")
    sequence = table.column(index)
    return table.set_column(index, table.field(index).with_type(pa.list_(pa.float64())),
                            sequence.cast(pa.list_(pa.float64())))


def windows(df: DataFrame, entity: str, time: str, spec: Any, labels: Optional[DataFrame] = None) -> DataFrame:
    """``kiln windows`` inside Spark: ``df`` (and ``labels``) grouped by ``entity`` with
    ``groupBy(entity).applyInArrow`` (``cogroup`` with labels), each entity's events windowed
    by kiln on the executor. Returns a DataFrame with the columns ``kiln windows`` writes
    (entity, ``t``, features, ``sequence`` as an array of doubles, ``label``).

    Events at equal times keep ``df``'s order (``monotonically_increasing_id`` before the
    shuffle, restored per group), as the CLI keeps file and row order."""
    from pyspark.sql.functions import monotonically_increasing_id
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    spec_json = _windows_spec_json(spec)

    def empty(frame: DataFrame) -> pa.RecordBatch:
        # Spark hands groups over with timestamps in UTC.
        schema = to_arrow_schema(frame.schema, timezone="UTC")
        return pa.RecordBatch.from_pylist([], schema=schema)

    label_batches = None if labels is None else [empty(labels)]
    out_schema, _ = _kiln.windows([empty(df)], entity, time, spec_json, labels=label_batches)
    out_schema = _spark_friendly(out_schema.empty_table()).schema
    spark_schema = from_arrow_schema(out_schema)

    def ordered(table: pa.Table) -> pa.Table:
        return table.sort_by(_ORDER).drop_columns([_ORDER])

    def compute(table: pa.Table, label_table: Optional[pa.Table]) -> pa.Table:
        events = ordered(table).to_batches() or [empty_events]
        label_events = None if label_table is None else (ordered(label_table).to_batches() or [empty_labels])
        schema, batches = _kiln.windows(events, entity, time, spec_json, labels=label_events)
        return _spark_friendly(pa.Table.from_batches(batches, schema=schema)).cast(out_schema)

    # Spark passes the grouping key too when the function takes one argument more: keep
    # exactly one parameter per table.
    def one(table: pa.Table) -> pa.Table:
        return compute(table, None)

    def two(left: pa.Table, right: pa.Table) -> pa.Table:
        return compute(left, right) if left.num_rows else out_schema.empty_table()

    numbered = df.withColumn(_ORDER, monotonically_increasing_id())
    empty_events = empty(numbered.drop(_ORDER))
    if labels is None:
        empty_labels = None
        return numbered.groupBy(entity).applyInArrow(one, spark_schema)
    numbered_labels = labels.withColumn(_ORDER, monotonically_increasing_id())
    empty_labels = empty(labels)
    return (
        numbered.groupBy(entity)
        .cogroup(numbered_labels.groupBy(entity))
        .applyInArrow(two, spark_schema)
    )


CACHE_DIR_CONF = "kiln.spark.cache_dir"
DEFAULT_ROW_GROUP_BYTES = 32 * 1024 * 1024


def _local_dir(url: str) -> str:
    if url.startswith("file://"):
        return url[len("file://"):]
    if "://" in url:
        raise ArgumentError(f"cache_dir_url: {url!r}: only local or shared file systems (file://) are supported")
    return url


def _fingerprint(df: DataFrame, options: Dict[str, Any]) -> str:
    """What identifies the DataFrame across processes. Spark's ``semanticHash()`` is stable for
    the same DataFrame rebuilt in one session, but not across sessions; the canonicalized
    analyzed plan (expression ids normalized) is, together with the schema, the options and the
    files the DataFrame reads with their sizes and modification times (new or changed input is
    a new cache). In-memory data (``createDataFrame``) adds the session's semantic hash: it is
    reused within a session only."""
    h = hashlib.sha256()
    plan = df._jdf.queryExecution().analyzed()
    canonical = plan.canonicalized().toString()
    h.update(canonical.encode())
    if "LocalRelation" in canonical:
        h.update(str(df.semanticHash()).encode())
    h.update(df.schema.json().encode())
    h.update(json.dumps(options, sort_keys=True).encode())
    for path in sorted(df.inputFiles()):
        local = path[len("file:"):] if path.startswith("file:") else path
        try:
            st = os.stat(local)
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}\n".encode())
    return h.hexdigest()[:24]


class SparkDatasetConverter:
    """A DataFrame materialized once as Parquet (a kiln table entry) and read back with
    kiln's loader; see :func:`make_spark_converter`."""

    def __init__(self, directory: str, rows: int):
        self.cache_dir_url = "file://" + directory
        self._directory = directory
        self._rows = rows

    def __len__(self) -> int:
        return self._rows

    @contextlib.contextmanager
    def make_torch_dataloader(
        self,
        batch_size: int = 32,
        num_epochs: Optional[int] = None,
        cur_shard: Optional[int] = None,
        shard_count: Optional[int] = None,
        seed: Optional[int] = None,
        transform_spec: Optional[SpecLike] = None,
        content_col: str = "content",
    ):
        """Batches (dicts of torch tensors; strings stay lists) over kiln.Loader: sharded
        (``cur_shard`` of ``shard_count``, default this torch.distributed rank), shuffled with
        ``seed``, ``num_epochs`` (None: forever, as Petastorm). ``transform_spec``: a kiln spec
        run on ``content_col`` (binary) at read time; its tensors replace that column as
        ``tensor``."""
        from .torch import _rank_and_world, to_torch

        cur_shard, shard_count = _rank_and_world(cur_shard, shard_count)
        spec_json = None if transform_spec is None else _spec_json(transform_spec)
        loader = Loader(Entry(self._directory), batch_size=batch_size, cur_shard=cur_shard, shard_count=shard_count,
                        seed=seed, num_epochs=num_epochs)

        def batches() -> Iterator[Dict[str, Any]]:
            for batch in loader:
                if spec_json is not None:
                    content = batch.pop(content_col, None)
                    if content is None:
                        raise ArgumentError(f"transform_spec: the table has no column {content_col!r}")
                    tensors, shapes, errors = _kiln.transform_batch(spec_json, pa.array(content, pa.binary()))
                    if errors.null_count < len(errors):
                        first = next(e for e in errors.to_pylist() if e is not None)
                        raise ConversionError(f"transform_spec: {first}")
                    import numpy as np

                    shape = tuple(shapes[0].as_py())
                    dtype = np.uint8 if pa.types.is_binary(tensors.type) else np.float32
                    values = (np.frombuffer(b"".join(tensors.to_pylist()), dtype=np.uint8) if dtype == np.uint8
                              else tensors.flatten().to_numpy())
                    batch["tensor"] = values.reshape(len(tensors), *shape)
                yield to_torch(batch)

        try:
            yield batches()
        finally:
            loader.close()

    def delete(self) -> None:
        """Removes the materialized Parquet."""
        shutil.rmtree(self._directory, ignore_errors=True)


def make_spark_converter(
    df: DataFrame,
    cache_dir_url: Optional[str] = None,
    parquet_row_group_size_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    compression: Optional[str] = None,
    spec: Optional[SpecLike] = None,
    content_col: str = "content",
) -> SparkDatasetConverter:
    """Petastorm's ``make_spark_converter`` on kiln: materializes ``df`` once as Parquet under
    ``cache_dir_url`` (default: the Spark conf ``kiln.spark.cache_dir``), in a directory keyed
    by the DataFrame's semantic hash, schema and input files, so the same DataFrame (rebuilt,
    or in another session) reuses it. Spark ML vectors become 1-D float arrays. With ``spec``,
    ``content_col`` is transformed by kiln first (:func:`transform`) and stored as tensors.
    ``compression``: a Parquet codec (default: uncompressed, as Petastorm)."""
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession() or df.sparkSession
    if cache_dir_url is None:
        cache_dir_url = spark.conf.get(CACHE_DIR_CONF, None)
        if not cache_dir_url:
            raise ArgumentError(f"cache_dir_url: give it, or set the Spark conf {CACHE_DIR_CONF!r}")
    if parquet_row_group_size_bytes < 1:
        raise ArgumentError("parquet_row_group_size_bytes must be at least 1")
    root = os.path.abspath(_local_dir(cache_dir_url))
    os.makedirs(root, exist_ok=True)
    key = _fingerprint(df, {
        "spec": None if spec is None else json.loads(_spec_json(spec)),
        "content_col": content_col,
        "compression": compression,
        "row_group_bytes": parquet_row_group_size_bytes,
    })
    if spec is not None:
        df = transform(df, spec, content_col=content_col, on_error="fail").drop(content_col, "error")
    # pyspark.ml's and pyspark.mllib's vector types, without importing either.
    vectors = [f.name for f in df.schema.fields if type(f.dataType).__name__ == "VectorUDT"]
    if vectors:
        from pyspark.ml.functions import vector_to_array

        for name in vectors:
            df = df.withColumn(name, vector_to_array(df[name], dtype="float32"))
    directory = os.path.join(root, key)
    if not os.path.exists(os.path.join(directory, "manifest.json")):
        temporary = os.path.join(root, f".tmp-{key}-{uuid.uuid4().hex}")
        (df.write.mode("overwrite")
         .option("compression", compression or "uncompressed")
         .option("parquet.block.size", str(parquet_row_group_size_bytes))
         .parquet(temporary))
        _kiln.index_table(temporary, key, f"spark DataFrame {key}")
        try:
            os.rename(temporary, directory)
        except OSError:
            # Another process materialized the same DataFrame first: use theirs.
            shutil.rmtree(temporary, ignore_errors=True)
    manifest = json.loads(open(os.path.join(directory, "manifest.json")).read())
    return SparkDatasetConverter(directory, int(manifest["rows"]))

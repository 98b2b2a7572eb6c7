"""kiln: audio and images to training-ready tensors, exactly as librosa and Pillow/torchvision
compute them, and a loader over kiln's content-hashed Parquet cache in Petastorm's vocabulary.

    import kiln
    x = kiln.transform({"ops": [{"op": "decode_image", "mode": "RGB"}]}, "cat.jpg")
    entry = kiln.convert("data/", "examples/log_mel.json")
    for batch in kiln.Loader(entry, batch_size=32, seed=0, num_epochs=1):
        batch["tensor"], batch["label_index"]

The same spec gives the same tensor as the ``kiln`` command line, and :func:`convert` shares
the CLI's cache: each finds the entries the other wrote. Arrays handed out share the memory
the native code produced (no copy) and are writable: every batch owns its buffers.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa

from . import _kiln
from ._kiln import (
    ArgumentError,
    BackendError,
    CacheError,
    ConversionError,
    DecodeError,
    KilnError,
    SourceError,
    SpecError,
)

__version__ = _kiln.__version__

__all__ = [
    "transform",
    "convert",
    "score",
    "windows",
    "Entry",
    "Loader",
    "default_cache_dir",
    "KilnError",
    "SpecError",
    "DecodeError",
    "CacheError",
    "SourceError",
    "BackendError",
    "ArgumentError",
    "ConversionError",
]

SpecLike = Union[Dict[str, Any], str, "os.PathLike[str]"]
PathLike = Union[str, "os.PathLike[str]"]


def _spec_json(spec: SpecLike) -> str:
    """A spec given as a dict, a JSON string or a path, as validated JSON text."""
    if isinstance(spec, dict):
        return json.dumps(spec)
    if isinstance(spec, os.PathLike):
        return _kiln.load_spec(os.fspath(spec))
    if isinstance(spec, str):
        if spec.lstrip().startswith("{"):
            return spec
        return _kiln.load_spec(spec)
    raise TypeError(f"spec must be a dict, a JSON string or a path, not {type(spec).__name__}")


class _Memory:
    """Owns an Arrow array and exposes its values to numpy (``__array_interface__``)."""

    __slots__ = ("__array_interface__", "_values")

    def __init__(self, values: pa.Array, interface: Dict[str, Any]) -> None:
        self._values = values
        self.__array_interface__ = interface


def _view(values: pa.Array, dtype: np.dtype, shape: Sequence[int], start: int = 0) -> np.ndarray:
    """A writable numpy array over ``values`` from element ``start`` on, without copying.

    Only for memory nothing else reads: a transform's result or a loader batch (the native
    loader gives every batch buffers of its own), so writing into it changes nothing else.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count == 0 or len(values) == 0:
        return np.zeros(shape, dtype)
    data = values.buffers()[1]
    itemsize = values.type.bit_width // 8
    address = data.address + (values.offset + start) * itemsize
    interface = {"shape": shape, "typestr": dtype.str, "data": (address, False), "version": 3}
    return np.asarray(_Memory(values, interface))


def transform(spec: SpecLike, source: Union[PathLike, bytes, bytearray, memoryview], backend: str = "cpu") -> np.ndarray:
    """Runs ``spec`` on one file (a path) or on the file's bytes; the same shape and dtype as
    ``kiln transform`` writes to its ``.npy`` (float32, uint8 or complex64).

    ``backend="gpu"`` runs the ops on the GPU (an error, not a fallback, when there is none).
    Raises :class:`SpecError` for a bad spec and :class:`DecodeError` for a file that cannot
    be decoded, with the CLI's messages.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        values, shape, dtype = _kiln.transform(_spec_json(spec), data=bytes(source), backend=backend)
    elif isinstance(source, (str, os.PathLike)):
        values, shape, dtype = _kiln.transform(_spec_json(spec), path=os.fspath(source), backend=backend)
    else:
        raise TypeError(f"source must be a path or bytes, not {type(source).__name__}")
    if dtype == "complex64":
        return _view(values, np.float32, [*shape, 2]).view(np.complex64).reshape(shape)
    return _view(values, np.dtype(dtype), shape)


def default_cache_dir() -> Path:
    """The cache :func:`convert` uses when given none: ``$KILN_CACHE``, else
    ``~/.cache/kiln/datasets`` (the CLI's)."""
    return Path(_kiln.default_cache_dir())


class Entry:
    """A converted dataset: one directory of the cache (manifest and Parquet shards).

    ``Entry(path)`` opens an existing entry; :func:`convert` returns one.

    Attributes: ``path``, ``key`` (the content hash naming it), ``rows``, ``failed`` (count),
    ``failures`` (list of ``{"path", "error"}``), ``label_names`` (index -> name),
    ``tensor_shape`` (a tuple, or ``None`` when rows vary in shape), ``tensor_dtype``
    (``"float32"`` or ``"uint8"``), ``cache_hit`` (whether the entry already existed).
    """

    path: Path
    key: str
    rows: int
    failed: int
    failures: List[Dict[str, str]]
    label_names: List[str]
    tensor_shape: Optional[Tuple[int, ...]]
    tensor_dtype: Optional[str]
    materialize: str
    cache_hit: bool

    def __init__(self, path: PathLike, *, cache_hit: bool = True) -> None:
        info = json.loads(_kiln.entry_info(os.fspath(path)))
        manifest = info["manifest"]
        tensor = info["tensor"]
        self.path = Path(path)
        self.key = manifest["key"]
        self.rows = int(manifest["rows"])
        self.failures = [{"path": f["path"], "error": f["error"]} for f in manifest["failed"]]
        self.failed = len(self.failures)
        self.label_names = list(manifest["labels"])
        # Table entries (a materialized DataFrame) have columns, not a tensor.
        self.materialize = manifest["materialize"]
        self.tensor_shape = None if tensor is None or tensor["shape"] is None else tuple(tensor["shape"])
        self.tensor_dtype = None if tensor is None else tensor["dtype"]
        self.cache_hit = cache_hit
        self.manifest: Dict[str, Any] = manifest

    def __repr__(self) -> str:
        return f"kiln.Entry({str(self.path)!r}, rows={self.rows}, tensor={self.tensor_dtype}{list(self.tensor_shape or [])})"

    def __fspath__(self) -> str:
        return str(self.path)


def convert(
    source: PathLike,
    spec: SpecLike,
    cache_dir: Optional[PathLike] = None,
    include: Optional[Sequence[str]] = None,
    labels: Optional[PathLike] = None,
    label_regex: Optional[str] = None,
    on_error: str = "skip",
    backend: str = "cpu",
    workers: Optional[int] = None,
    materialize: str = "tensor",
    progress: bool = True,
    **table: Any,
) -> Entry:
    """``kiln convert``: transforms every file of ``source`` (a directory, an object-store URL
    or, with ``source_format="parquet"``, Parquet tables) into a cache entry, or finds it in the
    cache (same key as the CLI for the same inputs and options: each reuses the other's).

    ``include``: glob patterns of files to take; ``labels``: a CSV/Parquet file of
    ``path,label`` (default: the parent directory's name), or ``label_regex`` with one group;
    ``on_error``: ``"skip"`` (failures listed on the entry) or ``"fail"``; ``materialize``:
    ``"tensor"`` (store the transformed tensor) or ``"raw"`` (store the bytes; the spec runs
    when read). Table sources take ``source_format="parquet"``, ``path_column``,
    ``content_column``, ``label_column``. A progress bar shows on a terminal unless
    ``progress=False``.
    """
    unknown = set(table) - {"source_format", "path_column", "content_column", "label_column"}
    if unknown:
        raise TypeError(f"convert() got unexpected keyword arguments {sorted(unknown)}")
    if workers is not None:
        _check_int("workers", workers, 0)
    report = json.loads(
        _kiln.convert(
            os.fspath(source),
            _spec_json(spec),
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            include=None if include is None else list(include),
            labels=None if labels is None else os.fspath(labels),
            label_regex=label_regex,
            on_error=on_error,
            backend=backend,
            workers=workers,
            materialize=materialize,
            progress=progress,
            **table,
        )
    )
    entry = Entry(report["entry"], cache_hit=bool(report["cache_hit"]))
    entry.report = report
    return entry


_SCORE_OPTIONS = {
    "model_version",
    "spec",
    "cache_dir",
    "batch_size",
    "workers",
    "concurrency",
    "retries",
    "timeout",
    "max_rps",
    "input_name",
    "engine",
    "ort_lib",
    "shard_rows",
    "progress",
}


def score(
    input: Union[PathLike, "Entry"],
    model: Optional[PathLike] = None,
    endpoint: Optional[str] = None,
    model_name: Optional[str] = None,
    output: Optional[PathLike] = None,
    **options: Any,
) -> Dict[str, Any]:
    """``kiln score``: runs an ONNX ``model`` in process (tract; ``engine="onnxruntime"`` with
    ``ort_lib=``), or posts batches to an Open Inference Protocol v2 ``endpoint`` (Triton,
    KServe, MLServer) serving ``model_name``, over every row of ``input`` (a cache entry, or a
    source converted first with ``spec=``). Writes ``output/part-NNNNN.parquet`` (row_id,
    path, label, label_index, one fixed-size float32 list column per model output, error) and
    ``output/manifest.json``; re-running resumes or does nothing.

    Options, as the CLI's flags: ``spec``, ``cache_dir``, ``batch_size`` (64), ``workers``
    (cores), ``concurrency`` (8), ``retries`` (5), ``timeout`` (seconds, 30), ``max_rps``,
    ``input_name``, ``model_version``, ``engine``, ``ort_lib``, ``shard_rows``, ``progress``.

    Returns the report: ``output``, ``rows``, ``scored``, ``failed``, ``seconds``,
    ``rows_per_s``, ``input_entry`` and ``failures`` (each ``row_id``, ``path``, ``error``).
    Failed rows do not raise: check ``report["failed"]``.
    """
    unknown = set(options) - _SCORE_OPTIONS
    if unknown:
        raise TypeError(f"score() got unexpected keyword arguments {sorted(unknown)}")
    if output is None:
        raise TypeError("score() needs output= (the output directory)")
    spec = options.pop("spec", None)
    cache_dir = options.pop("cache_dir", None)
    ort_lib = options.pop("ort_lib", None)
    timeout = options.pop("timeout", 30.0)
    for name in ("batch_size", "workers", "concurrency", "shard_rows"):
        if options.get(name) is not None:
            _check_int(name, options[name], 1)
    if options.get("retries") is not None:
        _check_int("retries", options["retries"], 0)
    report = json.loads(
        _kiln.score(
            os.fspath(input),
            os.fspath(output),
            model=None if model is None else os.fspath(model),
            endpoint=endpoint,
            model_name=model_name,
            spec_json=None if spec is None else _spec_json(spec),
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            ort_lib=None if ort_lib is None else os.fspath(ort_lib),
            timeout_s=float(timeout),
            **options,
        )
    )
    return report


def _event_batches(events: Any, name: str) -> Union[str, List[pa.RecordBatch]]:
    """A location, or the record batches of a pyarrow Table/RecordBatch or pandas DataFrame."""
    if isinstance(events, (str, os.PathLike)):
        return os.fspath(events)
    if isinstance(events, pa.RecordBatch):
        return [events]
    if isinstance(events, pa.Table):
        return events.to_batches()
    if type(events).__module__.startswith("pandas") and hasattr(events, "columns"):
        return pa.Table.from_pandas(events, preserve_index=False).to_batches()
    raise TypeError(
        f"{name} must be a path, a pyarrow.Table or RecordBatch, or a pandas DataFrame, "
        f"not {type(events).__name__}"
    )


def windows(
    events: Any,
    entity: str,
    time: str,
    spec: Union[Dict[str, Any], str, PathLike],
    output: Optional[PathLike] = None,
    labels: Any = None,
    format: str = "parquet",
    workers: Optional[int] = None,
    memory: Union[int, str, None] = None,
    progress: bool = True,
) -> Union[Dict[str, Any], pa.Table]:
    """``kiln windows``: sliding-window features and labels per ``entity`` over event
    histories. ``events`` (and ``labels``, when the label reads other events) is a path
    (Parquet/CSV files: a directory, URL or file), a ``pyarrow.Table``/``RecordBatch`` or a
    pandas ``DataFrame``; ``spec`` is the windows spec (a dict, JSON text or a path).

    With ``output``, writes ``part-NNNNN.parquet`` (or ``.tfrecord``) shards and
    ``manifest.json`` there (resumable, idempotent) and returns the report (``rows``,
    ``entities``, ``events``, ``partitions``, ``spilled_bytes``, ``seconds``, ...). Without
    it, computes in memory and returns a ``pyarrow.Table`` (entity, ``t``, features,
    ``sequence``, ``label``) sorted by entity and ``t``. ``memory`` bounds a file run
    (bytes, or e.g. ``"512MB"``).
    """
    if isinstance(spec, dict):
        spec_json = json.dumps(spec)
    elif isinstance(spec, str) and spec.lstrip().startswith("{"):
        spec_json = spec
    else:
        spec_json = Path(os.fspath(spec)).read_text()
    if workers is not None:
        _check_int("workers", workers, 1)
    result = _kiln.windows(
        _event_batches(events, "events"),
        entity,
        time,
        spec_json,
        output=None if output is None else os.fspath(output),
        labels=None if labels is None else _event_batches(labels, "labels"),
        format=format,
        workers=workers,
        memory=None if memory is None else str(memory),
        progress=progress,
    )
    if output is None:
        schema, batches = result
        return pa.Table.from_batches(batches, schema=schema)
    return json.loads(result)


Batch = Dict[str, Any]


def _check_int(name: str, value: Any, minimum: int) -> int:
    """An integer option, or an ArgumentError naming it (rather than an OverflowError from the
    native layer's unsigned types); ranges beyond that are checked natively, with the CLI's
    messages."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise ArgumentError(f"{name}: {value} is below {minimum}")
    return int(value)


def _table_column(column: pa.Array) -> Any:
    """A table entry's column: numbers as a numpy array, arrays of numbers of one length as a
    2-D numpy array (ragged ones as a list of arrays), anything else as a list."""
    kind = column.type
    if (pa.types.is_integer(kind) or pa.types.is_floating(kind)) and column.null_count == 0:
        return column.to_numpy(zero_copy_only=False)
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)) and column.null_count == 0:
        item = kind.value_type
        if pa.types.is_integer(item) or pa.types.is_floating(item):
            lengths = column.value_lengths().to_numpy(zero_copy_only=False) if len(column) else np.zeros(0, np.int64)
            values = column.flatten().to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths == lengths[0]).all():
                return values.reshape(len(column), int(lengths[0]))
            return np.split(values, np.cumsum(lengths)[:-1]) if len(lengths) else []
    return column.to_pylist()


def _batch_arrays(records: pa.RecordBatch, shape: Optional[Tuple[int, ...]], dtype: np.dtype, table: bool = False) -> Batch:
    """A loader batch as numpy arrays over the batch's own Arrow buffers."""
    out: Batch = {}
    names = records.schema.names
    rows = records.num_rows
    if table:
        return {name: _table_column(records.column(name)) for name in names}
    for name in names:
        column = records.column(name)
        if name == "tensor":
            out["tensor"] = _tensor_column(records, column, shape, dtype)
        elif name == "shape":
            continue
        elif name == "path":
            out["path"] = column.to_pylist()
        elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            numpy_dtype = column.type.to_pandas_dtype()
            out[name] = _view(column, numpy_dtype, [rows])
        else:
            out[name] = column.to_pylist()
    return out


def _tensor_column(records: pa.RecordBatch, column: pa.Array, shape: Optional[Tuple[int, ...]], dtype: np.dtype):
    rows = records.num_rows
    values = column.values
    if shape is not None:
        # FixedSizeList: one contiguous (rows, *shape) block.
        return _view(values, dtype, [rows, *shape], start=column.offset * int(np.prod(shape, dtype=np.int64)))
    shapes = [tuple(s) for s in records.column("shape").to_pylist()]
    offsets = column.offsets.to_numpy()
    if shapes and all(s == shapes[0] for s in shapes):
        return _view(values, dtype, [rows, *shapes[0]], start=int(offsets[0]))
    return [_view(values, dtype, s, start=int(offsets[i])) for i, s in enumerate(shapes)]


class Loader:
    """Batches of an entry, as dicts of numpy arrays, in Petastorm's vocabulary.

    Each batch: ``tensor`` (``(B, *shape)`` when the entry's shape is fixed or the batch's rows
    share one, else a list of per-row arrays), ``label_index``, ``row_id``, ``label``
    (strings) and ``path`` (list of str), or the ``columns`` asked for.

    ``cur_shard``/``shard_count`` split the rows between workers (disjoint, covering, equal);
    ``seed`` shuffles (the same seed gives the same order); ``num_epochs=None`` repeats
    forever, as Petastorm. ``state_dict()`` / ``load_state_dict()`` (torchdata's
    StatefulDataLoader names) resume mid-epoch with exactly the rows not yet seen.
    ``len(loader)`` is the number of batches per epoch.
    """

    def __init__(
        self,
        entry: Union[Entry, PathLike],
        batch_size: int = 32,
        cur_shard: int = 0,
        shard_count: int = 1,
        seed: Optional[int] = None,
        num_epochs: Optional[int] = None,
        drop_last: bool = False,
        prefetch: int = 4,
        columns: Optional[Sequence[str]] = None,
        backend: str = "cpu",
    ) -> None:
        self.entry = entry if isinstance(entry, Entry) else Entry(entry)
        self.batch_size = _check_int("batch_size", batch_size, 0)
        self.cur_shard = _check_int("cur_shard", cur_shard, 0)
        self.shard_count = _check_int("shard_count", shard_count, 0)
        self.seed = None if seed is None else _check_int("seed", seed, 0)
        self.num_epochs = None if num_epochs is None else _check_int("num_epochs", num_epochs, 0)
        _check_int("prefetch", prefetch, 0)
        self.drop_last = drop_last
        self.prefetch = prefetch
        self.columns = None if columns is None else list(columns)
        self.backend = backend
        self._dtype = np.dtype(self.entry.tensor_dtype)
        self._state: Optional[str] = None
        # Passes over the loader: a pass that runs out continues with the next epochs.
        self._pass = 0
        # Set when a loop ran out of batches: the next loop starts the next pass. A loader
        # resumed at the end of a run yields nothing on its first loop, like the run did.
        self._exhausted = False
        self._native = self._open(None)

    def _open(self, state: Optional[str]) -> "_kiln.Loader":
        epochs = self.num_epochs
        if epochs is not None:
            # Epochs are counted from the first pass (states carry absolute epoch numbers).
            epochs *= self._pass + 1
        return _kiln.Loader(
            os.fspath(self.entry.path),
            batch_size=self.batch_size,
            cur_shard=self.cur_shard,
            shard_count=self.shard_count,
            seed=self.seed,
            num_epochs=epochs,
            drop_last=self.drop_last,
            prefetch=self.prefetch,
            columns=self.columns,
            state_json=state,
            backend=self.backend,
        )

    def __len__(self) -> int:
        return int(self._native.batches_per_epoch)

    @property
    def rows_per_epoch(self) -> int:
        """Rows this shard gets per epoch."""
        return int(self._native.rows_per_epoch)

    def __iter__(self) -> Iterator[Batch]:
        """Batches from where the loader is. A loop left early continues where it stopped;
        once ``num_epochs`` epochs are delivered, a new loop starts the next ``num_epochs``
        (reshuffled by epoch), as a training loop ``for epoch in ...: for batch in loader``
        expects, rather than coming back empty."""
        if self._exhausted and self.num_epochs is not None:
            self._pass += 1
            state = {"seed": self.seed, "epoch": self.num_epochs * self._pass, "position": 0}
            self._native.close()
            self._native = self._open(json.dumps(state))
        self._exhausted = False
        item = self._native.next_batch()
        while item is not None:
            records, epoch, state = item
            self._state = state
            batch = _batch_arrays(records, self.entry.tensor_shape, self._dtype, table=self.entry.materialize == "table")
            batch["epoch"] = epoch
            yield batch
            item = self._native.next_batch()
        self._exhausted = True

    def state_dict(self) -> Dict[str, Any]:
        """Where the loader is: after the last batch handed out (JSON-serialisable)."""
        state = json.loads(self._state if self._state is not None else self._native.state_json())
        return {"seed": state["seed"], "epoch": state["epoch"], "position": state["position"],
                "entry_key": self.entry.key, "cur_shard": self.cur_shard, "shard_count": self.shard_count}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continues from ``state`` (from :meth:`state_dict`): the next batch starts at the
        first row not yet seen. The entry and sharding must be the ones it was taken with."""
        for key, mine in (("entry_key", self.entry.key), ("cur_shard", self.cur_shard), ("shard_count", self.shard_count)):
            if key in state and state[key] != mine:
                raise ArgumentError(f"state: {key} {state[key]!r} is not this loader's {mine!r}")
        missing = [key for key in ("epoch", "position") if key not in state]
        if missing:
            raise ArgumentError(f"state: missing {', '.join(missing)} (not a kiln.Loader state_dict)")
        epoch = _check_int("state epoch", state["epoch"], 0)
        position = _check_int("state position", state["position"], 0)
        native = json.dumps({"seed": state.get("seed"), "epoch": epoch, "position": position})
        if self.num_epochs is not None:
            # The pass the state belongs to: a state at an epoch's start (position 0) ends the
            # epoch before it, so a state saved after a run's last batch resumes to nothing.
            last = epoch if position > 0 else epoch - 1
            self._pass = max(0, last // self.num_epochs)
        self._native.close()
        self._native = self._open(native)
        self._state = native
        self._exhausted = False

    def close(self) -> None:
        """Stops the loader's threads and releases the entry (also done when it is collected)."""
        self._native.close()

    def __enter__(self) -> "Loader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

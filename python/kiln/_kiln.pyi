"""Type stubs for kiln's native module (``kiln._kiln``); use the ``kiln`` package instead."""
from typing import Any, Dict, List, Optional, Tuple, Union

import pyarrow as pa

__version__: str

class KilnError(Exception):
    """Base class of every error kiln raises."""

class SpecError(KilnError):
    """A transform spec is invalid."""

class DecodeError(KilnError):
    """A file could not be decoded or transformed."""

class CacheError(KilnError):
    """A cache entry, shard or label file is unusable."""

class SourceError(KilnError):
    """A source could not be listed or read (files, object stores)."""

class BackendError(KilnError):
    """The GPU backend could not start or run."""

class ArgumentError(KilnError):
    """An option is out of range or inconsistent."""

class ConversionError(KilnError):
    """Items failed under on_error='fail', or all items failed."""

def transform(
    spec_json: str, path: Optional[str] = None, data: Optional[bytes] = None, backend: str = "cpu"
) -> Tuple[pa.Array, List[int], str]:
    """Runs a spec on one input; returns ``(values, shape, dtype)``."""

def score(
    input: str,
    output: str,
    model: Optional[str] = None,
    endpoint: Optional[str] = None,
    model_name: Optional[str] = None,
    model_version: Optional[str] = None,
    spec_json: Optional[str] = None,
    cache_dir: Optional[str] = None,
    batch_size: int = 64,
    workers: Optional[int] = None,
    concurrency: int = 8,
    retries: int = 5,
    timeout_s: float = 30.0,
    max_rps: Optional[float] = None,
    input_name: Optional[str] = None,
    engine: str = "tract",
    ort_lib: Optional[str] = None,
    shard_rows: int = 8192,
    progress: bool = True,
) -> str: ...
def windows(
    events: Union[str, List[pa.RecordBatch]],
    entity: str,
    time: str,
    spec_json: str,
    output: Optional[str] = None,
    labels: Union[str, List[pa.RecordBatch], None] = None,
    format: str = "parquet",
    workers: Optional[int] = None,
    memory: Optional[str] = None,
    progress: bool = True,
) -> Any:
    """The report as JSON with ``output``; else ``(schema, batches)`` computed in memory."""
def convert(
    source: str,
    spec_json: str,
    cache_dir: Optional[str] = None,
    include: Optional[List[str]] = None,
    labels: Optional[str] = None,
    label_regex: Optional[str] = None,
    on_error: str = "skip",
    backend: str = "cpu",
    workers: Optional[int] = None,
    materialize: str = "tensor",
    progress: bool = True,
    source_format: str = "files",
    path_column: str = "path",
    content_column: str = "content",
    label_column: Optional[str] = None,
) -> str:
    """``kiln convert``; returns the report as JSON."""

def entry_info(path: str) -> str:
    """An entry's manifest and delivered tensor as JSON."""

def load_spec(path: str) -> str:
    """Reads and validates a spec file; returns its JSON."""

def default_cache_dir() -> str:
    """``$KILN_CACHE``, else ``~/.cache/kiln/datasets``."""

class Loader:
    """The native loader; use :class:`kiln.Loader`."""

    def __init__(
        self,
        entry: str,
        batch_size: int = 32,
        cur_shard: int = 0,
        shard_count: int = 1,
        seed: Optional[int] = None,
        num_epochs: Optional[int] = None,
        drop_last: bool = False,
        prefetch: int = 4,
        columns: Optional[List[str]] = None,
        state_json: Optional[str] = None,
        backend: str = "cpu",
    ) -> None: ...
    def next_batch(self) -> Optional[Tuple[pa.RecordBatch, int, str]]:
        """The next batch, its epoch and the state after it (JSON), or None at the end."""
    def state_json(self) -> str:
        """The state after the last batch handed out, as JSON."""
    @property
    def rows_per_epoch(self) -> int: ...
    @property
    def batches_per_epoch(self) -> int: ...
    def close(self) -> None:
        """Stops the loader's threads and releases the entry."""

def spec_output(spec_json: str) -> Tuple[str, Optional[List[int]]]:
    """The stored dtype (``"float32"`` or ``"uint8"``) and fixed shape (or None) of a spec's output."""

def transform_batch(
    spec_json: str, contents: pa.Array, backend: str = "cpu", threads: Optional[int] = None
) -> Tuple[pa.Array, pa.Array, pa.Array]:
    """The spec over every value of a binary array: (tensors, shapes, errors), null where a row failed."""

def tfrecord_batch(batch: pa.RecordBatch) -> bytes:
    """Every row as a framed ``tf.train.Example``: the bytes of a TFRecord file."""

class Scorer:
    """A model loaded (or an endpoint connected) once; see :func:`kiln.spark.score`."""

    def __init__(
        self,
        model: Optional[str] = None,
        endpoint: Optional[str] = None,
        model_name: Optional[str] = None,
        model_version: Optional[str] = None,
        engine: str = "tract",
        ort_lib: Optional[str] = None,
        workers: int = 1,
        concurrency: int = 8,
        retries: int = 5,
        timeout_s: float = 30.0,
        max_rps: Optional[float] = None,
        input_name: Optional[str] = None,
    ) -> None: ...
    def outputs(self) -> List[Tuple[str, Optional[List[int]]]]: ...
    def score(self, values: pa.Array, shapes: pa.Array, batch_size: int) -> Tuple[Dict[str, pa.Array], pa.Array]: ...

"""PyTorch integration in Petastorm's vocabulary.

    with kiln.torch.make_torch_dataloader(entry, batch_size=32, num_epochs=1, seed=0) as loader:
        for batch in loader:
            model(batch["tensor"]), batch["label_index"]

    dataset = kiln.torch.Dataset(entry, batch_size=32, num_epochs=1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)

Tensors share the memory of kiln's batches (``torch.from_numpy``, no copy); every batch owns
its buffers, so in-place operations on one change nothing else.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from . import ArgumentError, Entry, Loader, PathLike

__all__ = ["make_torch_dataloader", "Dataset", "TorchLoader", "to_torch"]


def to_torch(batch: Dict[str, Any]) -> Dict[str, Any]:
    """A kiln batch (numpy arrays) as torch tensors over the same memory; ``path`` (and other
    string columns) stay lists of str, ragged tensors become lists of tensors."""
    out: Dict[str, Any] = {}
    for name, value in batch.items():
        if isinstance(value, np.ndarray):
            out[name] = torch.from_numpy(value)
        elif isinstance(value, list) and value and isinstance(value[0], np.ndarray):
            out[name] = [torch.from_numpy(v) for v in value]
        else:
            out[name] = value
    return out


def _rank_and_world(cur_shard: Optional[int], shard_count: Optional[int]) -> Tuple[int, int]:
    """The shard to read: as given, else this process's rank and the world size when
    ``torch.distributed`` is initialised, else the whole entry."""
    if cur_shard is None and shard_count is None:
        distributed = torch.distributed
        if distributed.is_available() and distributed.is_initialized():
            return distributed.get_rank(), distributed.get_world_size()
        return 0, 1
    if cur_shard is None or shard_count is None:
        raise ArgumentError("shard: give both cur_shard and shard_count, or neither")
    return int(cur_shard), int(shard_count)


class TorchLoader:
    """What :func:`make_torch_dataloader` yields: an iterable of dicts of ``torch.Tensor``
    with the loader's ``len``, ``state_dict`` and ``load_state_dict``."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        for batch in self.loader:
            yield to_torch(batch)

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self) -> Dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.loader.load_state_dict(state)


@contextlib.contextmanager
def make_torch_dataloader(
    entry: Union[Entry, PathLike],
    batch_size: int = 32,
    num_epochs: Optional[int] = None,
    cur_shard: Optional[int] = None,
    shard_count: Optional[int] = None,
    seed: Optional[int] = None,
    **loader_kwargs: Any,
) -> Iterator[TorchLoader]:
    """Like Petastorm's ``converter.make_torch_dataloader``: a context manager yielding batches
    as dicts of ``torch.Tensor``. ``num_epochs=None`` repeats forever. With ``cur_shard=None``
    the shard is this process's rank of ``torch.distributed`` (when initialised). Other
    keyword arguments go to :class:`kiln.Loader` (``drop_last``, ``prefetch``, ``columns``).
    The loader's threads stop when the block exits."""
    rank, world = _rank_and_world(cur_shard, shard_count)
    loader = Loader(entry, batch_size=batch_size, cur_shard=rank, shard_count=world, seed=seed,
                    num_epochs=num_epochs, **loader_kwargs)
    try:
        yield TorchLoader(loader)
    finally:
        loader.close()


class Dataset(IterableDataset):
    """An ``IterableDataset`` of whole batches (use ``DataLoader(dataset, batch_size=None)``).

    Rows are split between every reader: ``torch.distributed`` ranks (or ``cur_shard`` of
    ``shard_count``) times the DataLoader's workers, disjoint and of equal size. When a reader
    would get no rows, iterating raises :class:`kiln.ArgumentError` naming the counts instead
    of leaving that worker silently empty (the hang other loaders are known for).

    It has no ``len()``: the batches a DataLoader gets depend on its worker count, which the
    dataset cannot know in the main process (a wrong length makes DataLoader warn).
    """

    def __init__(
        self,
        entry: Union[Entry, PathLike],
        batch_size: int = 32,
        num_epochs: Optional[int] = 1,
        cur_shard: Optional[int] = None,
        shard_count: Optional[int] = None,
        seed: Optional[int] = None,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__()
        self.entry = entry if isinstance(entry, Entry) else Entry(entry)
        self.batch_size = batch_size
        self.num_epochs = num_epochs
        self.cur_shard = cur_shard
        self.shard_count = shard_count
        self.seed = seed
        self.loader_kwargs = loader_kwargs

    def reader(self) -> Tuple[int, int]:
        """This reader's ``(shard, shard_count)``: rank-major, then DataLoader worker."""
        rank, world = _rank_and_world(self.cur_shard, self.shard_count)
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return rank * workers + worker, world * workers

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        shard, count = self.reader()
        if self.entry.rows // count == 0:
            raise ArgumentError(
                f"kiln.torch.Dataset: {self.entry.rows} rows cannot feed {count} readers "
                f"(ranks x DataLoader workers); every reader needs at least one row: "
                f"use fewer workers or more data"
            )
        loader = Loader(self.entry, batch_size=self.batch_size, cur_shard=shard, shard_count=count,
                        seed=self.seed, num_epochs=self.num_epochs, **self.loader_kwargs)
        try:
            for batch in loader:
                yield to_torch(batch)
        finally:
            loader.close()

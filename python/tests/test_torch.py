"""kiln.torch against real torch: make_torch_dataloader, Dataset under DataLoader workers
(fork and spawn), rank splits, the empty-worker error, zero-copy hand-over.

torch is required: without it this module fails to import (CI installs it). Set
KILN_PYTEST_NO_TORCH=1 to skip it on purpose.
"""
from __future__ import annotations

import os

import pytest

if os.environ.get("KILN_PYTEST_NO_TORCH") == "1":
    pytest.skip("KILN_PYTEST_NO_TORCH=1: torch tests skipped on request", allow_module_level=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402  (an ImportError here fails the suite, as it should)
from torch.utils.data import DataLoader  # noqa: E402

import kiln  # noqa: E402
import kiln.torch as ktorch  # noqa: E402
from conftest import FIXED_MEL_SHAPE, make_audio_tree, FIXED_MEL  # noqa: E402


def test_make_torch_dataloader_yields_tensors(entry13):
    with ktorch.make_torch_dataloader(entry13, batch_size=4, num_epochs=1, seed=0) as loader:
        assert len(loader) == 4
        batches = list(loader)
    assert [b["tensor"].shape for b in batches] == [torch.Size([4, *FIXED_MEL_SHAPE])] * 3 + [torch.Size([1, *FIXED_MEL_SHAPE])]
    for b in batches:
        assert isinstance(b["tensor"], torch.Tensor) and b["tensor"].dtype == torch.float32
        assert isinstance(b["label_index"], torch.Tensor) and b["label_index"].dtype == torch.int32
        assert isinstance(b["row_id"], torch.Tensor) and b["row_id"].dtype == torch.uint64
        assert isinstance(b["path"], list) and len(b["path"]) == len(b["tensor"])
    assert sorted(int(i) for b in batches for i in b["row_id"]) == list(range(13))
    # Same rows and values as the numpy loader.
    with kiln.Loader(entry13, batch_size=4, num_epochs=1, seed=0) as plain:
        for t, n in zip(batches, plain):
            assert np.array_equal(t["tensor"].numpy(), n["tensor"])
            assert t["row_id"].tolist() == n["row_id"].tolist()


def test_make_torch_dataloader_state_dict_and_a_train_step(entry12):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(80 * 26, 3))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    with ktorch.make_torch_dataloader(entry12, batch_size=4, num_epochs=2, seed=3) as loader:
        it = iter(loader)
        for _ in range(4):
            b = next(it)
            loss = torch.nn.functional.cross_entropy(model(b["tensor"]), b["label_index"].long())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        assert torch.isfinite(loss)
        state = loader.state_dict()
        rest = [b["row_id"].tolist() for b in it]
    with ktorch.make_torch_dataloader(entry12, batch_size=4, num_epochs=2, seed=3) as again:
        again.load_state_dict(state)
        assert [b["row_id"].tolist() for b in again] == rest


def test_make_torch_dataloader_explicit_ranks(entry12):
    seen = []
    for rank in range(3):
        with ktorch.make_torch_dataloader(entry12, batch_size=8, num_epochs=1, cur_shard=rank, shard_count=3) as loader:
            ids = [int(i) for b in loader for i in b["row_id"]]
        assert len(ids) == 4
        seen.extend(ids)
    assert sorted(seen) == list(range(12))
    with pytest.raises(kiln.ArgumentError, match=r"^shard: give both cur_shard and shard_count, or neither$"):
        with ktorch.make_torch_dataloader(entry12, cur_shard=1):
            pass


def test_make_torch_dataloader_takes_rank_from_torch_distributed(entry12, monkeypatch):
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda *a, **k: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
    with ktorch.make_torch_dataloader(entry12, batch_size=8, num_epochs=1) as loader:
        ids = [int(i) for b in loader for i in b["row_id"]]
    assert ids == list(range(6, 12)), "rank 1 of 2 takes the second half"


def test_to_torch_shares_memory(entry12):
    with kiln.Loader(entry12, batch_size=4, num_epochs=1) as loader:
        b = next(iter(loader))
        t = b["tensor"]
        converted = ktorch.to_torch(b)
    assert converted["tensor"].data_ptr() == t.ctypes.data
    assert torch.from_numpy(t).data_ptr() == t.ctypes.data
    from_dlpack = torch.from_dlpack(t)
    assert from_dlpack.data_ptr() == t.ctypes.data
    assert from_dlpack.shape == t.shape and torch.equal(from_dlpack, torch.from_numpy(t))
    # The same memory: a write through torch shows in numpy.
    from_dlpack[0, 0, 0] = 4242.0
    assert t[0, 0, 0] == 4242.0
    for name in ("row_id", "label_index"):
        assert torch.from_dlpack(b[name]).data_ptr() == b[name].ctypes.data


def test_transform_result_through_dlpack(audio_files):
    x = kiln.transform(FIXED_MEL, audio_files["mono16k"])
    t = torch.from_dlpack(x)
    assert t.data_ptr() == x.ctypes.data and tuple(t.shape) == x.shape


def collect(dataset, workers, context, **kwargs):
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, multiprocessing_context=context, **kwargs)
    return [(int(i), b["tensor"].shape[1:]) for b in loader for i in b["row_id"]]


@pytest.mark.parametrize("seed", [None, 4])
def test_dataset_with_two_fork_workers_covers_all_rows_once(entry12, seed):
    got = collect(ktorch.Dataset(entry12, batch_size=2, seed=seed), 2, "fork")
    ids = [i for i, _ in got]
    assert sorted(ids) == list(range(12)), ids
    assert all(shape == torch.Size(FIXED_MEL_SHAPE) for _, shape in got)


def test_dataset_with_two_spawn_workers_covers_all_rows_once(entry12):
    got = collect(ktorch.Dataset(entry12, batch_size=2, seed=1), 2, "spawn")
    assert sorted(i for i, _ in got) == list(range(12))


def test_dataset_worker_split_leaves_out_the_remainder(entry13):
    # 13 rows over 2 workers: 6 each, one row left out of the epoch (as for shards).
    ids = [i for i, _ in collect(ktorch.Dataset(entry13, batch_size=4), 2, "fork")]
    assert len(ids) == 12 and len(set(ids)) == 12
    assert set(ids) == set(range(12))


def test_dataset_ranks_times_workers(entry12):
    per_rank = []
    for rank in range(2):
        dataset = ktorch.Dataset(entry12, batch_size=2, cur_shard=rank, shard_count=2, seed=8)
        ids = [i for i, _ in collect(dataset, 2, "fork")]
        assert len(ids) == 6 and len(set(ids)) == 6
        per_rank.append(set(ids))
    assert not per_rank[0] & per_rank[1]
    assert per_rank[0] | per_rank[1] == set(range(12))


def test_dataset_in_the_main_process(entry12):
    dataset = ktorch.Dataset(entry12, batch_size=5)
    batches = list(dataset)
    assert [b["tensor"].shape[0] for b in batches] == [5, 5, 2]
    # No len(): the batch count depends on the DataLoader's workers, unknown to the dataset.
    with pytest.raises(TypeError):
        len(dataset)


@pytest.fixture(scope="module")
def entry3(tmp_path_factory):
    root = tmp_path_factory.mktemp("three")
    make_audio_tree(root, (1, 1, 1))
    return kiln.convert(root, FIXED_MEL, cache_dir=root.parent / "three_cache", progress=False)


def test_empty_worker_is_a_clear_error_in_the_main_process(entry3):
    dataset = ktorch.Dataset(entry3, batch_size=1)
    loader = DataLoader(dataset, batch_size=None, num_workers=4, multiprocessing_context="fork")
    with pytest.raises(kiln.ArgumentError) as raised:
        list(loader)
    message = str(raised.value)
    assert "kiln.torch.Dataset: 3 rows cannot feed 4 readers (ranks x DataLoader workers)" in message
    assert "use fewer workers or more data" in message


def test_empty_rank_is_a_clear_error(entry3):
    dataset = ktorch.Dataset(entry3, batch_size=1, cur_shard=0, shard_count=2)
    loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="fork")
    with pytest.raises(kiln.ArgumentError, match=r"3 rows cannot feed 4 readers"):
        list(loader)
    # Without workers the error is raised directly, with the same text.
    with pytest.raises(kiln.ArgumentError, match=r"^kiln.torch.Dataset: 3 rows cannot feed 4 readers"):
        list(ktorch.Dataset(entry3, batch_size=1, cur_shard=0, shard_count=4))

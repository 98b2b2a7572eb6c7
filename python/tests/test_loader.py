"""kiln.Loader: shard splits, seeds, epochs, drop_last, len, state_dict resume, zero-copy."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow as pa
import pytest

import kiln
from conftest import FIXED_MEL_SHAPE, row_ids

ENTRIES = ["entry12", "entry13", "entry13_groups"]


@pytest.fixture(params=ENTRIES)
def entry(request):
    return request.getfixturevalue(request.param)


def epochs_of(entry, **kwargs):
    """Row ids per epoch of one loader run."""
    with kiln.Loader(entry, **kwargs) as loader:
        out = {}
        for b in loader:
            out.setdefault(b["epoch"], []).extend(int(i) for i in b["row_id"])
        return [out[e] for e in sorted(out)]


# --- sharding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [None, 7])
@pytest.mark.parametrize("shard_count", [1, 2, 3, 4])
def test_shards_are_disjoint_equal_and_cover_what_the_count_allows(entry, shard_count, seed):
    rows = entry.rows
    per_shard = rows // shard_count
    shards = []
    for cur in range(shard_count):
        with kiln.Loader(entry, batch_size=3, cur_shard=cur, shard_count=shard_count, seed=seed, num_epochs=1) as loader:
            assert loader.rows_per_epoch == per_shard
            assert len(loader) == -(-per_shard // 3)
            ids = row_ids(loader)
        assert len(ids) == per_shard, f"shard {cur}/{shard_count}"
        assert len(set(ids)) == len(ids), "a row twice in one shard"
        shards.append(ids)
    union = set().union(*map(set, shards))
    assert len(union) == per_shard * shard_count, "shards overlap"
    assert union <= set(range(rows))
    left_out = set(range(rows)) - union
    # The native loader gives every shard floor(rows / shard_count) rows: the
    # rows % shard_count rows at the end of the epoch's stream are left out of that epoch.
    assert len(left_out) == rows % shard_count
    if seed is None:
        # Storage order: shard k takes the k-th contiguous range, the last rows are left out.
        for cur, ids in enumerate(shards):
            assert ids == list(range(cur * per_shard, (cur + 1) * per_shard))
        assert left_out == set(range(per_shard * shard_count, rows))
    elif entry.rows == 13 and [len(s["row_groups"]) for s in entry.manifest["shards"]] == [1]:
        # One row group: nothing reorders the stream before it is cut, so the last row is the
        # one left out even when shuffled (the shuffle mixes rows within each shard's range).
        if shard_count > 1:
            assert left_out == {12}
        for cur, ids in enumerate(shards):
            assert sorted(ids) == list(range(cur * per_shard, (cur + 1) * per_shard))


def test_shuffled_row_groups_leave_out_a_different_row_each_epoch(entry13_groups):
    left_out = []
    for epoch_rows in epochs_of(entry13_groups, batch_size=4, cur_shard=0, shard_count=1, seed=3, num_epochs=8):
        assert sorted(epoch_rows) == list(range(13))
    # With 2 shards of 6 rows, row 12 of the stream differs between epochs: the row groups
    # are shuffled before the stream is cut.
    per_epoch = [set(), set()]
    for cur in range(2):
        per_epoch[cur] = epochs_of(entry13_groups, batch_size=4, cur_shard=cur, shard_count=2, seed=3, num_epochs=8)
    for epoch in range(8):
        a, b = set(per_epoch[0][epoch]), set(per_epoch[1][epoch])
        assert len(a) == len(b) == 6 and not a & b
        left_out.append(tuple(set(range(13)) - a - b))
    assert all(len(x) == 1 for x in left_out)
    assert len(set(left_out)) > 1, f"the same row was left out of every epoch: {left_out}"


def test_too_many_shards_is_an_argument_error(entry13):
    with pytest.raises(kiln.ArgumentError, match=r"^invalid shard: 13 rows cannot feed 14 shards$"):
        kiln.Loader(entry13, cur_shard=0, shard_count=14)
    with pytest.raises(kiln.ArgumentError, match=r"^invalid shard: 2/2: cur_shard must be below shard_count$"):
        kiln.Loader(entry13, cur_shard=2, shard_count=2)


# --- order, epochs, drop_last, len ------------------------------------------------------------------


def test_same_seed_same_order_other_seed_other_order(entry13_groups):
    a = epochs_of(entry13_groups, batch_size=4, seed=11, num_epochs=1)
    b = epochs_of(entry13_groups, batch_size=4, seed=11, num_epochs=1)
    c = epochs_of(entry13_groups, batch_size=4, seed=12, num_epochs=1)
    unshuffled = epochs_of(entry13_groups, batch_size=4, num_epochs=1)
    assert a == b
    assert a != c
    assert unshuffled == [list(range(13))]
    assert a[0] != unshuffled[0]
    assert sorted(a[0]) == sorted(c[0]) == list(range(13))


def test_two_epochs_differ_when_seeded_and_repeat_when_not(entry):
    seeded = epochs_of(entry, batch_size=5, seed=1, num_epochs=2)
    assert len(seeded) == 2
    assert sorted(seeded[0]) == sorted(seeded[1]) == list(range(entry.rows))
    assert seeded[0] != seeded[1]
    plain = epochs_of(entry, batch_size=5, num_epochs=2)
    assert plain == [list(range(entry.rows))] * 2


def test_epoch_numbers_and_forever(entry12):
    with kiln.Loader(entry12, batch_size=5, seed=0, num_epochs=None) as loader:
        batches = list(itertools.islice(iter(loader), 3 * 5))
    # 12 rows of batch 5: 5, 5, 2 per epoch; None means it keeps going.
    assert [b["epoch"] for b in batches] == [e for e in range(5) for _ in range(3)]
    assert [len(b["row_id"]) for b in batches] == [5, 5, 2] * 5


@pytest.mark.parametrize("drop_last", [False, True])
def test_drop_last_and_len(entry13, drop_last):
    with kiln.Loader(entry13, batch_size=4, num_epochs=2, drop_last=drop_last) as loader:
        sizes = [(b["epoch"], len(b["row_id"])) for b in loader]
        n = len(loader)
    if drop_last:
        assert n == 3
        assert sizes == [(0, 4)] * 3 + [(1, 4)] * 3
    else:
        assert n == 4
        assert sizes == [(0, 4), (0, 4), (0, 4), (0, 1), (1, 4), (1, 4), (1, 4), (1, 1)]
    with kiln.Loader(entry13, batch_size=4, cur_shard=1, shard_count=2, drop_last=drop_last) as loader:
        assert len(loader) == (1 if drop_last else 2)
        assert loader.rows_per_epoch == 6


# --- state_dict ------------------------------------------------------------------------------------


def batch_record(b):
    tensor = b["tensor"]
    return (b["epoch"], b["row_id"].tolist(), tensor.tobytes(), b["label_index"].tolist(), list(b["path"]))


@pytest.mark.parametrize("shard", [(0, 1), (1, 2)])
@pytest.mark.parametrize("seed", [None, 5])
def test_state_dict_resume_gives_exactly_the_remaining_batches(entry, shard, seed):
    cur, count = shard
    kwargs = dict(batch_size=4, cur_shard=cur, shard_count=count, seed=seed, num_epochs=2)
    with kiln.Loader(entry, **kwargs) as loader:
        full = [batch_record(b) for b in loader]
    per_epoch = len(full) // 2
    assert [r[0] for r in full] == [0] * per_epoch + [1] * per_epoch
    # Every cut, including 0, the epoch boundary, inside epoch 1 and after the end.
    for k in range(len(full) + 1):
        with kiln.Loader(entry, **kwargs) as first:
            taken = [batch_record(b) for b in itertools.islice(iter(first), k)]
            state = json.loads(json.dumps(first.state_dict()))
        assert taken == full[:k]
        assert state["entry_key"] == entry.key and (state["cur_shard"], state["shard_count"]) == shard
        with kiln.Loader(entry, **kwargs) as resumed:
            resumed.load_state_dict(state)
            rest = [batch_record(b) for b in resumed]
        assert rest == full[k:], f"resumed after {k} batches of {len(full)}"


def test_state_from_another_entry_or_shard_is_refused(entry12, entry13):
    with kiln.Loader(entry12, batch_size=4, seed=1) as loader:
        next(iter(loader))
        state = loader.state_dict()
    with kiln.Loader(entry13, batch_size=4, seed=1) as other:
        with pytest.raises(kiln.ArgumentError) as raised:
            other.load_state_dict(state)
    assert str(raised.value) == f"state: entry_key {entry12.key!r} is not this loader's {entry13.key!r}"

    with kiln.Loader(entry12, batch_size=2, cur_shard=0, shard_count=2, seed=1) as loader:
        next(iter(loader))
        state = loader.state_dict()
    with kiln.Loader(entry12, batch_size=2, cur_shard=1, shard_count=2, seed=1) as other:
        with pytest.raises(kiln.ArgumentError, match=r"^state: cur_shard 0 is not this loader's 1$"):
            other.load_state_dict(state)
    with kiln.Loader(entry12, batch_size=2, cur_shard=0, shard_count=3, seed=1) as other:
        with pytest.raises(kiln.ArgumentError, match=r"^state: shard_count 2 is not this loader's 3$"):
            other.load_state_dict(state)


def test_state_past_the_shard_is_refused(entry12):
    with kiln.Loader(entry12, batch_size=2, cur_shard=0, shard_count=2) as loader:
        with pytest.raises(kiln.ArgumentError, match=r"^invalid resume state: position 7 is past this worker's 6 rows$"):
            loader.load_state_dict({"seed": None, "epoch": 0, "position": 7})


# --- memory ------------------------------------------------------------------------------------


def holder_of(array: np.ndarray):
    """The kiln object at the end of an array's base chain (it owns the Arrow array)."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return base


def assert_inside_arrow_buffer(array: np.ndarray) -> None:
    holder = holder_of(array)
    assert holder is not None, "the array owns its memory: it was copied"
    values = holder._values
    assert isinstance(values, pa.Array)
    buffer = values.buffers()[1]
    start = array.__array_interface__["data"][0]
    assert start == array.ctypes.data
    assert buffer.address <= start and start + array.nbytes <= buffer.address + buffer.size, (
        f"array at {start:#x}+{array.nbytes} is outside Arrow's buffer {buffer.address:#x}+{buffer.size}")


def test_batches_share_arrow_memory(entry12):
    with kiln.Loader(entry12, batch_size=5, seed=2, num_epochs=1) as loader:
        batches = list(loader)
    for b in batches:
        for name in ("tensor", "row_id", "label_index"):
            assert_inside_arrow_buffer(b[name])
        assert b["tensor"].flags.c_contiguous
    # Each batch has memory of its own: no two batches' tensors overlap.
    spans = sorted((b["tensor"].ctypes.data, b["tensor"].ctypes.data + b["tensor"].nbytes) for b in batches)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))


def test_transform_result_shares_arrow_memory(audio_files):
    from conftest import COMPLEX_STFT, FIXED_MEL
    assert_inside_arrow_buffer(kiln.transform(FIXED_MEL, audio_files["mono16k"]))
    complex_result = kiln.transform(COMPLEX_STFT, audio_files["mono16k"])
    assert complex_result.dtype == np.complex64
    assert_inside_arrow_buffer(complex_result)


def test_batches_are_writable_and_own_their_buffers(entry):
    # Unshuffled (storage-order runs, which could be slices of a cached row group) and shuffled.
    for seed in (None, 9):
        with kiln.Loader(entry, batch_size=4, seed=seed, num_epochs=2) as loader:
            batches = list(loader)
        with kiln.Loader(entry, batch_size=4, seed=seed, num_epochs=2) as loader:
            pristine = {(b["epoch"], int(r)): t.copy() for b in loader for r, t in zip(b["row_id"], b["tensor"])}
        epoch0 = [b for b in batches if b["epoch"] == 0]
        epoch1 = [b for b in batches if b["epoch"] == 1]
        for b in epoch0:
            assert b["tensor"].flags.writeable
            b["tensor"][:] = -12345.0
            b["label_index"][:] = -1
        for b in epoch1:
            for r, t in zip(b["row_id"], b["tensor"]):
                assert np.array_equal(t, pristine[(1, int(r))]), f"writing epoch 0 changed row {r} of epoch 1"
            assert (b["label_index"] >= 0).all()
        # A new loader over the entry still reads the stored values.
        with kiln.Loader(entry, batch_size=4, seed=seed, num_epochs=1) as loader:
            for b in loader:
                for r, t in zip(b["row_id"], b["tensor"]):
                    assert np.array_equal(t, pristine[(0, int(r))])


def test_loader_tensor_shape(entry12):
    with kiln.Loader(entry12, batch_size=12, num_epochs=1) as loader:
        (b,) = list(loader)
    assert b["tensor"].shape == (12, *FIXED_MEL_SHAPE)


def test_a_second_pass_is_not_silently_empty(entry12):
    """Petastorm's loaders reset their reader when iterated again after a full pass; a
    training loop ``for epoch in ...: for batch in loader`` must not get empty epochs without
    a word. Either behaviour is acceptable: another pass, or an error that says why."""
    with kiln.Loader(entry12, batch_size=5, num_epochs=1) as loader:
        first = row_ids(loader)
        try:
            second = row_ids(loader)
        except kiln.KilnError as e:
            assert "again" in str(e) or "finished" in str(e) or "new Loader" in str(e), str(e)
        else:
            assert second == first, "a second pass over a finished loader yielded nothing"

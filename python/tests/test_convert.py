"""kiln.convert and kiln.Loader round trips, and the cache shared with the CLI."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kiln
from conftest import (
    FIXED_MEL,
    FIXED_MEL_SHAPE,
    LABELS,
    LOG_MEL,
    cli_convert,
    cli_error,
    make_audio_tree,
    row_ids,
    tone,
    write_wav,
)


def all_rows(entry, **kwargs):
    with kiln.Loader(entry, num_epochs=1, **kwargs) as loader:
        return list(loader)


def test_entry_fields(entry12, audio12, session_cache):
    assert entry12.rows == 12
    assert entry12.failed == 0 and entry12.failures == []
    assert entry12.label_names == sorted(LABELS)
    assert entry12.tensor_shape == FIXED_MEL_SHAPE
    assert entry12.tensor_dtype == "float32"
    assert entry12.path.parent == session_cache
    assert entry12.path.name == entry12.key
    assert len(entry12.key) == 24 and int(entry12.key, 16) >= 0
    assert (entry12.path / "manifest.json").is_file()


def test_loader_round_trip_rows_labels_tensors(entry12, audio12):
    batches = all_rows(entry12, batch_size=5)
    assert [len(b["row_id"]) for b in batches] == [5, 5, 2]
    assert sorted(row_ids(batches)) == list(range(12))
    seen_paths = []
    for b in batches:
        assert set(b) >= {"tensor", "label_index", "row_id", "path", "label", "epoch"}
        assert isinstance(b["tensor"], np.ndarray)
        assert b["tensor"].shape == (len(b["row_id"]), *FIXED_MEL_SHAPE)
        assert b["tensor"].dtype == np.float32
        assert b["label_index"].dtype == np.int32
        assert isinstance(b["path"], list) and all(isinstance(p, str) for p in b["path"])
        for i, path in enumerate(b["path"]):
            # Paths are relative to the source; the label is the parent directory's name.
            directory = Path(path).parent.name
            assert b["label"][i] == directory
            assert entry12.label_names[b["label_index"][i]] == directory
            want = kiln.transform(FIXED_MEL, audio12 / path)
            assert np.array_equal(b["tensor"][i], want), path
            assert b["tensor"][i].tobytes() == want.tobytes()
            seen_paths.append(path)
    expected = sorted(str(p.relative_to(audio12)) for p in audio12.rglob("*.wav"))
    assert sorted(seen_paths) == expected


def test_python_convert_is_a_cache_hit_on_the_second_call(audio12, tmp_path):
    first = kiln.convert(audio12, FIXED_MEL, cache_dir=tmp_path, progress=False)
    second = kiln.convert(str(audio12), FIXED_MEL, cache_dir=str(tmp_path), progress=False)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert (second.key, second.path, second.rows) == (first.key, first.path, first.rows)


@pytest.mark.parametrize("order", ["python-then-cli", "cli-then-python"])
def test_python_and_cli_share_cache_entries(order, audio12, specs, tmp_path):
    cache = tmp_path / "cache"
    # The dict's keys in another order than the spec file: the key must not depend on it.
    spec = copy.deepcopy(FIXED_MEL)
    spec["ops"] = [dict(reversed(list(op.items()))) for op in spec["ops"]]

    def python():
        e = kiln.convert(audio12, spec, cache_dir=cache, progress=False)
        return {"key": e.key, "entry": Path(e.path).resolve(), "rows": e.rows, "cache_hit": e.cache_hit}

    def cli():
        r = cli_convert(audio12, specs["fixed_mel"], cache)
        return {"key": r["key"], "entry": Path(r["entry"]).resolve(), "rows": r["rows"], "cache_hit": r["cache_hit"]}

    first, second = (python(), cli()) if order == "python-then-cli" else (cli(), python())
    assert first["cache_hit"] is False
    assert second["cache_hit"] is True
    assert second["key"] == first["key"]
    assert second["entry"] == first["entry"]
    assert second["rows"] == first["rows"] == 12
    assert [p.name for p in cache.iterdir()] == [first["key"]]


def test_entry_reopens_from_its_path(entry12):
    again = kiln.Entry(entry12.path)
    again_str = kiln.Entry(str(entry12.path))
    for e in (again, again_str):
        assert (e.key, e.rows, e.failed, e.label_names, e.tensor_shape, e.tensor_dtype) == (
            entry12.key, entry12.rows, entry12.failed, entry12.label_names, entry12.tensor_shape, entry12.tensor_dtype)
        assert e.cache_hit is True
    assert repr(again).startswith("kiln.Entry(")
    a = np.concatenate([b["tensor"] for b in all_rows(again, batch_size=4)])
    b = np.concatenate([b["tensor"] for b in all_rows(entry12, batch_size=4)])
    assert np.array_equal(a, b)
    # A loader accepts the entry's path as well as the Entry.
    assert row_ids(all_rows(str(entry12.path), batch_size=4)) == list(range(12))


@pytest.fixture(scope="module")
def tree_with_corrupt_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt")
    make_audio_tree(root, (2, 2, 0))
    (root / "cat" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return root


def test_corrupt_file_is_listed_with_on_error_skip(tree_with_corrupt_file, tmp_path):
    entry = kiln.convert(tree_with_corrupt_file, FIXED_MEL, cache_dir=tmp_path, progress=False)
    assert entry.rows == 4
    assert entry.failed == 1
    assert entry.failures == [{"path": "cat/broken.wav", "error": "corrupt or unsupported WAV: Failed to read enough bytes."}]
    assert "cat/broken.wav" not in [p for b in all_rows(entry, batch_size=8) for p in b["path"]]
    # The reopened entry keeps the list (from the manifest).
    assert kiln.Entry(entry.path).failures == entry.failures


def test_corrupt_file_fails_the_conversion_with_on_error_fail(tree_with_corrupt_file, specs, tmp_path):
    with pytest.raises(kiln.ConversionError) as raised:
        kiln.convert(tree_with_corrupt_file, FIXED_MEL, cache_dir=tmp_path / "py", on_error="fail", progress=False)
    message = str(raised.value)
    assert message.startswith("cat/broken.wav: corrupt or unsupported WAV")
    assert message == cli_error("convert", tree_with_corrupt_file, "--spec", specs["fixed_mel"],
                                "--cache", tmp_path / "cli", "--on-error", "fail")
    assert isinstance(raised.value, kiln.KilnError)


def test_all_items_failing_is_a_conversion_error(tmp_path):
    (tmp_path / "src" / "x").mkdir(parents=True)
    (tmp_path / "src" / "x" / "ok.wav").write_bytes(b"junk")
    with pytest.raises(kiln.ConversionError, match=r"^all 1 items of .*src failed; first: x/ok.wav: corrupt or unsupported audio"):
        kiln.convert(tmp_path / "src", FIXED_MEL, cache_dir=tmp_path / "cache", progress=False)


def test_raw_entry_gives_the_same_tensors(audio12, entry12, tmp_path):
    raw = kiln.convert(audio12, FIXED_MEL, cache_dir=tmp_path, materialize="raw", progress=False)
    assert raw.key != entry12.key, "materialisation is part of the key"
    assert raw.rows == 12 and raw.tensor_shape == FIXED_MEL_SHAPE and raw.tensor_dtype == "float32"
    got = {p: t for b in all_rows(raw, batch_size=5) for p, t in zip(b["path"], b["tensor"])}
    want = {p: t for b in all_rows(entry12, batch_size=5) for p, t in zip(b["path"], b["tensor"])}
    assert got.keys() == want.keys()
    for path in want:
        assert got[path].tobytes() == want[path].tobytes(), path


def test_ragged_entry_stacks_equal_shapes_and_lists_the_others(tmp_path):
    root = tmp_path / "src"
    # Two 4000-sample clips, then one of 8000: log-mel without fix_length gives 26 and 51 frames.
    write_wav(root / "a" / "0.wav", tone(0, 4000))
    write_wav(root / "a" / "1.wav", tone(1, 4000))
    write_wav(root / "b" / "2.wav", tone(2, 8000))
    entry = kiln.convert(root, LOG_MEL, cache_dir=tmp_path / "cache", progress=False)
    assert entry.tensor_shape is None
    batches = all_rows(entry, batch_size=2)
    assert isinstance(batches[0]["tensor"], np.ndarray) and batches[0]["tensor"].shape == (2, 80, 26)
    assert isinstance(batches[1]["tensor"], np.ndarray) and batches[1]["tensor"].shape == (1, 80, 51)
    (mixed,) = all_rows(entry, batch_size=3)
    assert isinstance(mixed["tensor"], list)
    assert [t.shape for t in mixed["tensor"]] == [(80, 26), (80, 26), (80, 51)]
    for path, t in zip(mixed["path"], mixed["tensor"]):
        assert t.tobytes() == kiln.transform(LOG_MEL, root / path).tobytes()


def test_columns_picks_columns(entry12):
    (batch,) = all_rows(entry12, batch_size=12, columns=["row_id", "label_index"])
    assert set(batch) == {"row_id", "label_index", "epoch"}
    assert batch["row_id"].tolist() == list(range(12))
    with pytest.raises(kiln.ArgumentError, match=r"columns: no column `nope`"):
        all_rows(entry12, batch_size=12, columns=["nope"])


def test_label_regex_and_labels_file(audio12, tmp_path):
    by_regex = kiln.convert(audio12, FIXED_MEL, cache_dir=tmp_path, label_regex=r"_(\d\d)\.wav$", progress=False)
    assert by_regex.label_names == ["00", "01", "02", "03"]
    for b in all_rows(by_regex, batch_size=12):
        for path, index in zip(b["path"], b["label_index"]):
            assert path.endswith(f"_{by_regex.label_names[index]}.wav")
    labels = tmp_path / "labels.csv"
    files = sorted(str(p.relative_to(audio12)) for p in audio12.rglob("*.wav"))
    labels.write_text("path,label\n" + "".join(f"{f},{'even' if i % 2 == 0 else 'odd'}\n" for i, f in enumerate(files)))
    by_file = kiln.convert(audio12, FIXED_MEL, cache_dir=tmp_path, labels=labels, progress=False)
    assert by_file.label_names == ["even", "odd"]
    want = {f: ("even" if i % 2 == 0 else "odd") for i, f in enumerate(files)}
    for b in all_rows(by_file, batch_size=12):
        for path, label, index in zip(b["path"], b["label"], b["label_index"]):
            assert label == want[path] and by_file.label_names[index] == label


def run_in_terminal(code: str) -> str:
    """Runs ``code`` in a fresh interpreter whose stdout and stderr are a pseudo-terminal."""
    master, slave = os.openpty()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(kiln.__file__).parent.parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_on_a_terminal_only_when_asked(progress, audio12, tmp_path):
    code = (f"import kiln; e = kiln.convert({str(audio12)!r}, {json.dumps(FIXED_MEL)!r}, "
            f"cache_dir={str(tmp_path)!r}, progress={progress}); print('rows', e.rows)")
    out = run_in_terminal(code)
    assert "rows 12" in out
    if progress:
        assert "converting" in out and "/12 items" in out, out
    else:
        assert "converting" not in out and "items" not in out, out


def test_no_progress_output_when_not_a_terminal(audio12, tmp_path, capfd):
    kiln.convert(audio12, FIXED_MEL, cache_dir=tmp_path, progress=True)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")

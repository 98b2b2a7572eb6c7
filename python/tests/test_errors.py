"""Errors a user sees: the exception class, and the CLI's message for the same mistake."""
from __future__ import annotations

import json
import pickle

import pytest

import kiln
from conftest import FIXED_MEL, LOG_MEL, cli_error, write_spec

EXCEPTIONS = [kiln.SpecError, kiln.DecodeError, kiln.CacheError, kiln.SourceError, kiln.BackendError,
              kiln.ArgumentError, kiln.ConversionError]

BAD_SPECS = {
    "unknown_op": {"ops": [{"op": "blur"}]},
    "unknown_field": {"ops": [{"op": "load_audio", "colour": 1}]},
    "bad_value": {"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 0}]},
    "wrong_order": {"ops": [{"op": "load_audio"}, {"op": "mel"}]},
    "no_ops": {"ops": []},
}


def test_every_error_is_a_kiln_error():
    for exc in EXCEPTIONS:
        assert issubclass(exc, kiln.KilnError) and exc is not kiln.KilnError
    assert issubclass(kiln.KilnError, Exception)
    assert len(set(EXCEPTIONS)) == len(EXCEPTIONS)


@pytest.mark.parametrize("exc", [kiln.KilnError, *EXCEPTIONS], ids=lambda e: e.__name__)
def test_errors_pickle_as_themselves(exc):
    # DataLoader workers and multiprocessing send exceptions to the parent by pickling them.
    again = pickle.loads(pickle.dumps(exc("the message")))
    assert type(again) is exc
    assert str(again) == "the message"


@pytest.mark.parametrize("name", sorted(BAD_SPECS))
def test_bad_spec_is_a_spec_error_with_the_cli_message(name, audio_files, tmp_path):
    spec = BAD_SPECS[name]
    path = write_spec(tmp_path, f"{name}.json", spec)
    want = cli_error("transform", "--spec", path, audio_files["mono16k"], "-o", tmp_path / "out.npy")
    assert want.startswith(f"invalid spec {path}: spec: ")
    with pytest.raises(kiln.SpecError) as from_path:
        kiln.transform(path, audio_files["mono16k"])
    assert str(from_path.value) == want
    # Given as a dict or JSON text there is no file to name; the rest of the message is the CLI's.
    without_path = want.replace(f"invalid spec {path}: ", "invalid spec: ", 1)
    for given in (spec, json.dumps(spec)):
        with pytest.raises(kiln.SpecError) as raised:
            kiln.transform(given, audio_files["mono16k"])
        assert str(raised.value) == without_path
    # convert refuses it the same way, before touching the source.
    with pytest.raises(kiln.SpecError) as raised:
        kiln.convert(tmp_path / "nowhere", path, cache_dir=tmp_path / "cache", progress=False)
    assert str(raised.value) == want


def test_spec_that_is_not_json(audio_files, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"ops": [')
    want = cli_error("transform", "--spec", path, audio_files["mono16k"], "-o", tmp_path / "out.npy")
    with pytest.raises(kiln.SpecError) as raised:
        kiln.transform(path, audio_files["mono16k"])
    assert str(raised.value) == want == f"{path}: EOF while parsing a list at line 1 column 9"
    with pytest.raises(kiln.SpecError, match=r"^spec: not valid JSON: EOF while parsing a list at line 1 column 9$"):
        kiln.transform('{"ops": [', audio_files["mono16k"])


def test_missing_spec_file_is_a_source_error(audio_files, tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(kiln.SourceError) as raised:
        kiln.transform(missing, audio_files["mono16k"])
    assert str(raised.value) == f"reading spec {missing}: No such file or directory (os error 2)"


def test_spec_and_source_of_the_wrong_type(audio_files):
    with pytest.raises(TypeError, match=r"^spec must be a dict, a JSON string or a path, not int$"):
        kiln.transform(42, audio_files["mono16k"])
    with pytest.raises(TypeError, match=r"^source must be a path or bytes, not int$"):
        kiln.transform(LOG_MEL, 42)


def test_undecodable_input_is_a_decode_error(specs, tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"garbage!")
    want = cli_error("transform", "--spec", specs["log_mel"], junk, "-o", tmp_path / "out.npy")
    with pytest.raises(kiln.DecodeError) as from_path:
        kiln.transform(LOG_MEL, junk)
    assert str(from_path.value) == want
    assert want.startswith(f"{junk} (cpu backend): corrupt or unsupported audio: not a format kiln recognises")
    with pytest.raises(kiln.DecodeError) as from_bytes:
        kiln.transform(LOG_MEL, b"garbage!")
    assert str(from_bytes.value) == (
        "corrupt or unsupported audio: not a format kiln recognises (the bytes start 67 61 72 62 61 67 65 21); "
        "kiln reads WAV, FLAC, MP3 and Ogg Vorbis")
    # An image spec on audio bytes is a decode error too.
    with pytest.raises(kiln.DecodeError, match="image"):
        kiln.transform({"ops": [{"op": "decode_image"}]}, b"RIFF\x00\x00\x00\x00WAVE")


def test_missing_input_file_is_a_source_error(specs, tmp_path):
    missing = tmp_path / "missing.wav"
    want = cli_error("transform", "--spec", specs["log_mel"], missing, "-o", tmp_path / "out.npy")
    with pytest.raises(kiln.SourceError) as raised:
        kiln.transform(LOG_MEL, missing)
    assert str(raised.value) == want == f"reading {missing}: No such file or directory (os error 2)"


def test_missing_entry_is_a_cache_error(tmp_path):
    missing = tmp_path / "0123456789abcdef01234567"
    message = f"cache entry {missing}: not a complete cache entry (no manifest.json)"
    with pytest.raises(kiln.CacheError) as raised:
        kiln.Entry(missing)
    assert str(raised.value) == message
    with pytest.raises(kiln.CacheError) as raised:
        kiln.Loader(missing)
    assert str(raised.value) == message


def test_missing_source_is_a_source_error(specs, tmp_path):
    missing = tmp_path / "no_such_dir"
    want = cli_error("convert", missing, "--spec", specs["log_mel"], "--cache", tmp_path / "cli")
    with pytest.raises(kiln.SourceError) as raised:
        kiln.convert(missing, LOG_MEL, cache_dir=tmp_path / "py", progress=False)
    assert str(raised.value) == want == f"source {missing}: not a directory"


def test_corrupted_shard_is_a_cache_error(audio12, tmp_path):
    entry = kiln.convert(audio12, FIXED_MEL, cache_dir=tmp_path, progress=False)
    (shard,) = entry.path.glob("*.parquet")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(kiln.CacheError) as raised:
        with kiln.Loader(entry, num_epochs=1) as loader:
            list(loader)
    message = str(raised.value)
    assert message.startswith(f"shard {shard}: SHA-256 ")
    assert message.endswith("(corrupted, swapped or modified)")


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda a, c: kiln.transform(LOG_MEL, a, backend="tpu"), "backend: \"tpu\" is not 'cpu' or 'gpu'"),
        (lambda a, c: kiln.convert(a.parent, LOG_MEL, cache_dir=c, backend="tpu", progress=False), "backend: \"tpu\" is not 'cpu' or 'gpu'"),
        (lambda a, c: kiln.convert(a.parent, LOG_MEL, cache_dir=c, on_error="ignore", progress=False), "on_error: \"ignore\" is not 'skip' or 'fail'"),
        (lambda a, c: kiln.convert(a.parent, LOG_MEL, cache_dir=c, materialize="bytes", progress=False), "materialize: \"bytes\" is not 'tensor' or 'raw'"),
        (lambda a, c: kiln.convert(a.parent, LOG_MEL, cache_dir=c, labels=c / "l.csv", label_regex="(.)", progress=False), "labels: give labels or label_regex, not both"),
    ],
    ids=["transform-backend", "convert-backend", "convert-on_error", "convert-materialize", "convert-labels-and-regex"],
)
def test_bad_options_are_argument_errors(call, message, audio_files, tmp_path):
    with pytest.raises(kiln.ArgumentError) as raised:
        call(audio_files["mono16k"], tmp_path)
    assert str(raised.value) == message
    assert not list(tmp_path.glob("*/manifest.json")), "nothing was converted"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(batch_size=0), "invalid batch size: 0 is not in 1..=16777216"),
        (dict(prefetch=0), "invalid prefetch: 0 is not in 1..=1024"),
        (dict(backend="tpu"), "backend: \"tpu\" is not 'cpu' or 'gpu'"),
        (dict(cur_shard=3, shard_count=3), "invalid shard: 3/3: cur_shard must be below shard_count"),
        (dict(shard_count=0), "invalid shard: 0/0: cur_shard must be below shard_count"),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else "",
)
def test_bad_loader_options_are_argument_errors(entry12, kwargs, message):
    with pytest.raises(kiln.ArgumentError) as raised:
        kiln.Loader(entry12, **kwargs)
    assert str(raised.value) == message


def test_bad_convert_workers(audio12, tmp_path):
    with pytest.raises(kiln.ArgumentError) as raised:
        kiln.convert(audio12, FIXED_MEL, cache_dir=tmp_path, workers=0, progress=False)
    assert "0 is not in 1..=1024" in str(raised.value)

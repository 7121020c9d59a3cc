"""Model files: round trip, and every kind of bad file refused with one sentence."""

from __future__ import annotations

import json
import pickle
import zipfile

import pytest
import torch

from CLADE.errors import CladeError
from CLADE.model_file import build_generator, load_model, make_metadata, save_model
from CLADE.registry import resolve_model


def _tiny(tmp_path, half=False, **kwargs):
    meta = make_metadata("tiny", "CT", base_filters=4, n_blocks=1, default_stride=6, **kwargs)
    torch.manual_seed(0)
    generator = build_generator(meta)
    return save_model(tmp_path / "tiny.pt", generator, meta, half=half), generator


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    path, generator = _tiny(tmp_path, training={"epochs": 3})
    model = load_model(path)
    assert model.metadata["training"] == {"epochs": 3}
    assert model.default_stride == 6 and model.metadata["modality"] == "CT"
    for key, value in generator.state_dict().items():
        torch.testing.assert_close(model.generator.state_dict()[key], value)


def test_half_precision_file_loads_as_float32(tmp_path):
    path, generator = _tiny(tmp_path, half=True)
    model = load_model(path)
    weight = next(model.generator.parameters())
    assert weight.dtype == torch.float32
    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(model.generator(x), generator.eval()(x), atol=2e-2, rtol=0)


def test_corrupt_file_is_refused(tmp_path):
    path, _ = _tiny(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CladeError, match="corrupt or not a CLADE model"):
        load_model(path)


class _Evil:
    def __reduce__(self):
        return (print, ("this code must never run",))


def test_file_with_pickled_code_is_refused_without_running_it(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "clade-model", "payload": _Evil()}, path)
    with pytest.raises(CladeError, match="never loaded for safety"):
        load_model(path)
    assert "must never run" not in capsys.readouterr().out


def test_foreign_files_are_refused(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(CladeError, match="no CLADE format marker"):
        load_model(other)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CladeError, match="corrupt or not a CLADE model"):
        load_model(text)
    raw_pickle = tmp_path / "raw.pkl"
    raw_pickle.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CladeError):
        load_model(raw_pickle)


def test_metadata_that_does_not_match_the_weights_is_refused(tmp_path):
    path, _ = _tiny(tmp_path)
    record = torch.load(path, weights_only=True)
    record["metadata"]["architecture"]["base_filters"] = 8
    torch.save(record, path)
    with pytest.raises(CladeError, match="do not match the architecture"):
        load_model(path)
    record["metadata"].pop("normalisation")
    torch.save(record, path)
    with pytest.raises(CladeError, match="lacks normalisation"):
        load_model(path)


def test_registry_checks_the_manifest_checksum(tmp_path):
    path, _ = _tiny(tmp_path)
    from CLADE.registry import sha256_of

    manifest = tmp_path / "manifest.json"
    entry = {"name": "mini", "file": path.name, "sha256": sha256_of(path)}
    manifest.write_text(json.dumps({"models": [entry]}))
    assert resolve_model("mini", manifest_path=manifest).name == "tiny"
    with zipfile.ZipFile(path, "a") as archive:  # append a byte-level change
        archive.writestr("extra", "x")
    with pytest.raises(CladeError, match="does not match its checksum"):
        resolve_model("mini", manifest_path=manifest)
    with pytest.raises(CladeError, match="Unknown model 'nope'"):
        resolve_model("nope", manifest_path=manifest)

"""Planted pickles in every artefact folder radlens loads: refused by name, and nothing runs.

A pickle's `__reduce__` can call anything at load time; these payloads would create a marker file
(via `os.system`, or `builtins.exec` writing it with `open`). Each is planted where a real artefact file
belongs and loaded through radlens' own public loader. Already covered elsewhere, not repeated here:

- adapter `model.skops` (a raw pickle, and a skops file naming `os.system`):
  tests/test_adapters.py::test_a_planted_pickle_is_refused_and_never_executed and
  ::test_a_skops_file_with_an_untrusted_type_is_refused;
- encoder weights `.pt/.pth` (dict and whole-module pickles, zip and legacy format) through
  `radlens.encoders.torch_files.load_weights` and `get("chexnet", weights=...)`:
  tests/test_encoders_cnn.py::test_weights_files_never_run_code.

Here: the search index folder (all three files), the radlens-cxr encoder folder, the anatomy weights, the
synthesis generator folder, the mask prior's shape model and a generator training checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from radlens.safe_files import UnsafeArtefactError


class _SystemPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ExecPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


PAYLOADS = {"os.system": _SystemPayload, "builtins.exec": _ExecPayload}


@pytest.fixture(params=list(PAYLOADS))
def evil(request, tmp_path):
    """(pickled payload bytes, the payload object, the marker file it would create)."""
    marker = tmp_path / "PWNED"
    obj = PAYLOADS[request.param](marker)
    return pickle.dumps(obj), obj, marker


def test_the_payloads_do_run_when_unpickled(evil):
    """Guard against a toothless test: unpickling these bytes really does create the marker."""
    blob, _, marker = evil
    pickle.loads(blob)
    assert marker.exists()


# ------------------------------------------------------------------------------------- search index


@pytest.fixture
def index_folder(tmp_path) -> Path:
    from radlens.search.index import EmbeddingIndex

    rows = pd.DataFrame({"path": [f"a{i}.png" for i in range(16)], "image_hash": [f"{i:064x}" for i in range(16)]})
    x = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    EmbeddingIndex.build(rows, x, encoder_id="enc", preprocess_hash="pre", folder=tmp_path / "index")
    EmbeddingIndex.load(tmp_path / "index")  # the untouched folder loads
    return tmp_path / "index"


@pytest.mark.parametrize("name, why", [("vectors.npy", "not a plain .npy array"), ("rows.parquet", "not a Parquet"),
                                       ("index.faiss", "not a FAISS index")])
def test_index_files_holding_a_pickle_are_refused(index_folder, evil, name, why):
    from radlens.search.index import EmbeddingIndex

    blob, _, marker = evil
    (index_folder / name).write_bytes(blob)
    with pytest.raises(UnsafeArtefactError, match=why) as info:
        EmbeddingIndex.load(index_folder)
    assert str(index_folder / name) in str(info.value)
    assert not marker.exists()


def test_index_vectors_as_an_object_array_are_refused(index_folder, evil):
    """A real .npy header around pickled objects (what `np.save(allow_pickle=True)` writes)."""
    from radlens.search.index import EmbeddingIndex

    _, obj, marker = evil
    np.save(index_folder / "vectors.npy", np.array([obj], dtype=object), allow_pickle=True)
    with pytest.raises(UnsafeArtefactError, match="vectors.npy: not a plain .npy array"):
        EmbeddingIndex.load(index_folder)
    assert not marker.exists()


# ---------------------------------------------------------------------------- weights folders


def _copy_with_planted(src: Path, dst: Path, name: str, blob: bytes) -> Path:
    shutil.copytree(src, dst)
    (dst / name).write_bytes(blob)
    return dst


def test_encoder_weights_folder_with_a_pickle_is_refused(tmp_path, evil):
    from radlens.encoders import get
    from radlens.encoders.radlens_cxr import PACKAGED_WEIGHTS

    blob, _, marker = evil
    folder = _copy_with_planted(PACKAGED_WEIGHTS, tmp_path / "enc", "model.safetensors", blob)
    with pytest.raises(UnsafeArtefactError, match=r"enc/model.safetensors: not a safetensors file"):
        get("radlens-cxr", weights=folder)
    assert not marker.exists()


def test_anatomy_weights_with_a_pickle_are_refused(tmp_path, evil):
    from radlens.anatomy import api

    blob, _, marker = evil
    folder = _copy_with_planted(api.PACKAGED_WEIGHTS, tmp_path / "anatomy", "model.safetensors", blob)
    with pytest.raises(UnsafeArtefactError, match=r"anatomy/model.safetensors: not a safetensors file"):
        api.load(str(folder))
    assert not marker.exists()


def test_generator_folder_with_a_pickle_is_refused_even_when_its_hash_matches(tmp_path, evil):
    """The attacker controls the whole folder, so the config's weights hash is rewritten to match."""
    from radlens.synth.image_gen import PACKAGED_GENERATOR, ImageGenerator

    blob, _, marker = evil
    folder = _copy_with_planted(PACKAGED_GENERATOR, tmp_path / "gen", "model.safetensors", blob)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_id"] = cfg["model_id"][:-12] + hashlib.sha256(blob).hexdigest()[:12]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsafeArtefactError, match=r"gen/model.safetensors: not a safetensors file"):
        ImageGenerator(folder)
    assert not marker.exists()


def test_mask_prior_shape_model_with_a_pickle_is_refused(tmp_path, evil):
    from radlens.synth.sampler import PACKAGED_PRIOR, MaskPrior

    blob, _, marker = evil
    folder = _copy_with_planted(PACKAGED_PRIOR, tmp_path / "prior", "shape_model.safetensors", blob)
    with pytest.raises(UnsafeArtefactError, match=r"prior/shape_model.safetensors: not a safetensors file"):
        MaskPrior(folder)
    assert not marker.exists()


def test_generator_training_checkpoint_with_a_payload_is_refused(tmp_path, evil):
    """`radlens synth train` resumes from, and exports, `RUN/checkpoint.pt`: tensors only."""
    from radlens.synth.gen_train import export_checkpoint

    _, obj, marker = evil
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"nih_data": str(tmp_path), "out": str(run), "widths": [8, 16]}))
    torch.save({"G": {"w": torch.zeros(2)}, "state": "{}", "extra": obj}, run / "checkpoint.pt")
    with pytest.raises(UnsafeArtefactError, match=r"run/checkpoint.pt: refused to unpickle"):
        export_checkpoint(run)
    assert not marker.exists()

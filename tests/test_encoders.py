"""Encoder registry and the shipped radlens-cxr encoder, on real NIH images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from radlens.encoders import DEFAULT_ENCODER, PreprocessSpec, available, get
from radlens.encoders.radlens_cxr import PACKAGED_WEIGHTS
from radlens.io import load_image


@pytest.fixture(scope="module")
def encoder():
    return get(DEFAULT_ENCODER)


@pytest.fixture(scope="module")
def nih_images(nih_dir):
    paths = pd.read_csv(nih_dir / "manifest.csv").path.head(4)
    return [load_image(nih_dir / p).pixels for p in paths]


def test_registry_lists_default_and_names_unknown():
    assert DEFAULT_ENCODER in [e.name for e in available()]
    with pytest.raises(KeyError, match="radlens-cxr"):
        get("no-such-encoder")


def test_embeddings_are_float32_finite_and_batch_independent(encoder, nih_images):
    e = encoder.embed(nih_images)
    assert e.shape == (4, encoder.embedding_dim) == (4, 1024) and e.dtype == np.float32
    assert np.isfinite(e).all() and (np.linalg.norm(e, axis=1) > 0).all()
    single = np.concatenate([encoder.embed([im]) for im in nih_images])
    np.testing.assert_allclose(single, e, rtol=1e-4, atol=1e-4)
    pre = np.stack([encoder.preprocess(im) for im in nih_images])
    np.testing.assert_array_equal(encoder.embed(pre), e)
    # different images must give different embeddings (a constant encoder would pass the checks above)
    assert np.abs(e[0] - e[1]).max() > 1e-3


def test_ids_and_hashes_identify_weights_and_preprocessing(encoder, tmp_path):
    cfg = json.loads((PACKAGED_WEIGHTS / "config.json").read_text())
    assert encoder.preprocess_hash == cfg["preprocess_hash"]
    assert PreprocessSpec(size=encoder.spec.size + 32).hash != encoder.preprocess_hash
    assert get(DEFAULT_ENCODER).encoder_id == encoder.encoder_id  # stable across loads
    other = tmp_path / "w"
    shutil.copytree(PACKAGED_WEIGHTS, other)
    sd = load_file(str(other / "model.safetensors"))
    sd["head.1.bias"] = sd["head.1.bias"] + 1
    save_file(sd, str(other / "model.safetensors"))
    assert get(DEFAULT_ENCODER, weights=other).encoder_id != encoder.encoder_id


def test_missing_weights_name_the_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        get(DEFAULT_ENCODER, weights=tmp_path)


def test_nih_decode_matches_the_training_decode(nih_dir):
    """The shipped weights were trained on NIH PNGs decoded as Pillow 'L' / 255; radlens.io must agree."""
    for p in pd.read_csv(nih_dir / "manifest.csv").path.sample(25, random_state=0):
        ref = np.asarray(Image.open(nih_dir / p).convert("L"), np.float32) / 255
        np.testing.assert_array_equal(load_image(nih_dir / p).pixels, ref)


def test_training_loss_falls_and_weights_round_trip(nih_dir, tmp_path):
    from radlens.encoders.train_radlens_cxr import TrainConfig, train

    cfg = TrainConfig(data=str(nih_dir), out=str(tmp_path / "run"), epochs=4, limit=48, batch_size=16,
                      widths=(8, 16, 32, 64), stem=8, train_size=96, eval_sizes=(96, 128), threads=1, warmup_epochs=1)
    config = train(cfg)
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(hist) == 4 and hist[-1]["loss"] < hist[0]["loss"]
    enc = get(DEFAULT_ENCODER, weights=tmp_path / "run")
    assert enc.spec.size == config["preprocess"]["size"] in (96, 128)
    x = torch.rand(3, 1, enc.spec.size, enc.spec.size)
    assert enc.embed(x).shape == (3, 128)
    # resuming a finished run trains nothing more and reproduces the same weights
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    train(cfg)
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 4
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before

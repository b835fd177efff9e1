"""CNN encoder families: densenet121-xrv, chexnet, timm:<arch>.

Tests marked zoo_vision build a random-weight model with the upstream library (torchxrayvision, torchvision,
timm), save it in the upstream on-disk format, load it through `radlens.encoders.get`, and compare on real
NIH images: radlens's preprocessing against the upstream processor's output, and radlens's embedding against
the upstream model's own features on the upstream-preprocessed image. They need torchvision, so they run in
.venv-zoo (`make test-zoo`); in .venv they skip. The other tests run in both venvs.

Tolerances: preprocessing — torchxrayvision's [-1024, 1024] input within 1e-3 (observed: bitwise equal);
Pillow/torchvision [0, 1]-scale normalised inputs within 1e-5 (observed <= 7e-7, x/255 vs x*(1/255) rounding).
Embeddings within 1e-4 of the largest reference value (observed <= 5e-7 relative).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from radlens.encoders import get
from radlens.encoders.densenet import DenseNet121Features
from radlens.encoders.torch_files import load_weights
from radlens.encoders.upstream import MissingWeightsError
from radlens.encoders.xrv_densenet import RELEASE_FILE, xrv_preprocess
from radlens.io import load_image

from conftest import run_cli

N_IMAGES = 3
PRE_ATOL_XRV = 1e-3
PRE_ATOL_PIL = 1e-5
EMB_RTOL = 1e-4


@pytest.fixture(scope="module")
def nih_paths(nih_dir) -> list[Path]:
    return [nih_dir / p for p in pd.read_csv(nih_dir / "manifest.csv").path.head(N_IMAGES)]


@pytest.fixture(scope="module")
def nih_pixels(nih_paths) -> list[np.ndarray]:
    return [load_image(p).pixels for p in nih_paths]


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine terms, so a wrong key mapping cannot hide behind identity BNs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
    return model.eval()


def _assert_close_embeddings(mine: np.ndarray, ref: np.ndarray) -> None:
    assert mine.shape == ref.shape and mine.dtype == np.float32
    np.testing.assert_allclose(mine, ref, rtol=EMB_RTOL, atol=EMB_RTOL * float(np.abs(ref).max()))
    assert np.abs(ref[0] - ref[1]).max() > 1e-4 * np.abs(ref).max()  # different images, different embeddings


def _old_torchvision_names(state: dict) -> dict:
    """torchvision >= 0.4 `denselayer1.norm1.weight` → CheXNet-era `denselayer1.norm.1.weight`."""
    return {re.sub(r"\.(norm|relu|conv)([12])\.", r".\1.\2.", k): v for k, v in state.items()}


class _XRVLike(nn.Module):
    """Same module names as torchxrayvision's DenseNet (features.*, classifier), built from radlens's own layers."""

    def __init__(self) -> None:
        super().__init__()
        self.body = DenseNet121Features(in_channels=1)
        self.features = self.body.features
        self.classifier = nn.Linear(1024, 18)

    def state_dict_xrv(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("body.")}


# ---------------------------------------------------------------- every venv: errors, loaders, safety


@pytest.mark.parametrize("name,expected", [
    ("densenet121-xrv", RELEASE_FILE), ("chexnet", "model.pth.tar"), ("timm:resnet10t", "model.safetensors")])
def test_missing_weights_name_the_files_and_where_to_get_them(name, expected, tmp_path):
    for w in (None, tmp_path / "nowhere", tmp_path):
        with pytest.raises(MissingWeightsError) as ei:
            get(name, weights=w)
        msg = str(ei.value)
        assert name in msg and expected in msg and "https://" in msg, msg


def test_xrv_loader_reads_state_dicts_safetensors_and_whole_legacy_pickles(tmp_path, nih_pixels):
    torch.manual_seed(0)
    ref_model = _randomize_bn(_XRVLike())
    sd = ref_model.state_dict_xrv()
    sd["op_threshs"] = torch.rand(18)  # torchxrayvision keeps its thresholds as a buffer; not a weight to load
    torch.save(sd, tmp_path / "state.pt")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "state.safetensors"))
    torch.save(ref_model, tmp_path / "whole.pt", _use_new_zipfile_serialization=False)  # as 2020 releases were saved
    x = torch.from_numpy(np.stack([xrv_preprocess(p) for p in nih_pixels]))
    with torch.no_grad():
        ref = ref_model.body(x).numpy()
    ids = set()
    for f in ("state.pt", "state.safetensors", "whole.pt"):
        enc = get("densenet121-xrv", weights=tmp_path / f)
        assert enc.embedding_dim == 1024 and enc.spec.channels == 1 and enc.spec.size == 224
        _assert_close_embeddings(enc.embed(nih_pixels), ref)
        assert enc.describe()["n_classes"] == 18
        ids.add(enc.encoder_id)
    assert len(ids) == 3 and all(i.startswith("densenet121-xrv@") for i in ids)


def test_xrv_preprocessing_range_and_centre_crop(nih_pixels):
    img = nih_pixels[0]
    out = xrv_preprocess(img)
    assert out.shape == (1, 224, 224) and out.dtype == np.float32
    assert -1024 <= out.min() < 0 < out.max() <= 1024
    wide = np.concatenate([np.zeros((img.shape[0], 100), np.float32), img, np.ones((img.shape[0], 100), np.float32)], 1)
    np.testing.assert_array_equal(xrv_preprocess(wide), out)  # XRayCenterCrop drops the added side bands


def test_chexnet_loader_remaps_old_torchvision_names(tmp_path, nih_pixels):
    torch.manual_seed(1)
    model = _randomize_bn(DenseNet121Features(in_channels=3), seed=1)
    sd = {f"module.densenet121.{k}": v for k, v in model.state_dict().items()}
    sd.update({"module.densenet121.classifier.0.weight": torch.randn(14, 1024),
               "module.densenet121.classifier.0.bias": torch.zeros(14)})
    ckpt = {"epoch": 5, "best_loss": 0.15, "state_dict": _old_torchvision_names(sd)}
    assert any(".norm.1." in k for k in ckpt["state_dict"])
    torch.save(ckpt, tmp_path / "model.pth.tar", _use_new_zipfile_serialization=False)
    enc = get("chexnet", weights=tmp_path)  # a folder holding model.pth.tar
    assert enc.describe()["n_classes"] == 14 and enc.spec.channels == 3
    x = np.stack([enc.preprocess(p) for p in nih_pixels])
    assert x.shape == (N_IMAGES, 3, 224, 224)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    _assert_close_embeddings(enc.embed(nih_pixels), ref)


def test_wrong_architecture_is_named(tmp_path):
    torch.save({"features.conv0.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a DenseNet121 checkpoint"):
        get("chexnet", weights=tmp_path / "bad.pt")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Carrier(nn.Module):
    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.payload = _Payload(marker)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("kind", ["dict", "module"])
def test_weights_files_never_run_code(tmp_path, legacy, kind):
    marker = tmp_path / "pwned"
    obj = {"w": torch.zeros(2), "x": _Payload(marker)} if kind == "dict" else _Carrier(marker)
    torch.save(obj, tmp_path / "evil.pt", _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ValueError, match="never runs code"):
        load_weights(tmp_path / "evil.pt")
    with pytest.raises(ValueError):
        get("chexnet", weights=tmp_path / "evil.pt")
    assert not marker.exists()


def test_timm_family_says_how_to_install_timm(tmp_path):
    try:
        import timm  # noqa: F401
        pytest.skip("timm is installed here (.venv-zoo); this checks the light install")
    except ImportError:
        pass
    save_file({"w": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ImportError, match=r"radlens\[zoo\]"):
        get("timm:resnet10t", weights=tmp_path)


def test_cli_embeds_a_store_with_a_published_family(tmp_path, nih_paths):
    from radlens.store import load_store

    torch.manual_seed(5)
    torch.save(_randomize_bn(_XRVLike(), seed=5).state_dict_xrv(), tmp_path / "xrv.pt")
    enc = get("densenet121-xrv", weights=tmp_path / "xrv.pt")
    run_cli("embed", *map(str, nih_paths), "--out", str(tmp_path / "store"), "--encoder", "densenet121-xrv",
            "--weights", str(tmp_path / "xrv.pt"), "--threads", "1")
    df, emb, info = load_store(tmp_path / "store")
    assert emb.shape == (N_IMAGES, 1024) and info.encoder_id == enc.encoder_id
    assert info.preprocess_hash == enc.preprocess_hash
    np.testing.assert_allclose(emb[np.argsort(df.path.values)],
                               enc.embed([load_image(p).pixels for p in sorted(map(str, nih_paths))]),
                               rtol=1e-4, atol=1e-4 * float(np.abs(emb).max()))


def test_cli_allow_download_is_refused_where_nothing_can_be_downloaded(tmp_path):
    proc = run_cli("embed", str(tmp_path), "--out", str(tmp_path / "s"), "--encoder", "chexnet", "--allow-download",
                   check=False)
    assert proc.returncode != 0
    assert "nothing to download" in proc.stdout + proc.stderr


# ---------------------------------------------------------------- .venv-zoo: against the upstream libraries


@pytest.mark.zoo_vision
def test_xrv_matches_torchxrayvision(tmp_path, nih_paths, nih_pixels, monkeypatch):
    xrv = pytest.importorskip("torchxrayvision", reason="needs torchxrayvision (torchvision): run in .venv-zoo")
    skio = pytest.importorskip("skimage.io")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(2)
    model = _randomize_bn(xrv.models.DenseNet(weights=None), seed=2)
    torch.save(model, tmp_path / RELEASE_FILE, _use_new_zipfile_serialization=False)  # torchxrayvision's format
    torch.save(model.state_dict(), tmp_path / "state_dict.pt")
    # a non-square image too, so that XRayCenterCrop's arithmetic is exercised
    wide = tmp_path / "wide.png"
    Image.open(nih_paths[0]).convert("L").crop((0, 40, 512, 440)).resize((530, 400)).save(wide)
    paths = [*nih_paths, wide]
    pixels = [*nih_pixels, load_image(wide).pixels]

    transform = torchvision.transforms.Compose([xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(224)])
    ups = []
    for p in paths:  # torchxrayvision's README recipe
        img = xrv.datasets.normalize(skio.imread(p), 255)
        if img.ndim == 3:
            img = img.mean(2)
        ups.append(transform(img[None, ...]))
    ups = np.stack(ups).astype(np.float32)
    for f in (RELEASE_FILE, "state_dict.pt"):
        enc = get("densenet121-xrv", weights=tmp_path / f)
        mine = np.stack([enc.preprocess(p) for p in pixels])
        assert mine.shape == ups.shape == (len(paths), 1, 224, 224)
        assert np.abs(mine - ups).max() <= PRE_ATOL_XRV
        with torch.no_grad():
            ref = model.features2(torch.from_numpy(ups)).numpy()
        _assert_close_embeddings(enc.embed(pixels), ref)
    with torch.no_grad():  # the embedding is what the classifier reads
        np.testing.assert_allclose(model.classifier(torch.from_numpy(ref)).numpy(), model(torch.from_numpy(ups)).numpy(),
                                   rtol=1e-5, atol=1e-4)
    # --allow-download goes through torchxrayvision's own fetch (stubbed here: no network), then radlens's loader
    asked = []
    monkeypatch.setattr(xrv.models, "get_weights",
                        lambda name, cache_dir=None: asked.append(name) or str(tmp_path / RELEASE_FILE))
    with pytest.raises(MissingWeightsError):
        get("densenet121-xrv")
    assert asked == []
    assert get("densenet121-xrv", allow_download=True).encoder_id == get("densenet121-xrv", weights=tmp_path).encoder_id
    assert asked == ["densenet121-res224-all"]


@pytest.mark.zoo_vision
def test_chexnet_matches_torchvision_densenet121(tmp_path, nih_paths, nih_pixels):
    torchvision = pytest.importorskip("torchvision", reason="needs torchvision: run in .venv-zoo")
    from torchvision import transforms

    class DenseNet121(nn.Module):  # arnoweng/CheXNet's model class
        def __init__(self, out_size: int) -> None:
            super().__init__()
            self.densenet121 = torchvision.models.densenet121(weights=None)
            self.densenet121.classifier = nn.Sequential(nn.Linear(1024, out_size), nn.Sigmoid())

    torch.manual_seed(3)
    net = nn.DataParallel(DenseNet121(14))
    _randomize_bn(net, seed=3)
    state = _old_torchvision_names(net.state_dict())  # the checkpoint as saved with torchvision < 0.4
    assert "module.densenet121.features.denseblock1.denselayer1.norm.1.weight" in state
    torch.save({"epoch": 1, "state_dict": state, "best_loss": 0.2}, tmp_path / "model.pth.tar")
    # reproduce-chexnet's layout: the whole pickled torchvision model under "model"
    torch.save({"model": net.module.densenet121, "best_loss": 0.2, "epoch": 1, "LR": 0.01}, tmp_path / "checkpoint")

    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ups = torch.stack([tf(Image.open(p).convert("RGB")) for p in nih_paths])
    d = net.module.densenet121.eval()
    with torch.no_grad():
        ref = F.adaptive_avg_pool2d(F.relu(d.features(ups)), 1).flatten(1).numpy()
    for f in ("model.pth.tar", "checkpoint"):
        enc = get("chexnet", weights=tmp_path / f)
        mine = np.stack([enc.preprocess(p) for p in nih_pixels])
        assert np.abs(mine - ups.numpy()).max() <= PRE_ATOL_PIL
        _assert_close_embeddings(enc.embed(nih_pixels), ref)


@pytest.mark.zoo_vision
@pytest.mark.parametrize("arch", ["resnet10t", "vit_tiny_patch16_224"])
def test_timm_matches_timm(arch, tmp_path, nih_paths, nih_pixels):
    timm = pytest.importorskip("timm", reason="needs timm (torchvision): run in .venv-zoo")
    import timm.data

    torch.manual_seed(4)
    model = timm.create_model(arch, pretrained=False, num_classes=14).eval()
    hub = tmp_path / "hub"  # the layout of a timm model folder on the Hugging Face hub
    hub.mkdir()
    save_file(model.state_dict(), str(hub / "model.safetensors"))
    (hub / "config.json").write_text(json.dumps({"architecture": arch, "num_classes": 14,
                                                 "pretrained_cfg": model.pretrained_cfg}, default=str))
    torch.save({"epoch": 1, "arch": arch, "state_dict": model.state_dict(), "args": argparse.Namespace(lr=0.1)},
               tmp_path / "checkpoint.pth.tar")  # timm's train.py checkpoint (an argparse.Namespace inside)

    cfg = timm.data.resolve_data_config({}, model=model)
    tf = timm.data.create_transform(**cfg)
    ups = torch.stack([tf(Image.open(p).convert("RGB")) for p in nih_paths])
    with torch.no_grad():
        ref = model.forward_head(model.forward_features(ups), pre_logits=True).numpy()
    for w in (hub, tmp_path / "checkpoint.pth.tar"):
        enc = get(f"timm:{arch}", weights=w)
        assert enc.spec.extra["timm_data_config"]["input_size"] == list(cfg["input_size"])
        assert enc.embedding_dim == ref.shape[1] and enc.encoder_id.startswith(f"timm:{arch}@")
        mine = np.stack([enc.preprocess(p) for p in nih_pixels])
        assert mine.shape == tuple(ups.shape)
        assert np.abs(mine - ups.numpy()).max() <= PRE_ATOL_PIL
        _assert_close_embeddings(enc.embed(nih_pixels), ref)

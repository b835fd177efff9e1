"""Mask-conditioned generator (issue 8): a short training run, the artefact round trip, the expert filter."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import shared_data_dir
from radlens.synth.expert_filter import PACKAGED_FILTER, ExpertFilter, dice
from radlens.synth.image_gen import ImageGenerator
from radlens.synth.sampler import MaskSampler


@pytest.fixture(scope="module")
def nih():
    root = shared_data_dir() / "nih-cxr14"
    if not (root / "manifest.csv").is_file():
        pytest.skip(f"NIH data not found at {root} (expected ../shared/data/nih-cxr14)")
    return root


@pytest.fixture(scope="module")
def smoke_run(nih, tmp_path_factory):
    from radlens.synth.gen_train import GenTrainConfig, train

    out = tmp_path_factory.mktemp("gen")
    cfg = GenTrainConfig(nih_data=str(nih), out=str(out), size=64, widths=(16, 32, 64), disc_width=16, epochs=4,
                         batch_size=8, threads=1, limit=32, checkpoint_every=1000)
    state = train(cfg)
    return out, cfg, state


def test_short_training_run_learns_and_resumes(smoke_run):
    out, cfg, state = smoke_run
    hist = state["history"]
    assert len(hist) == 4 and hist[-1]["l1"] < hist[0]["l1"] and hist[-1]["val_l1"] < hist[0]["val_l1"]
    assert (out / "previews" / "epoch_004.png").is_file() and (out / "checkpoint.pt").is_file()
    from radlens.synth.gen_train import train

    again = train(cfg)  # resumes from the checkpoint: nothing left to do, history kept
    assert again["step"] == state["step"] and len(again["history"]) == 4


def test_init_from_starts_from_the_given_generator(smoke_run, tmp_path):
    """--init-from: a run with no epochs left exports exactly the weights it started from, and records them."""
    from safetensors.torch import load_file

    from radlens.synth.gen_train import GenTrainConfig, train

    out, cfg, _ = smoke_run
    cfg2 = GenTrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "warm"), "epochs": 0,
                             "init_from": str(out / "final")})
    train(cfg2)
    a, b = load_file(str(out / "final" / "model.safetensors")), load_file(str(tmp_path / "warm" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    assert json.loads((tmp_path / "warm" / "final" / "config.json").read_text())["recipe"]["init_from"] == str(out / "final")
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        train(GenTrainConfig(**{**cfg2.__dict__, "out": str(tmp_path / "cold"), "init_from": str(tmp_path)}))


def test_lesion_l1_weighs_only_finding_pixels():
    import torch

    from radlens.synth.condition import ANATOMY, N_COND
    from radlens.synth.gen_train import lesion_l1

    real, fake = torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    fake[:, :, :4] = 1.0  # wrong everywhere in the top half
    cond = torch.zeros(2, N_COND, 8, 8)
    cond[:, :len(ANATOMY)] = 1.0  # anatomy planes do not count
    assert float(lesion_l1(fake, real, cond)) == 0.0
    cond[0, len(ANATOMY), 2:6, :] = 1.0  # a finding over rows 2-5: half of it inside the wrong top half
    assert float(lesion_l1(fake, real, cond)) == pytest.approx(0.5)


def test_generator_artefact_round_trip_and_refusals(smoke_run, tmp_path):
    out, _, _ = smoke_run
    gen = ImageGenerator(out / "final")
    samples = MaskSampler().sample("right pleural effusion", n=3, seed=0)
    a, b = gen.generate(samples, seed=1), gen.generate(samples, seed=1)
    assert a.shape == (3, 64, 64) and np.array_equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert not np.array_equal(a, gen.generate(samples, seed=2))
    bad = tmp_path / "bad"
    shutil.copytree(out / "final", bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["planes"] = cfg["planes"][:-1]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="conditioning"):
        ImageGenerator(bad)
    shutil.copytree(out / "final", tmp_path / "bad2")
    w = tmp_path / "bad2" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError, match="hash"):
        ImageGenerator(tmp_path / "bad2")


@pytest.fixture(scope="module")
def expert():
    if not (PACKAGED_FILTER / "filter.json").is_file():
        pytest.skip("no packaged expert filter")
    return ExpertFilter()


def test_filter_keeps_real_images_with_their_own_anatomy_and_rejects_broken_pairs(expert, nih):
    """Real NIH images of the filter's size with masks drawn for them pass the anatomy stage; the same images with
    another patient's masks, a blank image, and copies fail with named reasons."""
    from radlens.anatomy import api as anatomy
    from radlens.synth.filter_fit import _small
    from radlens.io import load_image
    from radlens.synth.sampler import MaskSample
    from radlens.anatomy.data import nih_frame

    size = expert.config["size"]
    man = nih_frame(nih, ("eval",))
    man = man[man.finding_labels == "No Finding"].head(6)
    imgs = np.stack([_small(load_image(nih / p).pixels, size) for p in man.path])
    full = anatomy.segment([str(nih / p) for p in man.path])
    samples = [MaskSample(["lung_right", "lung_left", "heart"], m.array().astype(bool), [], [], {}, 0.45, (0, i),
                          "test", 0.6) for i, m in enumerate(full)]
    qc = expert.judge(imgs, samples)
    anat = [[r for r in q.reasons if r.startswith("anatomy")] for q in qc]
    assert sum(not a for a in anat) >= 5, anat
    assert all(q.scores["dice_lung_right"] > 0.8 for q in qc)
    swapped = expert.judge(imgs, samples[1:] + samples[:1])
    assert sum(any(r.startswith("anatomy") for r in q.reasons) for q in swapped) >= 3
    broken = imgs.copy()
    broken[0] = 0.5
    broken[2] = broken[1]
    qb = expert.judge(broken, samples)
    assert any("flat image" in r for r in qb[0].reasons)
    assert any("near-copy" in r for r in qb[1].reasons) and any("near-copy" in r for r in qb[2].reasons)


def test_filter_checks_prompted_findings_with_the_finding_expert(expert):
    assert set(expert.sens) == set(expert.adapter.class_names) and "Effusion" in expert.sens
    assert all(expert.spec[c] >= expert.sens[c] for c in expert.sens)


def test_dice():
    a = np.zeros((8, 8), bool)
    a[2:6, 2:6] = True
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0 and dice(a & False, a & False) == 1.0


def test_generate_cli_writes_a_filtered_labelled_set(tmp_path):
    """Prompt -> masks -> packaged generator -> expert filter -> export, as a user runs it."""
    import pandas as pd

    from conftest import run_cli
    from radlens.synth.image_gen import PACKAGED_GENERATOR

    if not (PACKAGED_GENERATOR / "model.safetensors").is_file() or not (PACKAGED_FILTER / "filter.json").is_file():
        pytest.skip("no packaged generator/filter")
    out = tmp_path / "set"
    run_cli("synth", "generate", "--prompt", "moderate right pleural effusion with cardiomegaly", "--n", "6",
            "--seed", "3", "--out", str(out))
    gen = json.loads((out / "generation.json").read_text())
    man = pd.read_csv(out / "manifest.csv")
    rej = pd.read_csv(out / "rejected.csv")
    assert len(man) == gen["kept"] and len(man) + len(rej) == 6
    assert gen["generator_id"] == ImageGenerator().model_id and gen["prior_id"].startswith("radlens-maskprior")
    coco = json.loads((out / "coco.json").read_text())
    assert len(coco["images"]) == len(man)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    effusion = [a for a in coco["annotations"] if names[a["category_id"]].lower() == "effusion"]
    assert len(effusion) >= len(man)  # every kept image has its prompted effusion as an instance
    assert all(r for r in rej.qc_reasons) and (out / "contact_sheet.png").is_file()
    from PIL import Image

    img = Image.open(out / man.path[0])
    assert img.size == (128, 128)

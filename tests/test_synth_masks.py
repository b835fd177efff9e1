"""Prompt -> anatomy-consistent pseudo masks (issue 7): the packaged prior, the sampler, the checks, the CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, shared_data_dir
from radlens.anatomy.measures import measure
from radlens.synth.checks import check_sample
from radlens.synth.prompt import parse_prompt
from radlens.synth.sampler import PACKAGED_PRIOR, MaskPrior, MaskSampler, SynthError


@pytest.fixture(scope="module")
def sampler() -> MaskSampler:
    return MaskSampler()


PROMPTS = [
    "moderate right pleural effusion with cardiomegaly",
    "3 cm mass in the left upper zone",
    "small left apical pneumothorax, no effusion",
    "bilateral lower zone consolidation",
    "right basal atelectasis and a 12 mm nodule in the right mid zone",
    "large left pneumothorax and small right effusion",
    "severe cardiomegaly with bilateral effusions and a right upper zone mass",
    "perihilar infiltrates bilaterally",
]


def _ctr(s) -> float:
    return measure(s.channel("lung_right"), s.channel("lung_left"), s.channel("heart")).ctr


@pytest.mark.parametrize("prompt", PROMPTS)
def test_samples_pass_their_checks(sampler, prompt):
    parsed = parse_prompt(prompt)
    samples = sampler.sample(parsed, n=12, seed=3)
    failed = {i: [str(v) for v in check_sample(s, parsed, sampler.prior)] for i, s in enumerate(samples)}
    failed = {i: v for i, v in failed.items() if v}
    assert len(failed) <= 1, failed
    for s in samples:
        names = [f.name for f in parsed.findings]
        assert s.channels[:3] == ["lung_right", "lung_left", "heart"] and set(s.channels[3:]) == set(names)
        assert s.masks.shape == (len(s.channels), 512, 512) and s.masks.dtype == bool
        for f in parsed.findings:
            if f.laterality in ("left", "right"):
                assert {i.side for i in s.instances if i.finding == f.name} == {f.laterality}


def test_same_seed_same_masks_and_index_does_not_depend_on_n(sampler):
    p = parse_prompt(PROMPTS[4])
    a = sampler.sample(p, n=3, seed=11)
    b = sampler.sample(p, n=5, seed=11)
    c = sampler.sample(p, n=3, seed=12)
    for x, y in zip(a, b[:3]):
        assert np.array_equal(x.masks, y.masks) and x.to_json() == y.to_json()
    assert not np.array_equal(a[0].masks, c[0].masks)
    assert not np.array_equal(a[0].masks, a[1].masks)


def test_cardiomegaly_widens_the_heart_past_the_rule(sampler):
    with_cm = sampler.sample("cardiomegaly", n=20, seed=0)
    without = sampler.sample("right pleural effusion", n=20, seed=0)
    assert all(_ctr(s) > 0.5 for s in with_cm) and all(_ctr(s) < 0.5 for s in without)
    mild = np.median([_ctr(s) for s in sampler.sample("mild cardiomegaly", n=20, seed=1)])
    severe = np.median([_ctr(s) for s in sampler.sample("severe cardiomegaly", n=20, seed=1)])
    assert severe > mild + 0.05


def test_sex_view_conditioning_reaches_the_anatomy(sampler):
    pa = [s for s in sampler.sample("nodule", n=30, seed=2, view="PA")]
    ap = [s for s in sampler.sample("nodule", n=30, seed=2, view="AP")]
    assert all(s.covariates["view"] == "PA" for s in pa) and all(s.covariates["view"] == "AP" for s in ap)
    area = lambda ss: np.mean([s.channel("lung_right").sum() + s.channel("lung_left").sum() for s in ss])  # noqa: E731
    assert area(ap) < area(pa)  # AP (supine, often ICU) films show smaller lung fields in the NIH data


def test_effusion_meets_the_costophrenic_angle_and_pneumothorax_the_pleura(sampler):
    from radlens.synth.geometry import LungFrame

    for s in sampler.sample("large left effusion and right pneumothorax", n=8, seed=5):
        eff = s.channel("Effusion")
        ptx = s.channel("Pneumothorax")
        fl = LungFrame.from_mask(s.channel("lung_left"), "left")
        fr = LungFrame.from_mask(s.channel("lung_right"), "right")
        ys, xs = np.nonzero(eff)
        u, v = fl.to_uv(xs, ys)
        assert v.max() > 0.95 and u[v > 0.9].max() > 0.8  # down to the lateral base
        ys, xs = np.nonzero(ptx)
        u, v = fr.to_uv(xs, ys)
        assert np.mean((u > 0.5) | (v < 0.25)) > 0.9  # along the lateral wall or over the apex
        assert not (eff & s.channel("lung_right")).any() and not (ptx & s.channel("lung_left")).any()


def test_focal_lesions_do_not_overlap_pneumothorax(sampler):
    for s in sampler.sample("large right pneumothorax with a right upper zone nodule", n=10, seed=4):
        assert not (s.channel("Pneumothorax") & s.channel("Nodule")).any()


def test_sizes_in_mm_follow_the_thorax(sampler):
    for size in (12, 30, 60):
        for s in sampler.sample(f"{size} mm mass in the right mid zone" if size >= 30 else f"{size} mm nodule",
                                n=6, seed=size):
            inst = s.instances[0]
            x0, y0, x1, y1 = inst.bbox()
            assert abs(max(x1 - x0, y1 - y0) * s.mm_per_px - size) <= 0.25 * size


def _swap_instance(sample, k, mask):
    inst = list(sample.instances)
    inst[k] = dataclasses.replace(inst[k], mask=mask)
    masks = sample.masks.copy()
    masks[sample.channels.index(inst[k].finding)] = mask
    return dataclasses.replace(sample, instances=inst, masks=masks)


def test_checks_catch_what_the_prompt_forbids(sampler):
    """The checks measure the masks: break a good sample in each way and the matching violation appears."""
    parsed = parse_prompt("12 mm nodule in the right upper zone")
    s = sampler.sample(parsed, n=1, seed=0)[0]
    assert check_sample(s, parsed, sampler.prior) == []
    nod = s.instances[0].mask
    ys, xs = np.nonzero(nod)
    left = s.channel("lung_left")
    ly, lx = np.nonzero(left)
    moved = np.zeros_like(nod)
    moved[ly.min() + 20:ly.min() + 20 + np.ptp(ys) + 1, int(np.median(lx)):int(np.median(lx)) + np.ptp(xs) + 1] = True
    assert "laterality" in {v.check for v in check_sample(_swap_instance(s, 0, moved), parsed, sampler.prior)}
    outside = np.zeros_like(nod)
    outside[2:2 + np.ptp(ys) + 1, 2:2 + np.ptp(xs) + 1] = True
    assert "inside" in {v.check for v in check_sample(_swap_instance(s, 0, outside), parsed, sampler.prior)}
    from radlens.synth.geometry import LungFrame

    cx, cy = LungFrame.from_mask(s.channel("lung_right"), "right").to_xy(np.array(0.5), np.array(0.85))
    low = np.zeros_like(nod)
    h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
    low[int(cy) - h // 2:int(cy) - h // 2 + h, int(cx) - w // 2:int(cx) - w // 2 + w] = True
    assert "zone" in {v.check for v in check_sample(_swap_instance(s, 0, low), parsed, sampler.prior)}
    huge = np.zeros_like(nod)
    huge[ys.min():ys.min() + 60, xs.min() - 30:xs.min() + 30] = True
    huge &= s.channel("lung_right")
    assert "size" in {v.check for v in check_sample(_swap_instance(s, 0, huge), parsed, sampler.prior)}
    # a wide heart without cardiomegaly in the prompt, and a negated finding that was drawn
    wide = s.masks.copy()
    wide[2] = wide[0] | wide[1] | wide[2]
    assert "cardiomegaly" in {v.check for v in check_sample(dataclasses.replace(s, masks=wide), parsed,
                                                              sampler.prior, shape=False)}
    neg = parse_prompt("12 mm nodule in the right upper zone, no effusion")
    assert check_sample(s, neg, sampler.prior) == []
    drawn = dataclasses.replace(s, channels=s.channels + ["Effusion"], masks=np.concatenate([s.masks, low[None]]))
    assert "negation" in {v.check for v in check_sample(drawn, neg, sampler.prior, shape=False)}


def test_unsupported_and_unparseable_prompts_say_why(sampler):
    with pytest.raises(SynthError, match="Edema: no location data"):
        sampler.sample("pulmonary edema", n=1)
    with pytest.raises(SynthError, match="zone 'upper'"):
        sampler.sample("left upper zone effusion", n=1)
    with pytest.raises(ValueError, match="not understood"):
        sampler.sample("wibble wobble", n=1)


def test_prior_refuses_edited_files(tmp_path):
    folder = tmp_path / "prior"
    shutil.copytree(PACKAGED_PRIOR, folder)
    MaskPrior(folder)  # a faithful copy loads
    p = folder / "priors.json"
    d = json.loads(p.read_text())
    d["instances"]["u"][0] += 0.5
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="prior_id"):
        MaskPrior(folder)
    (folder / "priors.json").unlink()
    with pytest.raises(FileNotFoundError, match="fit-prior"):
        MaskPrior(folder)


def test_cli_writes_masks_overlays_and_manifest(tmp_path):
    out = tmp_path / "masks"
    run_cli("synth", "masks", "--prompt", "moderate right pleural effusion with cardiomegaly", "--n", "4",
            "--seed", "0", "--out", str(out))
    man = json.loads((out / "manifest.json").read_text())
    assert man["prior_id"].startswith("radlens-maskprior-v1@") and man["anatomy_model"].startswith("radlens-anatomy")
    assert man["checks"]["of"] == 4 and [f["finding"] for f in man["parsed"]["findings"]] == ["Effusion", "Cardiomegaly"]
    again = MaskSampler().sample(man["prompt"], n=4, seed=0)
    for i, s in enumerate(again):
        rec = json.loads((out / "samples" / f"{i:04d}" / "findings.json").read_text())
        for c, f in rec["files"].items():
            png = np.asarray(Image.open(out / f)) > 127
            assert np.array_equal(png, s.channel(c)), (i, c)
        eff = [f for f in rec["findings"] if f["finding"] == "Effusion"][0]
        x0, y0, x1, y1 = eff["bbox_xyxy"]
        ys, xs = np.nonzero(s.channel("Effusion"))
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert Image.open(out / "overlays" / f"{i:04d}.png").size == (512, 512)
    assert Image.open(out / "overlay_sheet.png").size[0] > 512
    # refuses to overwrite without --overwrite, and an unsupported prompt fails cleanly without writing
    r = run_cli("synth", "masks", "--prompt", "effusion", "--n", "1", "--out", str(out), check=False)
    assert r.returncode == 2 and "--overwrite" in r.stderr
    bad = tmp_path / "bad"
    r = run_cli("synth", "masks", "--prompt", "flibber jabber", "--n", "1", "--out", str(bad), check=False)
    assert r.returncode == 2 and "flibber" in r.stderr and "Pneumothorax" in r.stderr and not bad.exists()
    run_cli("synth", "masks", "--prompt", "effusion", "--n", "1", "--out", str(out), "--overwrite")
    assert json.loads((out / "manifest.json").read_text())["n"] == 1 and not (out / "samples" / "0001").exists()


@pytest.mark.slow
def test_refit_reproduces_the_packaged_prior(tmp_path):
    """The committed prior is what `radlens synth fit-prior` writes from the shared data."""
    nih, lungs = shared_data_dir() / "nih-cxr14", shared_data_dir() / "lung-masks"
    if not (nih / "manifest.csv").is_file() or not (lungs / "manifest.csv").is_file():
        pytest.skip(f"shared data not found under {shared_data_dir()}")
    out = tmp_path / "prior"
    run_cli("synth", "fit-prior", "--nih", str(nih), "--lung-masks", str(lungs), "--out", str(out))
    new, old = MaskPrior(out), MaskPrior(PACKAGED_PRIOR)
    assert new.config["instances"] == old.config["instances"]
    assert new.config["shape_modes"] == old.config["shape_modes"]
    assert np.allclose(new.shape.mean, old.shape.mean, atol=0.5)
    assert np.allclose(new.instances[["u", "v", "rel_w", "rel_h"]], old.instances[["u", "v", "rel_w", "rel_h"]],
                       atol=0.02)

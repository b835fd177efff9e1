"""Train the mask-conditioned generator on NIH training pairs (`radlens synth train`); resumable.

Recipe: hinge GAN loss (PatchGAN discriminator with spectral norm) + L1 to the real image (weight `l1`) +
discriminator feature matching (weight `fm`) + a lesion L1 (weight `lesion_l1`): the L1 over the pixels of the
finding planes only, averaged over their area. Why: findings cover ~1-3 % of an image and most training images have
no finding mask, so in the global L1 they weigh almost nothing and an early generator learned to ignore the finding
planes (anatomy right, pneumothorax/mass invisible); the lesion term gives each finding the weight of a whole image.
Adam(2e-4, 0.5, 0.999) for both nets, batch `batch_size`, light
geometric augmentation applied to image and condition together (shift and zoom of a few per cent; never a
horizontal flip: laterality is anatomy). Validation L1 on the NIH `val` split each epoch; a fixed-condition preview
sheet per epoch (`previews/epoch_NNN.png`) so progress can be looked at while it runs.

Checkpoints (`checkpoint.pt`, every epoch and every `checkpoint_every` steps, written to a temp file then renamed)
hold only state dicts and plain numbers and are loaded with `weights_only=True`. The final generator goes to
`final/` as `model.safetensors` + `config.json`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from radlens.safe_files import read_safetensors, torch_load_tensors
from radlens.synth.condition import ANATOMY, LABELS, PLANES, condition_tensor
from radlens.synth.generator import CondUNet, PatchDiscriminator, parameters

log = logging.getLogger(__name__)
KIND = "radlens-cxr-generator"


@dataclass
class GenTrainConfig:
    nih_data: str
    out: str
    size: int = 128
    widths: tuple[int, ...] = (32, 64, 128, 256)
    disc_width: int = 32
    epochs: int = 40
    batch_size: int = 8
    lr: float = 2e-4
    l1: float = 10.0
    fm: float = 2.0
    threads: int = 2
    limit: int | None = None
    checkpoint_every: int = 200
    seed: int = 0
    max_minutes: float | None = None  # stop (after a checkpoint) when this much wall time has passed
    lesion_l1: float = 10.0  # extra L1 on finding-plane pixels, averaged over their area (see module docstring)
    init_from: str | None = None  # generator folder (model.safetensors) to start G from; D starts fresh
    version: str = "v2"  # the exported generator's version (its id: radlens-cxr-generator-<version>@<sha256[:12]>)


def jitter(x: torch.Tensor, c: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random shift and zoom (a few per cent) for an image batch and its aligned planes; no flips, since
    laterality is anatomy."""
    n = x.shape[0]
    s = 1 + (torch.rand(n, generator=g) - 0.5) * 0.1
    t = (torch.rand(n, 2, generator=g) - 0.5) * 0.08
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    both = F.grid_sample(torch.cat([x, c], 1), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return both[:, :1], both[:, 1:]


def _batch(pairs, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(pairs.images[idx]).float()[:, None] / 127.5 - 1.0
    planes = torch.from_numpy(pairs.planes[idx]).float() / 255.0
    labels = torch.from_numpy(pairs.labels[idx]).float()
    return x, condition_tensor(planes, labels)


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(cfg: GenTrainConfig) -> dict:
    from rich.progress import Progress

    from radlens.synth.gen_data import load_pairs

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    (out / "previews").mkdir(parents=True, exist_ok=True)
    root = Path(cfg.nih_data)
    pairs = load_pairs(root, cfg.size, ("train",), cfg.limit)
    val = load_pairs(root, cfg.size, ("val",), min(cfg.limit or 64, 64))
    torch.manual_seed(cfg.seed)
    G = CondUNet(widths=tuple(cfg.widths))
    if cfg.init_from:
        G.load_state_dict(_generator_weights(Path(cfg.init_from)))
    D = PatchDiscriminator(width=cfg.disc_width)
    og = torch.optim.Adam(G.parameters(), cfg.lr, betas=(0.5, 0.999))
    od = torch.optim.Adam(D.parameters(), cfg.lr, betas=(0.5, 0.999))
    state = {"epoch": 0, "step": 0, "history": [], "seconds": 0.0}
    ck = out / "checkpoint.pt"
    if ck.is_file():
        saved = torch_load_tensors(ck)
        G.load_state_dict(saved["G"])
        D.load_state_dict(saved["D"])
        og.load_state_dict(saved["og"])
        od.load_state_dict(saved["od"])
        state = json.loads(saved["state"])
        log.info("resumed at epoch %d step %d", state["epoch"], state["step"])
    (out / "config.json").write_text(json.dumps({**asdict(cfg), "generator_parameters": parameters(G),
                                                 "discriminator_parameters": parameters(D)}, indent=1))
    g = torch.Generator().manual_seed(cfg.seed + state["step"])
    steps_per_epoch = max(1, len(pairs) // cfg.batch_size)
    started = time.time()
    fixed = np.arange(min(8, len(val)))

    def checkpoint() -> None:
        state["seconds"] += time.time() - checkpoint.t
        checkpoint.t = time.time()
        _save_atomic({"G": G.state_dict(), "D": D.state_dict(), "og": og.state_dict(), "od": od.state_dict(),
                      "state": json.dumps(state)}, ck)
    checkpoint.t = time.time()

    with Progress() as bar:
        task = bar.add_task("generator", total=cfg.epochs * steps_per_epoch, completed=state["step"])
        while state["epoch"] < cfg.epochs:
            rng = np.random.default_rng([cfg.seed, state["epoch"]])
            order = rng.permutation(len(pairs))
            start = state["step"] - state["epoch"] * steps_per_epoch
            sums = {"d": 0.0, "g_adv": 0.0, "l1": 0.0, "fm": 0.0, "lesion_l1": 0.0}
            G.train()
            for k in range(start, steps_per_epoch):
                x, c = jitter(*_batch(pairs, order[k * cfg.batch_size:(k + 1) * cfg.batch_size]), g)
                fake = G(c)
                real_score, _ = D(x, c)
                fake_score, _ = D(fake.detach(), c)
                d_loss = F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean()
                od.zero_grad(set_to_none=True)
                d_loss.backward()
                od.step()
                fake_score, ff = D(fake, c)
                with torch.no_grad():
                    _, rf = D(x, c)
                fm = sum(F.l1_loss(a, b) for a, b in zip(ff, rf)) / len(ff)
                l1 = F.l1_loss(fake, x)
                lesion = lesion_l1(fake, x, c)
                g_adv = -fake_score.mean()
                g_loss = g_adv + cfg.l1 * l1 + cfg.fm * fm + cfg.lesion_l1 * lesion
                og.zero_grad(set_to_none=True)
                g_loss.backward()
                og.step()
                for key, v in (("d", d_loss), ("g_adv", g_adv), ("l1", l1), ("fm", fm), ("lesion_l1", lesion)):
                    sums[key] += float(v.detach())
                state["step"] += 1
                bar.advance(task)
                if state["step"] % cfg.checkpoint_every == 0:
                    checkpoint()
                if cfg.max_minutes and (time.time() - started) > cfg.max_minutes * 60:
                    checkpoint()
                    export(G, cfg, state, out / "final")  # usable now; a rerun resumes and replaces it
                    return {"stopped": "max_minutes", **state}
            n = max(1, steps_per_epoch - start)
            rec = {"epoch": state["epoch"] + 1, **{k: round(v / n, 4) for k, v in sums.items()},
                   "val_l1": round(validate(G, val), 4), "seconds": round(state["seconds"] + time.time() - checkpoint.t, 1)}
            state["history"].append(rec)
            state["epoch"] += 1
            log.info("epoch %s", rec)
            preview(G, val, fixed, out / "previews" / f"epoch_{state['epoch']:03d}.png")
            checkpoint()
    export(G, cfg, state, out / "final")
    return state


def lesion_l1(fake: torch.Tensor, real: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Mean |fake - real| over finding-plane pixels (soft masks), 0 for a batch without findings."""
    m = cond[:, len(ANATOMY):len(PLANES)].amax(1, keepdim=True)
    return ((fake - real).abs() * m).sum() / m.sum().clamp_min(1.0)


def _generator_weights(folder: Path) -> dict[str, torch.Tensor]:
    f = folder / "model.safetensors"
    if not f.is_file():
        raise FileNotFoundError(f"--init-from {folder}: no model.safetensors there (a generator folder, e.g. a "
                                f"run's final/ or the packaged generator)")
    return read_safetensors(f)


@torch.no_grad()
def validate(G: CondUNet, val) -> float:
    G.eval()
    g = torch.Generator().manual_seed(0)
    x, c = _batch(val, np.arange(len(val)))
    err = float(F.l1_loss(G(c, generator=g), x))
    G.train()
    return err


@torch.no_grad()
def preview(G: CondUNet, val, idx: np.ndarray, path: Path) -> None:
    """Rows: real image, its condition (anatomy as colour), generated image."""
    from PIL import Image

    G.eval()
    x, c = _batch(val, idx)
    y = G(c, generator=torch.Generator().manual_seed(0))
    G.train()
    to8 = lambda t: ((t[:, 0].clamp(-1, 1) + 1) * 127.5).round().byte().numpy()  # noqa: E731
    real, fake = to8(x), to8(y)
    cond = (c[:, :3].permute(0, 2, 3, 1).numpy() * 200 + c[:, 3:len(PLANES)].amax(1, keepdim=True).permute(0, 2, 3, 1).numpy() * 55)
    cond = np.clip(cond, 0, 255).astype(np.uint8)
    rows = [np.concatenate([np.stack([r] * 3, -1) for r in real], 1), np.concatenate(list(cond), 1),
            np.concatenate([np.stack([f] * 3, -1) for f in fake], 1)]
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def export(G: CondUNet, cfg: GenTrainConfig, state: dict, folder: Path) -> None:
    import hashlib

    from safetensors.torch import save_file

    from radlens.atomic import folder_swap

    with folder_swap(folder) as tmp:
        save_file({k: v.contiguous() for k, v in G.state_dict().items()}, str(tmp / "model.safetensors"))
        digest = hashlib.sha256((tmp / "model.safetensors").read_bytes()).hexdigest()[:12]
        (tmp / "config.json").write_text(json.dumps({
            "kind": KIND, "version": cfg.version, "model_id": f"{KIND}-{cfg.version}@{digest}", "size": cfg.size,
            "widths": list(cfg.widths), "planes": list(PLANES), "labels": list(LABELS), "parameters": parameters(G),
            "epochs": state["epoch"], "steps": state["step"], "train_seconds": round(state["seconds"], 1),
            "recipe": {k: getattr(cfg, k) for k in ("batch_size", "lr", "l1", "fm", "lesion_l1", "disc_width", "seed",
                                                    "init_from")},
            "history": state["history"]}, indent=1))


def export_checkpoint(run: Path) -> Path:
    """Write `run/final` from the run's last checkpoint (e.g. after stopping a run by hand)."""
    cfg_d = json.loads((run / "config.json").read_text())
    fields = set(GenTrainConfig.__dataclass_fields__)
    cfg = GenTrainConfig(**{k: (tuple(v) if k == "widths" else v) for k, v in cfg_d.items() if k in fields})
    saved = torch_load_tensors(run / "checkpoint.pt")
    G = CondUNet(widths=tuple(cfg.widths))
    G.load_state_dict(saved["G"])
    export(G, cfg, json.loads(saved["state"]), run / "final")
    return run / "final"

"""Load a trained generator folder and draw chest X-rays for mask samples.

    gen = ImageGenerator("runs/gen/final")
    images = gen.generate(samples, seed=0)     # (N, S, S) float32 in [0, 1], one per MaskSample

The generator records its planes and labels; a folder whose layout differs from this radlens's conditioning is
refused, as is a weights file that does not match the config's model id.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from radlens.synth.condition import LABELS, PLANES, condition_tensor, label_vector, planes_from_sample
from radlens.synth.generator import CondUNet

PACKAGED_GENERATOR = Path(__file__).parent / "weights" / "radlens-cxr-generator-v2"


class ImageGenerator:
    def __init__(self, folder: str | Path | None = None, threads: int | None = None) -> None:
        from radlens.safe_files import read_safetensors

        folder = Path(folder) if folder else PACKAGED_GENERATOR
        cfg_path, w_path = folder / "config.json", folder / "model.safetensors"
        missing = [p.name for p in (cfg_path, w_path) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"generator {folder} lacks {', '.join(missing)}; train one with "
                                    "`radlens synth train` (its final/ folder)")
        self.config = json.loads(cfg_path.read_text())
        if tuple(self.config["planes"]) != PLANES or tuple(self.config["labels"]) != LABELS:
            raise ValueError(f"{folder}: generator conditioning {self.config['planes']} + {self.config['labels']} "
                             f"differs from this radlens ({list(PLANES)} + {list(LABELS)})")
        digest = hashlib.sha256(w_path.read_bytes()).hexdigest()[:12]
        if not self.config["model_id"].endswith(digest):
            raise ValueError(f"{w_path}: weights hash {digest} does not match config model_id {self.config['model_id']}")
        self.model = CondUNet(widths=tuple(self.config["widths"]))
        self.model.load_state_dict(read_safetensors(w_path), strict=True)
        self.model.eval()
        self.size = int(self.config["size"])
        self.model_id = self.config["model_id"]
        self.threads = threads

    @torch.no_grad()
    def generate(self, samples: Sequence, seed: int = 0, batch_size: int = 16) -> np.ndarray:
        """One image per MaskSample (its masks and its drawn findings as labels), reproducible from `seed`."""
        if self.threads:
            torch.set_num_threads(self.threads)
        out = np.zeros((len(samples), self.size, self.size), np.float32)
        for i in range(0, len(samples), batch_size):
            chunk = samples[i:i + batch_size]
            planes = torch.from_numpy(np.stack([planes_from_sample(s, self.size) for s in chunk]))
            labels = torch.from_numpy(np.stack([label_vector(s.channels[3:]) for s in chunk]))
            g = torch.Generator().manual_seed(int(seed) * 1_000_003 + i)
            y = self.model(condition_tensor(planes, labels), generator=g)
            out[i:i + len(chunk)] = ((y[:, 0].clamp(-1, 1) + 1) / 2).numpy()
        return out

"""DenseNet-121, built by radlens in plain torch, with the module names of torchvision and torchxrayvision.

Why radlens builds it: the published DenseNet121 chest X-ray models (torchxrayvision's, CheXNet's) are
state dicts of this one architecture, and both upstream builders need torchvision, which cannot be
installed beside the local torch 2.13 CPU wheel. The layers here carry the same names as
`torchvision.models.densenet121` and `torchxrayvision.models.DenseNet` (features.conv0, features.norm0,
features.denseblockN.denselayerM.{norm1,conv1,norm2,conv2}, features.transitionN.{norm,conv},
features.norm5), so their `features.*` weights load with strict=True, and tests check the outputs
against the upstream models' own (tests/test_encoders_cnn.py).

The embedding of both families is what the classifier sees: ReLU(features(x)) → global average pool,
1,024-d (torchxrayvision's `model.features2(x)`, torchvision's pre-classifier activations).
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

EMBEDDING_DIM = 1024


class _DenseLayer(nn.Sequential):
    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__(OrderedDict([
            ("norm1", nn.BatchNorm2d(cin)), ("relu1", nn.ReLU(inplace=True)),
            ("conv1", nn.Conv2d(cin, bn_size * growth, 1, 1, bias=False)),
            ("norm2", nn.BatchNorm2d(bn_size * growth)), ("relu2", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, super().forward(x)], 1)


class _Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(OrderedDict([
            ("norm", nn.BatchNorm2d(cin)), ("relu", nn.ReLU(inplace=True)),
            ("conv", nn.Conv2d(cin, cout, 1, 1, bias=False)), ("pool", nn.AvgPool2d(2, 2)),
        ]))


class DenseNet121Features(nn.Module):
    """`features` of DenseNet-121 (growth 32, blocks 6-12-24-16, 64 initial features, bn_size 4)."""

    def __init__(self, in_channels: int = 3, growth: int = 32, blocks: tuple[int, ...] = (6, 12, 24, 16),
                 init_features: int = 64, bn_size: int = 4) -> None:
        super().__init__()
        f = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(in_channels, init_features, 7, 2, 3, bias=False)),
            ("norm0", nn.BatchNorm2d(init_features)), ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(3, 2, 1)),
        ]))
        c = init_features
        for i, n in enumerate(blocks):
            block = nn.Sequential(OrderedDict(
                (f"denselayer{j + 1}", _DenseLayer(c + j * growth, growth, bn_size)) for j in range(n)))
            f.add_module(f"denseblock{i + 1}", block)
            c += n * growth
            if i != len(blocks) - 1:
                f.add_module(f"transition{i + 1}", _Transition(c, c // 2))
                c //= 2
        f.add_module("norm5", nn.BatchNorm2d(c))
        self.features = f
        self.num_features = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The 1,024-d embedding: ReLU → global average pool of the last feature map."""
        return F.adaptive_avg_pool2d(F.relu(self.features(x)), 1).flatten(1)


# torchvision < 0.4 (and so CheXNet checkpoints of 2017-2018) named the dense-layer modules "norm.1", "conv.1", ...
_OLD_LAYER_NAME = re.compile(r"\.(norm|relu|conv)\.(\d+)\.")


def modernize_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`...denselayer1.norm.1.weight` → `...denselayer1.norm1.weight`; every other key unchanged."""
    return {_OLD_LAYER_NAME.sub(r".\1\2.", k): v for k, v in state.items()}


def load_features(model: DenseNet121Features, state: dict[str, torch.Tensor], source: str) -> dict[str, object]:
    """Load the `features.*` part of a DenseNet121 state dict (strictly) and describe the rest.

    `state` keys start at `features.` (prefixes such as `module.` / `densenet121.` already removed).
    Returns {"n_classes": classifier outputs or None, "ignored_keys": [...]}.
    """
    state = modernize_keys(state)
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if not feats:
        sample = ", ".join(sorted(state)[:5])
        raise ValueError(f"{source}: no DenseNet121 `features.*` weights found (first keys: {sample})")
    want = model.features.state_dict()
    # checkpoints from torch < 0.4.1 have no BatchNorm num_batches_tracked (unused in eval); fill it
    for k in want:
        if k.endswith("num_batches_tracked") and k not in feats:
            feats[k] = torch.zeros((), dtype=torch.long)
    missing = sorted(set(want) - set(feats))
    unexpected = sorted(set(feats) - set(want))
    if missing or unexpected:
        raise ValueError(f"{source}: not a DenseNet121 checkpoint: missing {missing[:5]}{'...' if len(missing) > 5 else ''}"
                         f", unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    bad = [k for k in want if tuple(want[k].shape) != tuple(feats[k].shape)]
    if bad:
        k = bad[0]
        raise ValueError(f"{source}: weight {k} has shape {tuple(feats[k].shape)}, DenseNet121 wants "
                         f"{tuple(want[k].shape)} ({len(bad)} mismatched tensors)")
    model.features.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in feats.items()},
                                   strict=True)
    cls = [v for k, v in state.items() if k.startswith("classifier") and k.endswith("weight") and v.ndim == 2]
    ignored = sorted(k for k in state if not k.startswith("features."))
    return {"n_classes": int(cls[0].shape[0]) if cls else None, "ignored_keys": ignored}

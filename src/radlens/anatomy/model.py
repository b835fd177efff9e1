"""The anatomy network: a compact U-Net that radlens trains itself (no pretrained weights exist here).

Design for a 2-core CPU: the input is 256x256, but the U-Net runs from 128x128 down (see AnatomyUNet).
Outputs are independent logits per channel (lungs, heart): the lung polygons of the training data include
lung behind the heart, so the two structures may overlap and a softmax over classes would be wrong.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

CHANNELS = ("lungs", "heart")


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(_conv_bn(cin, cout), _conv_bn(cout, cout))


class AnatomyUNet(nn.Module):
    """U-Net that runs at half resolution, with full-resolution input and output through pixel (un)shuffle.

    The 256x256 input is rearranged losslessly into 4 channels at 128x128 (space-to-depth), so every full-resolution
    pixel reaches the network without a convolution at 256x256; the output head predicts each 2x2 block of
    full-resolution logits from 128x128 features (sub-pixel convolution). On a CPU, activations at 256x256 cost more
    in memory traffic than the convolutions themselves, so this keeps boundary precision at a fraction of the time.
    widths[0] is the width at 1/2 resolution; each further entry is one more level (1/4, 1/8, ...).
    """

    def __init__(self, widths: tuple[int, ...] = (16, 24, 48, 96, 128), head: int = 16,
                 n_out: int = len(CHANNELS), dropout: float = 0.1) -> None:
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(2)
        self.stem = _conv_bn(4, widths[0])
        self.enc = nn.ModuleList([nn.Sequential(nn.MaxPool2d(2), _Block(cin, cout))
                                  for cin, cout in zip(widths[:-1], widths[1:])])
        self.drop = nn.Dropout2d(dropout)
        self.dec = nn.ModuleList([_Block(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1)])
        self.head = nn.Sequential(_conv_bn(widths[0] + 4, head), nn.Conv2d(head, 4 * n_out, 1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"AnatomyUNet: input sides must be multiples of 32, got {tuple(x.shape[-2:])}")
        xs = self.unshuffle(x)
        h = self.stem(xs)
        skips = [h]
        for e in self.enc:
            h = e(h)
            skips.append(h)
        h = self.drop(skips.pop())
        for i in range(len(self.dec) - 1, -1, -1):
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = self.dec[i](torch.cat([h, skips[i]], 1))
        return self.head(torch.cat([h, xs], 1))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Inference copy with every Conv2d + BatchNorm2d pair folded into one convolution (eval statistics).

    Fewer passes over the activations, which on a CPU cost as much as the convolutions at these widths; outputs
    equal the unfolded model's to float rounding."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = model.eval()
    for mod in model.modules():
        if isinstance(mod, nn.Sequential):
            names = list(mod._modules)
            for a, b in zip(names[:-1], names[1:]):
                conv, bn = mod._modules[a], mod._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    mod._modules[a] = fuse_conv_bn_eval(conv, bn)
                    mod._modules[b] = nn.Identity()
    return model


def build_model(config: dict[str, Any]) -> AnatomyUNet:
    return AnatomyUNet(tuple(config["widths"]), config.get("head", 16), len(config["channels"]),
                       config.get("dropout", 0.1))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_gflops(model: nn.Module, size: int = 256) -> float:
    """2 x multiply-accumulates of every Conv2d for one image (batch 1)."""
    total = 0

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += 2 * out.numel() * mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups

    hooks = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, size, size))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total / 1e9

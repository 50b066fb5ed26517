"""Architectures of the FashionMNIST reference zoo (torch). Used by ``scripts/train_zoo.py``.

Plain convolutions + batch norm + ReLU + max-pool, flattened into a linear classifier: no depthwise
convolutions (slow on CPU). The small models differ in kernel size, stride, width and depth so their
mistakes differ (complementarity); ``big`` is the accurate, costly baseline; ``MultiExitNet`` follows
the exporter's multi-exit protocol (``segments`` and ``exits`` module lists, exit k reads segment k's output).
"""
from __future__ import annotations

from typing import Callable, Dict, List

import torch
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, pool: bool = False) -> List[nn.Module]:
    layers: List[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
                               nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers


def tiny() -> nn.Module:
    """The cheapest stage-1 model: 8-16-32 channels of 3×3, linear on the 7×7 map (~22k parameters)."""
    return nn.Sequential(*conv_bn(1, 8, pool=True), *conv_bn(8, 16, pool=True), *conv_bn(16, 32),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def stem2() -> nn.Module:
    """A stage 1 shaped for the CPU: two strided layers (5×5 to 14×14, then 3×3 to 7×7), 24-32 channels, linear on
    the 7×7 map (~23k parameters, ~0.9 MFLOPs). No pooling layers and a quarter-size map after the first layer:
    on ONNX Runtime's CPU kernels it costs about 0.6× ``tiny``'s time at a similar accuracy."""
    return nn.Sequential(*conv_bn(1, 24, 5, stride=2), *conv_bn(24, 32, stride=2), nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def wide5() -> nn.Module:
    """Two wide 5×5 layers: a larger receptive field per layer than ``tiny`` (~29k parameters)."""
    return nn.Sequential(*conv_bn(1, 16, 5, pool=True), *conv_bn(16, 32, 5, pool=True),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def stride7() -> nn.Module:
    """A strided 7×7 stem (sees coarse shape first), then 3×3 layers (~56k parameters)."""
    return nn.Sequential(*conv_bn(1, 24, 7, stride=2), *conv_bn(24, 48, pool=True), *conv_bn(48, 48),
                         nn.Flatten(), nn.Linear(48 * 7 * 7, 10))


def mid() -> nn.Module:
    """Three pooled 3×3 layers 24-48-96 (~61k parameters): the stage-2 candidate, distilled from ``big``."""
    return nn.Sequential(*conv_bn(1, 24, pool=True), *conv_bn(24, 48, pool=True), *conv_bn(48, 96, pool=True),
                         nn.Flatten(), nn.Linear(96 * 3 * 3, 10))


def student() -> nn.Module:
    """The stronger stage-2 model: three pooled 3×3 layers 32-64-128 (~104k parameters, ~15 MFLOPs), distilled
    from ``big`` with big's augmentation (flip + 1-px shift); cheap enough to follow ``tiny`` in a cascade."""
    return nn.Sequential(*conv_bn(1, 32, pool=True), *conv_bn(32, 64, pool=True), *conv_bn(64, 128, pool=True),
                         nn.Flatten(), nn.Linear(128 * 3 * 3, 10))


def big() -> nn.Module:
    """The baseline: six 3×3 layers at full, half and quarter resolution (~298k parameters, 1.2 MB)."""
    return nn.Sequential(*conv_bn(1, 32), *conv_bn(32, 32, pool=True), *conv_bn(32, 64), *conv_bn(64, 64, pool=True),
                         *conv_bn(64, 128), *conv_bn(128, 128, pool=True), nn.Flatten(), nn.Dropout(0.2),
                         nn.Linear(128 * 3 * 3, 10))


class MultiExitNet(nn.Module):
    """Three segments with an exit head after each; ``forward`` returns the list of exit logits."""

    def __init__(self) -> None:
        super().__init__()
        self.segments = nn.ModuleList([
            nn.Sequential(*conv_bn(1, 16, pool=True)),                      # 16×14×14
            nn.Sequential(*conv_bn(16, 32, pool=True)),                     # 32×7×7
            nn.Sequential(*conv_bn(32, 64), *conv_bn(64, 64, pool=True)),   # 64×3×3
        ])
        self.exits = nn.ModuleList([
            nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 7 * 7, 10)),
            nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 10)),
            nn.Sequential(nn.Flatten(), nn.Linear(64 * 3 * 3, 10)),
        ])

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:  # type: ignore[override]
        outs = []
        for seg, head in zip(self.segments, self.exits):
            x = seg(x)
            outs.append(head(x))
        return outs


SMALL: Dict[str, Callable[[], nn.Module]] = {"tiny": tiny, "stem2": stem2, "wide5": wide5, "stride7": stride7, "mid": mid}
ALL: Dict[str, Callable[[], nn.Module]] = dict(SMALL, student=student, big=big, multi_exit=MultiExitNet)


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def count_macs(model: nn.Module, shape=(1, 1, 28, 28)) -> int:
    """Multiply-accumulates of one forward pass over Conv2d and Linear layers (FLOPs ≈ 2 × MACs)."""
    total = [0]

    def hook(mod: nn.Module, inp, out) -> None:
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            total[0] += int(out.numel() // out.shape[0]) * k
        elif isinstance(mod, nn.Linear):
            total[0] += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(shape))
    model.train(was)
    for h in handles:
        h.remove()
    return total[0]

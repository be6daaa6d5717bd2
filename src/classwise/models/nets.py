"""Architectures, the model registry and :func:`create_model`.

Every model :func:`create_model` returns is a :class:`NormalizedModel`: ``normalize`` (a
:class:`Normalize` holding the dataset mean/std) followed by ``net`` (the bare classifier). It takes
images in [0, 1] of shape (N, C, H, W) and returns logits (N, K), so attacks work in pixel space and
nothing outside the model knows a mean or std.

Normalization statistics are buffers registered with ``persistent=False``: a state dict holds only
the network's weights (so checkpoints of bare nets from elsewhere load into a wrapped model), and
mean/std travel in the checkpoint's JSON sidecar instead (see :mod:`classwise.models.checkpoint`).

A registry entry is a factory ``f(num_classes, in_channels, input_size, **options) -> nn.Module``
returning the bare net; it raises :class:`ClasswiseError` for sizes the architecture cannot take.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from classwise.data.datasets import DATASETS, Stats, stats_spec
from classwise.errors import ClasswiseError
from classwise.registry import Registry

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")

class _DatasetStats(Mapping[str, Stats]):
    """Dataset name -> ``(mean, std)``: a live view of the dataset specs (:class:`classwise.data.DatasetSpec`
    ``mean``/``std``, their one home), listing the datasets that have statistics."""

    def __getitem__(self, name: str) -> Stats:
        stats = DATASETS.get(name).stats if name in DATASETS else None
        if stats is None:
            raise KeyError(name)
        return stats

    def __iter__(self) -> Iterator[str]:
        return (n for n in DATASETS.names() if DATASETS.get(n).stats is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


DATASET_STATS: Mapping[str, Stats] = _DatasetStats()


def known_dataset_stats(name: str | None, in_channels: int | None = None) -> tuple[list[float], list[float]] | None:
    """``(mean, std)`` of a dataset whose statistics are known (and match ``in_channels``), else None."""
    spec = stats_spec(name)
    stats = spec.stats if spec is not None else None
    if stats is None or (in_channels is not None and len(stats[0]) != in_channels):
        return None
    return list(stats[0]), list(stats[1])


def dataset_stats(name: str | None, in_channels: int | None = None) -> tuple[list[float], list[float]]:
    """``(mean, std)`` for a dataset name; the identity (0, 1) for a dataset registered explicitly without
    statistics. An unknown name, or statistics for another number of channels, is a one-line
    :class:`ClasswiseError` (a model must not silently train without normalization)."""
    spec = stats_spec(name)
    if spec is not None and spec.stats is None:
        c = in_channels or spec.in_channels
        return [0.0] * c, [1.0] * c
    stats = known_dataset_stats(name, in_channels)
    if stats is None:
        what = f"dataset {name!r}" + (f" with {in_channels} channel(s)" if spec is not None else "")
        raise ClasswiseError(f"no known mean/std for {what}; pass mean/std explicitly, or train without "
                             "normalization")
    return stats


# ----------------------------------------------------------------------------------------------
# Wrapper
# ----------------------------------------------------------------------------------------------


def _channel_stats(values: Any, in_channels: int, what: str, default: float) -> torch.Tensor:
    if values is None:
        vals = [default] * in_channels
    else:
        if isinstance(values, torch.Tensor):
            values = values.detach().flatten().tolist()
        elif isinstance(values, (int, float)):
            values = [values]
        try:
            vals = [float(v) for v in values]
        except (TypeError, ValueError):
            raise ClasswiseError(f"{what} must be a list of numbers, got {values!r}") from None
        if len(vals) == 1 and in_channels > 1:
            vals = vals * in_channels
        if len(vals) != in_channels:
            raise ClasswiseError(
                f"{what} has {len(vals)} values but the model has {in_channels} input channels"
            )
    if what == "std" and any(not v > 0 for v in vals):
        raise ClasswiseError(f"std must be positive, got {vals}")
    return torch.tensor(vals, dtype=torch.float32).view(1, -1, 1, 1)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel. mean/std are non-persistent buffers (kept out of state dicts)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.register_buffer("mean", _channel_stats(mean, in_channels, "mean", 0.0), persistent=False)
        self.register_buffer("std", _channel_stats(std, in_channels, "std", 1.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class NormalizedModel(nn.Module):
    """``net(normalize(x))`` for ``x`` in [0, 1]; ``config`` records how :func:`create_model` built it."""

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        in_channels: int = 3,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std, in_channels)
        self.net = net
        self.config: dict[str, Any] = dict(config or {})
        self.config.setdefault("in_channels", in_channels)
        self.config["mean"] = self.normalize.mean.flatten().tolist()
        self.config["std"] = self.normalize.std.flatten().tolist()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def last_linear(model: nn.Module) -> nn.Linear:
    """The classifier layer: the last ``nn.Linear`` in module (registration) order."""
    found = None
    for m in unwrap_model(model).modules():
        if isinstance(m, nn.Linear):
            found = m
    if found is None:
        raise ClasswiseError(
            f"model {type(unwrap_model(model)).__name__} has no nn.Linear layer; "
            "the weight-norm analysis needs a linear classifier as the last layer"
        )
    return found


def _as_size(input_size: int | Sequence[int]) -> int:
    if isinstance(input_size, (list, tuple)):
        if not input_size:
            raise ClasswiseError("input_size must be a positive integer")
        input_size = min(int(s) for s in input_size)
    try:
        size = int(input_size)  # type: ignore[arg-type]  # anything else: the one-line error below
    except (TypeError, ValueError):
        raise ClasswiseError(f"input_size must be a positive integer, got {input_size!r}") from None
    return size


def create_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    input_size: int | Sequence[int] = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **options: Any,
) -> NormalizedModel:
    """Build registered architecture ``name`` wrapped with input normalization.

    ``input_size`` is the image side (an (H, W) pair uses the smaller side). ``mean``/``std``
    default to identity; pass e.g. ``dataset_stats("cifar10")``. ``options`` go to the factory
    (e.g. ``depth=10, widen_factor=1`` for ``wrn-34-10``) and are recorded in ``model.config``.
    """
    factory = MODELS.get(name)
    num_classes, in_channels = int(num_classes), int(in_channels)
    size = _as_size(input_size)
    if num_classes < 1:
        raise ClasswiseError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise ClasswiseError(f"in_channels must be >= 1, got {in_channels}")
    if size < 1:
        raise ClasswiseError(f"input_size must be a positive integer, got {input_size!r}")
    if options:
        params = inspect.signature(factory).parameters
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = [k for k in options if k not in params and not accepts_any]
        if unknown:
            extra = [p for p in params if p not in ("num_classes", "in_channels", "input_size")]
            raise ClasswiseError(
                f"model {name!r} takes no option(s) {', '.join(unknown)}; "
                f"its options are: {', '.join(extra) or 'none'}"
            )
    net = factory(num_classes=num_classes, in_channels=in_channels, input_size=size, **options)
    config = {
        "architecture": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "input_size": size,
    }
    if options:
        config["arch_options"] = dict(options)
    return NormalizedModel(net, mean, std, in_channels, config)


def _require_size(name: str, input_size: int, minimum: int, hint: str = "") -> None:
    if input_size < minimum:
        raise ClasswiseError(
            f"model {name!r} needs input_size >= {minimum}, got {input_size}" + (f"; {hint}" if hint else "")
        )


# ----------------------------------------------------------------------------------------------
# small-cnn
# ----------------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """Two conv blocks (conv3x3-ReLU-conv3x3-ReLU-maxpool) then Linear-ReLU-Linear.

    Inputs of 16 px and up get two 2x2 max-pools and widths (32, 64), hidden 128 (~200k parameters
    at 28x28); smaller inputs (8x8 digits) get one pool and widths (16, 32), hidden 64 (~50k). An
    adaptive average pool to at most 4x4 makes the head independent of the exact input size.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        input_size: int = 28,
        widths: tuple[int, int] | None = None,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        small = input_size < 16
        c1, c2 = widths or ((16, 32) if small else (32, 64))
        hidden = hidden or (64 if small else 128)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c1, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c2, c2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Identity() if small else nn.MaxPool2d(2),
        )
        side = input_size // 2 if small else input_size // 4
        pooled = max(1, min(4, side))
        self.pool = nn.AdaptiveAvgPool2d(pooled)
        self._pooled = (pooled, pooled)
        self.hidden = nn.Linear(c2 * pooled * pooled, hidden)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if x.shape[-2:] != self._pooled:  # an average over 1x1 bins is the identity (bit for bit): skip
            x = self.pool(x)               # it, the CPU kernel costs as much as a convolution here
        return self.fc(F.relu(self.hidden(x.flatten(1)), inplace=True))


@MODELS.register("small-cnn", help="small 4-conv CNN for 8x8 to 32x32 images; trains fast on CPU")
def small_cnn(num_classes: int, in_channels: int = 1, input_size: int = 28) -> nn.Module:
    _require_size("small-cnn", input_size, 4)
    return SmallCNN(num_classes, in_channels, input_size)


# ----------------------------------------------------------------------------------------------
# PreActResNet-18 (He et al. 2016; layout and parameter names as in Rice et al.'s robust
# overfitting code, so its checkpoints load)
# ----------------------------------------------------------------------------------------------


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, 1, stride, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """CIFAR-style pre-activation ResNet; a stride-2 stem for inputs over 64 px, global average pool."""

    def __init__(
        self, num_blocks: Sequence[int], num_classes: int = 10, in_channels: int = 3, input_size: int = 32
    ) -> None:
        super().__init__()
        self.in_planes = 64
        stem_stride = 1 if input_size <= 64 else 2
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stem_stride, 1, bias=False)
        self.layer1 = self._make_layer(64, num_blocks[0], 1)
        self.layer2 = self._make_layer(128, num_blocks[1], 2)
        self.layer3 = self._make_layer(256, num_blocks[2], 2)
        self.layer4 = self._make_layer(512, num_blocks[3], 2)
        self.bn = nn.BatchNorm2d(512 * PreActBlock.expansion)
        self.linear = nn.Linear(512 * PreActBlock.expansion, num_classes)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes * PreActBlock.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        # equal to avg_pool2d(out, 4) of the original at 32x32, and works at any size
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


@MODELS.register("preact-resnet18", help="PreActResNet-18 (Rice et al. robust overfitting); 32x32 and up")
def preact_resnet18(num_classes: int, in_channels: int = 3, input_size: int = 32) -> nn.Module:
    _require_size("preact-resnet18", input_size, 8)
    return PreActResNet([2, 2, 2, 2], num_classes, in_channels, input_size)


# ----------------------------------------------------------------------------------------------
# WideResNet (Zagoruyko & Komodakis; layout and parameter names as in the TRADES / MART /
# robust-overfitting code)
# ----------------------------------------------------------------------------------------------


class WideBasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut: nn.Module | None = (
            None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.equal_in_out:
            x = self.relu1(self.bn1(x))
            out = x
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return (x if self.convShortcut is None else self.convShortcut(x)) + out


class NetworkBlock(nn.Module):
    def __init__(
        self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(
                    in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate
                )
                for i in range(nb_layers)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen_factor; ``depth`` must be 6n+4 (34 -> 5 blocks per group, 10 -> 1)."""

    # TRADES-style checkpoints carry an unused ``sub_block1``; loading drops it.
    checkpoint_ignore_prefixes = ("sub_block1.",)

    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ClasswiseError(
                f"WideResNet depth must be 6n+4 and >= 10 (e.g. 10, 16, 28, 34), got {depth}"
            )
        if widen_factor < 1:
            raise ClasswiseError(f"WideResNet widen_factor must be >= 1, got {widen_factor}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        self.n_channels = ch[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # avg_pool2d(out, 8) at 32x32
        return self.fc(out)


@MODELS.register(
    "wrn-34-10", help="WideResNet-34-10 (TRADES / Madry CIFAR-10 model); options depth, widen_factor"
)
def wide_resnet(
    num_classes: int,
    in_channels: int = 3,
    input_size: int = 32,
    depth: int = 34,
    widen_factor: int = 10,
    drop_rate: float = 0.0,
) -> nn.Module:
    _require_size("wrn-34-10", input_size, 8)
    return WideResNet(int(depth), int(widen_factor), num_classes, in_channels, float(drop_rate))


# ----------------------------------------------------------------------------------------------
# torchvision ResNets (ImageNet stem; weights=None)
# ----------------------------------------------------------------------------------------------


def _torchvision_resnet(arch: str, num_classes: int, in_channels: int, input_size: int) -> nn.Module:
    import torchvision

    _require_size(
        arch,
        input_size,
        32,
        "its ImageNet stem downsamples 32x; use preact-resnet18 or small-cnn for small images",
    )
    net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return net


@MODELS.register("resnet18", help="torchvision ResNet-18 (ImageNet stem), untrained; inputs >= 32 px")
def resnet18(num_classes: int, in_channels: int = 3, input_size: int = 224) -> nn.Module:
    return _torchvision_resnet("resnet18", num_classes, in_channels, input_size)


@MODELS.register("resnet50", help="torchvision ResNet-50 (ImageNet stem), untrained; inputs >= 32 px")
def resnet50(num_classes: int, in_channels: int = 3, input_size: int = 224) -> nn.Module:
    return _torchvision_resnet("resnet50", num_classes, in_channels, input_size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

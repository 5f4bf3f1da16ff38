"""Backbones of the baselines: torchvision ResNet-18/50 with an offline weight loader, a feature
extractor returning the four residual stages, a two-stream variant (appearance + depth or flow) fused
per level, and the feature pyramid network on top.

The weight loader never downloads: ImageNet weights come from the torch hub cache (where
torchvision would have put them), and a missing file gives a one-line error naming the file and the
place to put it. `analysis` imports `resnet` / `load_backbone_weights` to reuse trained backbones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

RESNETS: dict[str, tuple[Callable[..., torchvision.models.ResNet], torchvision.models.WeightsEnum]] = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
}
NORMS = ("bn", "frozen_bn", "gn")

# Output channels of layer1..layer4 (strides 4, 8, 16, 32).
STAGE_CHANNELS = {"resnet18": (64, 128, 256, 512), "resnet50": (256, 512, 1024, 2048)}


class WeightsError(RuntimeError):
    """Backbone weights are missing or do not fit the model; the message names the file."""


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels)


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """The normalisation layer factory for `norm`: 'bn' (trained BatchNorm, SyncBatchNorm under
    multi-GPU DDP), 'frozen_bn' (fixed statistics, the usual choice when fine-tuning ImageNet weights
    with small per-GPU batches) or 'gn' (GroupNorm, for training from scratch with tiny batches)."""
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "gn":
        return _group_norm
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def imagenet_weights_path(name: str) -> Path:
    """Where torchvision keeps the ImageNet weights of `name` in the torch hub cache."""
    _, weights = _resnet_entry(name)
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _resnet_entry(name: str):
    if name not in RESNETS:
        raise ValueError(f"backbone must be one of {sorted(RESNETS)}, got {name!r}")
    return RESNETS[name]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign or truncated files
        raise WeightsError(f"{path}: not a readable torch state dict ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state dict (parameter name -> tensor)")
    return obj


def load_backbone_weights(model: nn.Module, name: str, weights: str | Path | None) -> None:
    """Load `weights` into a torchvision ResNet `model` built by `resnet(name, ...)`: None leaves the
    random initialisation, "imagenet" reads torchvision's ImageNet file from the torch hub cache, any
    other value is the path of a local state dict (a plain one, or one under a 'state_dict'/'model'
    key). The first convolution is adapted when the model takes other than 3 input channels (the RGB
    filters summed for 1 channel, repeated cyclically otherwise), and a missing or different `fc` is
    skipped, so the same file serves depth streams and headless feature extractors."""
    if weights is None:
        return
    if str(weights) == "imagenet":
        path = imagenet_weights_path(name)
        if not path.is_file():
            _, enum = _resnet_entry(name)
            raise WeightsError(
                f"ImageNet weights for {name} are not available offline: download {enum.url} and put it at {path}"
            )
    else:
        path = Path(weights)
    state = dict(_read_state_dict(path))
    if any(isinstance(m, nn.GroupNorm) for m in model.modules()):
        raise WeightsError(f"{path}: BatchNorm weights cannot initialise a GroupNorm backbone (use norm bn or frozen_bn)")
    conv1 = state.get("conv1.weight")
    in_channels = model.conv1.weight.shape[1]
    if conv1 is not None and conv1.shape[1] != in_channels:
        if in_channels == 1:
            state["conv1.weight"] = conv1.sum(dim=1, keepdim=True)
        else:
            idx = torch.arange(in_channels) % conv1.shape[1]
            state["conv1.weight"] = conv1[:, idx] * (conv1.shape[1] / in_channels)
    own = model.state_dict()
    for key in ("fc.weight", "fc.bias"):
        if key in state and (key not in own or own[key].shape != state[key].shape):
            del state[key]
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked") or k in own}
    missing = [k for k in own if k not in state and not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise WeightsError(
            f"{path}: does not fit {name}: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    bad = [k for k, v in state.items() if own[k].shape != v.shape]
    if bad:
        raise WeightsError(f"{path}: shape of {bad[0]} is {tuple(state[bad[0]].shape)}, {name} needs {tuple(own[bad[0]].shape)}")
    model.load_state_dict(state, strict=False)


def resnet(
    name: str, weights: str | Path | None = None, in_channels: int = 3, norm: str = "bn"
) -> torchvision.models.ResNet:
    """A torchvision ResNet ('resnet18' or 'resnet50') taking `in_channels` input channels, with
    `weights` loaded by `load_backbone_weights` (None, "imagenet" or a state-dict path)."""
    builder, _ = _resnet_entry(name)
    model = builder(weights=None, norm_layer=norm_layer(norm))
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    load_backbone_weights(model, name, weights)
    return model


class ResNetFeatures(nn.Module):
    """The four residual stages of a ResNet (strides 4, 8, 16, 32) as a list, without pooling or fc."""

    def __init__(self, net: torchvision.models.ResNet, name: str):
        super().__init__()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.channels: tuple[int, ...] = STAGE_CHANNELS[name]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.stem(x)
        c2 = self.layer1(c1)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]


#: How the per-stage fusion starts: kaiming (a random projection of both streams) or appearance (the
#: identity on the appearance half and zero on the second stream's, so a head trained on the appearance
#: pyramid reads the same features when it first sees the fused one, and the second stream's part grows
#: from zero).
FUSE_INITS = ("kaiming", "appearance")


class TwoStreamBackbone(nn.Module):
    """Appearance and a second modality (depth: 1 channel, colour-coded flow: 3) through two ResNets;
    at each stage the two feature maps are concatenated and projected back to the appearance width by
    a 1x1 convolution (the VCA papers' per-level fusion). The streams stay separate: fusion outputs
    feed the pyramid, not the next stage."""

    def __init__(self, name: str, weights: str | Path | None = None, second_channels: int = 1, norm: str = "bn",
                 fuse_init: str = "kaiming"):
        super().__init__()
        self.appearance = ResNetFeatures(resnet(name, weights, 3, norm), name)
        self.second = ResNetFeatures(resnet(name, weights, second_channels, norm), name)
        self.channels = self.appearance.channels
        self.fuse = nn.ModuleList(nn.Conv2d(2 * c, c, kernel_size=1) for c in self.channels)
        self.init_fuse(fuse_init)

    def init_fuse(self, mode: str) -> None:
        """(Re)initialise the fusion convolutions (FUSE_INITS)."""
        if mode not in FUSE_INITS:
            raise ValueError(f"fuse_init must be one of {FUSE_INITS}, got {mode!r}")
        for conv, c in zip(self.fuse, self.channels, strict=True):
            nn.init.zeros_(conv.bias)
            if mode == "kaiming":
                nn.init.kaiming_uniform_(conv.weight, a=1)
            else:  # 'appearance': the fused map starts as the appearance map, the second stream's part at zero
                with torch.no_grad():
                    conv.weight.zero_()
                    conv.weight[:, :c, 0, 0] = torch.eye(c)

    def forward(self, image: torch.Tensor, second: torch.Tensor) -> list[torch.Tensor]:
        return self.streams(image, second)[0]

    def streams(self, image: torch.Tensor, second: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(fused stages, appearance stages): VCANet's panoptic heads read the appearance stream alone,
        its class-agnostic head the fused one (the authors' TwoStreamResNet returns both)."""
        if image.shape[-2:] != second.shape[-2:]:
            raise ValueError(f"appearance {tuple(image.shape)} and second stream {tuple(second.shape)} differ in size")
        appearance = self.appearance(image)
        fused = [fuse(torch.cat([a, b], dim=1)) for fuse, a, b in zip(self.fuse, appearance, self.second(second),
                                                                       strict=True)]
        return fused, appearance


class FPN(nn.Module):
    """torchvision's feature pyramid over the four stages: P2..P5 (out_channels each), plus P6 by
    max-pooling P5 when `extra_level` (the 5 levels of SOLO-style heads)."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int = 256, extra_level: bool = False):
        super().__init__()
        self.fpn = FeaturePyramidNetwork(
            list(in_channels), out_channels, extra_blocks=LastLevelMaxPool() if extra_level else None
        )
        self.out_channels = out_channels

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        out = self.fpn(OrderedDict((f"c{i + 2}", f) for i, f in enumerate(features)))
        return list(out.values())


def merge_levels(levels: list[torch.Tensor]) -> torch.Tensor:
    """Sum pyramid levels after upsampling each to the finest level's size (stride 4 for P2)."""
    size = levels[0].shape[-2:]
    merged = levels[0]
    for level in levels[1:]:
        merged = merged + F.interpolate(level, size=size, mode="bilinear", align_corners=False)
    return merged


SECOND_STREAMS = {"depth": 1, None: 0}


class DenseFeatures(nn.Module):
    """The dense baselines' shared body: a ResNet on RGB, or a two-stream ResNet on RGB + depth when
    `second_stream` is 'depth' (metres clamped at `depth_max` and mapped to [0, 1], so the far values
    and the sky saturate instead of dominating the stream's scale), and an FPN over its four stages.
    `forward(batch) -> (stages C2..C5, pyramid P2..P5)`."""

    def __init__(self, backbone: str = "resnet50", weights: str | Path | None = None, norm: str = "frozen_bn",
                 second_stream: str | None = "depth", depth_max: float = 100.0, fpn_channels: int = 256):
        super().__init__()
        if second_stream not in SECOND_STREAMS:
            raise ValueError(f"second_stream must be 'depth' or None, got {second_stream!r}")
        if depth_max <= 0:
            raise ValueError(f"depth_max must be positive, got {depth_max}")
        self.second_stream = second_stream
        self.depth_max = float(depth_max)
        if second_stream is None:
            self.backbone = ResNetFeatures(resnet(backbone, weights, 3, norm), backbone)
        else:
            self.backbone = TwoStreamBackbone(backbone, weights, SECOND_STREAMS[second_stream], norm)
        self.fpn = FPN(self.backbone.channels, fpn_channels)

    @property
    def input_keys(self) -> tuple[str, ...]:
        return ("image",) if self.second_stream is None else ("image", self.second_stream)

    def forward(self, batch: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        image = batch["image"]
        if self.second_stream is None:
            stages = self.backbone(image)
        else:
            if self.second_stream not in batch:
                raise KeyError(f"the model takes a {self.second_stream!r} input and the batch has none")
            depth = batch["depth"].clamp(0, self.depth_max) / self.depth_max
            stages = self.backbone(image, depth)
        return stages, self.fpn(stages)


def validate_body(m: dict, source: str) -> None:
    """Checks of the DenseFeatures keys of a config's model section (backbone, norm, second stream,
    depth_max, fpn_channels)."""
    from baselines.spec import ConfigError

    if m["backbone"] not in RESNETS:
        raise ConfigError(f"{source}: model.backbone must be one of {sorted(RESNETS)}, got {m['backbone']!r}")
    if m["norm"] not in NORMS:
        raise ConfigError(f"{source}: model.norm must be one of {', '.join(NORMS)}, got {m['norm']!r}")
    if m["second_stream"] not in SECOND_STREAMS:
        raise ConfigError(f"{source}: model.second_stream must be depth or null, got {m['second_stream']!r}")
    if m["depth_max"] <= 0 or m["fpn_channels"] < 1:
        raise ConfigError(f"{source}: model.depth_max must be positive and model.fpn_channels at least 1")

"""Backbone registry: CNNs cut before global pooling, returning ``[B, C, h, w]``.

``create_backbone(name)`` is what :func:`dgml_viz.model.create_model`, the CLI's
choices and the app's dropdown read. Each entry records its output channels and
stride so heads can be sized without a dummy forward pass.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.error import URLError

import torch
from torch import Tensor, nn

from dgml_viz.errors import ConfigError, DgmlVizError
from dgml_viz.model.timm_backbone import TIMM_PREFIX, create_timm_backbone, timm_info

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    """What a registered backbone is: its factory, output channels and stride."""

    name: str
    factory: Callable[..., nn.Module]
    channels: int | Callable[..., int]
    stride: int
    description: str

    def out_channels(self, **kwargs: Any) -> int:
        return self.channels(**kwargs) if callable(self.channels) else self.channels


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(
    name: str, channels: int | Callable[..., int], stride: int, description: str
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a backbone factory ``f(pretrained: bool, **kw) -> nn.Module``."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = BackboneSpec(name, factory, channels, stride, description)
        return factory

    return wrap


def list_backbones() -> list[str]:
    """Names of the registered backbones, then suggested ``timm:<name>`` ones (any timm name works)."""
    from dgml_viz.model.timm_backbone import SUGGESTED_TIMM_BACKBONES

    return sorted(_REGISTRY) + list(SUGGESTED_TIMM_BACKBONES)


def backbone_spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` registered under ``name`` (ConfigError if unknown)."""
    from dgml_viz.errors import ConfigError

    if name.startswith(TIMM_PREFIX):
        return _timm_spec(name)
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())} "
                          f"(or any {TIMM_PREFIX}<timm model name>)")
    return _REGISTRY[name]


def create_backbone(name: str, pretrained: bool = False, **kwargs: Any) -> tuple[nn.Module, int]:
    """Build backbone ``name``; returns ``(module, out_channels)``."""
    spec = backbone_spec(name)
    return spec.factory(pretrained=pretrained, **kwargs), spec.out_channels(**kwargs)


def load_pretrained_state(weights: Any) -> dict[str, Tensor]:
    """State dict of a torchvision weight enum, through torch hub's normal cache.

    Raises a one-line :class:`DgmlVizError` saying where to put the file when it
    cannot be downloaded (no network) or the cached file is unreadable.
    """
    url = weights.url
    target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    try:
        return weights.get_state_dict(progress=False)
    except (URLError, OSError, RuntimeError, ValueError) as exc:
        raise DgmlVizError(
            f"cannot get pretrained weights {weights} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
            f"download {url} and place it at {target}"
        ) from None


# --------------------------------------------------------------------------- ResNets
def _resnet(arch: str, pretrained: bool) -> nn.Module:
    import torchvision.models as tvm

    weights = tvm.get_model_weights(arch).DEFAULT if pretrained else None
    net = getattr(tvm, arch)(weights=None)
    if weights is not None:
        net.load_state_dict(load_pretrained_state(weights))
    # Children in torchvision order (conv1, bn1, relu, maxpool, layer1..4) so that
    # reference checkpoints (``model.0.<i>.*``) map index-for-index.
    return nn.Sequential(
        net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
    )


@register_backbone("resnet18", channels=512, stride=32, description="torchvision ResNet-18, layer4")
def resnet18(pretrained: bool = False) -> nn.Module:
    return _resnet("resnet18", pretrained)


@register_backbone("resnet50", channels=2048, stride=32, description="torchvision ResNet-50, layer4")
def resnet50(pretrained: bool = False) -> nn.Module:
    return _resnet("resnet50", pretrained)


# --------------------------------------------------------------------------- GoogLeNet
class _GoogLeNetTrunk(nn.Module):
    """torchvision GoogLeNet up to ``inception5b`` (``[B, 1024, h, w]``, stride 32)."""

    def __init__(self, pretrained: bool) -> None:
        super().__init__()
        import torchvision.models as tvm

        net = tvm.googlenet(weights=None, aux_logits=False, init_weights=not pretrained)
        if pretrained:
            state = load_pretrained_state(tvm.GoogLeNet_Weights.DEFAULT)
            net.load_state_dict({k: v for k, v in state.items() if not k.startswith("aux")})
        # ImageNet weights expect torchvision's input re-scaling; only apply it then.
        self.transform_input = pretrained
        names = ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b",
                 "maxpool3", "inception4a", "inception4b", "inception4c", "inception4d",
                 "inception4e", "maxpool4", "inception5a", "inception5b"]
        self.body = nn.Sequential(*[getattr(net, n) for n in names])

    def forward(self, x: Tensor) -> Tensor:
        if self.transform_input:
            scale = x.new_tensor([0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5]).view(1, 3, 1, 1)
            shift = x.new_tensor([(0.485 - 0.5) / 0.5, (0.456 - 0.5) / 0.5, (0.406 - 0.5) / 0.5])
            x = x * scale + shift.view(1, 3, 1, 1)
        return self.body(x)


@register_backbone("googlenet", channels=1024, stride=32, description="torchvision GoogLeNet, inception5b")
def googlenet(pretrained: bool = False) -> nn.Module:
    return _GoogLeNetTrunk(pretrained)


@register_backbone("bninception", channels=1024, stride=32,
                   description="BN-Inception trunk in Cadene's key layout, inception_5b (reference imports)")
def bninception(pretrained: bool = False) -> nn.Module:
    from dgml_viz.model.bninception import BNInception

    if pretrained:
        raise DgmlVizError("bninception has no downloadable weights here; import them with `dgml-viz convert`")
    return BNInception()


# --------------------------------------------------------------------------- small CNN
#: (kernel, stride) of every conv of :func:`small_cnn`, in order.
SMALL_CNN_LAYERS: tuple[tuple[int, int], ...] = ((3, 2), (3, 1), (3, 2), (3, 1), (3, 2), (3, 1))


def receptive_field(layers: tuple[tuple[int, int], ...] = SMALL_CNN_LAYERS) -> tuple[int, int]:
    """Receptive field (pixels) and stride of a chain of ``(kernel, stride)`` convs.

    >>> receptive_field()
    (43, 8)
    """
    rf, jump = 1, 1
    for k, s in layers:
        rf += (k - 1) * jump
        jump *= s
    return rf, jump


def _conv_bn(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_backbone(
    "small_cnn",
    channels=lambda width=32: 4 * width,
    stride=8,
    description="6-conv CPU demo CNN: stride 8, receptive field 43 px, 4*width channels",
)
def small_cnn(pretrained: bool = False, width: int = 32) -> nn.Module:
    """A small CNN for CPU demos: six 3x3 conv-BN-ReLU, stride 8.

    Receptive field 43 px (see :func:`receptive_field`), so at 96-128 px input each
    feature position sees a local patch, which is what lets attention localise parts.
    Output ``[B, 4*width, H/8, W/8]``.
    """
    if pretrained:
        raise DgmlVizError("small_cnn has no pretrained weights; train it with `dgml-viz train`")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ConfigError(f"small_cnn width must be an integer >= 1, got {width!r}")
    widths = [width, width, 2 * width, 2 * width, 4 * width, 4 * width]
    layers: list[nn.Module] = []
    cin = 3
    for cout, (_, stride) in zip(widths, SMALL_CNN_LAYERS):
        layers += _conv_bn(cin, cout, stride)
        cin = cout
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- timm
def _timm_spec(name: str) -> BackboneSpec:
    """Spec of ``timm:<model name>`` (see :mod:`dgml_viz.model.timm_backbone`); stride at default kwargs."""
    model_name = name[len(TIMM_PREFIX):]
    info = timm_info(model_name)  # ConfigError for unknown names
    kind = "patch-token grid" if info.tokens else "last feature stage"
    return BackboneSpec(
        name, functools.partial(create_timm_backbone, model_name),
        lambda **kw: timm_info(model_name, **kw).channels, info.stride,
        f"timm {model_name}, {kind} ({info.channels} ch, stride {info.stride} at default kwargs)")

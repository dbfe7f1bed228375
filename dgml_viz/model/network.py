"""The grouping network: backbone feature map + grouping head, and its factory."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from dgml_viz.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from dgml_viz.model.backbones import create_backbone
from dgml_viz.model.config import ModelConfig
from dgml_viz.model.heads import head_class, spatial_maps
from dgml_viz.model.output import GroupOutput


def default_transform(size: int = 224, resize: int = 256) -> dict[str, Any]:
    """The reference eval transform: resize shorter side to 256, center crop 224."""
    return {"size": size, "resize": resize, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "mode": "center_crop"}


class GroupingNet(nn.Module):
    """Backbone + grouping head.

    ``model(images)`` maps ``[B, 3, H, W]`` to a :class:`GroupOutput`;
    ``model.features(images)`` gives the backbone map ``[B, C, h, w]`` and
    ``model.head(features)`` the head's output on a (possibly edited) map, so
    tools can act on the feature map (invariance checks, attributions).

    ``transform`` (set by :func:`~dgml_viz.model.checkpoint.load_checkpoint` or
    the trainer) describes the eval preprocessing this model expects.
    """

    def __init__(self, config: ModelConfig, pretrained: bool = False) -> None:
        super().__init__()
        self.config = config
        self.backbone, channels = create_backbone(config.backbone, pretrained=pretrained,
                                                  **config.backbone_kwargs)
        self.head = head_class(config.head)(channels, groups=config.groups, dim=config.dim,
                                            reduction=config.reduction)
        self.feature_channels = channels
        # a backbone may declare its own eval preprocessing (timm: from its pretrained config)
        self.transform: dict[str, Any] = dict(getattr(self.backbone, "eval_transform", None) or default_transform())
        if config.freeze_bn:
            for m in self._backbone_norms():
                for p in m.parameters():
                    p.requires_grad_(False)

    def _backbone_norms(self) -> list[nn.Module]:
        return [m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    @property
    def spatial_maps(self) -> str | None:
        """What ``GroupOutput.attention`` holds for this model's head: "softmax", "mask" or None."""
        return spatial_maps(self.head)

    @property
    def num_groups(self) -> int:
        """K."""
        return int(self.head.num_groups)

    @property
    def group_dim(self) -> int:
        """d, the width of each group embedding."""
        return int(self.head.group_dim)

    @property
    def embedding_dim(self) -> int:
        """K * d."""
        return self.num_groups * self.group_dim

    def train(self, mode: bool = True) -> "GroupingNet":
        """As :meth:`nn.Module.train`, but frozen backbone BatchNorm stays in eval mode."""
        super().train(mode)
        if self.config.freeze_bn:
            for m in self._backbone_norms():
                m.eval()
        return self

    def features(self, images: Tensor) -> Tensor:
        """Backbone feature map: ``[B, 3, H, W] -> [B, C, h, w]``."""
        return self.backbone(images)

    def forward(self, images: Tensor) -> GroupOutput:
        """``[B, 3, H, W] -> GroupOutput``."""
        return self.head(self.features(images))


def create_model(
    backbone: str = "resnet50",
    groups: int = 3,
    dim: int = 512,
    head: str = "attentive",
    reduction: int = 8,
    pretrained: bool = False,
    freeze_bn: bool = False,
    **backbone_kwargs: Any,
) -> GroupingNet:
    """Build a grouping model (timm-style factory; see :func:`list_backbones`, :func:`list_heads`).

    Example:
        >>> import torch
        >>> m = create_model("small_cnn", groups=3, dim=48)
        >>> m(torch.randn(1, 3, 64, 64)).groups.shape
        torch.Size([1, 3, 16])
    """
    config = ModelConfig(backbone=backbone, head=head, groups=groups, dim=dim, reduction=reduction,
                         freeze_bn=freeze_bn, backbone_kwargs=dict(backbone_kwargs))
    return GroupingNet(config, pretrained=pretrained)


def model_from_config(config: ModelConfig | dict[str, Any], pretrained: bool = False) -> GroupingNet:
    """Rebuild a model from a :class:`ModelConfig` (or its dict form)."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return GroupingNet(config, pretrained=pretrained)

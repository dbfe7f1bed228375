"""Plain description of a model: enough to rebuild it from a checkpoint."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dgml_viz.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a :class:`~dgml_viz.model.network.GroupingNet`.

    ``dim`` is the full embedding budget; each of the ``groups`` (K) groups gets
    ``dim // K`` dimensions (DESIGN.md: 512 // 3 = 170).
    """

    backbone: str = field(default="resnet50", metadata={"doc": "backbone registry name (resnet50, googlenet, "
                                                                "small_cnn, timm:<name>, ...)"})
    head: str = field(default="attentive", metadata={"doc": "grouping head (attentive or a baseline: gap, "
                                                             "multi_linear, gate, channel, ...)"})
    groups: int = field(default=3, metadata={"doc": "number of groups K"})
    dim: int = field(default=512, metadata={"doc": "full embedding size; each group gets dim // K"})
    reduction: int = field(default=8, metadata={"doc": "key width = backbone channels // reduction (r)"})
    freeze_bn: bool = field(default=False, metadata={"doc": "keep the backbone's BatchNorm layers in eval mode"})
    backbone_kwargs: dict[str, Any] = field(default_factory=dict, metadata={
        "doc": "extra backbone arguments (free-form plain values, e.g. small_cnn width)"})

    def __post_init__(self) -> None:
        from dgml_viz.validation import check_model_fields

        check_model_fields(self.backbone, self.head, self.groups, self.dim, self.reduction, self.freeze_bn,
                           self.backbone_kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config key(s): {', '.join(unknown)}")
        if not isinstance(data, dict):
            raise ConfigError(f"model config must be a mapping, got {type(data).__name__}")
        return cls(**data)

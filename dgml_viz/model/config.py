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

    backbone: str = "resnet50"
    head: str = "attentive"
    groups: int = 3
    dim: int = 512
    reduction: int = 8
    freeze_bn: bool = False
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)

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

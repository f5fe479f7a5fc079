"""The classifier's head: a cosine classifier whose class weights are directions (CosFace)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CosineHead(nn.Module):
    """Normalised linear classifier: logits = scale * cos(z, w_c), minus ``margin`` on the true
    class while training (CosFace). Suited to few images per person: every class weight is a
    direction, so a person with 4 photos is not dwarfed by one with 400."""

    def __init__(self, dim: int, num_classes: int, scale: float = 16.0, margin: float = 0.1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * (1.0 / math.sqrt(dim)))
        self.scale = float(scale)
        self.margin = float(margin)

    def cosine(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=1) @ F.normalize(self.weight, dim=1).T

    def forward(self, z: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(z)
        if target is not None and self.margin:
            cos = cos - self.margin * F.one_hot(target, cos.shape[1]).to(cos.dtype)
        return self.scale * cos

    @torch.no_grad()
    def imprint(self, prototypes: torch.Tensor) -> None:
        """Initialise each class weight at its prototype (weight imprinting)."""
        self.weight.copy_(F.normalize(prototypes.to(self.weight), dim=1))

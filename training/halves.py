"""Which half of an independent photo source a photo belongs to: development (may be looked at, fitted
and chosen on) or held (only reported on). Fixed by the source's name alone, so every tool agrees.

- `other_photos/`: by file name (one ImageNet class per file);
- the package photos of `training.non_flowers.package_recipes`: by source, so a photo's crops stay
  with it (`coffee-crop3` belongs where `coffee` does).
"""

from __future__ import annotations

import hashlib
from typing import Literal

Half = Literal["held", "dev"]


def half_of(name: str) -> Half:
    return "held" if int(hashlib.sha256(name.encode()).hexdigest(), 16) % 2 else "dev"


def package_source(kind: str) -> str:
    """A package recipe's source: the photo its crops were cut from (`coffee-crop3` → `coffee`)."""
    return kind.split("-crop")[0]

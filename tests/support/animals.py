"""Four broad animal categories of real ImageNet photos (`$PHOTOBOT_DATASETS/other_photos`), as the
teaching benchmark (`benchmarks.teach`) uses them."""

from __future__ import annotations

from benchmarks.teach import ANIMALS, animal_photos, other_photos_of_none

__all__ = ["ANIMALS", "animal_photos", "other_photos_of_none"]

"""What a retrain job is told: where the bot's data lives and the limits it keeps.

The composition root (`photobot.wiring.retrain_settings`) builds it from photobot's `Settings`; training
never reads the environment or imports photobot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inference.model_store import ModelStore
from training.chat_examples import ChatRules


@dataclass(frozen=True)
class RetrainSettings:
    data_dir: Path  # the bot's data: reports/ and cache/ are written under it, datasets/ looked for in it
    # The bot's database, a SQLite file or a postgresql:// URL: the job's row, the labelled photos.
    database_path: Path | str
    images_dir: Path  # the stored chat photos
    models_dir: Path  # the model store: the serving version, and the candidate written beside it
    datasets: tuple[Path, ...]  # folders searched for mnist.npz and flower_photos/
    max_image_bytes: int  # a chat photo is read with the bot's own limits
    max_image_pixels: int
    rules: ChatRules  # what may be taken from chat, so one account cannot be most of it
    min_new_labels: int  # fewer new labelled photos since the last promotion: nothing to do (unless forced)
    gate_margin: float  # accuracy points a candidate may lose on the base test set

    def model_store(self) -> ModelStore:
        """The bot's model store: its folders, or versions shared through the database when it is
        PostgreSQL (as `photobot.serving.model_store` builds it for the bot)."""
        from storage.model_registry import registry_for  # psycopg only where it is used

        return ModelStore(self.models_dir, registry=registry_for(self.database_path))

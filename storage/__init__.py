"""The database (a SQLite file, or PostgreSQL) and the content-addressed image store: users, photos,
predictions, feedback, caption labels, retraining jobs, model events, and the labelled data set they add
up to. A `database` is a path or a `postgresql://` URL (`storage.connect.open_database`).

- The bot: `store = await Store.open(settings.database, settings.images_dir)`, then
  `add_photo` / `record_prediction` (or both at once: `record_photo_prediction`), `record_feedback`,
  `record_contribution`, `chat_mode`, `user_stats`, `global_stats`, `forget`, the retrain-job and
  model-event calls; `await store.close()` at shutdown. Every write is durable when it returns.
- A job or command in another process: `SyncStore(database, images_dir)` (jobs, model events, the
  labelled set) or `read_labelled_set(database, images_dir, model)`; `cap_per_contributor` for caps.

`storage` imports nothing of ours: modes, statuses, verdicts and labels are plain strings.
"""

from storage.database import RecordedPrediction, Store
from storage.errors import (
    DatabaseUnavailable,
    JobAlreadyActive,
    NotPredictionOwner,
    PredictionNotFound,
    SchemaTooNew,
    StorageError,
)
from storage.images import ImageStore
from storage.labelled import (
    LabelledExample,
    LabelledSet,
    cap_per_contributor,
    export_labelled_set,
    read_labelled_set,
    split_of,
)
from storage.records import NEGATIVE_LABELS, NOT_A_DIGIT, NOT_A_FLOWER, negative_label
from storage.sync import SyncStore

__all__ = [
    "NEGATIVE_LABELS",
    "NOT_A_DIGIT",
    "NOT_A_FLOWER",
    "DatabaseUnavailable",
    "ImageStore",
    "JobAlreadyActive",
    "LabelledExample",
    "LabelledSet",
    "NotPredictionOwner",
    "PredictionNotFound",
    "RecordedPrediction",
    "SchemaTooNew",
    "StorageError",
    "Store",
    "SyncStore",
    "cap_per_contributor",
    "export_labelled_set",
    "negative_label",
    "read_labelled_set",
    "split_of",
]

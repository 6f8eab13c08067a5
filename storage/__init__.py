"""SQLite (aiosqlite) and the content-addressed image store: users, photos, predictions, feedback,
caption labels, retraining jobs, model events, and the labelled data set they add up to.

`storage` imports nothing of ours: modes, statuses, verdicts and labels are plain strings.
"""

from storage.database import RecordedPrediction, Store
from storage.errors import (
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
from storage.records import NEGATIVE_LABELS, NOT_A_DIGIT, NOT_A_FLOWER
from storage.sync import SyncStore

__all__ = [
    "NEGATIVE_LABELS",
    "NOT_A_DIGIT",
    "NOT_A_FLOWER",
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
    "read_labelled_set",
    "split_of",
]

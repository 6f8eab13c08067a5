"""The SQL itself: plain functions over a `storage.dialect.Connection` (SQLite or PostgreSQL), parameterised,
one job each.

Write functions run inside a transaction opened by their caller (`Store`'s group commit or
`SyncStore`), so several of them commit together or not at all; they never commit themselves.
Read functions run anywhere. The async `Store` and the synchronous `SyncStore` both call these, so
the bot and a job process can never disagree about what a row means.

The statements live in `storage.queries`, one module per subject: `people` (users, chats, statistics,
forgetting a user), `photos` (photos, predictions, feedback, contributions, number corrections) and
`jobs` (retraining jobs, model events). This module gathers them, so callers say `sql.get_job(...)`.
"""

from __future__ import annotations

from storage.queries.jobs import (
    active_job,
    active_jobs,
    claim_report,
    create_job,
    fail_jobs,
    finish_job,
    get_job,
    mark_reported,
    model_events,
    recent_jobs,
    record_model_event,
    set_job_message,
    start_job,
    unreported_jobs,
    unwatch_jobs,
    update_job,
    watch_job,
)
from storage.queries.people import (
    blocked_users,
    chat_mode,
    claim_image_deletion,
    forget_user,
    forgotten_after,
    get_user,
    global_stats,
    pending_image_deletions,
    set_blocked,
    set_chat_mode,
    touch_user,
    user_photo_count,
    user_photo_hashes,
    user_stats,
)
from storage.queries.photos import (
    Probabilities,
    ask_for_number,
    drop_pending_correction,
    get_feedback,
    get_photo,
    get_prediction,
    insert_photo,
    pending_correction,
    record_contribution,
    record_feedback,
    record_prediction,
    user_predictions,
    withdraw_contribution,
)

__all__ = [
    "Probabilities",
    "active_job",
    "active_jobs",
    "ask_for_number",
    "blocked_users",
    "chat_mode",
    "claim_image_deletion",
    "claim_report",
    "create_job",
    "drop_pending_correction",
    "fail_jobs",
    "finish_job",
    "forget_user",
    "forgotten_after",
    "get_feedback",
    "get_job",
    "get_photo",
    "get_prediction",
    "get_user",
    "global_stats",
    "insert_photo",
    "mark_reported",
    "model_events",
    "pending_correction",
    "pending_image_deletions",
    "recent_jobs",
    "record_contribution",
    "record_feedback",
    "record_model_event",
    "record_prediction",
    "set_blocked",
    "set_chat_mode",
    "set_job_message",
    "start_job",
    "touch_user",
    "unreported_jobs",
    "unwatch_jobs",
    "update_job",
    "user_photo_count",
    "user_photo_hashes",
    "user_predictions",
    "user_stats",
    "watch_job",
    "withdraw_contribution",
]

"""What handlers need, in one object kept in `application.bot_data` (never in module globals).

Nothing a later update needs is kept here but caches of the database that are checked at every update
(the taught models, `follow_changes`): several bot processes may share the database, and any of them
may take the next update (docs/architecture.md, "State between updates").
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from telegram import CallbackQuery, Message, Update
from telegram.error import BadRequest
from telegram.ext import ContextTypes

from bot.limits import FloodLimiter
from bot.metrics import BotMetrics
from bot.texts import language
from inference.catalogue import DEFAULT_CATALOGUE, Catalogue
from inference.taught import Taught, is_taught, with_added_labels, with_taught
from storage import taught

if TYPE_CHECKING:
    from bot.config import BotConfig, RetrainConfig
    from inference.model_store import ModelStore
    from inference.photo_classifier import PhotoClassifier
    from storage.database import Store
    from storage.images import ImageStore


class PhotoFeatures(Protocol):
    """Computes a taught photo's backbone features when it arrives (training.taught_features)."""

    def note(self, sha256: str, path: Path) -> None: ...

    async def drain(self) -> None: ...

    async def close(self) -> None: ...


KEY = "services"
# What one lock guards: ("prediction", id), ("user", id), ("rollback", model name).
LockKey = tuple[str, int | str]


@dataclass
class Services:
    config: BotConfig
    retrain: RetrainConfig
    classifier: PhotoClassifier  # in this process, or the inference service (INFERENCE_URL)
    store: Store
    images: ImageStore
    model_store: ModelStore
    photo_limiter: FloodLimiter  # USER_PHOTOS_PER_MINUTE
    update_limiter: FloodLimiter  # USER_UPDATES_PER_MINUTE
    # The models this bot serves, with each one's labels as its serving version names them.
    catalogue: Catalogue = DEFAULT_CATALOGUE
    features: PhotoFeatures | None = None  # a taught photo's features, cached when it arrives
    metrics: BotMetrics = field(default_factory=BotMetrics)  # records nothing unless METRICS_PORT is set
    # What the composition root started with the services (the metrics endpoint), closed first with them.
    closing: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _taught_version: int | None = None  # the taught models' change counter the catalogue follows
    _refreshing: asyncio.Lock = field(default_factory=asyncio.Lock)
    _locks: weakref.WeakValueDictionary[LockKey, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )

    def lock(self, key: LockKey) -> asyncio.Lock:
        """One lock per key (a prediction, a user), alive while someone holds or waits on it.

        asyncio.Lock wakes waiters in arrival order, so taps on one prediction are handled in order
        even though updates are processed concurrently.
        """
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def chat_mode(self, chat_id: int) -> str:
        """The chat's mode, read from the database for every photo: another bot process may have set it."""
        return await self.store.chat_mode(chat_id)

    async def set_chat_mode(self, chat_id: int, mode: str) -> None:
        await self.store.set_chat_mode(chat_id, mode)

    async def follow_changes(self) -> None:
        """Catch up with the taught models if any bot process changed them since we last looked (one
        read of their change counter; the models themselves only when it moved, once however many
        updates saw it move at the same time)."""
        version = await self.store.change_version(taught.CHANGES)
        if self._taught_version is None or version > self._taught_version:
            async with self._refreshing:
                if self._taught_version is None or version > self._taught_version:
                    await self._refresh_taught()

    async def refresh_taught(self) -> None:
        """Merge the taught models of the database into the catalogue, and serve the new ones, at the
        start, after every /newmodel, /addlabel, /dellabel and /delmodel, and when another process made
        one (`follow_changes`)."""
        async with self._refreshing:  # one at a time: updates catch up concurrently
            await self._refresh_taught()

    async def _refresh_taught(self) -> None:
        # The counter before the rows: a change in between is caught up with at the next update.
        version = await self.store.change_version(taught.CHANGES)
        rows = await self.store.taught_models()
        live = {row.name: row for row in rows}
        for spec in list(self.catalogue):
            if is_taught(spec) and spec.name not in live:
                await self.classifier.remove_model(spec.name)
        catalogue = Catalogue(spec for spec in self.catalogue if not is_taught(spec))
        self.catalogue = with_taught(
            catalogue,
            (Taught(row.name, [(label.name, label.display) for label in row.labels]) for row in rows),
        )
        added = await self.store.added_labels()  # to the flowers (`/addlabel flowers lavender`)
        self.catalogue = with_added_labels(self.catalogue, ((a.model, a.label, a.removed) for a in added))
        for name in live:
            if name in self.catalogue:
                await self.classifier.add_model(self.catalogue[name])
        self._taught_version = version

    def refresh_labels(self) -> None:
        """Take each model's labels from its serving version's meta.json (the catalogue's otherwise).

        A taught model keeps the database's labels: a label just added must be accepted in captions
        before any version knows it."""
        for name in self.catalogue.names:
            if is_taught(self.catalogue[name]):
                continue
            try:
                version = self.model_store.active(name)
            except Exception:  # an unreadable meta.json must not stop the bot; the catalogue's serve
                version = None
            if version is not None and version.labels:
                self.catalogue = self.catalogue.with_labels(name, version.labels)

    def answering(self, name: str) -> tuple[str, ...]:
        """The labels model `name` answers with now: its serving version's, which a taught model's
        /addlabel and /dellabel change only at its next retrain; the catalogue's when none serves."""
        status = self.classifier.models().get(name)
        if status is not None and status.version is not None and status.labels:
            return status.labels
        spec = self.catalogue.get(name)
        return spec.label_names if spec else ()

    def is_admin(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.config.admin_ids


def services(context: ContextTypes.DEFAULT_TYPE) -> Services:
    return context.application.bot_data[KEY]


def lang(update: Update) -> str:
    user = update.effective_user
    return language(user.language_code if user else None)


def accessible_message(query: CallbackQuery) -> Message | None:
    """The message under a pressed button, if the bot may still read and edit it (Telegram sends an
    inaccessible one, with date 0, when it is too old)."""
    message = query.message
    return message if isinstance(message, Message) and message.is_accessible else None


async def edit_pressed_message(query: CallbackQuery, shown: str) -> None:
    """Show `shown` in place of the message under a pressed button, without its buttons. A second press
    of the same button (Telegram delivers presses made before the first edit arrived) edits it to what
    it already says: Telegram refuses that as "not modified", which is no failure."""
    try:
        await query.edit_message_text(shown, reply_markup=None)
    except BadRequest as error:
        if "not modified" not in str(error).lower():
            raise

"""Photos and images sent as files: download the right size into memory, classify, record, answer.

Handlers run concurrently (the application is built with `concurrent_updates`), and the models run off
the event loop (the decode processes, the engine's threads), so one slow photo never holds up anyone
else. Nothing is downloaded unless the classifier has room for the photo (a busy bot says so at once),
a download has a deadline as a whole, and the decode processes read the photo from a file of its own
rather than through their pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from telegram import Chat, Document, InlineKeyboardMarkup, Message, PhotoSize, Update, User
from telegram.error import BadRequest, NetworkError, TimedOut
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from bot import keyboards
from bot.albums import Albums
from bot.answers import format_answer, offered_labels
from bot.errors import reply_for
from bot.handlers import teach
from bot.services import Services, lang, services
from bot.texts import human_size, quoted, text
from inference.catalogue import model_prefix
from inference.errors import InferenceError, InferenceUnavailable
from inference.flowers import RESIZE_SHORTER
from inference.prediction import Mode, Prediction
from inference.taught import is_taught
from storage.images import TMP_DIR, TMP_SUFFIX, StoredImage, sniff_format

logger = logging.getLogger(__name__)

# The shorter side the models need: the flower model scales the shorter side to 256 before cutting
# 224 × 224, so a smaller copy would be enlarged. Telegram's 320 px copy of a 4:3 photo (240 px) was,
# and the bot's answers drifted from `photobot classify` on the original (up to 26 points of
# confidence on 70 photos; 7.5 with the 800 px copy, which is what this picks for a 4:3 photo).
MIN_SIDE = RESIZE_SHORTER
IMAGE_MIME_TYPES = frozenset(
    {"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/x-ms-bmp"}
    | {"image/jpg", "image/pjpeg", "image/x-png"}  # what some apps call JPEG and PNG
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
# MIME types that say nothing about the content: the file's name decides, and decoding checks the bytes.
UNTYPED_MIME_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})
# iPhones' photos sent as files: an image, but one Pillow cannot read without a plugin.
HEIC_MIME_TYPES = frozenset({"image/heic", "image/heif", "image/heic-sequence", "image/heif-sequence"})
HEIC_SUFFIXES = (".heic", ".heif")
# The whole download, getFile and every byte: a 20 MB file over a slow link. A per-read timeout alone
# (python-telegram-bot's, 5 s by default) let a server that trickles bytes hold a download for ever.
DOWNLOAD_TIMEOUT_S = 30.0
DOWNLOADS_KEY = "photo_downloads"
ALBUMS_KEY = "albums"


@dataclass(frozen=True)
class Incoming:
    """A photo's message, its sender and its chat, each checked once in the handler: an update without
    them (a channel post) is not answered."""

    message: Message
    user: User
    chat: Chat
    language: str
    edited: bool = False  # a message whose caption or photo the person changed: its label is replaced
    arrived: float = field(default_factory=time.perf_counter)  # when the handler took it (photo → answer)
    caption: str | None = None  # its own caption, or its album's (`with_album_caption`)

    @classmethod
    def of(cls, update: Update) -> Incoming | None:
        message, user, chat = update.effective_message, update.effective_user, update.effective_chat
        if message is None or user is None or chat is None:
            return None
        edited = update.edited_message is not None
        return cls(message, user, chat, lang(update), edited=edited, caption=message.caption)

    def noted_in(self, albums: Albums) -> Incoming:
        """Note a photo of an album as it arrives (before anything is awaited: in arrival order)."""
        group = self.message.media_group_id
        if group is not None and not self.edited:
            albums.note(self.chat.id, group, self.message.message_id, self.message.caption)
        return self

    async def with_album_caption(self, albums: Albums) -> Incoming:
        """A photo of an album without a caption of its own takes the album's (its first photo's): an
        album of ten dog photos captioned `dog` teaches ten. An edit changes one message only."""
        group = self.message.media_group_id
        if group is None or self.edited:
            return self
        await albums.share(self.chat.id, group, self.message.message_id, self.user.id, self.message.caption)
        if self.caption:
            return self
        caption = await albums.caption(self.chat.id, group, self.message.message_id)
        return replace(self, caption=caption) if caption else self


@dataclass
class Downloads:
    """Photos being downloaded: on their way to the classifier, so they count against its room."""

    running: int = 0

    @contextlib.contextmanager
    def one(self) -> Iterator[None]:
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1


def pick_photo_size(sizes: Sequence[PhotoSize], min_side: int = MIN_SIDE) -> PhotoSize:
    """The smallest size whose shorter side reaches `min_side`; the largest when none does."""
    ordered = sorted(sizes, key=lambda size: size.width * size.height)
    return next((s for s in ordered if min(s.width, s.height) >= min_side), ordered[-1])


def is_image_document(document: Document) -> bool:
    """An image file we can read, by its MIME type, or by its name when the type says nothing."""
    mime = (document.mime_type or "").lower()
    if mime and mime not in UNTYPED_MIME_TYPES:
        return mime in IMAGE_MIME_TYPES
    return (document.file_name or "").lower().endswith(IMAGE_SUFFIXES)


def is_heic(document: Document) -> bool:
    mime = (document.mime_type or "").lower()
    return mime in HEIC_MIME_TYPES or (document.file_name or "").lower().endswith(HEIC_SUFFIXES)


async def classify_photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Answer a photo with what it shows, how sure the bot is, and feedback buttons."""
    incoming = Incoming.of(update)
    if incoming is None or not incoming.message.photo:
        return
    albums = album_memory(context)
    if not await admit(incoming.noted_in(albums), context):
        return
    size = pick_photo_size(incoming.message.photo)
    await fetch_and_answer(await incoming.with_album_caption(albums), context, size.file_id, size.file_size)


async def classify_document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Answer an image sent as a file; refuse other files and files over the size limit."""
    incoming = Incoming.of(update)
    if incoming is None or incoming.message.document is None:
        return
    albums = album_memory(context)
    incoming.noted_in(albums)
    document = incoming.message.document
    if not is_image_document(document):
        services(context).metrics.refused("not_an_image")
        name = document.file_name or document.mime_type or "file"
        refusal = "heic_not_readable" if is_heic(document) else "not_an_image"
        await incoming.message.reply_text(text(incoming.language, refusal, name=name))
        return
    if not await admit(incoming, context):
        return
    await fetch_and_answer(
        await incoming.with_album_caption(albums), context, document.file_id, document.file_size
    )


def album_memory(context: ContextTypes.DEFAULT_TYPE) -> Albums:
    """This process's albums, noted in the database too for the replicas sharing it."""
    if ALBUMS_KEY not in context.bot_data:
        context.bot_data[ALBUMS_KEY] = Albums(records=services(context).store)
    albums: Albums = context.bot_data[ALBUMS_KEY]
    return albums


async def admit(incoming: Incoming, context: ContextTypes.DEFAULT_TYPE) -> bool:
    """Apply the per-user flood limit; tell the user once per window when they are over it."""
    decision = await services(context).photo_limiter.check(incoming.user.id)
    if not decision.allowed and decision.notify:
        seconds = max(1, round(decision.retry_after_s))
        await incoming.message.reply_text(text(incoming.language, "flood", seconds=seconds))
    if not decision.allowed:
        services(context).metrics.flood_dropped("photos")
        logger.info("Flood limit: dropped a photo from user %s", incoming.user.id)
    return decision.allowed


async def fetch_and_answer(
    incoming: Incoming, context: ContextTypes.DEFAULT_TYPE, file_id: str, file_size: int | None
) -> None:
    """Download the photo and answer it, if the classifier has room for it; else say "busy" at once.

    The photos already downloading count too: they are on their way to the classifier. A photo may
    still meet a full classifier after its download (others got there first); `classify` refuses it.
    """
    downloads: Downloads = context.bot_data.setdefault(DOWNLOADS_KEY, Downloads())
    metrics = services(context).metrics
    if not services(context).classifier.has_room(downloads.running):
        metrics.refused("busy")
        logger.info("Busy: a photo from user %s refused before downloading it", incoming.user.id)
        await incoming.message.reply_text(text(incoming.language, "busy"))
        return
    with metrics.photo():
        with downloads.one():
            data = await download(incoming, context, file_id, file_size)
        if data is not None:
            await answer(incoming, context, data)


async def download(
    incoming: Incoming, context: ContextTypes.DEFAULT_TYPE, file_id: str, file_size: int | None
) -> bytes | None:
    """The file's bytes, in memory; None (after telling the user) when it is too large."""
    message, language = incoming.message, incoming.language
    limit = services(context).config.max_image_bytes
    too_large = text(language, "too_large", size=human_size(file_size or 0), limit=human_size(limit))
    if file_size is not None and file_size > limit:
        services(context).metrics.refused("too_large")
        await message.reply_text(too_large)
        return None
    try:
        async with asyncio.timeout(DOWNLOAD_TIMEOUT_S):
            telegram_file = await context.bot.get_file(file_id)
            data = bytes(await telegram_file.download_as_bytearray(read_timeout=DOWNLOAD_TIMEOUT_S))
    except BadRequest as error:
        if "too big" not in str(error).lower():
            raise
        services(context).metrics.refused("too_large")
        await message.reply_text(too_large)
        return None
    except (TimedOut, TimeoutError):
        services(context).metrics.error("download_timeout")
        logger.warning("Download of %s timed out after %s s", file_id, DOWNLOAD_TIMEOUT_S)
        await message.reply_text(text(language, "download_failed"))
        return None
    except NetworkError as error:  # Telegram's servers failed it, asked twice (`bot.transport`)
        services(context).metrics.error("download_failed")
        logger.warning("Download of %s failed: %s", file_id, error)
        await message.reply_text(text(language, "download_failed"))
        return None
    if len(data) > limit:
        services(context).metrics.refused("too_large")
        await message.reply_text(
            text(language, "too_large", size=human_size(len(data)), limit=human_size(limit))
        )
        return None
    return data


async def answer(incoming: Incoming, context: ContextTypes.DEFAULT_TYPE, data: bytes) -> None:
    """Classify the bytes in the chat's mode (or the caption's model), record it, reply with buttons."""
    found = services(context)
    message, language = incoming.message, incoming.language
    named = found.catalogue.find_captions(incoming.caption)
    contribution = named[0] if len(named) == 1 else await _chat_models_label(found, incoming, named)
    if incoming.edited and contribution is None:  # a caption edited to name no label takes it back
        await found.store.withdraw_contribution(incoming.chat.id, message.message_id)
    if len(named) > 1 and contribution is None:  # a label of several models
        await ask_which_model(incoming, named)
        return
    if contribution and not _serves(found, contribution[0]):  # a taught model still learning
        await teach_only(found, incoming, data, contribution)
        return
    mode: Mode
    mode, gone = (
        (found.catalogue[contribution[0]].mode, None) if contribution else await chat_mode(found, incoming)
    )
    # The photo's file is written while the models look at it: the answer then waits only for its row.
    saving = asyncio.ensure_future(found.store.save_image(data))
    started = time.perf_counter()
    try:
        async with photo_file(data, found.images.root / TMP_DIR) as path:
            prediction = await found.classifier.classify(path, mode)
    except InferenceError as error:
        found.metrics.inference_error(error)
        logger.info("Photo from user %s not answered: %r", incoming.user.id, error)
        await found.store.discard_image(await saving)  # bad input leaves nothing stored
        if isinstance(error, InferenceUnavailable) and contribution:
            await keep_while_down(found, incoming, data, contribution)
            return
        await message.reply_text(reply_for(error, language, mode, found.catalogue))
        return
    except BaseException:
        saving.add_done_callback(_ignore_outcome)  # a file without a row: a later start removes it
        raise
    latency_ms = (time.perf_counter() - started) * 1000
    prediction_id, sha256 = await record(found, incoming, data, await saving, mode, prediction, latency_ms)
    taught = [spec.name for spec in found.catalogue if is_taught(spec) and _serves(found, spec.name)]
    in_mode = found.catalogue.for_mode(mode)
    answering = found.answering(in_mode.name) if in_mode else None
    said = format_answer(
        prediction,
        language,
        found.catalogue,
        mode,
        labelled=contribution is not None,
        taught=taught,
        answering=answering,
    )
    lines = [said]
    if gone is not None:
        lines.insert(0, text(language, "mode_gone", model=gone))
    if contribution:  # a labelled photo: the person said what it is, nothing to ask
        spec = found.catalogue[contribution[0]]
        async with counting(found, incoming):
            lines.append(await contribute(found, incoming, sha256, contribution, prediction, prediction_id))
            if is_taught(spec) or contribution[1] in spec.added:  # learned from the chat's photos alone
                _cache_features(found, sha256)
                lines.append(await teach.counts_text(found, *contribution, language))
        await message.reply_text("\n\n".join(lines), do_quote=True)
        _answered(found, incoming, prediction, latency_ms)
        return
    if message.caption and quoted(message.caption):  # its own: an album's is said under its first photo
        lines.append(await not_a_label(found, message.caption, language))
    await message.reply_text(
        "\n\n".join(lines), reply_markup=buttons(found, language, prediction, prediction_id), do_quote=True
    )
    _answered(found, incoming, prediction, latency_ms)


def _answered(found: Services, incoming: Incoming, prediction: Prediction, latency_ms: float) -> None:
    elapsed = time.perf_counter() - incoming.arrived
    found.metrics.answered(prediction.model, prediction.status, elapsed, latency_ms / 1000)


def buttons(
    found: Services, language: str, prediction: Prediction, prediction_id: int
) -> InlineKeyboardMarkup:
    """✅ / ❌ under a sure answer or a refusal; an unsure answer asks with the labels it offers."""
    spec = found.catalogue.get(prediction.model)
    if prediction.status == "unsure" and spec is not None and prediction.label is not None:
        return keyboards.choices(language, prediction_id, spec, offered_labels(prediction))
    return keyboards.verdict(language, prediction_id)


@contextlib.asynccontextmanager
async def photo_file(data: bytes, folder: Path) -> AsyncIterator[Path]:
    """`data` in a file of its own while the decode processes read it: a path crosses their pipe, not
    the bytes. Written in a thread, without fsync (it lives for one photo); one a crash leaves behind
    is removed with the image store's other temporary files when it next opens."""
    path = await asyncio.to_thread(_write_temp, data, folder)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _write_temp(data: bytes, folder: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix="photo-", suffix=TMP_SUFFIX, dir=folder)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return Path(name)


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: asyncio would log it as never retrieved


async def record(
    found: Services,
    incoming: Incoming,
    data: bytes,
    image: StoredImage,
    mode: Mode,
    prediction: Prediction,
    latency_ms: float,
) -> tuple[int, str]:
    """Store the photo's row (its file is `image`) and the answer in one transaction; the id and the
    photo's hash."""
    user = incoming.user
    recorded = await found.store.record_photo_prediction(
        data,
        prediction=prediction,
        user_id=user.id,
        chat_id=incoming.chat.id,
        message_id=incoming.message.message_id,
        format=sniff_format(data[:16]),
        latency_ms=latency_ms,
        mode=mode,
        language=user.language_code,
        image=image,
    )
    return recorded.prediction_id, recorded.photo.sha256


async def contribute(
    found: Services,
    incoming: Incoming,
    sha256: str,
    contribution: tuple[str, str],
    prediction: Prediction,
    prediction_id: int,
) -> str:
    """Store a caption label as a labelled example, unless the user is blocked; say whether we agreed."""
    model, label = contribution
    user, language = incoming.user, incoming.language
    if await found.store.is_blocked(user.id):
        return text(language, "contribution_blocked")
    await found.store.record_contribution(
        user_id=user.id,
        chat_id=incoming.chat.id,
        message_id=incoming.message.message_id,
        photo_sha256=sha256,
        model=model,
        label=label,
        prediction_id=prediction_id,
        language=user.language_code,
        edited=incoming.edited,
    )
    agreed = prediction.model == model and prediction.label == label
    shown = found.catalogue[model].shown_label(label, language)
    return text(language, "contribution_agreed" if agreed else "contribution_disagreed", label=shown)


async def not_a_label(found: Services, caption: str, language: str) -> str:
    """Why a caption labelled nothing: `animals: cat` names a model without that label (its labels are
    listed), or a model deleted since; anything else is not one of the bot's labels."""
    name, label = model_prefix(caption) or ("", "")
    spec = found.catalogue.named(name) if name else None
    if name and spec is None and quoted(label):
        deleted = {m.name for m in await found.store.taught_models(deleted=True) if m.deleted_at is not None}
        if name in deleted:
            return text(language, "contribution_model_deleted", model=name)
    if spec is None or not quoted(label):
        return text(language, "contribution_unknown_label", caption=quoted(caption))
    labels = ", ".join(spec.shown_label(each, language) for each in spec.label_names)
    return text(language, "contribution_not_a_label_of", model=spec.name, label=quoted(label), labels=labels)


def counting(found: Services, incoming: Incoming) -> asyncio.Lock:
    """A chat's labelled photos are stored and counted one at a time: the photos of an album, handled
    at once, say `dog: 1`, `dog: 2`, `dog: 3`, not the total after their siblings' (`dog: 3` three times)."""
    return found.lock(("counting", incoming.chat.id))


def _cache_features(found: Services, sha256: str) -> None:
    """A taught photo's features are computed now, in the background, so /retrain finds them cached."""
    if found.features is not None:
        found.features.note(sha256, found.images.path(sha256))


async def _chat_models_label(
    found: Services, incoming: Incoming, named: Sequence[tuple[str, str]]
) -> tuple[str, str] | None:
    """Of the (model, label) pairs a caption names, the one of the model the chat is in (`/use pets`
    and `dog`: pets' dog even when another model has a dog too); None if the chat is in none of them."""
    if not named:
        return None
    spec = found.catalogue.for_mode(await found.chat_mode(incoming.chat.id))
    return next((pair for pair in named if spec is not None and pair[0] == spec.name), None)


async def ask_which_model(incoming: Incoming, named: Sequence[tuple[str, str]]) -> None:
    """A caption that is a label of several models is recorded for none: the reply says how to name one."""
    model, label = named[0]
    caption = quoted(incoming.caption)
    models = ", ".join(name for name, _ in named)
    await incoming.message.reply_text(
        text(
            incoming.language,
            "caption_ambiguous",
            caption=caption,
            models=models,
            example=f"{model}: {label}",
        ),
        do_quote=True,
    )


async def chat_mode(found: Services, incoming: Incoming) -> tuple[Mode, str | None]:
    """The chat's mode, and the mode it had when that was a model deleted since (None otherwise): such
    a chat goes back to auto, for good, rather than failing every photo in a mode nothing answers."""
    mode = await found.chat_mode(incoming.chat.id)
    if mode in found.classifier.catalogue.modes:  # every mode it answers in, served or not just now
        return mode, None
    await found.set_chat_mode(incoming.chat.id, "auto")
    logger.info("Chat %s was in the mode of a deleted model (%s): back to auto", incoming.chat.id, mode)
    return "auto", mode


def _serves(found: Services, model: str) -> bool:
    status = found.classifier.models().get(model)
    return status is not None and status.version is not None


async def teach_only(found: Services, incoming: Incoming, data: bytes, contribution: tuple[str, str]) -> None:
    """A photo labelled for a model that cannot answer yet: store it and its label, say the count."""
    model, label = contribution
    language = incoming.language
    async with counting(found, incoming):
        if not await store_labelled(found, incoming, data, contribution):
            await incoming.message.reply_text(text(language, "contribution_blocked"), do_quote=True)
            return
        count = await teach.counts_text(found, model, label, language)
    lines = [text(language, "teach_not_serving", model=model), count]
    await incoming.message.reply_text("\n\n".join(lines), do_quote=True)


async def keep_while_down(
    found: Services, incoming: Incoming, data: bytes, contribution: tuple[str, str]
) -> None:
    """The inference service is down: a labelled photo still teaches, so it is kept with its label
    (there is no answer to ask about); the person is told both. An unlabelled one is not kept: the
    reply asks for it again."""
    model, label = contribution
    language = incoming.language
    if not await store_labelled(found, incoming, data, contribution):
        await incoming.message.reply_text(text(language, "inference_down"), do_quote=True)
        return
    shown = found.catalogue[model].shown_label(label, language)
    await incoming.message.reply_text(text(language, "inference_down_kept", label=shown), do_quote=True)


async def store_labelled(
    found: Services, incoming: Incoming, data: bytes, contribution: tuple[str, str]
) -> bool:
    """Store a photo and its caption's label with no answer; False (nothing stored) for a blocked user."""
    model, label = contribution
    user = incoming.user
    if await found.store.is_blocked(user.id):
        return False
    photo = await found.store.add_photo(data, format=sniff_format(data[:16]))
    await found.store.record_contribution(
        user_id=user.id,
        chat_id=incoming.chat.id,
        message_id=incoming.message.message_id,
        photo_sha256=photo.sha256,
        model=model,
        label=label,
        prediction_id=None,
        language=user.language_code,
        edited=incoming.edited,
    )
    _cache_features(found, photo.sha256)
    return True


def register(application: Application) -> None:
    application.add_handler(MessageHandler(filters.PHOTO, classify_photo))
    application.add_handler(MessageHandler(filters.Document.ALL, classify_document))

"""Admin commands (Telegram user ids in ADMIN_IDS): /retrain, /models, /rollback (confirmed with a
button by the admin who asked), /block, /unblock.

Anyone else gets "not allowed", the attempt is logged, and nothing happens.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeGuard, TypeVar

from telegram import CallbackQuery, Message, Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from bot import callbacks, keyboards, retraining
from bot.callbacks import MAX_ID_DIGITS
from bot.services import Services, edit_pressed_message, lang, services
from bot.texts import text, usage
from inference.errors import InferenceError
from inference.model_store import ActiveVersionChanged, NoEarlierVersion, NoSuchVersion
from storage.records import ModelEvent

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]
Choice = TypeVar("Choice", callbacks.RollbackChoice, callbacks.DeleteModelChoice)  # confirmed by an admin
VERSIONS_SHOWN = 5
# ASCII digits, and few enough to fit SQLite's integers: `str.isdigit` also passes "²", which int() refuses.
_NUMBER = re.compile(rf"[0-9]{{1,{MAX_ID_DIGITS}}}")


def admin_only(handler: Handler) -> Handler:
    """Run `handler` for admins only; tell anyone else it is not allowed and log the attempt."""

    @functools.wraps(handler)
    async def guarded(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None:
            return
        user_id = update.effective_user.id if update.effective_user else None
        if not services(context).is_admin(user_id):
            # The command's name only: the rest is anyone's free text, and logs are kept and shared.
            logger.warning("Non-admin user %s tried %s", user_id, _command_name(message))
            await message.reply_text(text(lang(update), "not_allowed"))
            return
        await handler(update, context)

    return guarded


def _command_name(message: Message) -> str:
    """`/retrain` of "/retrain@PhotoBot whatever follows" (CommandHandler checked it is a command)."""
    words = (message.text or "").split(maxsplit=1)
    return words[0].split("@", 1)[0] if words else "?"


@admin_only
async def retrain(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Start a retraining job in its own process and show its progress: `/retrain [model] [force]`."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    args = context.args or []
    names = services(context).catalogue.names
    model, force = (args[0] if args else ""), args[1:] == ["force"]
    if model not in names or (len(args) > 1 and not force):
        await message.reply_text(usage(lang(update), "retrain_usage", model, names, models=", ".join(names)))
        return
    await retraining.start_retrain(
        services(context),
        context.application.bot_data,
        context.bot,
        model,
        chat_id=chat.id,
        requested_by=user.id,
        force=force,
        language=lang(update),
    )


@admin_only
async def list_models(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Say, per model version, in plain words: serving or not (and why not), when it was made, how
    accurate it is, and why it was promoted or rejected."""
    message = update.effective_message
    if message is None:
        return
    found = services(context)
    rollbacks = await found.store.model_events(action="rollback", limit=200)
    lines = await asyncio.to_thread(models_lines, found, lang(update), rollbacks)
    from bot.handlers import teach  # here: teach imports admin_only from this module

    lines += await teach.catalogue_lines(found, lang(update))  # labels, photo counts, serving version
    await message.reply_text("\n".join(lines)[:4000])


def models_lines(found: Services, language: str, rollbacks: Sequence[ModelEvent] = ()) -> list[str]:
    lines = [text(language, "models_header", shown=VERSIONS_SHOWN)]
    # The models the bot knows: a taught model deleted since keeps its versions in the store, unserved.
    for name in (name for name in found.model_store.names() if name in found.classifier.catalogue):
        active = found.model_store.active_version(name)
        for version in found.model_store.versions(name)[-VERSIONS_SHOWN:]:
            key = (name, version.version)
            rolled = next((e for e in rollbacks if (e.model, e.from_version) == key), None)
            state = version_state(language, version.version, active, version.meta, rolled)
            lines.append(text(language, "models_version", name=name, version=version.version, state=state))
            facts = [text(language, "models_made", when=_when(version.meta.get("created")))]
            if (accuracy := accuracy_words(language, version.meta)) is not None:
                facts.append(accuracy)
            lines.append("  " + " · ".join(facts))
            if (why := _why(language, version.meta)) is not None:
                lines.append("  " + why)
    return lines if len(lines) > 1 else [text(language, "models_none")]


def version_state(
    language: str, version: int, active: int | None, meta: dict[str, Any], rolled_back: ModelEvent | None
) -> str:
    """Where a version stands now: meta.json's status says what its retraining decided, but a
    promoted version may since have been rolled back or replaced, so the serving pointer and the
    rollback events have the last word."""
    status = meta.get("status")
    if version == active:
        return text(language, "model_state_serving")
    if rolled_back is not None and active is not None and version > active:
        return text(
            language, "model_state_rolled_back", to=rolled_back.to_version, when=_when(rolled_back.created_at)
        )
    if status == "rejected":
        return text(language, "model_state_rejected")
    if status == "candidate":
        return text(language, "model_state_candidate")
    if active is not None and version < active:
        return text(language, "model_state_replaced")
    return text(language, "model_state_idle")


def accuracy_words(language: str, meta: dict[str, Any]) -> str | None:
    """ "98.9% on the MNIST test set": a retrained version's score on its fixed base set (from its
    retraining check), else the test accuracy its training measured."""
    gate = meta.get("gate")
    scores = gate.get("scores") if isinstance(gate, dict) else None
    for score in scores if isinstance(scores, list) else ():
        if isinstance(score, dict) and _is_fraction(score.get("candidate")) and score.get("n"):
            what = f"{score.get('title', score.get('name', '?'))} ({score['n']})"
            return text(language, "models_accuracy", percent=_percent(score["candidate"]), what=what)
    metrics = meta.get("metrics")
    if not isinstance(metrics, dict):
        metrics = {}
    for key, set_key in _ACCURACY_KEYS:
        value = metrics.get(key, meta.get(key))
        if _is_fraction(value):
            return text(language, "models_accuracy", percent=_percent(value), what=text(language, set_key))
    return None


_ACCURACY_KEYS = (  # metric → the set it was measured on, most telling first
    ("mnist_test_accuracy", "model_set_mnist"),
    ("mnist_accuracy", "model_set_mnist"),
    ("test_accuracy", "model_set_test"),
)


def _why(language: str, meta: dict[str, Any]) -> str | None:
    gate = meta.get("gate")
    reason = gate.get("reason") if isinstance(gate, dict) else None
    if not isinstance(reason, str) or meta.get("status") not in ("promoted", "rejected"):
        return None
    key = "models_why_promoted" if meta["status"] == "promoted" else "models_why_rejected"
    return text(language, key, reason=reason)


def _is_fraction(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def _percent(fraction: float) -> str:
    """One decimal, never 100.0% for a model that makes mistakes."""
    shown = f"{fraction * 100:.1f}"
    return f"{'99.9' if shown == '100.0' and fraction < 1.0 else shown}%"


def _when(moment: object) -> str:
    """A meta.json's ISO time or an event's unix time as "2026-11-27 01:28 UTC"; "?" when unknown."""
    try:
        if isinstance(moment, int | float):
            stamp = datetime.fromtimestamp(moment, UTC)
        else:
            stamp = datetime.fromisoformat(str(moment).replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return "?"
    return stamp.strftime("%Y-%m-%d %H:%M UTC")


@admin_only
async def rollback(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Ask to confirm serving an earlier version: `/rollback <model> [version]`."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    args = context.args or []
    language = lang(update)
    version = number_arg(args[1]) if len(args) == 2 else None
    names = services(context).catalogue.names
    if not 1 <= len(args) <= 2 or args[0] not in names or (len(args) == 2 and version is None):
        given = args[0] if args else None
        await message.reply_text(usage(language, "rollback_usage", given, names, models=", ".join(names)))
        return
    found, name = services(context), args[0]
    current = found.model_store.active_version(name)
    try:
        target = await asyncio.to_thread(found.model_store.rollback_target, name, version)
    except InferenceError as error:
        await message.reply_text(rollback_failed(language, error))
        return
    if target == current:
        await message.reply_text(text(language, "rollback_serving", name=name, version=target))
        return
    ask = text(language, "rollback_confirm", name=name, current=current, version=target)
    meta = (await asyncio.to_thread(found.model_store.get, name, target)).meta
    if meta.get("status") == "rejected":  # asked for by number: say why it was kept out of service
        reason = (meta.get("gate") or {}).get("reason") or "—"
        ask += "\n\n" + text(language, "rollback_rejected", version=target, reason=reason)
    await message.reply_text(
        ask, reply_markup=keyboards.rollback(language, user.id, name, current or 0, target)
    )


async def on_rollback_choice(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Roll back when the admin who asked confirms; anyone else's press changes nothing."""
    query = update.callback_query
    if query is None:
        return
    language = lang(update)
    found = services(context)
    choice = await admins_choice(query, found, language, callbacks.RollbackChoice, "rollback")
    if choice is None:
        return
    presser = choice.admin_id
    async with found.lock(("rollback", choice.model)):
        current = found.model_store.active_version(choice.model)
        if not choice.confirmed:
            message = text(language, "rollback_cancelled", name=choice.model, current=current)
        elif (current or 0) != choice.current:
            message = text(language, "rollback_stale", name=choice.model, current=current)
        else:
            message = await _roll_back(found, choice.model, choice.target, presser, language, current)
    await query.answer()
    await edit_pressed_message(query, message)


async def admins_choice(
    query: CallbackQuery, found: Services, language: str, kind: type[Choice], command: str
) -> Choice | None:
    """What an admin's confirmation button (/rollback, /delmodel) says, when it is the presser's to
    press: the admin who asked, still an admin. None once the presser is told why not."""
    try:
        choice = callbacks.decode(query.data)
    except callbacks.MalformedCallback:
        await query.answer(text(language, "feedback_malformed"), show_alert=True)
        return None
    presser = query.from_user.id
    if not isinstance(choice, kind) or choice.admin_id != presser or not found.is_admin(presser):
        logger.warning("User %s pressed a /%s button that is not theirs", presser, command)
        await query.answer(text(language, f"{command}_not_yours"), show_alert=True)
        return None
    return choice


def rollback_failed(language: str, error: InferenceError) -> str:
    """Why a rollback cannot be done, in the admin's language where it is one an admin meets (a version
    number that is not there, no earlier version); the model store's own words otherwise."""
    if isinstance(error, NoSuchVersion):
        return text(language, "rollback_no_version", name=error.name, version=error.version)
    if isinstance(error, NoEarlierVersion):
        return text(language, "rollback_no_earlier", name=error.name)
    return text(language, "rollback_failed", reason=str(error))


async def _roll_back(
    found: Services, name: str, target: int, actor: int, language: str, previous: int | None
) -> str:
    """Serve `target` now, if `previous` still serves (another bot process may have switched it since
    this one looked); if it does not load, the previous version serves again."""
    try:
        served = await asyncio.to_thread(found.model_store.rollback, name, target, expected=previous)
    except ActiveVersionChanged as changed:
        return text(language, "rollback_stale", name=name, current=changed.current)
    except InferenceError as error:
        return rollback_failed(language, error)
    try:
        await found.classifier.reload(name)
        found.refresh_labels()  # its labels, with those added in the chat since (`/addlabel`)
    except InferenceError as error:
        if found.model_store.active_version(name) != previous and previous is not None:
            await asyncio.to_thread(found.model_store.promote, name, previous)  # the new one would not load
        return text(language, "rollback_failed", reason=str(error))
    await found.store.record_model_event(
        name, "rollback", from_version=previous, to_version=served.version, actor=actor
    )
    logger.info("User %s rolled %s back from v%s to v%s", actor, name, previous, served.version)
    return text(language, "rollback_done", name=name, version=served.version)


@admin_only
async def block(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stop using a user's labels: `/block <user id>`."""
    await _set_blocked(update, context, blocked=True)


@admin_only
async def unblock(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Use a user's labels again: `/unblock <user id>`."""
    await _set_blocked(update, context, blocked=False)


async def _set_blocked(update: Update, context: ContextTypes.DEFAULT_TYPE, *, blocked: bool) -> None:
    message, admin = update.effective_message, update.effective_user
    if message is None or admin is None:
        return
    args = context.args or []
    language = lang(update)
    user_id = number_arg(args[0]) if len(args) == 1 else None
    if user_id is None:
        await message.reply_text(text(language, "block_usage" if blocked else "unblock_usage"))
        return
    if blocked and services(context).is_admin(user_id):  # an admin's labels are trusted by ADMIN_IDS
        await message.reply_text(text(language, "block_admin", user=user_id))
        return
    store = services(context).store
    known = (await store.user_stats(user_id)).photos > 0  # read before the block creates the id's row
    was_blocked = await store.is_blocked(user_id)
    await store.set_blocked(user_id, blocked)
    logger.info("User %s %s user %s", admin.id, "blocked" if blocked else "unblocked", user_id)
    if blocked:
        key = "blocked" if known else "blocked_unknown"
    else:
        key = "unblocked" if was_blocked else "unblocked_not_blocked"
    await message.reply_text(text(language, key, user=user_id))


def number_arg(arg: str) -> int | None:
    """A user id or version typed after a command; None for anything but 1 to 18 ASCII digits."""
    return int(arg) if _NUMBER.fullmatch(arg) else None


def register(application: Application) -> None:
    application.add_handler(CommandHandler("retrain", retrain))
    application.add_handler(CommandHandler("models", list_models))
    application.add_handler(CommandHandler("rollback", rollback))
    application.add_handler(CallbackQueryHandler(on_rollback_choice, pattern=r"^r:"))
    application.add_handler(CommandHandler("block", block))
    application.add_handler(CommandHandler("unblock", unblock))

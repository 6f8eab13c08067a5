"""New models and labels from the chat (admins): /newmodel, /addlabel, /dellabel, /delmodel.

A taught model is a row of the database (`storage.taught`) merged into the catalogue
(`inference.taught`); so is a label added to a built-in image model (`/addlabel flowers lavender`:
`storage.added_labels`). After every change the running bot's catalogue and classifier follow
(`Services.refresh_taught`). People teach it with captioned photos (`bot.handlers.photos`), and an
admin builds it with `/retrain MODEL`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from bot import callbacks
from bot.handlers.admin import admin_only, admins_choice
from bot.services import Services, edit_pressed_message, lang, services
from bot.texts import text
from inference.catalogue import ModelSpec
from inference.taught import (
    MIN_PHOTOS_PER_LABEL,
    TaughtError,
    check_labels,
    check_name,
    is_taught,
    takes_added_labels,
)
from storage.added_labels import LabelAlreadyAdded
from storage.taught import TaughtLabel, TaughtLabelsChanged, TaughtModelExists

logger = logging.getLogger(__name__)


@admin_only
async def new_model(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`/newmodel NAME LABEL LABEL …`: a new image model on the pretrained backbone."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    language, found = lang(update), services(context)
    args = context.args or []
    if len(args) < 2:
        await message.reply_text(text(language, "newmodel_usage"))
        return
    try:
        taken = [row.name for row in await found.store.taught_models(deleted=True)]
        taken += found.model_store.names()  # a folder of old versions must not start serving a new model
        # Every model the bot knows, served or not (the classifier's catalogue), keeps its name and mode.
        name = check_name(args[0], found.classifier.catalogue, [*taken, *found.catalogue.names])
        labels = check_labels(args[1:])
        await found.store.create_taught_model(name, [TaughtLabel(label) for label in labels], user.id)
    except TaughtError as error:
        await message.reply_text(text(language, error.key, **error.values))
        return
    except TaughtModelExists:
        await message.reply_text(text(language, "teach_name_taken", name=args[0]))
        return
    await found.refresh_taught()
    logger.info("User %s created the model %s with %d labels", user.id, name, len(labels))
    await message.reply_text(
        text(
            language,
            "newmodel_done",
            model=name,
            labels=", ".join(labels),
            example=labels[0],
            minimum=MIN_PHOTOS_PER_LABEL,
        )
    )


@admin_only
async def add_label(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`/addlabel MODEL LABEL`: one more label for an image model (a taught one, or the flowers)."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    language, found = lang(update), services(context)
    asked = await _model_and_label(message, found, context.args, language, "addlabel_usage")
    if asked is None:
        return
    spec, typed = asked
    try:
        (label,) = check_labels([typed], model=spec)
        if is_taught(spec):

            def plus_label(now: ModelSpec) -> list[TaughtLabel]:
                (checked,) = check_labels([typed], model=now)
                kept = [TaughtLabel(old.name, dict(old.display)) for old in now.labels]
                return [*kept, TaughtLabel(checked)]

            await change_taught_labels(found, spec.name, plus_label)
        else:  # a built-in model: the row says so, its next retrain learns it
            await found.store.add_model_label(spec.name, label, user.id)
    except TaughtError as error:
        await message.reply_text(text(language, error.key, **error.values))
        return
    except LabelAlreadyAdded:
        await message.reply_text(text(language, "teach_label_exists", label=typed.lower()))
        return
    await found.refresh_taught()
    logger.info("User %s added the label %s to %s", user.id, label, spec.name)
    await message.reply_text(
        text(
            language,
            "addlabel_done" if is_taught(spec) else "addlabel_done_builtin",
            model=spec.name,
            labels=", ".join(found.catalogue[spec.name].label_names),
            label=label,
            minimum=MIN_PHOTOS_PER_LABEL,
        )
    )


@admin_only
async def delete_label(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`/dellabel MODEL LABEL`: a model stops learning a label (a taught one's, or one added to the
    flowers); its photos stay stored."""
    message = update.effective_message
    if message is None:
        return
    language, found = lang(update), services(context)
    asked = await _model_and_label(message, found, context.args, language, "dellabel_usage")
    if asked is None:
        return
    spec, label = asked[0], asked[1].lower()
    if label not in spec.label_names:
        await message.reply_text(
            text(
                language, "dellabel_unknown", model=spec.name, label=label, labels=", ".join(spec.label_names)
            )
        )
        return
    if not is_taught(spec) and label not in spec.added:
        added = ", ".join(spec.added) or "—"
        await message.reply_text(
            text(language, "dellabel_builtin", model=spec.name, label=label, added=added)
        )
        return
    if is_taught(spec):

        def less_label(now: ModelSpec) -> list[TaughtLabel]:
            rows = [TaughtLabel(old.name, dict(old.display)) for old in now.labels if old.name != label]
            check_labels([], existing=[row.name for row in rows])
            return rows

        try:
            await change_taught_labels(found, spec.name, less_label)
        except TaughtError as error:
            await message.reply_text(text(language, error.key, **error.values))
            return
    else:
        await found.store.remove_model_label(spec.name, label)
    await found.refresh_taught()
    labels = ", ".join(found.catalogue[spec.name].label_names)
    await message.reply_text(text(language, "dellabel_done", model=spec.name, label=label, labels=labels))


@admin_only
async def delete_model(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """`/delmodel NAME`: ask the admin to confirm with a button."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    language, found = lang(update), services(context)
    args = context.args or []
    spec = _taught(found, args[0].lower() if args else "")
    if len(args) != 1 or spec is None:
        await message.reply_text(text(language, "delmodel_usage", models=_taught_names(found)))
        return
    photos = sum((await label_counts(found, spec.name)).values())
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    text(language, "delmodel_yes", model=spec.name),
                    callback_data=callbacks.encode(callbacks.DeleteModelChoice(user.id, spec.name, True)),
                ),
                InlineKeyboardButton(
                    text(language, "delmodel_no"),
                    callback_data=callbacks.encode(callbacks.DeleteModelChoice(user.id, spec.name, False)),
                ),
            ]
        ]
    )
    await message.reply_text(
        text(language, "delmodel_confirm", model=spec.name, photos=photos), reply_markup=keyboard
    )


async def on_delete_choice(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Delete when the admin who asked confirms; anyone else's press changes nothing."""
    query = update.callback_query
    if query is None:
        return
    language, found = lang(update), services(context)
    choice = await admins_choice(query, found, language, callbacks.DeleteModelChoice, "delmodel")
    if choice is None:
        return
    presser = choice.admin_id
    if choice.confirmed and not await found.store.delete_taught_model(choice.model):
        # A second press, or another admin's: the message already says so, or soon will.
        await query.answer(text(language, "delmodel_already", model=choice.model))
        return
    if choice.confirmed:
        await found.refresh_taught()
        logger.info("User %s deleted the model %s", presser, choice.model)
    await query.answer()
    key = "delmodel_done" if choice.confirmed else "delmodel_cancelled"
    await edit_pressed_message(query, text(language, key, model=choice.model))


async def label_counts(found: Services, model: str) -> Counter[str]:
    """The labelled photos of each of `model`'s labels (storage's labelled set: one per photo, blocked
    people's left out). Photos marked "none of these" are not counted: /models, /delmodel and the
    teaching replies all count what the model learns its labels from."""
    spec = found.catalogue.get(model)
    labels = set(spec.label_names) if spec is not None else set()
    examples = (await found.store.labelled_set(model)).examples
    return Counter(example.label for example in examples if example.label in labels)


async def counts_text(found: Services, model: str, label: str, language: str) -> str:
    """`dog: 12 of at least 10 photos`: a taught label's labelled photos so far."""
    count = (await label_counts(found, model))[label]
    return text(language, "teach_count", label=label, count=count, minimum=MIN_PHOTOS_PER_LABEL)


async def catalogue_lines(found: Services, language: str) -> list[str]:
    """Every model the bot serves, with its labels, the labelled photos of each and its serving
    version (for /models): what a taught model still needs, at a glance."""
    lines = ["", text(language, "models_labels_header")]
    served = found.classifier.models()
    for spec in found.catalogue:
        counts = await label_counts(found, spec.name)
        status = served.get(spec.name)
        serving = (
            text(language, "models_labels_serving", version=status.version)
            if status is not None and status.version is not None
            else text(language, "models_labels_not_serving")
        )
        labels = ", ".join(f"{spec.shown_label(name, language)} {counts[name]}" for name in spec.label_names)
        shown = spec.shown(language)  # and the name /retrain and /rollback take, where it differs
        model = shown if shown == spec.name else f"{shown} ({spec.name})"
        lines.append(text(language, "models_labels_line", model=model, labels=labels, serving=serving))
    return lines


async def change_taught_labels(
    found: Services, model: str, change: Callable[[ModelSpec], list[TaughtLabel]], tries: int = 3
) -> None:
    """Give the taught `model` the labels `change` makes of its own (it raises TaughtError for a change
    that cannot be made), written only over the labels it was made from: a label another admin added
    or removed meanwhile, through another bot process, is kept rather than overwritten."""
    for attempt in range(1, tries + 1):
        spec = found.catalogue[model]
        try:
            await found.store.set_taught_labels(model, change(spec), expected=spec.label_names)
            return
        except TaughtLabelsChanged:
            if attempt == tries:
                raise
            await found.refresh_taught()


def _taught(found: Services, name: str) -> ModelSpec | None:
    spec = found.catalogue.get(name)
    return spec if spec is not None and is_taught(spec) else None


async def _model_and_label(
    message: Message, found: Services, args: Sequence[str] | None, language: str, usage: str
) -> tuple[ModelSpec, str] | None:
    """`/addlabel` and `/dellabel`'s `MODEL LABEL`: a model that takes labels, and the label as typed.
    None once the admin is shown the `usage` text."""
    args = args or []
    spec = _takes_labels(found, args[0].lower() if args else "")
    if len(args) != 2 or spec is None:
        await message.reply_text(text(language, usage, models=_names(found)))
        return None
    return spec, args[1]


def _takes_labels(found: Services, name: str) -> ModelSpec | None:
    """A model /addlabel and /dellabel change: a taught one, or a built-in image model (flowers)."""
    spec = found.catalogue.get(name)
    return spec if spec is not None and (is_taught(spec) or takes_added_labels(spec)) else None


def _names(found: Services) -> str:
    return ", ".join(spec.name for spec in found.catalogue if is_taught(spec) or takes_added_labels(spec))


def _taught_names(found: Services) -> str:
    return ", ".join(spec.name for spec in found.catalogue if is_taught(spec)) or "—"


def register(application: Application) -> None:
    application.add_handler(CommandHandler("newmodel", new_model))
    application.add_handler(CommandHandler("addlabel", add_label))
    application.add_handler(CommandHandler("dellabel", delete_label))
    application.add_handler(CommandHandler("delmodel", delete_model))
    application.add_handler(CallbackQueryHandler(on_delete_choice, pattern=r"^d:"))

"""Correcting a number as a number: ❌ under "2026" asks the person to type the right one.

A number has too many possible values for buttons, so the bot asks "Reply with the right number" and
waits. The question is kept in the database (one per person, the latest ❌), so a restart keeps it.
A number typed as a reply to the answer or to the question is taken at any time while the question is
open; a number typed without replying is taken only within `PENDING_TTL_S` of the question, so a number
someone types days later is not mistaken for a correction. The typed number is the true label
("correct" when it equals the answer, "wrong" otherwise).
"""

from __future__ import annotations

import logging
import time
import unicodedata

from telegram import CallbackQuery, Message, ReplyParameters, Update
from telegram.error import BadRequest
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from bot import keyboards
from bot.handlers import basics
from bot.services import Services, accessible_message, lang, services
from bot.texts import text
from inference.catalogue import ModelKind, is_number, normalise
from storage.errors import NotPredictionOwner, PredictionNotFound
from storage.records import PendingCorrection, PredictionRecord

logger = logging.getLogger(__name__)

PENDING_TTL_S = 300.0  # a number typed without replying counts as the correction for this long


def is_number_answer(found: Services, prediction: PredictionRecord) -> bool:
    """A digit reader's answer of several digits: corrected by typing, not with 0–9 buttons."""
    spec = found.catalogue.get(prediction.model)
    return (
        spec is not None
        and spec.kind == ModelKind.DIGIT_READER
        and prediction.label is not None
        and len(prediction.label) > 1
        and is_number(prediction.label)
    )


async def ask(found: Services, query: CallbackQuery, prediction: PredictionRecord, language: str) -> None:
    """After ❌ on a number: ask for the right number and remember that we asked."""
    spec = found.catalogue.get(prediction.model)
    if spec is None:  # is_number_answer lets only a digit reader's answer through
        raise ValueError(f"prediction {prediction.id} has no model in the catalogue to ask a number for")
    answer_id = query.message.message_id if query.message is not None else None
    answer = accessible_message(query)
    if answer is not None:
        await query.edit_message_reply_markup(keyboards.number_question(language, prediction.id, spec))
        question = await answer.reply_text(text(language, "ask_number"), do_quote=True)
    else:
        question = await query.get_bot().send_message(prediction.chat_id, text(language, "ask_number"))
    await found.store.ask_for_number(
        query.from_user.id,
        prediction.id,
        chat_id=prediction.chat_id,
        answer_message_id=answer_id,
        question_message_id=question.message_id,
    )
    await query.answer(text(language, "pick_number"))


async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A text: the right number for an open question, else the usual hint (in private chats)."""
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or user is None or chat is None:
        return
    found = services(context)
    number = typed_number(message.text or "")
    # Only a number or a reply can answer the question: any other text is hinted at once, without a
    # database read, so it keeps its place among the replies (a flood notice comes after them).
    pending = None
    if number is not None or message.reply_to_message is not None:
        pending = await found.store.pending_correction(user.id)
    if pending is None or not answers_question(pending, message, time.time()):
        if chat.type == "private":
            await basics.hint(update, context)
        return
    if number is None:  # a reply to the question that is not a number
        await message.reply_text(text(lang(update), "number_expected"), do_quote=True)
        return
    await record_number(found, context, message, user.id, lang(update), pending, number)


def typed_number(typed: str) -> str | None:
    """A number as people type it, in ASCII digits: full-width (２０２６) and other scripts' digits
    (٢٠٢٦), digits grouped by spaces (2 026) or signed (+2026); None if it is no number."""
    word = "".join(normalise(typed).split()).removeprefix("+")
    if not word.isdecimal():  # decimal digits of any script, not superscripts or fractions
        return None
    ascii_digits = "".join(str(unicodedata.decimal(c)) for c in word)
    return ascii_digits if is_number(ascii_digits) else None


def answers_question(pending: PendingCorrection, message: Message, now: float) -> bool:
    """Whether a text is meant for the open question: a reply to it (or to the answer), or, in the
    same chat, the next text within PENDING_TTL_S."""
    if message.chat_id != pending.chat_id:
        return False
    replied = message.reply_to_message.message_id if message.reply_to_message else None
    if replied is not None:
        return replied in (pending.answer_message_id, pending.question_message_id)
    return now - pending.created_at <= PENDING_TTL_S


async def record_number(
    found: Services,
    context: ContextTypes.DEFAULT_TYPE,
    message: Message,
    user_id: int,
    language: str,
    pending: PendingCorrection,
    number: str,
) -> None:
    """Store the typed number (`message`, from `user_id`) as the prediction's true label, once, and thank
    the person."""
    async with found.lock(("prediction", pending.prediction_id)):
        prediction = await found.store.get_prediction(pending.prediction_id)
        await found.store.drop_pending_correction(user_id, pending.prediction_id)
        if prediction is None:
            await message.reply_text(text(language, "feedback_stale"))
            return
        try:
            result = await found.store.record_feedback(
                prediction.id,
                user_id=user_id,
                verdict="correct" if number == prediction.label else "wrong",
                true_label=number,
                model=prediction.model,
            )
        except (PredictionNotFound, NotPredictionOwner) as error:
            logger.info("Number correction not stored: %s", error)
            await message.reply_text(text(language, "feedback_stale"))
            return
    found.metrics.feedback(result.feedback.verdict if result.created else "already")
    if not result.created:
        await message.reply_text(text(language, "feedback_already"), do_quote=True)
        return
    logger.info("User %s corrected prediction %s to a number", user_id, prediction.id)
    await _remove_buttons(context, pending)
    key = "thanks_correct" if result.feedback.verdict == "correct" else "thanks_label"
    # As a reply to the answer it corrects: which photo the number went to shows at a glance.
    about = (
        ReplyParameters(pending.answer_message_id, allow_sending_without_reply=True)
        if pending.answer_message_id is not None
        else None
    )
    await message.reply_text(
        text(language, key, label=number), reply_parameters=about, do_quote=about is None
    )


async def _remove_buttons(context: ContextTypes.DEFAULT_TYPE, pending: PendingCorrection) -> None:
    """The answer's buttons have nothing left to record."""
    if pending.answer_message_id is None:
        return
    try:
        await context.bot.edit_message_reply_markup(
            chat_id=pending.chat_id, message_id=pending.answer_message_id, reply_markup=None
        )
    except BadRequest as error:  # deleted, too old, or already without buttons
        logger.info("Buttons of message %s not removed: %s", pending.answer_message_id, error)


def register(application: Application) -> None:
    """Ahead of the fallbacks, which would answer any text with a hint."""
    application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, on_text))

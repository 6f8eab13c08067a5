"""✅ Correct / ❌ Wrong and the label picker under an answer.

The data of a button is never trusted: it is decoded by `bot.callbacks` (malformed → "out of date"), the
prediction must still exist (stale after /forget), and only its sender may answer (forged). Taps on one
prediction are handled one at a time, in order; the first recorded answer stands.
"""

from __future__ import annotations

import logging

from telegram import CallbackQuery, InlineKeyboardMarkup, Update
from telegram.error import BadRequest
from telegram.ext import Application, CallbackQueryHandler, ContextTypes

from bot import callbacks, keyboards
from bot.handlers import numbers
from bot.services import Services, accessible_message, edit_pressed_message, lang, services
from bot.texts import text
from storage.errors import NotPredictionOwner, PredictionNotFound
from storage.records import PredictionRecord, negative_label

logger = logging.getLogger(__name__)


async def on_feedback(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Handle a tap on ✅ / ❌, a label, or « Back."""
    query = update.callback_query
    if query is None:
        return
    language = lang(update)
    try:
        data = callbacks.decode(query.data)
    except callbacks.MalformedCallback:
        services(context).metrics.feedback("malformed")
        logger.info("Malformed callback data from user %s: %r", query.from_user.id, query.data)
        await query.answer(text(language, "feedback_malformed"), show_alert=True)
        return
    if isinstance(data, callbacks.ForgetChoice | callbacks.RollbackChoice | callbacks.DeleteModelChoice):
        return  # the /forget, /rollback and /delmodel handlers own these
    found = services(context)
    async with found.lock(("prediction", data.prediction_id)):
        prediction = await found.store.get_prediction(data.prediction_id)
        if prediction is None:
            found.metrics.feedback("stale")
            await query.answer(text(language, "feedback_stale"), show_alert=True)
            return
        if prediction.user_id != query.from_user.id:
            found.metrics.feedback("not_yours")
            logger.warning(
                "User %s pressed a button of prediction %s, which is user %s's",
                query.from_user.id,
                prediction.id,
                prediction.user_id,
            )
            await query.answer(text(language, "feedback_not_yours"), show_alert=True)
            return
        await _end_older_question(found, query.from_user.id, prediction.id)
        await _apply(found, query, data, prediction, language)


async def _end_older_question(found: Services, user_id: int, prediction_id: int) -> None:
    """A press under another answer ends the wait for a typed number about an older one: the person has
    moved on, and a number typed next must not be taken for that photo."""
    pending = await found.store.pending_correction(user_id)
    if pending is not None and pending.prediction_id != prediction_id:
        await found.store.drop_pending_correction(user_id, pending.prediction_id)


async def _apply(
    found: Services,
    query: CallbackQuery,
    data: callbacks.CallbackData,
    prediction: PredictionRecord,
    language: str,
) -> None:
    if isinstance(data, callbacks.Verdict | callbacks.BackToVerdict) and await found.store.get_feedback(
        prediction.id
    ):  # a tap from a keyboard shown before the answer was recorded: nothing left to ask
        found.metrics.feedback("already")
        await _answer_again(query, text(language, "feedback_already"))
        await _edit_markup(query, None)
        return
    match data:
        case callbacks.Verdict(_, False) if numbers.is_number_answer(found, prediction):
            await numbers.ask(found, query, prediction, language)  # typed, not picked from 0–9
        case callbacks.Verdict(_, False):
            keyboard = keyboards.labels(
                language,
                prediction.id,
                prediction.model,
                found.catalogue,
                offered=_serving(found),
                refused=prediction.model is None,
            )
            await _edit_markup(query, keyboard)
            await query.answer(text(language, "pick_label"))
        case callbacks.BackToVerdict(_):
            await _edit_markup(query, _first_keyboard(found, prediction, language))
            await query.answer()
        case callbacks.Verdict(_, True) if _asks(found, prediction):
            # an unsure answer is never confirmed by a bare ✅ (a button from before it asked, or forged)
            await _edit_markup(query, _first_keyboard(found, prediction, language))
            await query.answer(text(language, "pick_label"))
        case callbacks.Verdict(_, True):
            await _record(found, query, prediction, prediction.model, prediction.label, language)
        case callbacks.LabelChoice(_, label):
            model = _model_of(found, prediction, label)
            if model is None:
                await query.answer(text(language, "feedback_bad_label"), show_alert=True)
                return
            await _record(found, query, prediction, model, label, language)


def _asks(found: Services, prediction: PredictionRecord) -> bool:
    """Whether the answer asks the user to pick (unsure, with a model whose labels it can offer)."""
    return (
        prediction.status == "unsure" and prediction.model in found.catalogue and prediction.label is not None
    )


def _first_keyboard(found: Services, prediction: PredictionRecord, language: str) -> InlineKeyboardMarkup:
    """The keyboard the answer was sent with: its offered labels when unsure, else ✅ / ❌."""
    if not _asks(found, prediction) or prediction.label is None or prediction.model is None:
        return keyboards.verdict(language, prediction.id)
    spec = found.catalogue[prediction.model]
    offered = [prediction.label]
    if prediction.label in spec.label_names:  # one label: the runner-up too (a number: its digits vary)
        offered += [label for label, _ in prediction.probabilities[1:2] if label != prediction.label]
    return keyboards.choices(language, prediction.id, spec, offered)


def _serving(found: Services) -> list[str]:
    """The models that answer now, in the catalogue's order: what a refused answer's ❌ offers."""
    served = found.classifier.models()
    return [
        name for name in found.catalogue.names if (status := served.get(name)) and status.version is not None
    ]


def _model_of(found: Services, prediction: PredictionRecord, label: str | None) -> str | None:
    """Which model a chosen label belongs to (None: it belongs to no model of this answer); of a
    refused answer's, the first serving model that has it, as its ❌ offered them."""
    serving = _serving(found)
    others = [name for name in found.catalogue.names if name not in serving]
    candidates = [prediction.model] if prediction.model else serving + others
    if label is None:
        return candidates[0] if prediction.model else _neither_model(found, prediction)
    return next((m for m in candidates if m and found.catalogue.knows(m, label)), None)


def _neither_model(found: Services, prediction: PredictionRecord) -> str:
    """A photo that is neither: stored as a negative of the model its mode asked for (in auto mode,
    of the catalogue's first model)."""
    spec = found.catalogue.for_mode(prediction.mode or "auto")
    return spec.name if spec else found.catalogue.names[0]


async def _record(
    found: Services,
    query: CallbackQuery,
    prediction: PredictionRecord,
    model: str | None,
    label: str | None,
    language: str,
) -> None:
    """Store the answer once, then edit the message to thank the user and show what was recorded."""
    if model is None:  # ✅ on "not recognised": the user confirms it is neither
        model = _neither_model(found, prediction)
    true_label = label if label is not None else negative_label(model)
    correct = (prediction.model, prediction.label) == (model, label) or (
        prediction.model is None and label is None
    )
    try:
        result = await found.store.record_feedback(
            prediction.id,
            user_id=query.from_user.id,
            verdict="correct" if correct else "wrong",
            true_label=true_label,
            model=model,
        )
    except (PredictionNotFound, NotPredictionOwner) as error:  # lost a race with /forget
        found.metrics.feedback("stale")
        logger.info("Feedback not stored: %s", error)
        await query.answer(text(language, "feedback_stale"), show_alert=True)
        return
    await found.store.drop_pending_correction(query.from_user.id, prediction.id)  # answered by button
    found.metrics.feedback(("correct" if correct else "wrong") if result.created else "already")
    if not result.created:
        await _answer_again(query, text(language, "feedback_already"))
        await _edit_markup(query, None)
        return
    neither = prediction.model is None and label is None  # "not recognised", and the user agrees
    thanks = text(language, "thanks_none") if neither else _thanks(found, language, model, label, correct)
    await query.answer(thanks)
    await _edit_thanks(query, thanks)


def _thanks(found: Services, language: str, model: str, label: str | None, correct: bool) -> str:
    spec = found.catalogue[model]
    if label is None:
        what = spec.none_label.get(language) or spec.none_label.get("en") or text(language, "button_neither")
        return text(language, "thanks_none_model", what=what.lower())
    shown = spec.shown_label(label, language)
    return text(language, "thanks_correct" if correct else "thanks_label", label=shown)


async def _answer_again(query: CallbackQuery, reply: str) -> None:
    """Answer a tap whose feedback is already stored. It may be the same update delivered again after
    the replica handling it died (webhooks), which had answered the query already: Telegram refuses a
    second answer, and the buttons must still go."""
    try:
        await query.answer(reply)
    except BadRequest as error:
        if "query is too old" not in str(error).lower():
            raise
        logger.info("Feedback tap answered before (a redelivered update): %s", error)


async def _edit_markup(query: CallbackQuery, keyboard: InlineKeyboardMarkup | None) -> None:
    if accessible_message(query) is None:
        return
    try:
        await query.edit_message_reply_markup(reply_markup=keyboard)
    except BadRequest as error:
        if "not modified" not in str(error).lower():
            raise


async def _edit_thanks(query: CallbackQuery, thanks: str) -> None:
    message = accessible_message(query)
    if message is None:
        return
    await edit_pressed_message(query, f"{message.text or ''}\n\n{thanks}".strip())


def register(application: Application) -> None:
    application.add_handler(CallbackQueryHandler(on_feedback, pattern=r"^(?![fr]:)"))

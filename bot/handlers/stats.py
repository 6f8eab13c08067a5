"""/stats: a user's own numbers; an admin sees the global figures too."""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.services import Services, lang, services
from bot.texts import percent, text


async def show_stats(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Reply with the user's photos and how often the bot was right (and global figures for admins)."""
    user, message = update.effective_user, update.effective_message
    if user is None or message is None:
        return
    found = services(context)
    language = lang(update)
    user_id = user.id
    mine = await found.store.user_stats(user_id)
    lines = [
        text(
            language,
            "stats_user",
            photos=mine.photos,
            rated=mine.feedback,
            correct=mine.correct,
            percent="—" if mine.accuracy is None else f"{percent(mine.accuracy)}%",
            contributions=mine.contributions,
        )
    ]
    if found.is_admin(user_id):
        lines.append(await global_stats_text(found, language))
    await message.reply_text("\n\n".join(lines))


async def global_stats_text(found: Services, language: str) -> str:
    figures = await found.store.global_stats()
    correct = sum(m.correct for m in figures.by_model.values())
    judged = sum(m.feedback for m in figures.by_model.values())
    return text(
        language,
        "stats_global",
        users=figures.users,
        photos=figures.photos,
        predictions=figures.predictions,
        feedback=figures.feedback,
        percent=f"{percent(correct / judged)}%" if judged else "—",
        labelled=figures.contributions,
        blocked=figures.blocked_users,
    )


def register(application: Application) -> None:
    application.add_handler(CommandHandler("stats", show_stats))

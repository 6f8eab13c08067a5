"""Every update first catches up with what another bot process sharing the database changed.

Several bot processes may serve one bot (replicas behind one webhook), and any of them may take the
next update: an admin's /newmodel on one must be known to the one that takes the next captioned photo.
The caches a process keeps of the database (the taught models in its catalogue) are checked here,
first of all: one read of a change counter per update. It comes before the flood limit so that every
update, refused or not, waits for the database the same number of times before it is answered: the
"slow down" notice then follows the replies to the updates before it, as it did in one process.
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, ContextTypes, TypeHandler

from bot.services import services

GROUP = -2  # first of all: before the flood limit (group -1) and the handlers' default group 0


async def catch_up(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Reload the taught models if another process changed them."""
    await services(context).follow_changes()


def register(application: Application) -> None:
    application.add_handler(TypeHandler(Update, catch_up), group=GROUP)

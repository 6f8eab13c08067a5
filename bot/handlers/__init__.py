"""Handlers, one module per feature, and `register` that wires them onto the application in order."""

from __future__ import annotations

from telegram.ext import Application

from bot.handlers import admin, basics, changes, feedback, flood, forget, modes, numbers, photos, stats, teach


def register(application: Application) -> None:
    """Catching up with other bot processes and the per-user flood check ahead of everything; then
    admin and user commands, then photos and documents, then everything else a user may send."""
    changes.register(application)
    flood.register(application)
    admin.register(application)
    teach.register(application)
    basics.register_commands(application)
    modes.register(application)
    stats.register(application)
    forget.register(application)
    feedback.register(application)
    photos.register(application)
    numbers.register(application)  # a typed number answers "reply with the right number"
    basics.register_fallbacks(application)

"""Handlers, one module per feature, and `register` that wires them onto the application in order."""

from __future__ import annotations

from telegram.ext import Application

from bot.handlers import admin, basics, feedback, flood, forget, modes, numbers, photos, stats, teach


def register(application: Application) -> None:
    """The per-user flood check ahead of everything; then admin and user commands, then photos and
    documents, then everything else a user may send."""
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

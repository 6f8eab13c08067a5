"""Handlers, one module per feature, and `register` that wires them onto the application in order."""

from __future__ import annotations

from telegram.ext import Application

from bot.handlers import admin, basics, feedback, forget, modes, photos, stats


def register(application: Application) -> None:
    """Admin and user commands first, then photos and documents, then everything else a user may send."""
    admin.register(application)
    basics.register_commands(application)
    modes.register(application)
    stats.register(application)
    forget.register(application)
    feedback.register(application)
    photos.register(application)
    basics.register_fallbacks(application)

"""The Bot API methods PhotoBot calls, each checking its parameters and answering the way Telegram does."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot.playground.bot_api.chats import Chats, edit
from bot.playground.bot_api.files import FileStore, image_size
from bot.playground.bot_api.protocol import (
    BotApiError,
    Json,
    bool_param,
    caption_param,
    checked_text,
    float_param,
    int_param,
    json_param,
    markup_param,
    str_param,
)
from bot.playground.bot_api.updates import DEFAULT_MAX_CONNECTIONS, UpdateQueue

_COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")

# Telegram's method name → the handler's name here.
METHOD_NAMES = (
    ("getMe", "get_me"),
    ("getUpdates", "get_updates"),
    ("getFile", "get_file"),
    ("sendMessage", "send_message"),
    ("sendPhoto", "send_photo"),
    ("sendDocument", "send_document"),
    ("sendChatAction", "send_chat_action"),
    ("editMessageText", "edit_message_text"),
    ("editMessageCaption", "edit_message_caption"),
    ("editMessageReplyMarkup", "edit_message_reply_markup"),
    ("deleteMessage", "delete_message"),
    ("answerCallbackQuery", "answer_callback_query"),
    ("setMyCommands", "set_my_commands"),
    ("getMyCommands", "get_my_commands"),
    ("deleteMyCommands", "delete_my_commands"),
    ("setWebhook", "set_webhook"),
    ("deleteWebhook", "delete_webhook"),
    ("getWebhookInfo", "get_webhook_info"),
    ("close", "close"),
    ("logOut", "log_out"),
)


class BotMethods:
    """One handler per method, from its parameters to its result; a refusal raises BotApiError."""

    def __init__(
        self, bot_user: Json, chats: Chats, updates: UpdateQueue, files: FileStore, *, local_mode: bool
    ) -> None:
        self.bot_user = bot_user
        self.chats = chats
        self.updates = updates
        self.files = files
        self.local_mode = local_mode  # like `telegram-bot-api --local`: plain-HTTP webhooks allowed
        self.commands: dict[str, list[Json]] = {}

    def by_name(self) -> dict[str, Callable[[Json], Awaitable[Any]]]:
        """The handlers by lower-case method name: Telegram's method names are case-insensitive."""
        return {name.lower(): getattr(self, handler) for name, handler in METHOD_NAMES}

    async def get_me(self, params: Json) -> Json:
        return self.bot_user

    async def get_updates(self, params: Json) -> list[Json]:
        if self.updates.webhook_url:
            raise BotApiError(
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
                409,
            )
        offset = int_param(params, "offset", 0)
        limit = min(max(int_param(params, "limit", 100), 1), 100)
        timeout = max(float_param(params, "timeout", 0.0), 0.0)
        allowed = json_param(params, "allowed_updates", None)
        return await self.updates.poll(offset, limit, timeout, allowed)

    async def get_file(self, params: Json) -> Json:
        return self.files.get_file(str_param(params, "file_id"))

    async def send_message(self, params: Json) -> Json:
        chat = self.chats.of_params(params)
        text = checked_text(params)
        return await chat.publish("message", self.chats.bot_message(chat, params, text=text))

    async def send_photo(self, params: Json) -> Json:
        chat = self.chats.of_params(params)
        stored = self.files.from_param(params, "photo", "photos")
        width, height = await asyncio.to_thread(image_size, stored.data)
        photo = [{**stored.describe(), "width": width, "height": height}]
        message = self.chats.bot_message(chat, params, photo=photo, **caption_param(params))
        return await chat.publish("message", message)

    async def send_document(self, params: Json) -> Json:
        chat = self.chats.of_params(params)
        stored = self.files.from_param(params, "document", "documents")
        upload = params.get("document")
        document = {
            **stored.describe(),
            "file_name": getattr(upload, "filename", None) or stored.file_path.rsplit("/", 1)[-1],
        }
        message = self.chats.bot_message(chat, params, document=document, **caption_param(params))
        return await chat.publish("message", message)

    async def send_chat_action(self, params: Json) -> bool:
        self.chats.of_params(params)
        str_param(params, "action")
        return True

    async def edit_message_text(self, params: Json) -> Json:
        chat, message = self.chats.editable(params)
        if "text" not in message:
            raise BotApiError("Bad Request: there is no text in the message to edit")
        text = checked_text(params)
        return await edit(chat, message, {"text": text}, markup_param(params))

    async def edit_message_caption(self, params: Json) -> Json:
        chat, message = self.chats.editable(params)
        if "text" in message:
            raise BotApiError("Bad Request: there is no caption in the message to edit")
        # Without a caption the caption is removed, as Telegram does.
        return await edit(chat, message, caption_param(params) or {"caption": None}, markup_param(params))

    async def edit_message_reply_markup(self, params: Json) -> Json:
        chat, message = self.chats.editable(params)
        return await edit(chat, message, {}, markup_param(params))

    async def delete_message(self, params: Json) -> bool:
        chat = self.chats.of_params(params)
        message_id = int_param(params, "message_id")
        if chat.messages.pop(message_id, None) is None:
            raise BotApiError("Bad Request: message to delete not found")
        await chat.log({"type": "delete", "message_id": message_id})
        return True

    async def answer_callback_query(self, params: Json) -> bool:
        query_id = str_param(params, "callback_query_id")
        pending = self.chats.queries.get(query_id)
        if pending is None or pending.answered or time.monotonic() - pending.created > 15 * 60:
            raise BotApiError(
                "Bad Request: query is too old and response timeout expired or query ID is invalid"
            )
        pending.answered = True
        text = params.get("text") or ""
        if len(text) > 200:
            raise BotApiError("Bad Request: MESSAGE_TOO_LONG")
        chat = self.chats.by_id[pending.query["from"]["id"]]
        await chat.log(
            {
                "type": "callback_answer",
                "callback_query_id": query_id,
                "text": text,
                "show_alert": bool_param(params, "show_alert"),
            }
        )
        return True

    async def set_my_commands(self, params: Json) -> bool:
        commands = json_param(params, "commands", None)
        if not isinstance(commands, list) or len(commands) > 100:
            raise BotApiError("Bad Request: commands must be a list of at most 100 commands")
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND.match(str(command.get("command", ""))):
                raise BotApiError("Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise BotApiError("Bad Request: command description is empty or too long")
        self.commands[params.get("language_code") or ""] = commands
        return True

    async def get_my_commands(self, params: Json) -> list[Json]:
        return self.commands.get(params.get("language_code") or "", [])

    async def delete_my_commands(self, params: Json) -> bool:
        self.commands.pop(params.get("language_code") or "", None)
        return True

    async def set_webhook(self, params: Json) -> bool:
        url = str_param(params, "url", "")
        if url and not url.startswith("https://") and not (self.local_mode and url.startswith("http://")):
            raise BotApiError("Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        connections = int_param(params, "max_connections", DEFAULT_MAX_CONNECTIONS)
        if not 1 <= connections <= 100:
            raise BotApiError("Bad Request: bad webhook: max_connections must be between 1 and 100")
        allowed = json_param(params, "allowed_updates", None)
        await self.updates.set_webhook(
            url, params.get("secret_token") or None, max_connections=connections, allowed_updates=allowed
        )
        if bool_param(params, "drop_pending_updates"):
            self.updates.pending.clear()
        return True

    async def delete_webhook(self, params: Json) -> bool:
        await self.updates.set_webhook("", None)
        if bool_param(params, "drop_pending_updates"):
            self.updates.pending.clear()
        return True

    async def get_webhook_info(self, params: Json) -> Json:
        info: Json = {
            "url": self.updates.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self.updates.pending),
        }
        if self.updates.webhook_url:
            info["max_connections"] = self.updates.max_connections
            if self.updates.allowed_updates:
                info["allowed_updates"] = self.updates.allowed_updates
        if self.updates.last_error is not None:
            info["last_error_date"], info["last_error_message"] = self.updates.last_error
        return info

    async def close(self, params: Json) -> bool:
        return True

    async def log_out(self, params: Json) -> bool:
        return True

"""The private chats: who is in them, their messages, and the event log that clients wait on.

Everything visible in a chat is kept as an ordered event log with revision numbers, so a client can
wait for "the next thing the bot did" without polling.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bot.playground.bot_api.protocol import BotApiError, Json, int_param, json_param, markup_param

# Told of every event logged in any chat (chat id, event), in log order: the playground keeps its history.
Listener = Callable[[int, Json], Awaitable[None]]


@dataclass
class ChatState:
    """One private chat: its messages, the event log clients follow, and a condition to wait on."""

    chat: Json
    messages: dict[int, Json] = field(default_factory=dict)
    events: list[Json] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    next_message_id: int = 1
    listeners: list[Listener] = field(default_factory=list)

    @property
    def revision(self) -> int:
        return len(self.events)

    async def log(self, event: Json) -> None:
        """Append an event with the next revision, wake whoever waits on the chat, then tell the listeners.

        Listeners run outside the lock (one may log an event itself), and the first one starts before
        any other event can be logged, so it sees them in order.
        """
        async with self.changed:
            event["rev"] = self.revision + 1
            event["time"] = time.time()
            self.events.append(event)
            self.changed.notify_all()
        for listener in self.listeners:
            await listener(self.chat["id"], event)

    def restore(self, messages: Iterable[Json]) -> None:
        """Messages from an earlier run, in order, as the chat's first events (no listener is told)."""
        for message in messages:
            self.messages[message["message_id"]] = message
            self.events.append(
                {"type": "message", "message": message, "rev": self.revision + 1, "time": time.time()}
            )
            self.next_message_id = max(self.next_message_id, message["message_id"] + 1)

    async def clear(self, keep: Iterable[int] = ()) -> list[Json]:
        """Remove every message but `keep` (the person's copy of the chat is gone); returns the removed."""
        kept = set(keep)
        removed = [m for i, m in self.messages.items() if i not in kept]
        for message in removed:
            del self.messages[message["message_id"]]
        await self.log({"type": "clear", "keep": sorted(kept & set(self.messages))})
        return removed

    async def publish(self, kind: str, message: Json) -> Json:
        self.messages[message["message_id"]] = message
        await self.log({"type": kind, "message": message})
        return message

    async def wait_for(self, predicate: Callable[[Json], bool], *, after: int, timeout: float) -> Json:
        """The first event after revision `after` that satisfies `predicate`."""

        def found() -> Json | None:
            return next((e for e in self.events[after:] if predicate(e)), None)

        async with self.changed:
            event = found()
            if event is None:
                try:
                    await asyncio.wait_for(self.changed.wait_for(lambda: found() is not None), timeout)
                except TimeoutError:
                    raise TimeoutError(
                        f"nothing matched in chat {self.chat['id']} within {timeout} s; events since "
                        f"{after}: {_summary(self.events[after:])}"
                    ) from None
                event = found()
        assert event is not None
        return event

    async def events_after(self, after: int, timeout: float) -> list[Json]:
        """Events after revision `after`, waiting up to `timeout` seconds for at least one."""
        async with self.changed:
            if self.revision <= after:
                try:
                    await asyncio.wait_for(self.changed.wait_for(lambda: self.revision > after), timeout)
                except TimeoutError:
                    return []
            return self.events[after:]


@dataclass
class PendingQuery:
    query: Json
    created: float
    answered: bool = False


class Chats:
    """The people who opened a chat with the bot, their chats, and the button presses to be answered."""

    def __init__(self, bot_user: Json) -> None:
        self.bot_user = bot_user
        self.users: dict[int, Json] = {}
        self.by_id: dict[int, ChatState] = {}
        self.queries: dict[str, PendingQuery] = {}
        self.listeners: list[Listener] = []  # shared by every chat
        self._query_ids = itertools.count(1)

    def add_user(
        self, user_id: int, first_name: str, *, language_code: str | None, username: str | None
    ) -> Json:
        user: Json = {"id": user_id, "is_bot": False, "first_name": first_name}
        if language_code:
            user["language_code"] = language_code
        if username:
            user["username"] = username
        self.users[user_id] = user
        if user_id not in self.by_id:
            chat = {"id": user_id, "type": "private", "first_name": first_name}
            if username:
                chat["username"] = username
            self.by_id[user_id] = ChatState(chat=chat, listeners=self.listeners)
        return user

    def of_params(self, params: Json) -> ChatState:
        """The chat a method names in `chat_id`, refused as Telegram does when there is none."""
        raw = params.get("chat_id")
        if raw in (None, ""):
            raise BotApiError("Bad Request: chat_id is empty")
        try:
            chat = self.by_id.get(int(raw))
        except (TypeError, ValueError):
            chat = None
        if chat is None:
            raise BotApiError("Bad Request: chat not found")
        return chat

    def user_message(self, user_id: int, content: Json) -> tuple[ChatState, Json]:
        """A new message from the user in their chat (not yet published)."""
        chat = self.by_id.get(user_id)
        if chat is None:
            raise ValueError(f"add_user({user_id}) first")
        message: Json = {
            "message_id": chat.next_message_id,
            "from": self.users[user_id],
            "chat": chat.chat,
            "date": int(time.time()),
            **content,
        }
        chat.next_message_id += 1
        return chat, message

    def bot_message(self, chat: ChatState, params: Json, **content: Any) -> Json:
        """A new message from the bot, with the reply and keyboard its parameters ask for."""
        message: Json = {
            "message_id": chat.next_message_id,
            "from": self.bot_user,
            "chat": chat.chat,
            "date": int(time.time()),
            **content,
        }
        chat.next_message_id += 1
        reply_to = json_param(params, "reply_parameters", None)
        reply_id = (
            reply_to.get("message_id") if isinstance(reply_to, dict) else params.get("reply_to_message_id")
        )
        if reply_id not in (None, ""):
            replied = chat.messages.get(int(reply_id))
            # Telegram's allow_sending_without_reply: a reply to a message that is gone is sent plain.
            anyway = isinstance(reply_to, dict) and reply_to.get("allow_sending_without_reply") is True
            if replied is None and not anyway:
                raise BotApiError("Bad Request: message to be replied not found")
            if replied is not None:
                message["reply_to_message"] = {k: v for k, v in replied.items() if k != "reply_to_message"}
        markup = markup_param(params)
        if markup:
            message["reply_markup"] = markup
        return message

    def editable(self, params: Json) -> tuple[ChatState, Json]:
        """The bot's own message that an edit method names; Telegram edits nothing else."""
        if params.get("inline_message_id"):
            raise BotApiError("Bad Request: MESSAGE_ID_INVALID")
        chat = self.of_params(params)
        message = chat.messages.get(int_param(params, "message_id"))
        if message is None:
            raise BotApiError("Bad Request: message to edit not found")
        if message["from"]["id"] != self.bot_user["id"]:
            raise BotApiError("Bad Request: message can't be edited")
        return chat, message

    def new_query(self, user_id: int, message: Json, data: str) -> Json:
        """A callback query for a button press, remembered until the bot answers it."""
        query_id = str(next(self._query_ids) * 7919 + self.bot_user["id"] % 1000)
        query: Json = {
            "id": query_id,
            "from": self.users[user_id],
            "message": message,
            "chat_instance": str(-user_id * 31),
            "data": data,
        }
        self.queries[query_id] = PendingQuery(query=query, created=time.monotonic())
        return query


async def edit(chat: ChatState, message: Json, content: Json, markup: Json | None) -> Json:
    """Replace a message's content and keyboard; an edit that changes nothing is refused, as Telegram does."""
    edited = {k: v for k, v in message.items() if k != "reply_markup"}
    edited.update(content)
    edited = {k: v for k, v in edited.items() if v is not None}
    if markup:
        edited["reply_markup"] = markup
    same_content = all(edited.get(k) == message.get(k) for k in ("text", "caption"))
    if same_content and edited.get("reply_markup") == message.get("reply_markup"):
        raise BotApiError(
            "Bad Request: message is not modified: specified new message content and reply markup "
            "are exactly the same as a current content and reply markup of the message"
        )
    edited["edit_date"] = int(time.time())
    chat.messages[message["message_id"]] = edited
    await chat.log({"type": "edit", "message": edited})
    return edited


def _summary(events: list[Json]) -> list[str]:
    out = []
    for event in events[-8:]:
        message = event.get("message") or {}
        text = message.get("text") or message.get("caption") or event.get("text") or event.get("data") or ""
        out.append(f"{event['type']}: {str(text)[:60]!r}")
    return out

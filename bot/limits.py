"""Per-user flood limits, counted in the database that every bot process shares.

Two limiters use it: one for every update (`bot.handlers.flood`, USER_UPDATES_PER_MINUTE) and one for
photos (USER_PHOTOS_PER_MINUTE), which cost far more to answer. A user over a limit is told once per
window when to try again; what they send further in that window is dropped silently, so a flood never
turns into a flood of replies. Other users are unaffected.

A window opens at a user's first update after their last one closed and lasts a minute. Its count
lives in the database (one upsert per update, `Store.count_update`), so several bot processes sharing
it hold one limit between them: a user's updates count together wherever they land, and the notice
goes out once, with the update that makes the count one over the limit, on whichever process takes
it. A process that has seen a user over the limit refuses them without asking the database again
until their window closes: the count can only grow until then, so a flood costs one write per
process and window, not one per update.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from storage.records import FloodWindow

WINDOW_S = 60.0
FORGET_AFTER = 10_000  # users remembered as refused before the closed windows are dropped


@dataclass(frozen=True)
class Decision:
    allowed: bool
    notify: bool = False  # the first refusal in a window: tell the user
    retry_after_s: float = 0.0


class FloodCounts(Protocol):
    """Where the windows are counted (`storage.Store`)."""

    async def count_update(self, user_id: int, kind: str, *, now: float, window_s: float) -> FloodWindow: ...


class FloodLimiter:
    def __init__(
        self,
        per_minute: int,
        counts: FloodCounts,
        kind: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`per_minute` updates (`kind` "updates") or photos ("photos") per user per minute; 0 turns
        the limit off. `clock` is unix time: every process counting in one database reads the same."""
        self.per_minute = per_minute
        self.kind = kind
        self._counts = counts
        self._clock = clock
        self._refused_until: dict[int, float] = {}  # user → when their window closes

    async def check(self, user_id: int) -> Decision:
        """Count one update (or photo) from `user_id` and say whether to handle it."""
        if self.per_minute <= 0:
            return Decision(allowed=True)
        now = self._clock()
        until = self._refused_until.get(user_id)
        if until is not None and now < until:
            return Decision(allowed=False, retry_after_s=until - now)
        window = await self._counts.count_update(user_id, self.kind, now=now, window_s=WINDOW_S)
        if window.count <= self.per_minute:
            return Decision(allowed=True)
        closes = window.start + WINDOW_S
        if len(self._refused_until) >= FORGET_AFTER:
            self._refused_until = {u: t for u, t in self._refused_until.items() if t > now}
        self._refused_until[user_id] = closes
        return Decision(
            allowed=False, notify=window.count == self.per_minute + 1, retry_after_s=max(0.0, closes - now)
        )

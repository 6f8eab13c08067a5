"""Per-user flood limits: a sliding one-minute window per user.

Two limiters use it: one for every update (`bot.handlers.flood`, USER_UPDATES_PER_MINUTE) and one for
photos (USER_PHOTOS_PER_MINUTE), which cost far more to answer. A user over a limit is told once per
window when to try again; what they send further in that window is dropped silently, so a flood never
turns into a flood of replies. Other users are unaffected.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 60.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    notify: bool = False  # the first refusal in a window: tell the user
    retry_after_s: float = 0.0


class FloodLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        """`per_minute` updates (or photos) per user per minute; 0 turns the limit off."""
        self.per_minute = per_minute
        self._clock = clock
        self._seen: dict[int, deque[float]] = {}
        self._notified_until: dict[int, float] = {}

    def check(self, user_id: int) -> Decision:
        """Count one update (or photo) from `user_id` and say whether to handle it."""
        if self.per_minute <= 0:
            return Decision(allowed=True)
        now = self._clock()
        seen = self._seen.setdefault(user_id, deque())
        while seen and seen[0] <= now - WINDOW_S:
            seen.popleft()
        if len(seen) < self.per_minute:
            seen.append(now)
            if len(self._seen) > 10_000:
                self._forget_idle(now)
            return Decision(allowed=True)
        retry_after = seen[0] + WINDOW_S - now
        notify = self._notified_until.get(user_id, 0.0) <= now
        if notify:
            self._notified_until[user_id] = seen[0] + WINDOW_S
        return Decision(allowed=False, notify=notify, retry_after_s=retry_after)

    def _forget_idle(self, now: float) -> None:
        for user_id in [u for u, s in self._seen.items() if not s or s[-1] <= now - WINDOW_S]:
            del self._seen[user_id]
            self._notified_until.pop(user_id, None)

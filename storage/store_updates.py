"""The `Store` calls about the updates Telegram POSTs to the webhook: claim, answering, done, leases.

Bot replicas behind one load balancer share them through the database, so each update is handled by one
replica at a time and answered once, and one whose replica died is taken over. The SQL and what each
step means are in `storage.queries.updates`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from storage.dialect import Connection
from storage.group_commit import GroupCommit
from storage.queries import updates
from storage.queries.updates import Claim, UpdateCounts, WebhookClaim, WebhookSetting

KEEP_UPDATES_S = 25 * 3600.0  # Telegram keeps an undelivered update 24 hours: no copy comes later
SWEEP_EVERY_S = 600.0  # how often this process deletes rows of updates older than that

__all__ = ["Claim", "UpdateCalls", "UpdateCounts", "WebhookClaim", "WebhookSetting"]


class UpdateCalls(GroupCommit):
    """Webhook updates and the webhook's setting, over `GroupCommit`'s reads and writes."""

    _updates_swept_at = float("-inf")

    async def claim_update(self, update_id: int, owner: str, *, now: float, lease_s: float) -> Claim:
        """Claim `update_id` for `owner` (a fresh update, or one whose lease ran out), or say who has it.

        Rows older than Telegram keeps updates are deleted in the same write, every ten minutes.
        """
        sweep = now - self._updates_swept_at >= SWEEP_EVERY_S
        if sweep:
            self._updates_swept_at = now

        def claim(db: Connection) -> Claim:
            if sweep:
                updates.forget_updates(db, claimed_before=now - KEEP_UPDATES_S)
            return updates.claim_update(db, update_id, owner, now=now, lease_s=lease_s)

        return await self._write(claim)

    async def mark_answering(self, update_id: int, owner: str, *, now: float) -> bool:
        """Durably note that `owner`'s first answer to `update_id` is about to go out."""
        return await self._write(
            functools.partial(updates.mark_answering, update_id=update_id, owner=owner, now=now)
        )

    async def finish_update(self, update_id: int, owner: str, *, now: float) -> bool:
        """`owner` answered `update_id`: later copies are only acknowledged. False: it was taken over."""
        return await self._write(
            functools.partial(updates.finish_update, update_id=update_id, owner=owner, now=now)
        )

    async def release_update(self, update_id: int, owner: str) -> bool:
        """Give an unanswered `update_id` up: the next copy of it is taken over at once."""
        return await self._write(functools.partial(updates.release_update, update_id=update_id, owner=owner))

    async def renew_leases(self, owner: str, update_ids: Sequence[int], *, lease_until: float) -> int:
        """`owner` still handles `update_ids`: their leases hold until `lease_until`."""
        return await self._write(
            functools.partial(
                updates.renew_leases, owner=owner, update_ids=update_ids, lease_until=lease_until
            )
        )

    async def update_counts(self) -> UpdateCounts:
        """Updates remembered, answered, taken over and answered twice maybe (every replica's)."""
        return await self._read(updates.update_counts)

    async def webhook_setting(self) -> WebhookSetting | None:
        """The webhook as a replica last set it, or None."""
        return await self._read(updates.webhook_setting)

    async def record_webhook_setting(self, setting: WebhookSetting) -> None:
        await self._write(functools.partial(updates.record_webhook_setting, setting=setting))

    async def claim_webhook_setting(
        self, setting: WebhookSetting, *, telegram_has_it: bool, seen_at: float
    ) -> WebhookClaim:
        """Claim setting the webhook, or learn which replica set (or is setting) it."""
        return await self._write(
            functools.partial(
                updates.claim_webhook_setting,
                setting=setting,
                telegram_has_it=telegram_has_it,
                seen_at=seen_at,
            )
        )

    async def forget_webhook_setting(self, setting: WebhookSetting) -> None:
        """Take back this replica's claim: its setWebhook failed."""
        await self._write(functools.partial(updates.forget_webhook_setting, setting=setting))

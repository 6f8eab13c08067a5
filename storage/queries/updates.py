"""SQL about the updates Telegram POSTs to the bot's webhook: claimed once, answered once, across replicas.

Telegram delivers an update again when its webhook call fails (another status than 2xx, no answer within
60 s), and several bot replicas behind one load balancer may each get a copy. A row per `update_id`
says who handles it and how far it got:

- **claim**: the first replica to insert the row owns the update for `lease_until`, a lease its
  process renews while it works. A copy that arrives while the lease holds is not handled again
  (`held`); one that arrives after the update was answered is only acknowledged (`done`). A lease that
  ran out means the owner died or lost the database: the next copy takes the update over.
- **answering**: the owner notes, before its first Bot API call that shows the person something, that
  an answer may be on its way. A takeover of an update so marked is counted `in_doubt`: Telegram may
  have accepted the dead owner's answer before its `done` was recorded, so the person may see it twice.
- **done**: recorded right after the handler returns, the answer sent; a later copy is acknowledged.

Each step is one statement (the claim two, under the write lock that `BEGIN IMMEDIATE` takes on both
backends, so two replicas claiming at once cannot both win). Times are unix times from each machine's
clock: keep the clocks in step (NTP), as for the flood windows. Write functions run inside their
caller's transaction and never commit (see `storage.sql`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from storage.dialect import Connection

ClaimStatus = Literal["claimed", "taken_over", "held", "done"]


@dataclass(frozen=True)
class Claim:
    """What a replica may do with an update it received.

    `claimed` / `taken_over`: it is this replica's to handle (`taken_over`: a lease that ran out, from
    `previous`; `in_doubt` when that owner had begun answering). `held`: another replica (`previous`) is
    handling it until `lease_until`. `done`: already answered (by `previous`).
    """

    status: ClaimStatus
    previous: str | None = None
    lease_until: float = 0.0
    in_doubt: bool = False

    @property
    def ours(self) -> bool:
        return self.status in ("claimed", "taken_over")


@dataclass(frozen=True)
class UpdateCounts:
    """Over the updates still remembered: how many, answered, taken over, and answered twice maybe."""

    updates: int
    done: int
    taken_over: int  # updates claimed more than once (a replica died or lost the database)
    in_doubt: int  # takeovers after the owner had begun answering


@dataclass(frozen=True)
class WebhookSetting:
    """The webhook as a replica last set it: a fingerprint of its settings, by whom and when."""

    fingerprint: str
    url: str
    set_by: str
    set_at: float


@dataclass(frozen=True)
class WebhookClaim:
    """What claiming the webhook found: `held_by`, the replica that set (or is setting) these same
    settings, when this replica must leave the call to it; otherwise the claim is this replica's, and
    `replaced` is the row it took over (None when no replica had set one)."""

    held_by: WebhookSetting | None = None
    replaced: WebhookSetting | None = None


def claim_update(db: Connection, update_id: int, owner: str, *, now: float, lease_s: float) -> Claim:
    """Claim `update_id` for `owner` until `now + lease_s`, or say who has it. Under the write lock."""
    lease_until = now + lease_s
    inserted = db.execute(
        """INSERT INTO webhook_updates (update_id, owner, claimed_at, lease_until, claims, in_doubt)
           VALUES (?, ?, ?, ?, 1, 0)
           ON CONFLICT (update_id) DO NOTHING
           RETURNING update_id""",
        (update_id, owner, now, lease_until),
    ).fetchone()
    if inserted is not None:
        return Claim("claimed", lease_until=lease_until)
    previous, held_until, answering_at, done_at = db.execute(
        "SELECT owner, lease_until, answering_at, done_at FROM webhook_updates WHERE update_id = ?",
        (update_id,),
    ).fetchone()
    if done_at is not None:
        return Claim("done", previous=previous, lease_until=float(held_until))
    if float(held_until) > now:
        return Claim("held", previous=previous, lease_until=float(held_until))
    in_doubt = answering_at is not None
    db.execute(
        """UPDATE webhook_updates
           SET owner = ?, claimed_at = ?, lease_until = ?, answering_at = NULL,
               claims = claims + 1, in_doubt = in_doubt + ?
           WHERE update_id = ?""",
        (owner, now, lease_until, 1 if in_doubt else 0, update_id),
    )
    return Claim("taken_over", previous=previous, lease_until=lease_until, in_doubt=in_doubt)


def mark_answering(db: Connection, update_id: int, owner: str, *, now: float) -> bool:
    """`owner` is about to send its first answer to `update_id`; False if the update is not its own."""
    return (
        db.execute(
            """UPDATE webhook_updates SET answering_at = ?
               WHERE update_id = ? AND owner = ? AND done_at IS NULL AND answering_at IS NULL""",
            (now, update_id, owner),
        ).rowcount
        > 0
    )


def finish_update(db: Connection, update_id: int, owner: str, *, now: float) -> bool:
    """`owner` answered `update_id`; False if another replica had taken it over meanwhile."""
    return (
        db.execute(
            "UPDATE webhook_updates SET done_at = ? WHERE update_id = ? AND owner = ? AND done_at IS NULL",
            (now, update_id, owner),
        ).rowcount
        > 0
    )


def release_update(db: Connection, update_id: int, owner: str) -> bool:
    """`owner` gives `update_id` up unanswered (it stops, or its handler failed): the next copy takes it
    at once instead of waiting for the lease."""
    return (
        db.execute(
            """UPDATE webhook_updates SET lease_until = 0
               WHERE update_id = ? AND owner = ? AND done_at IS NULL""",
            (update_id, owner),
        ).rowcount
        > 0
    )


def renew_leases(db: Connection, owner: str, update_ids: Sequence[int], *, lease_until: float) -> int:
    """`owner` still works on `update_ids`: their leases hold until `lease_until`. How many it holds."""
    renewed = 0
    for start in range(0, len(update_ids), 500):  # well under either engine's parameter limit
        chunk = list(update_ids[start : start + 500])
        marks = ", ".join("?" * len(chunk))
        renewed += db.execute(
            f"""UPDATE webhook_updates SET lease_until = ?
                WHERE owner = ? AND done_at IS NULL AND update_id IN ({marks})""",
            (lease_until, owner, *chunk),
        ).rowcount
    return renewed


def forget_updates(db: Connection, *, claimed_before: float) -> int:
    """Delete the rows of updates claimed before `claimed_before`: Telegram keeps an update at most 24
    hours, so no copy of one older than that can come."""
    return db.execute("DELETE FROM webhook_updates WHERE claimed_at < ?", (claimed_before,)).rowcount


def update_counts(db: Connection) -> UpdateCounts:
    row = db.execute(
        """SELECT count(*),
                  sum(CASE WHEN done_at IS NULL THEN 0 ELSE 1 END),
                  sum(CASE WHEN claims > 1 THEN 1 ELSE 0 END),
                  sum(in_doubt)
           FROM webhook_updates"""
    ).fetchone()
    return UpdateCounts(*(int(value or 0) for value in row))


def webhook_setting(db: Connection) -> WebhookSetting | None:
    row = db.execute("SELECT fingerprint, url, set_by, set_at FROM webhook_setting WHERE one = 1").fetchone()
    return None if row is None else WebhookSetting(row[0], row[1], row[2], float(row[3]))


def claim_webhook_setting(
    db: Connection, setting: WebhookSetting, *, telegram_has_it: bool, seen_at: float
) -> WebhookClaim:
    """Record `setting` as the webhook this replica is about to set, unless another replica set or is
    setting the same one: then say which, and record nothing.

    Run under the write lock (`BEGIN IMMEDIATE`), so of replicas starting together the first claims and
    the rest see its row. A row with the same fingerprint counts when Telegram already has the webhook,
    or when it was claimed after `seen_at` (when this replica asked Telegram): its setWebhook may not
    have reached Telegram yet, but it will.
    """
    current = webhook_setting(db)
    if (
        current is not None
        and current.fingerprint == setting.fingerprint
        and (telegram_has_it or current.set_at >= seen_at)
    ):
        return WebhookClaim(held_by=current)
    record_webhook_setting(db, setting)
    return WebhookClaim(replaced=current)


def forget_webhook_setting(db: Connection, setting: WebhookSetting) -> None:
    """Take back a claim whose setWebhook failed, unless another replica has claimed since."""
    db.execute(
        "DELETE FROM webhook_setting WHERE one = 1 AND set_by = ? AND set_at = ?",
        (setting.set_by, setting.set_at),
    )


def record_webhook_setting(db: Connection, setting: WebhookSetting) -> None:
    db.execute(
        """INSERT INTO webhook_setting (one, fingerprint, url, set_by, set_at) VALUES (1, ?, ?, ?, ?)
           ON CONFLICT (one) DO UPDATE SET fingerprint = excluded.fingerprint, url = excluded.url,
               set_by = excluded.set_by, set_at = excluded.set_at""",
        (setting.fingerprint, setting.url, setting.set_by, setting.set_at),
    )

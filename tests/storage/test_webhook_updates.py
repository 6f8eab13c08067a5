"""Webhook updates claimed once across replicas: claim, lease, takeover, answering, done — on both backends.

Two stores on one database stand for two bot replicas (two processes' connections); times are passed in,
so a lease running out is a later `now`, not a wait.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage import Store
from storage.queries.updates import WebhookClaim, WebhookSetting
from storage.store_updates import KEEP_UPDATES_S
from tests.support.storage import rows

LEASE_S = 15.0


async def test_the_first_claim_wins_a_copy_is_held_then_acknowledged_once_done(
    database, tmp_path: Path
) -> None:
    async with (
        await Store.open(database, tmp_path / "a") as a,
        await Store.open(database, tmp_path / "b") as b,
    ):
        first = await a.claim_update(1001, "a", now=100.0, lease_s=LEASE_S)
        assert (first.status, first.ours, first.lease_until) == ("claimed", True, 115.0)
        copy = await b.claim_update(1001, "b", now=101.0, lease_s=LEASE_S)
        assert (copy.status, copy.ours, copy.previous, copy.lease_until) == ("held", False, "a", 115.0)
        assert await a.finish_update(1001, "a", now=102.0)
        late = await b.claim_update(1001, "b", now=500.0, lease_s=LEASE_S)  # long after the lease: still done
        assert (late.status, late.previous) == ("done", "a")
        assert not await a.finish_update(1001, "a", now=503.0)  # done once
        counts = await b.update_counts()
        assert (counts.updates, counts.done, counts.taken_over, counts.in_doubt) == (1, 1, 0, 0)


async def test_replicas_claiming_one_update_at_once_let_exactly_one_handle_it(
    database, tmp_path: Path
) -> None:
    stores = [await Store.open(database, tmp_path / str(n)) for n in range(2)]
    try:
        claims = await asyncio.gather(
            *(
                stores[n % 2].claim_update(update_id, f"replica-{n}", now=100.0, lease_s=LEASE_S)
                for update_id in range(1, 21)
                for n in range(6)  # six copies of each update, three on each store
            )
        )
    finally:
        for store in stores:
            await store.close()
    by_update = [claims[i : i + 6] for i in range(0, len(claims), 6)]
    assert all([c.ours for c in copies].count(True) == 1 for copies in by_update)
    assert all({c.status for c in copies} == {"claimed", "held"} for copies in by_update)
    assert rows(database, "SELECT count(*), sum(claims) FROM webhook_updates") == [(20, 20)]


async def test_an_update_whose_owner_died_is_taken_over_after_its_lease(database, tmp_path: Path) -> None:
    async with (
        await Store.open(database, tmp_path / "a") as a,
        await Store.open(database, tmp_path / "b") as b,
    ):
        await a.claim_update(7, "dead", now=100.0, lease_s=LEASE_S)
        assert (await b.claim_update(7, "alive", now=114.9, lease_s=LEASE_S)).status == "held"
        taken = await b.claim_update(7, "alive", now=115.0, lease_s=LEASE_S)
        assert (taken.status, taken.ours, taken.previous, taken.in_doubt) == (
            "taken_over",
            True,
            "dead",
            False,
        )
        assert not await a.finish_update(7, "dead", now=116.0)  # it is no longer the dead one's
        assert await b.finish_update(7, "alive", now=116.0)
        counts = await a.update_counts()
        assert (counts.taken_over, counts.in_doubt) == (1, 0)  # nothing had gone out: no duplicate possible


async def test_a_takeover_after_the_owner_began_answering_is_counted_in_doubt(
    database, tmp_path: Path
) -> None:
    async with (
        await Store.open(database, tmp_path / "a") as a,
        await Store.open(database, tmp_path / "b") as b,
    ):
        await a.claim_update(8, "dead", now=100.0, lease_s=LEASE_S)
        assert await a.mark_answering(8, "dead", now=101.0)
        assert not await a.mark_answering(8, "dead", now=101.5)  # marked once per owner
        taken = await b.claim_update(8, "alive", now=200.0, lease_s=LEASE_S)
        assert (taken.status, taken.in_doubt) == ("taken_over", True)
        assert not await a.mark_answering(8, "dead", now=201.0)  # a stale owner cannot mark it again
        assert await b.mark_answering(8, "alive", now=201.0)  # the new owner's own answer
        assert await b.finish_update(8, "alive", now=202.0)
        assert rows(database, "SELECT claims, in_doubt FROM webhook_updates WHERE update_id = 8") == [(2, 1)]
        counts = await b.update_counts()
        assert (counts.updates, counts.done, counts.taken_over, counts.in_doubt) == (1, 1, 1, 1)


async def test_renewed_leases_hold_and_a_released_update_is_taken_at_once(database, tmp_path: Path) -> None:
    async with (
        await Store.open(database, tmp_path / "a") as a,
        await Store.open(database, tmp_path / "b") as b,
    ):
        for update_id in (1, 2, 3):
            await a.claim_update(update_id, "slow", now=100.0, lease_s=LEASE_S)
        assert await a.finish_update(3, "slow", now=101.0)
        assert await a.renew_leases("slow", [1, 2, 3], lease_until=160.0) == 2  # the done one is not renewed
        assert (await b.claim_update(1, "other", now=150.0, lease_s=LEASE_S)).status == "held"
        assert await a.release_update(2, "slow")  # e.g. the replica stops before answering it
        released = await b.claim_update(2, "other", now=101.0, lease_s=LEASE_S)
        assert (released.status, released.previous) == ("taken_over", "slow")
        assert not await a.renew_leases("slow", [2], lease_until=170.0)  # no longer its own


async def test_updates_older_than_telegram_keeps_them_are_swept(database, tmp_path: Path) -> None:
    async with await Store.open(database, tmp_path / "a") as store:
        await store.claim_update(1, "a", now=1000.0, lease_s=LEASE_S)
        await store.finish_update(1, "a", now=1001.0)
        await store.claim_update(2, "a", now=1000.0, lease_s=LEASE_S)  # never finished: Telegram gave up
        assert await store.claim_update(3, "a", now=1000.0 + KEEP_UPDATES_S + 1, lease_s=LEASE_S)
        assert rows(database, "SELECT update_id FROM webhook_updates ORDER BY update_id") == [(3,)]


async def test_the_webhook_setting_is_one_row_replaced_by_the_replica_that_sets_it(
    database, tmp_path: Path
) -> None:
    async with await Store.open(database, tmp_path / "a") as store:
        assert await store.webhook_setting() is None
        await store.record_webhook_setting(WebhookSetting("f1", "https://bot.example/hook", "a", 100.0))
        await store.record_webhook_setting(WebhookSetting("f2", "https://bot.example/new", "b", 200.0))
        assert await store.webhook_setting() == WebhookSetting("f2", "https://bot.example/new", "b", 200.0)
        assert rows(database, "SELECT count(*) FROM webhook_setting") == [(1,)]


async def test_the_first_claim_to_set_a_webhook_wins_and_a_failed_one_is_taken_back(
    database, tmp_path: Path
) -> None:
    async with await Store.open(database, tmp_path / "a") as store:
        a = WebhookSetting("f1", "https://bot.example/hook", "a", 100.0)
        assert await store.claim_webhook_setting(a, telegram_has_it=False, seen_at=99.0) == WebhookClaim()
        b = WebhookSetting("f1", "https://bot.example/hook", "b", 100.5)
        # b asked Telegram before a's claim: a's setWebhook is on its way, so b leaves it to a
        claim = await store.claim_webhook_setting(b, telegram_has_it=False, seen_at=99.5)
        assert claim == WebhookClaim(held_by=a)
        # a replica starting long after a, which Telegram says has no webhook: a's call was lost
        c = WebhookSetting("f1", "https://bot.example/hook", "c", 300.0)
        claim = await store.claim_webhook_setting(c, telegram_has_it=False, seen_at=299.0)
        assert claim == WebhookClaim(replaced=a)
        d = WebhookSetting("f1", "https://bot.example/hook", "d", 400.0)
        claim = await store.claim_webhook_setting(d, telegram_has_it=True, seen_at=399.0)
        assert claim == WebhookClaim(held_by=c)
        other = WebhookSetting("f2", "https://bot.example/new", "e", 500.0)
        claim = await store.claim_webhook_setting(other, telegram_has_it=True, seen_at=499.0)
        assert claim == WebhookClaim(replaced=c)  # other settings: the replica says whose it replaced
        await store.forget_webhook_setting(c)  # no longer c's claim: kept
        assert await store.webhook_setting() == other
        await store.forget_webhook_setting(other)
        assert await store.webhook_setting() is None

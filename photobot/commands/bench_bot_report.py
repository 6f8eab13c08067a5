"""What `photobot bench bot` reports: one row per scenario, and each comparison made in the same round.

A comparison only ever divides two figures measured in the same round, one bot right after the other:
this VM's speed drifts too much between rounds for anything else. The JSON (`--json`) is one object:
`{"scenarios": [row, …], "backends": [pair, …]}`, a row per scenario (the `Scenario` fields) and, with
`--backend both`, a pair per round, kind and users: each backend's figures side by side and PostgreSQL's
as a ratio of SQLite's (`"ratio": {"photos_per_s", "bot_cpu_ms", "cpu_ms_with_database"}`; above 1 is
faster or dearer). The bot's CPU holds SQLite's work but not PostgreSQL's, whose server is another
process: `cpu_ms_with_database` adds the server's CPU (`database_cpu_ms`) to the PostgreSQL side.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

SIDE_BY_SIDE = ("photos_per_s", "p50_ms", "p95_ms", "bot_cpu_ms", "database_cpu_ms")


@dataclass(frozen=True)
class Scenario:
    round: int  # from 1; see --rounds
    bot: str  # "bare", "photobot", "checkout" (the PhotoBot of --checkout), "metrics" (METRICS_PORT on)
    kind: str  # "digits" or "flowers"
    users: int
    photos: int  # answered within the measured window
    seconds: float
    photos_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    answered: int  # answers with ✅ / ❌ buttons (the rest were refusals or errors)
    bot_cpu_ms: float | None  # CPU time of the bot's process tree per answered photo (load-independent)
    server_cpu_ms: float | None  # CPU time of this process (server + simulated users) per answered photo
    backend: str | None = None  # PhotoBot's database, "sqlite" or "postgresql"; None for the bare bot
    # Predictions its database gained over the scenario, warm-up included (None: the bare bot stores none)
    stored: int | None = None
    # CPU time of the PostgreSQL server's processes per answered photo: outside the bot's process tree,
    # where SQLite's work is counted (None on SQLite)
    database_cpu_ms: float | None = None


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def ms1(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def row(r: Scenario) -> str:
    """One scenario as it finishes."""
    bot = f"{r.bot} ({r.backend})" if r.backend else r.bot
    return (
        f"round {r.round}: {bot:20} {r.kind:8} {r.users:>3} users: {r.photos_per_s:6.1f} photos/s, "
        f"p50 {ms(r.p50_ms):>5} ms, p95 {ms(r.p95_ms):>5} ms; CPU per photo: bot {ms(r.bot_cpu_ms)} ms, "
        + ("" if r.database_cpu_ms is None else f"PostgreSQL {ms(r.database_cpu_ms)} ms, ")
        + f"server {ms(r.server_cpu_ms)} ms ({r.photos} photos, {r.answered} with buttons"
        + ("" if r.stored is None else f"; {r.stored} predictions stored in all")
        + ")"
    )


def print_results(results: list[Scenario], checkout: str | None = None) -> None:
    print(
        "\nround  bot       backend     kind     users  photos/s   p50 ms   p95 ms"
        "   bot CPU ms/photo   server CPU ms/photo"
    )
    for r in results:
        print(
            f"{r.round:>5}  {r.bot:9} {r.backend or '—':11} {r.kind:8} {r.users:>5} {r.photos_per_s:9.1f} "
            f"{ms(r.p50_ms):>8} {ms(r.p95_ms):>8} {ms(r.bot_cpu_ms):>18} {ms(r.server_cpu_ms):>21}"
        )
    backends = [b for b in ("sqlite", "postgresql") if any(r.backend == b for r in results)]
    for backend in backends:
        on = (
            f"PhotoBot on {'PostgreSQL' if backend == 'postgresql' else 'SQLite'}"
            if len(backends) > 1
            else "PhotoBot"
        )
        mine = [r for r in results if r.backend in (None, backend)]
        _shares(shares_of_bare(mine), f"{on} reaches {{}} of the bare bot's throughput")
    _shares(metrics_shares(results), "with metrics, PhotoBot reaches {} of its throughput without")
    if checkout:
        _shares(shares_of(results, checkout), "this PhotoBot reaches {} of the checkout's throughput")
    pairs = backend_pairs(results)
    if pairs:
        _print_pairs(pairs)


def _shares(shares: dict[tuple[str, int], list[float]], sentence: str) -> None:
    for (kind, users), each in shares.items():
        median = f" (median {statistics.median(each):.0f}%)" if len(each) > 1 else ""
        print(f"{kind}, {users} users: " + sentence.format(" / ".join(f"{s:.0f}%" for s in each) + median))


def shares_of_bare(results: list[Scenario]) -> dict[tuple[str, int], list[float]]:
    """PhotoBot's photos/s as a percentage of the bare bot's in the same round, per kind and users."""
    return shares_of(results, "bare")


def metrics_shares(results: list[Scenario]) -> dict[tuple[str, int], list[float]]:
    """PhotoBot's photos/s with its metrics on as a percentage of its photos/s without, round by round."""
    by_key = {(r.round, r.bot, r.kind, r.users): r for r in results}
    shares: dict[tuple[str, int], list[float]] = {}
    for (round_, bot, kind, users), on in sorted(by_key.items()):
        off = by_key.get((round_, "photobot", kind, users))
        if bot == "metrics" and off is not None and off.photos_per_s:
            shares.setdefault((kind, users), []).append(100 * on.photos_per_s / off.photos_per_s)
    return shares


def shares_of(results: list[Scenario], base: str) -> dict[tuple[str, int], list[float]]:
    """PhotoBot's photos/s as a percentage of bot `base`'s in the same round, per kind and users."""
    by_key = {(r.round, r.bot, r.kind, r.users): r for r in results}
    shares: dict[tuple[str, int], list[float]] = {}
    for (round_, bot, kind, users), real in sorted(by_key.items()):
        other = by_key.get((round_, base, kind, users))
        if bot == "photobot" and other is not None and other.photos_per_s:
            shares.setdefault((kind, users), []).append(100 * real.photos_per_s / other.photos_per_s)
    return shares


# ------------------------------------------------------------------------------------------ backends


@dataclass(frozen=True)
class BackendPair:
    """PhotoBot on SQLite and on PostgreSQL in the same round, kind and number of users."""

    round: int
    kind: str
    users: int
    sqlite: Scenario
    postgresql: Scenario

    @property
    def throughput_ratio(self) -> float | None:
        """PostgreSQL's photos/s over SQLite's."""
        return _ratio(self.postgresql.photos_per_s, self.sqlite.photos_per_s)

    @property
    def bot_cpu_ratio(self) -> float | None:
        """The bot's own CPU per photo on PostgreSQL over its CPU on SQLite (which includes SQLite's)."""
        return _ratio(self.postgresql.bot_cpu_ms, self.sqlite.bot_cpu_ms)

    @property
    def cpu_ratio(self) -> float | None:
        """CPU per photo with the database's own counted, the bot's and PostgreSQL server's over the
        bot's on SQLite: what a photo costs the machine on each."""
        with_server = _sum(self.postgresql.bot_cpu_ms, self.postgresql.database_cpu_ms)
        return _ratio(with_server, self.sqlite.bot_cpu_ms)

    def as_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "kind": self.kind,
            "users": self.users,
            "sqlite": {field: getattr(self.sqlite, field) for field in SIDE_BY_SIDE},
            "postgresql": {field: getattr(self.postgresql, field) for field in SIDE_BY_SIDE},
            "ratio": {
                "photos_per_s": self.throughput_ratio,
                "bot_cpu_ms": self.bot_cpu_ratio,
                "cpu_ms_with_database": self.cpu_ratio,
            },
        }


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return None if top is None or not bottom else top / bottom


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def backend_pairs(results: list[Scenario]) -> list[BackendPair]:
    """PhotoBot's scenarios on the two backends paired by round, kind and users (`--backend both`)."""
    by_key = {(r.round, r.kind, r.users, r.backend): r for r in results if r.bot == "photobot"}
    pairs = []
    for (round_, kind, users, backend), sqlite in sorted(by_key.items()):
        postgresql = by_key.get((round_, kind, users, "postgresql"))
        if backend == "sqlite" and postgresql is not None:
            pairs.append(BackendPair(round_, kind, users, sqlite, postgresql))
    return pairs


def _print_pairs(pairs: list[BackendPair]) -> None:
    print(
        "\nPhotoBot on SQLite and on PostgreSQL, the same round (ratio: PostgreSQL / SQLite). CPU ms per"
        "\nphoto: the bot's process tree on SQLite (SQLite works inside it), the bot's + the database"
        "\nserver's on PostgreSQL (bot+db)"
        "\n                      photos/s                p95 ms              CPU ms/photo"
        "\nround  kind     users  sqlite postgresql ratio  sqlite postgresql  sqlite      bot+db  ratio"
    )
    for p in pairs:
        s, g = p.sqlite, p.postgresql
        both = f"{ms1(g.bot_cpu_ms)}+{ms1(g.database_cpu_ms)}"
        print(
            f"{p.round:>5}  {p.kind:8} {p.users:>5} {s.photos_per_s:7.1f} {g.photos_per_s:10.1f} "
            f"{_times(p.throughput_ratio):>5} {ms(s.p95_ms):>7} {ms(g.p95_ms):>10} "
            f"{ms1(s.bot_cpu_ms):>7} {both:>11} {_times(p.cpu_ratio):>6}"
        )
    by_scenario: dict[tuple[str, int], list[BackendPair]] = {}
    for p in pairs:
        by_scenario.setdefault((p.kind, p.users), []).append(p)
    for (kind, users), each in by_scenario.items():
        throughput = [p.throughput_ratio for p in each if p.throughput_ratio is not None]
        cpu = [p.cpu_ratio for p in each if p.cpu_ratio is not None]
        print(
            f"{kind}, {users} users: PhotoBot on PostgreSQL reaches "
            + " / ".join(f"{100 * t:.0f}%" for t in throughput)
            + (f" (median {100 * statistics.median(throughput):.0f}%)" if len(throughput) > 1 else "")
            + " of its throughput on SQLite; CPU per photo "
            + " / ".join(f"{ms1(p.postgresql.bot_cpu_ms)}+{ms1(p.postgresql.database_cpu_ms)}" for p in each)
            + " ms (bot + database server) against "
            + " / ".join(ms1(p.sqlite.bot_cpu_ms) for p in each)
            + " ms"
            + (f" (median ×{statistics.median(cpu):.2f})" if cpu else "")
        )


def _times(ratio: float | None) -> str:
    return "—" if ratio is None else f"×{ratio:.2f}"


def as_json(results: list[Scenario]) -> dict[str, Any]:
    return {
        "scenarios": [asdict(r) for r in results],
        "backends": [pair.as_json() for pair in backend_pairs(results)],
    }

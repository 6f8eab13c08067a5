"""Copy a SQLite install into PostgreSQL (`photobot db migrate --to postgresql://…`), verified, re-runnable.

Every table of the SQLite database is copied, rows with their keys (ids included), parents before
children (foreign keys), and the photos' bytes with them (`photo_bytes`; a photo stored before the
bytes were kept in the database is read from the install's images folder and checked against its
hash). The run has three passes over one snapshot of the source:

1. **Look.** Each source row is looked up by its primary key in the target. A row that is there with
   other values, or a photo whose bytes are nowhere, refuses the whole run before anything is written.
2. **Copy** what is missing, a batch per transaction (`INSERT … ON CONFLICT DO NOTHING` under the write
   lock, so a bot already on the target is safe), then move each identity sequence past the copied ids
   (rows copied with their ids do not advance it) — forward only: an id is never handed out twice.
3. **Verify.** Every source row is in the target with the same values; the SHA-256 of each table's
   rows, in key order, is the same on both sides; every photo's bytes in the target hash to its name.

A killed run leaves whole batches behind; running again copies the rest. Running it on a finished
migration copies nothing and changes nothing. Model versions and serving pointers live outside the
tables on SQLite (the model store's folders): the caller reads them (`LocalModels`) and they go through
the same three passes into the model registry's tables (`storage.migration_models`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage import migration_models
from storage.connect import open_database
from storage.dialect import Connection, describe, is_postgres_url
from storage.errors import StorageError
from storage.images import is_sha256_hex, sha256_hex
from storage.migration_models import LocalModels, ModelsResult

log = logging.getLogger(__name__)

BATCH_ROWS = 500  # rows per lookup or insert (well under PostgreSQL's 65,535 parameters)
BATCH_BYTES = 16 << 20  # photo bytes per lookup or insert
BYTES_TABLE = "photo_bytes"

Row = tuple[Any, ...]
Say = Callable[[str], None]


class MigrationRefused(StorageError):
    """The target cannot take this install as it is; nothing was written. The message says why."""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # the primary key's columns
    parents: frozenset[str]  # tables its foreign keys name


@dataclass
class TableResult:
    table: str
    rows: int = 0  # in the source
    copied: int = 0
    already: int = 0  # the same row was in the target before this run
    different: list[Row] = field(default_factory=list)  # keys whose target row has other values
    source_sha256: str = ""
    target_sha256: str = ""
    target_rows: int = 0

    def line(self) -> str:
        return f"{self.table}: {self.copied} copied, {self.already} already there"


@dataclass
class MigrationReport:
    tables: list[TableResult]
    sequences: list[str]  # identity sequences moved forward
    photos_checked: int  # photos whose bytes in the target hash to their name
    models: ModelsResult | None = None

    @property
    def copied(self) -> int:
        return sum(t.copied for t in self.tables)


MIGRATION_LOCK = 0x70686F746F6D6967  # pg_advisory_lock's key for `photobot db migrate` runs ("photomig")


def migrate_install(
    source: Path,
    images_dir: Path,
    target: str,
    *,
    say: Say = log.info,
    models: LocalModels | None = None,
) -> MigrationReport:
    """Copy the SQLite install (`source`, its photos in `images_dir`, its model store's versions
    `models`) into the PostgreSQL `target`.

    The source is first brought to the current schema, as starting this PhotoBot on it would; so is the
    target (a target with a newer schema is refused untouched: `SchemaTooNew`). Raises
    `MigrationRefused` when the target holds other rows (or model versions) under the same keys, or a
    photo has no bytes.
    """
    if not is_postgres_url(target):
        raise MigrationRefused(f"the target must be a postgresql:// URL, not {describe(target)!r}")
    if not Path(source).is_file():
        raise MigrationRefused(f"no PhotoBot database at {source}: nothing to migrate")
    src = open_database(Path(source))
    try:
        dst = open_database(target)
        try:
            say(f"from {source} (photos in {images_dir}) to {describe(target)}")
            # One run at a time: a second one started meanwhile waits, then finds everything there.
            dst.execute("SELECT pg_advisory_lock(?)", (MIGRATION_LOCK,))
            try:
                return _migrate(src, dst, Path(images_dir), say, models)
            finally:
                dst.execute("SELECT pg_advisory_unlock(?)", (MIGRATION_LOCK,))
        finally:
            dst.close()
    finally:
        src.close()


def _migrate(
    src: Connection, dst: Connection, images_dir: Path, say: Say, models: LocalModels | None
) -> MigrationReport:
    tables = source_tables(src)
    src.execute("BEGIN")  # one snapshot of the source for all three passes
    try:
        results = [_look(src, dst, table, images_dir) for table in tables]
        looked = migration_models.look(dst, models) if models is not None else None
        _refuse_conflicts(results, looked.conflicts if looked else [])
        for table, result in zip(tables, results, strict=True):
            result.copied = _copy(src, dst, table, images_dir)
            say(result.line())
        if models is not None and looked is not None:
            migration_models.copy(dst, models, looked)
            for line in looked.lines():
                say(line)
        sequences = _advance_sequences(dst)
        say(f"identity sequences moved past the copied ids: {', '.join(sequences) or 'none needed'}")
        photos = 0
        for table, result in zip(tables, results, strict=True):
            photos += _verify(src, dst, table, images_dir, result)
        if models is not None and looked is not None:
            wrong = migration_models.verify(dst, models, looked)
            if wrong:
                raise MigrationRefused(f"verification failed for the models: {'; '.join(wrong)}")
    finally:
        src.execute("COMMIT")
    rows = sum(r.rows for r in results)
    files = f"; {looked.files_checked} model files' bytes hash to their names" if looked else ""
    say(
        f"verified: {len(results)} tables, {rows} rows, each in the target with the same values and the "
        f"same SHA-256 per table; {photos} photos' bytes hash to their names{files}"
    )
    return MigrationReport(results, sequences, photos, looked)


# ---------------------------------------------------------------- the tables


def source_tables(db: Connection) -> list[Table]:
    """The source's tables, parents before children (their foreign keys name only earlier tables)."""
    names = [
        row[0]
        for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
        )
    ]
    found: dict[str, Table] = {}
    for name in names:
        info = db.execute(f'PRAGMA table_info("{name}")').fetchall()  # cid, name, type, notnull, default, pk
        key = tuple(column for _, column, _, _, _, pk in sorted(info, key=lambda c: c[5]) if pk)
        if not key:
            raise MigrationRefused(f"table {name} has no primary key: its rows cannot be matched")
        parents = {row[2] for row in db.execute(f'PRAGMA foreign_key_list("{name}")')} - {name}
        found[name] = Table(name, tuple(c[1] for c in info), key, frozenset(parents))
    ordered: list[Table] = []
    while found:
        ready = [t for t in found.values() if not (t.parents & found.keys())]
        if not ready:
            raise MigrationRefused(f"the foreign keys of {', '.join(found)} form a cycle")
        for table in ready:
            ordered.append(found.pop(table.name))
    return ordered


def _source_rows(src: Connection, table: Table, images_dir: Path) -> Iterator[Row]:
    """The table's rows in key order. Photo bytes: one row per photo, read from the install's images
    folder when the database has none (a photo stored before it kept them); `None` data when neither
    has an intact copy."""
    if table.name != BYTES_TABLE:
        yield from src.execute(f"SELECT {_columns(table)} FROM {table.name} ORDER BY {', '.join(table.key)}")
        return
    for sha256, data in src.execute(
        """SELECT p.sha256, b.data FROM photos p LEFT JOIN photo_bytes b ON b.sha256 = p.sha256
           ORDER BY p.sha256"""
    ):
        yield sha256, bytes(data) if data is not None else _file_bytes(images_dir, sha256)


def _file_bytes(images_dir: Path, sha256: str) -> bytes | None:
    if not is_sha256_hex(sha256):
        return None
    path = images_dir / sha256[:2] / sha256
    if not path.is_file():
        return None
    data = path.read_bytes()
    return data if sha256_hex(data) == sha256 else None


def _batches(rows: Iterable[Row]) -> Iterator[list[Row]]:
    """Up to BATCH_ROWS rows, or BATCH_BYTES of photo bytes, at a time."""
    batch: list[Row] = []
    size = 0
    for row in rows:
        batch.append(row)
        size += sum(len(v) for v in row if isinstance(v, bytes))
        if len(batch) >= BATCH_ROWS or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _target_rows(
    dst: Connection, table: Table, batch: Sequence[Row], *, keys_only: bool = False
) -> dict[Row, Row]:
    """The target's rows under the keys of `batch`, by key (`keys_only`: the keys alone)."""
    width = len(table.key)
    keys = [_key(table, row) for row in batch]
    if width == 1:
        where = f"{table.key[0]} IN ({', '.join('?' * len(keys))})"
    else:
        one = "(" + ", ".join("?" * width) + ")"
        where = f"({', '.join(table.key)}) IN ({', '.join([one] * len(keys))})"
    params = [value for key in keys for value in key]
    if keys_only:
        rows = dst.execute(f"SELECT {', '.join(table.key)} FROM {table.name} WHERE {where}", params)
        return {key: key for key in map(_canonical, rows)}
    rows = dst.execute(f"SELECT {_columns(table)} FROM {table.name} WHERE {where}", params)
    return {_key(table, row): row for row in map(_canonical, rows)}


# ---------------------------------------------------------------- the three passes


def _look(src: Connection, dst: Connection, table: Table, images_dir: Path) -> TableResult:
    result = TableResult(table.name)
    unreadable = 0
    for batch in _batches(_source_rows(src, table, images_dir)):
        there = _target_rows(dst, table, batch)
        for row in map(_canonical, batch):
            result.rows += 1
            existing = there.get(_key(table, row))
            if existing is not None and (existing == row or _unreadable(table, row)):
                result.already += 1  # photo bytes the source lost are fine where the target has them
            elif existing is not None:
                result.different.append(_key(table, row))
            elif _unreadable(table, row):
                unreadable += 1
    if unreadable:
        raise MigrationRefused(
            f"{unreadable} photos have neither bytes in the database nor an intact file in {images_dir}: "
            "copy the install's images folder there (or name it with --images) and run again; nothing "
            "was written"
        )
    return result


def _refuse_conflicts(results: list[TableResult], model_conflicts: list[str]) -> None:
    clashes = [
        f"{r.table}: {len(r.different)} rows, e.g. key {r.different[0]}" for r in results if r.different
    ]
    clashes += model_conflicts
    if clashes:
        where = "; ".join(clashes)
        raise MigrationRefused(
            f"the target already holds different rows under the same keys ({where}); nothing was written. "
            "Migrate into an empty database, or into the one an earlier run of this install filled."
        )


def _copy(src: Connection, dst: Connection, table: Table, images_dir: Path) -> int:
    copied = 0
    insert = f"INSERT INTO {table.name} ({_columns(table)}) VALUES "
    one = "(" + ", ".join("?" * len(table.columns)) + ")"
    for batch in _batches(_source_rows(src, table, images_dir)):
        there = _target_rows(dst, table, batch, keys_only=True)
        missing = [
            row
            for row in map(_canonical, batch)
            if _key(table, row) not in there and not _unreadable(table, row)
        ]
        if not missing:
            continue
        dst.execute("BEGIN IMMEDIATE")
        try:
            cursor = dst.execute(
                insert + ", ".join([one] * len(missing)) + " ON CONFLICT DO NOTHING",
                [value for row in missing for value in row],
            )
            dst.execute("COMMIT")
        except BaseException:
            dst.execute("ROLLBACK")
            raise
        copied += cursor.rowcount
    return copied


def _advance_sequences(dst: Connection) -> list[str]:
    """Move each identity sequence past its column's largest id, never backwards; the tables moved."""
    identities = dst.execute(
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND is_identity = 'YES' ORDER BY table_name"""
    ).fetchall()
    moved = []
    for table, column in identities:
        row = dst.execute(
            f"""SELECT setval(s.name::regclass, m.top) FROM
                    (SELECT pg_get_serial_sequence(?, ?) AS name) s,
                    (SELECT max({column}) AS top FROM {table}) m
                WHERE m.top IS NOT NULL AND m.top > coalesce(pg_sequence_last_value(s.name::regclass), 0)""",
            (table, column),
        ).fetchone()
        if row is not None:
            moved.append(f"{table} → {row[0]}")
    return moved


def _verify(src: Connection, dst: Connection, table: Table, images_dir: Path, result: TableResult) -> int:
    """Raise `MigrationRefused` unless every source row is in the target, the same; return the photos
    whose bytes were checked against their name."""
    source_digest, target_digest = hashlib.sha256(), hashlib.sha256()
    absent = different = photos = 0
    for batch in _batches(_source_rows(src, table, images_dir)):
        there = _target_rows(dst, table, batch)
        for row in map(_canonical, batch):
            existing = there.get(_key(table, row))
            if existing is None:
                absent += 1
                continue
            if _unreadable(table, row):
                row = existing  # the target's copy is the only one; its hash is checked below
            _feed(source_digest, row)
            _feed(target_digest, existing)
            different += existing != row
            if table.name == BYTES_TABLE:
                photos += 1
                different += sha256_hex(existing[1]) != existing[0]
    result.source_sha256, result.target_sha256 = source_digest.hexdigest(), target_digest.hexdigest()
    result.target_rows = int(dst.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0])
    if absent or different or result.source_sha256 != result.target_sha256:
        raise MigrationRefused(
            f"verification failed for {table.name}: {absent} rows missing from the target, {different} "
            "different (another row may hold one of their unique keys); run again to retry"
        )
    return photos


# ---------------------------------------------------------------- values


def _columns(table: Table) -> str:
    return ", ".join(table.columns)


def _key(table: Table, row: Row) -> Row:
    return tuple(row[table.columns.index(column)] for column in table.key)


def _unreadable(table: Table, row: Row) -> bool:
    """A photo whose bytes the source has no intact copy of."""
    return table.name == BYTES_TABLE and row[1] is None


def _canonical(row: Iterable[Any]) -> Row:
    """One spelling for both engines: bytes for BLOB/BYTEA, ints for booleans."""
    return tuple(bytes(v) if isinstance(v, memoryview) else int(v) if isinstance(v, bool) else v for v in row)


def _feed(digest: Any, row: Row) -> None:
    for value in row:
        encoded = value if isinstance(value, bytes) else repr(value).encode()
        digest.update(b"%c%d:" % (b"B" if isinstance(value, bytes) else b"V", len(encoded)))
        digest.update(encoded)

"""The database schema as an ordered list of migrations, one history for SQLite and PostgreSQL.

Migration N (1-based) takes a database from version N-1 to N. Each is applied in one transaction
together with the version bump, so a crash leaves the database at N-1 or N, never between. A database
whose version is higher than this code knows was written by a newer PhotoBot: it is refused before
anything is written to it. Never edit a migration that has shipped; append a new one.

Migrations are written for SQLite in the SQL both engines share; PostgreSQL runs each statement through
`storage.dialect.postgres_ddl` (INTEGER → BIGINT, REAL → DOUBLE PRECISION, surrogate ids → identity
columns; see there). The version lives in `PRAGMA user_version` on SQLite and in the one-row table
`schema_version` on PostgreSQL. Each migration runs under the write lock (`BEGIN IMMEDIATE`: SQLite's
lock, a `pg_advisory_xact_lock` on PostgreSQL), so several processes starting at once are safe.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from storage.dialect import Connection, is_sqlite, postgres_ddl
from storage.errors import SchemaTooNew

log = logging.getLogger(__name__)

Migration = tuple[str, ...]  # statements; no `executescript`, which would commit half-way

MIGRATIONS: tuple[Migration, ...] = (
    # 1: people, photos, answers, corrections and caption labels.
    (
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY,                 -- Telegram user id
            language TEXT,                          -- Telegram's language_code, as last seen
            first_seen REAL NOT NULL,               -- unix time
            last_seen REAL NOT NULL,
            blocked INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1))  -- labels not used for training
        )""",
        """CREATE TABLE photos (
            sha256 TEXT PRIMARY KEY CHECK (length(sha256) = 64),
            size INTEGER NOT NULL,
            width INTEGER,
            height INTEGER,
            format TEXT,                            -- 'jpeg', 'png', … as decoded
            path TEXT NOT NULL,                     -- relative to the image store's root
            first_seen REAL NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE predictions (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            chat_id INTEGER NOT NULL,
            message_id INTEGER,                     -- the user's photo message; NULL outside Telegram
            photo_sha256 TEXT NOT NULL REFERENCES photos(sha256),
            mode TEXT,                              -- the chat's mode when asked: auto / digit / flower
            model TEXT,                             -- NULL when the photo was neither a digit nor a flower
            version INTEGER,
            label TEXT,
            confidence REAL NOT NULL,
            probabilities TEXT NOT NULL,            -- JSON [[label, p], …], best first
            status TEXT NOT NULL CHECK (status IN ('ok', 'unsure', 'not_recognized')),
            reason TEXT,
            latency_ms REAL,
            created_at REAL NOT NULL
        )""",
        # A redelivered Telegram update records nothing twice.
        "CREATE UNIQUE INDEX predictions_message ON predictions(chat_id, message_id)",
        "CREATE INDEX predictions_user ON predictions(user_id)",
        "CREATE INDEX predictions_photo ON predictions(photo_sha256)",
        """CREATE TABLE feedback (
            prediction_id INTEGER PRIMARY KEY REFERENCES predictions(id) ON DELETE CASCADE,
            user_id INTEGER NOT NULL REFERENCES users(id),
            verdict TEXT NOT NULL CHECK (verdict IN ('correct', 'wrong')),
            model TEXT NOT NULL,                    -- whose label set true_label belongs to
            true_label TEXT NOT NULL,               -- a label, or not_a_digit / not_a_flower
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX feedback_model ON feedback(model)",
        """CREATE TABLE contributions (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            chat_id INTEGER NOT NULL,
            message_id INTEGER,
            photo_sha256 TEXT NOT NULL REFERENCES photos(sha256),
            model TEXT NOT NULL,
            label TEXT NOT NULL,
            prediction_id INTEGER REFERENCES predictions(id) ON DELETE SET NULL,
            created_at REAL NOT NULL
        )""",
        "CREATE UNIQUE INDEX contributions_message ON contributions(chat_id, message_id)",
        "CREATE INDEX contributions_user ON contributions(user_id)",
        "CREATE INDEX contributions_model ON contributions(model)",
        "CREATE INDEX contributions_photo ON contributions(photo_sha256)",
    ),
    # 2: chat modes, retraining jobs, model events, and deferred image deletions for /forget.
    (
        """CREATE TABLE chats (
            id INTEGER PRIMARY KEY,                 -- Telegram chat id (a private chat's id is the user's)
            mode TEXT NOT NULL CHECK (mode IN ('auto', 'digit', 'flower')),
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE retrain_jobs (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            requested_by INTEGER,                   -- admin's user id; NULL when started by hand
            chat_id INTEGER,                        -- where progress is shown
            message_id INTEGER,                     -- the progress message, edited as the job runs
            status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'rejected', 'failed')),
            pid INTEGER,
            stage TEXT,
            progress REAL,                          -- 0..1
            detail TEXT,                            -- JSON: epoch, accuracy, seconds left, …
            metrics TEXT,                           -- JSON
            candidate_version INTEGER,
            decision TEXT,
            reason TEXT,
            error TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            updated_at REAL NOT NULL,
            finished_at REAL
        )""",
        "CREATE INDEX retrain_jobs_status ON retrain_jobs(status)",
        """CREATE TABLE model_events (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            action TEXT NOT NULL,                   -- promote / rollback / reject / seed
            from_version INTEGER,
            to_version INTEGER,
            actor INTEGER,                          -- user id; NULL for the command line or a job
            reason TEXT,
            job_id INTEGER REFERENCES retrain_jobs(id),
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX model_events_model ON model_events(model, created_at)",
        """CREATE TABLE image_deletions (
            sha256 TEXT PRIMARY KEY,                -- files to remove once no photo row needs them
            path TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
    # 3: a number correction the bot is waiting for (❌ on "2026": "reply with the right number").
    (
        """CREATE TABLE pending_corrections (
            user_id INTEGER PRIMARY KEY,            -- one question open per person: the latest ❌
            prediction_id INTEGER NOT NULL REFERENCES predictions(id) ON DELETE CASCADE,
            chat_id INTEGER NOT NULL,
            answer_message_id INTEGER,              -- the bot's answer whose ❌ was pressed
            question_message_id INTEGER,            -- the bot's "reply with the right number"
            created_at REAL NOT NULL
        )""",
    ),
    # 4: a chat mode is any short lowercase name, so a model added to the catalogue brings its own
    # (`/use pets` → "pets"); the code checks the spelling (`records.check_mode`), the catalogue which
    # modes exist. SQLite cannot change a CHECK in place: copy into a new table, then swap the names
    # (nothing references chats, and the migration's transaction makes the swap atomic).
    (
        """CREATE TABLE chats_v4 (
            id INTEGER PRIMARY KEY,                 -- Telegram chat id (a private chat's id is the user's)
            mode TEXT NOT NULL CHECK (length(mode) BETWEEN 1 AND 20 AND mode = lower(mode)),
            updated_at REAL NOT NULL
        )""",
        "INSERT INTO chats_v4 (id, mode, updated_at) SELECT id, mode, updated_at FROM chats",
        "DROP TABLE chats",
        "ALTER TABLE chats_v4 RENAME TO chats",
    ),
    # 5: models people create from the chat (`/newmodel`; storage.taught). Deleting marks the row:
    # the labelled photos stay, and the name stays taken.
    (
        """CREATE TABLE taught_models (
            name TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 20 AND name = lower(name)),
            labels TEXT NOT NULL,                   -- JSON: [{"name": …, "display": {language: …}}, …]
            created_by INTEGER,                     -- user id; NULL for the command line
            created_at REAL NOT NULL,
            deleted_at REAL                         -- NULL while the model exists
        )""",
    ),
    # 6: model versions shared through the database (DATABASE_URL), so that every machine serves the same
    # ones (storage.model_registry; unused on SQLite, whose model store is the folders under DATA_DIR).
    (
        """CREATE TABLE model_blobs (
            sha256 TEXT PRIMARY KEY CHECK (length(sha256) = 64),  -- of data: content addressed
            size INTEGER NOT NULL,
            data BLOB NOT NULL,                     -- a model file (model.keras, head.npz) as published
            created REAL NOT NULL
        )""",
        """CREATE TABLE model_versions (
            name TEXT NOT NULL,                     -- the catalogue's model name
            version INTEGER NOT NULL CHECK (version > 0),
            meta TEXT NOT NULL,                     -- JSON: its meta.json, name and version included
            created REAL NOT NULL,
            PRIMARY KEY (name, version)
        )""",
        """CREATE TABLE model_files (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            path TEXT NOT NULL,                     -- inside the version's folder: model.keras, head.npz
            sha256 TEXT NOT NULL REFERENCES model_blobs(sha256),
            PRIMARY KEY (name, version, path),
            FOREIGN KEY (name, version) REFERENCES model_versions(name, version)
        )""",
        """CREATE TABLE model_serving (
            name TEXT PRIMARY KEY,                  -- one row per model: the version every process serves
            version INTEGER NOT NULL,
            changed REAL NOT NULL,                  -- unix time of the last promotion or rollback
            FOREIGN KEY (name, version) REFERENCES model_versions(name, version)
        )""",
    ),
    # 7: what the bot keeps between updates, so that any of several bot processes sharing the database
    # can take any update (docs/architecture.md, "State between updates"): per-user flood windows, a
    # change counter per subject that every process caches, and who shows a retraining job's progress.
    (
        """CREATE TABLE flood_windows (
            user_id INTEGER NOT NULL,               -- Telegram user id
            kind TEXT NOT NULL CHECK (kind IN ('updates', 'photos')),  -- which per-user limit
            window_start REAL NOT NULL,             -- unix time of the first update the window counted
            count INTEGER NOT NULL,                 -- updates counted since, refused ones included
            PRIMARY KEY (user_id, kind)
        )""",
        "CREATE INDEX flood_windows_start ON flood_windows(window_start)",  # closed ones are swept
        """CREATE TABLE changes (
            subject TEXT PRIMARY KEY,               -- 'taught_models'
            version INTEGER NOT NULL                -- raised in the transaction of every change
        )""",
        # The admin's language (progress and report are in it), the bot process that shows the progress
        # ('host pid'; its job process runs on that host) and when it last looked.
        "ALTER TABLE retrain_jobs ADD COLUMN language TEXT",
        "ALTER TABLE retrain_jobs ADD COLUMN watcher TEXT",
        "ALTER TABLE retrain_jobs ADD COLUMN watched_at REAL",
    ),
    # 8: a photo's bytes in the database, so every machine reaches them (storage.photo_bytes); written
    # in the transaction of the photo's row, deleted with it. The images folder becomes a cache. Photos
    # stored before this keep their file and get their bytes row when a store next opens (backfill).
    (
        """CREATE TABLE photo_bytes (
            sha256 TEXT PRIMARY KEY REFERENCES photos(sha256) ON DELETE CASCADE,
            data BLOB NOT NULL                      -- the photo as received; its SHA-256 is the key
        )""",
    ),
    # 9: labels admins add to a built-in model from the chat (`/addlabel flowers lavender`;
    # storage.added_labels). Removing marks the row: a later version leaves out what an earlier learned.
    (
        """CREATE TABLE added_labels (
            model TEXT NOT NULL,                    -- a built-in model's name (flowers)
            label TEXT NOT NULL,
            added_by INTEGER,                       -- user id; NULL for the command line
            added_at REAL NOT NULL,
            removed_at REAL,                        -- NULL while the model has the label
            PRIMARY KEY (model, label)
        )""",
    ),
    # 10: retraining jobs that `photobot worker` processes run (RETRAIN_WORKERS=external;
    # storage.queries.leases): who runs a job, whether it was forced, the worker that claimed it and
    # until when its lease holds (renewed while it runs; one that runs out marks the job failed).
    (
        """ALTER TABLE retrain_jobs ADD COLUMN runner TEXT NOT NULL DEFAULT 'local'
            CHECK (runner IN ('local', 'worker'))""",
        "ALTER TABLE retrain_jobs ADD COLUMN forced INTEGER NOT NULL DEFAULT 0 CHECK (forced IN (0, 1))",
        "ALTER TABLE retrain_jobs ADD COLUMN worker TEXT",  # host/pid/tag of the claiming worker
        "ALTER TABLE retrain_jobs ADD COLUMN lease_until REAL",  # unix time; the worker's clock
    ),
    # 11: updates the webhook received, so that bot replicas behind one load balancer answer each once
    # (storage.queries.updates: claim, lease, answering, done), and the webhook as a replica last set
    # it, so that the others leave it alone (docs/architecture.md, "One update's way through a replica").
    (
        """CREATE TABLE webhook_updates (
            update_id INTEGER PRIMARY KEY,          -- Telegram's
            owner TEXT NOT NULL,                    -- the replica handling it ('host/pid/tag')
            claimed_at REAL NOT NULL,               -- unix time the owner claimed it
            lease_until REAL NOT NULL,              -- another replica may take it over after this
            answering_at REAL,                      -- the owner's first answer went out then; NULL: none
            done_at REAL,                           -- answered and recorded; NULL: not yet
            claims INTEGER NOT NULL,                -- how many replicas claimed it (over 1: taken over)
            in_doubt INTEGER NOT NULL               -- takeovers after an answer went out: maybe twice
        )""",
        "CREATE INDEX webhook_updates_claimed ON webhook_updates(claimed_at)",  # old ones are swept
        """CREATE TABLE webhook_setting (
            one INTEGER PRIMARY KEY CHECK (one = 1),
            fingerprint TEXT NOT NULL,              -- SHA-256 of the URL, secret, update kinds, connections
            url TEXT NOT NULL,                      -- the public URL, without its secret path
            set_by TEXT NOT NULL,                   -- the replica that called setWebhook
            set_at REAL NOT NULL
        )""",
    ),
    # 12: the photos each /forget removed, so that every other machine (bot replicas, `photobot
    # worker`s) deletes the copies it made of them: cached features, report pictures
    # (`Store.apply_forgotten`). Kept for `FORGOTTEN_KEPT_S`, for a machine that was down to catch up.
    # And when a job's report was sent, so that the report of a job whose bot process was killed is
    # still sent, once (jobs ended and watched before this version count as reported).
    (
        "ALTER TABLE retrain_jobs ADD COLUMN reported_at REAL",
        """UPDATE retrain_jobs SET reported_at = finished_at
            WHERE finished_at IS NOT NULL AND watched_at IS NOT NULL""",
        """CREATE TABLE forgotten_photos (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL,
            forgotten_at REAL NOT NULL
        )""",
        "CREATE INDEX forgotten_photos_at ON forgotten_photos(forgotten_at)",
    ),
    # 13: the photos of albums (Telegram media groups) that arrived in the last minutes, with their own
    # captions: an album's caption is on its first photo, and a webhook replica that gets a later photo
    # of it reads the caption here (`bot.albums`). Swept after `ALBUM_KEPT_S`; /forget deletes a user's.
    (
        """CREATE TABLE album_photos (
            chat_id INTEGER NOT NULL,
            media_group_id TEXT NOT NULL,
            message_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            caption TEXT,                           -- the photo's own; NULL: none
            arrived_at REAL NOT NULL,
            PRIMARY KEY (chat_id, media_group_id, message_id)
        )""",
        "CREATE INDEX album_photos_arrived ON album_photos(arrived_at)",
    ),
)

LATEST = len(MIGRATIONS)


def schema_version(db: Connection) -> int:
    if is_sqlite(db):
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    if not db.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]:
        return 0
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def _set_schema_version(db: Connection, version: int) -> None:
    if is_sqlite(db):
        db.execute(f"PRAGMA user_version = {int(version)}")
    else:
        db.execute(
            """INSERT INTO schema_version (one, version) VALUES (TRUE, ?)
               ON CONFLICT (one) DO UPDATE SET version = excluded.version""",
            (version,),
        )


def check_not_newer(db: Connection, path: object, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Refuse a database from a newer PhotoBot before anything is written to it."""
    version = schema_version(db)
    if version > len(migrations):
        raise SchemaTooNew(
            f"{path} has schema version {version}, but this PhotoBot knows versions up to "
            f"{len(migrations)}: it was written by a newer PhotoBot. Upgrade PhotoBot, or point "
            "DATA_DIR (or DATABASE_URL) at another database; it was left untouched."
        )
    return version


def migrate(db: Connection, path: object = "database", migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply the pending migrations in order, each in its own transaction; return the final version.

    `db` must be in autocommit mode (sqlite3's isolation_level=None). Safe when several processes
    start at once: the version is read again under the write lock before each step.
    """
    if check_not_newer(db, path, migrations) == len(migrations):
        return len(migrations)  # up to date: no write lock taken, so readers start instantly
    sqlite = is_sqlite(db)
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            if not sqlite:
                db.execute(
                    """CREATE TABLE IF NOT EXISTS schema_version (
                        one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
                        version BIGINT NOT NULL)"""
                )
            version = check_not_newer(db, path, migrations)
            if version == len(migrations):
                db.execute("COMMIT")
                return version
            for statement in migrations[version]:
                db.execute(statement if sqlite else postgres_ddl(statement))
            _set_schema_version(db, version + 1)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.info("%s: schema migrated from version %d to %d", path, version, version + 1)

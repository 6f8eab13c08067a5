"""`photobot db migrate --to postgresql://…`: copy this install's SQLite database into PostgreSQL.

Copies every table's rows (people, photos and their bytes, answers, feedback, taught models, jobs, model
events, …), verifies counts and SHA-256 hashes, and prints one line per table; running it again copies
nothing. The work is `storage.migration`; the model store's versions and serving pointers (its folders
under DATA_DIR/models) are read here and copied into the database's model registry with their numbers.
Stop the bot first; then set DATABASE_URL to the target and start it there.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from photobot.errors import UserFacingError
from photobot.settings import Settings

if TYPE_CHECKING:
    from storage.migration_models import LocalModels


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    migrate = sub.add_parser(
        "migrate",
        help="copy the SQLite install into PostgreSQL (verified; running it twice changes nothing)",
        description="Copy the SQLite install (rows, photos, models) into a PostgreSQL database.",
    )
    migrate.add_argument(
        "--to", required=True, metavar="URL", help="postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    )
    migrate.add_argument(
        "--from",
        dest="source",
        type=Path,
        metavar="FILE",
        help="the SQLite database (default: DATA_DIR/photobot.sqlite3)",
    )
    migrate.add_argument(
        "--images", type=Path, metavar="DIR", help="the install's photos folder (default: DATA_DIR/images)"
    )
    migrate.add_argument(
        "--models", type=Path, metavar="DIR", help="the install's model store (default: DATA_DIR/models)"
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    from storage.migration import MigrationRefused, migrate_install

    models_dir = args.models or settings.models_dir
    try:
        report = migrate_install(
            args.source or settings.database_path,
            args.images or settings.images_dir,
            args.to,
            say=print,
            models=local_models(models_dir),
        )
    except MigrationRefused as refused:
        raise UserFacingError(str(refused)) from None
    print(f"done: {report.copied} rows copied; set DATABASE_URL to the target to run on it")
    return 0


def local_models(root: Path) -> LocalModels:
    """The install's model store (folders `<name>/v<N>/`, `<name>/active`) as the migration takes it."""
    from inference.model_store import META_FILE, ModelStore
    from storage.migration_models import LocalModels, LocalModelVersion

    store = ModelStore(root)
    versions, serving = [], {}
    for name in store.names():
        for version in store.versions(name):
            files = {
                item.relative_to(version.path).as_posix(): item
                for item in sorted(version.path.rglob("*"))
                if item.is_file()
                and not item.is_symlink()
                and item.name != META_FILE
                and not any(part.startswith(".") for part in item.relative_to(version.path).parts)
            }
            versions.append(LocalModelVersion(name, version.version, version.meta, files))
        active = store.active_version(name)
        if active is not None:
            serving[name] = active
    return LocalModels(versions, serving)

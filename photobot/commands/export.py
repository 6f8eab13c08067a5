"""`photobot export --model digits|flowers DIR`: the labelled data set as one folder per label.

Reads a consistent snapshot while the bot may be running, copies each labelled photo (the majority
label, blocked users left out, ties dropped) to `DIR/<label>/<sha256>.<ext>`, ready for
`photobot evaluate --images DIR` or any tool that reads a folder per class. A progress bar on stderr
counts the photos (see `photobot.commands.progress_bar`).
"""

from __future__ import annotations

import argparse
import dataclasses

from inference.catalogue import DEFAULT_CATALOGUE
from photobot.commands import progress_bar
from photobot.errors import UserFacingError
from photobot.settings import Settings

EXPORT_CHUNK = 200  # photos copied between two updates of the progress bar


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help=f"whose labelled photos to export: {', '.join(DEFAULT_CATALOGUE.names)} or a taught model",
    )
    parser.add_argument("dir", metavar="DIR", help="output folder (created; existing photos are kept)")
    parser.add_argument(
        "--split", choices=("train", "validation"), help="only one part of the stable hash split"
    )
    parser.add_argument(
        "--with-negatives",
        action="store_true",
        help="also export photos labelled not_a_digit / not_a_flower, as a folder of that name",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    from storage.connect import database_exists
    from storage.labelled import export_labelled_set, read_labelled_set

    if not database_exists(settings.database):
        raise UserFacingError(f"no database at {settings.database_path}: nothing labelled yet (DATA_DIR?)")
    from photobot.wiring import taught_catalogue

    known = taught_catalogue(settings)
    spec = known.named(args.model)  # a model's name (`digits`) or its mode (`digit`)
    if spec is None:
        raise UserFacingError(f"unknown model {args.model!r}; choose from {', '.join(known.names)}")
    args.model = spec.name
    labelled = read_labelled_set(settings.database, settings.images_dir, args.model)
    counts: dict[str, int] = {}
    with progress_bar(len(labelled.examples), "exporting", quiet=getattr(args, "quiet", False)) as bar:
        for start in range(0, max(1, len(labelled.examples)), EXPORT_CHUNK):  # once when empty: the folder
            chunk = dataclasses.replace(labelled, examples=labelled.examples[start : start + EXPORT_CHUNK])
            done = export_labelled_set(
                chunk, args.dir, split=args.split, include_negatives=args.with_negatives
            )
            for label, count in done.items():
                counts[label] = counts.get(label, 0) + count
            bar.update(len(chunk.examples))
    counts = dict(sorted(counts.items()))
    total = sum(counts.values())
    print(f"exported {total} labelled {args.model} photos to {args.dir}")
    for label, count in counts.items():
        print(f"  {label}: {count}")
    left_out = {
        "ties between people": labelled.ties,
        "votes of blocked users": labelled.blocked_votes,
        "missing image files": labelled.missing_images,
    }
    for what, count in left_out.items():
        if count:
            print(f"  left out: {count} {what}")
    return 0

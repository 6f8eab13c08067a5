"""`photobot classify PATH… [--mode auto|digit|flower] [--top K] [--json]`: the label_image.py of PhotoBot.

Photos go through the same engine as the bot (decoding, preprocessing, router, batching), all at once,
so a folder of photos is answered in batches. Without --json each photo prints like label_image.py:

    daisy.jpg  (flowers v1, ok)
      daisy (97.3%)
      dandelion (1.2%)

With --json, one JSON object per photo (DESIGN.md):
`{"file", "model", "label", "confidence", "status", "top": [[label, p], …]}` plus `version`, `reason`
(with its figures, such as a flower refusal's distance) and `digits`: for a number, each digit's
`{"label", "confidence", "top": [[label, p], …]}` left to right (`top` is the least sure digit's).
The text output gives the reason in words only. Nothing else is printed: no logs, no TensorFlow
noise; the first run of a new model version converts it for LiteRT and says so on stderr.
A photo that cannot be read prints an error for that photo only; the exit status is then 1.

The bot answers through the same Classifier, in the chat's mode (`--mode flower` is its /flower), and
from the copy of a photo Telegram keeps rather than the original file, so its percentages can differ
by a few points (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from inference.catalogue import DEFAULT_CATALOGUE, Catalogue
from photobot.commands import positive_int, progress_bar
from photobot.errors import UserFacingError
from photobot.settings import Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}
# The figures behind a reason, "(distance 2973 > 2615)": for --json and the logs, not for people.
_FIGURES = re.compile(r"\s*\(distance [^()]*\)")


MAX_TOP = 5  # an answer keeps its five best labels (inference.flowers.TOP_K, each digit's too)


def top_k(text: str) -> int:
    """An argparse type: 1 to MAX_TOP, so `--top 10` on a 50-label model says why it cannot."""
    value = positive_int(text)
    if value > MAX_TOP:
        raise argparse.ArgumentTypeError(f"at most {MAX_TOP}: an answer keeps its {MAX_TOP} best labels")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="photos, or folders of photos")
    parser.add_argument(
        "--mode",
        default="auto",
        help=f"{', '.join(DEFAULT_CATALOGUE.modes)} or a taught model's name (default: auto)",
    )
    parser.add_argument(
        "--top",
        type=top_k,
        default=MAX_TOP,
        metavar="K",
        help=f"show the K best labels, at most {MAX_TOP} (the default)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per photo")


def main(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from photobot.wiring import taught_catalogue

    catalogue = taught_catalogue(settings)
    spec = catalogue.named(args.mode)  # a mode (`digit`) or a model's name (`digits`)
    if args.mode != "auto" and spec is None:
        raise UserFacingError(f"unknown mode '{args.mode}'; choose from {', '.join(catalogue.modes)}")
    if spec is not None:
        args.mode = spec.mode
    files = photo_files(args.paths)
    if not files:
        raise UserFacingError("no photos found in the paths given")

    bar = progress_bar(len(files), "classifying", quiet=getattr(args, "quiet", False) or len(files) == 1)

    def show(results: list) -> None:
        bar.close()  # off the terminal before the answers are printed
        for path, outcome in zip(files, results, strict=True):
            if isinstance(outcome, Exception):
                _print_error(path, outcome, as_json=args.json)
            elif args.json:
                print(json.dumps(prediction_json(path, outcome, args.top)))
            else:
                print(prediction_text(path, outcome, args.top))
        sys.stdout.flush()

    try:
        results = asyncio.run(
            classify_files(
                files,
                args.mode,
                settings,
                catalogue=catalogue,
                on_answers=show,
                on_each=lambda: bar.update(1),
            )
        )
    finally:
        bar.close()
    return 1 if any(isinstance(outcome, Exception) for outcome in results) else 0


def photo_files(paths: list[Path]) -> list[Path]:
    """The files given, and the images inside the folders given (sorted, recursively).

    Any path that is not a folder is kept as given, even one that does not exist: reading it says what
    is wrong with it (missing, unreadable) as that photo's error, and the other photos are still
    classified."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            found.append(path)
    return found


async def classify_files(
    files: list[Path],
    mode: str,
    settings: Settings,
    *,
    catalogue: Catalogue = DEFAULT_CATALOGUE,
    on_answers: Callable[[list], None] | None = None,
    on_each: Callable[[], object] | None = None,
) -> list:
    """Every file through one Classifier serving `catalogue`'s models (in auto mode, all of them, as
    the bot does); a failure is returned in its place, not raised.

    `on_answers` gets the answers as soon as they are known: the first run of a model version goes on
    converting it for LiteRT in the background (~20 s) and waits for that before closing (closing would
    abandon it, and every run would convert again), so the answers should not wait with it. `on_each`
    is called as each photo is answered (a progress bar).
    """
    import asyncio

    from inference.errors import InferenceError
    from photobot.serving import build_classifier

    spec = catalogue.for_mode(mode)
    names = (spec.name,) if spec else None
    classifier = build_classifier(settings, catalogue=catalogue, names=names, reload_poll_s=0)
    await classifier.start()
    try:
        limit = asyncio.Semaphore(max(1, min(64, classifier.config.queue_size)))

        async def one(path: Path):
            async with limit:
                try:
                    data = await asyncio.to_thread(path.read_bytes)
                    return await classifier.classify(data, mode)
                except (InferenceError, OSError) as error:
                    return error
                finally:
                    if on_each is not None:
                        on_each()

        results = await asyncio.gather(*(one(path) for path in files))
        if on_answers is not None:
            on_answers(results)
        if classifier.converting:
            print(
                "Finishing the models' conversion to LiteRT for the next runs (once per model version)…",
                file=sys.stderr,
            )
            await classifier.conversions_done()
        return results
    finally:
        await classifier.close()


def prediction_json(path: Path, prediction, top: int) -> dict:
    return {
        "file": str(path),
        "model": prediction.model,
        "version": prediction.version,
        "label": prediction.label,
        "confidence": round(prediction.confidence, 6),
        "status": prediction.status,
        "top": [[label, round(p, 6)] for label, p in prediction.top[:top]],
        "reason": prediction.reason,
        "digits": [
            {
                "label": digit.label,
                "confidence": round(digit.confidence, 6),
                "top": [[label, round(p, 6)] for label, p in digit.top[:top]],
            }
            for digit in prediction.digits
        ],
    }


def prediction_text(path: Path, prediction, top: int) -> str:
    """label_image.py style: the answer with its percentage, then the runners-up."""
    source = f"{prediction.model} v{prediction.version}" if prediction.model else "neither model"
    lines = [f"{path}  ({source}, {prediction.status})"]
    if len(prediction.digits) > 1:
        parts = " ".join(f"{d.label} ({d.confidence:.1%})" for d in prediction.digits)
        lines.append(f"  {prediction.label} ({prediction.confidence:.1%}): {parts}")
        lines.append("  least sure digit:")
    elif prediction.label is not None and not prediction.top:
        lines.append(f"  {prediction.label} ({prediction.confidence:.1%})")
    for label, p in prediction.top[:top]:
        lines.append(f"  {label} ({p:.1%})")
    if prediction.reason:
        lines.append(f"  {reason_in_words(prediction.reason)}")
    return "\n".join(lines)


def reason_in_words(reason: str) -> str:
    """ "not one of the known flowers (distance 2973 > 2615)" → "not one of the known flowers"."""
    return _FIGURES.sub("", reason).strip()


def _print_error(path: Path, error: Exception, *, as_json: bool) -> None:
    import sys

    message = error_text(error)
    if as_json:
        print(json.dumps({"file": str(path), "error": message, "kind": type(error).__name__}))
    else:
        print(f"{path}: {message}", file=sys.stderr)


def error_text(error: Exception) -> str:
    """What went wrong with one photo. A file that cannot be read says why in the system's words ("No
    such file or directory"): its path is printed beside it already."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)

"""A label added to the flowers, measured: what it costs the flowers the model had, how well the new
label is answered, and how refusal changes.

    PHOTOBOT_DATASETS=/work/shared/data python -m benchmarks.add_label [--stand-in dogs|tulips]
        [--photos 20] [--people 4] [--data-dir DIR]

There are no lavender photos here, so a stand-in learns the new label:

- `dogs` (the issue's figure): the shipped five-flower model learns `dog` from the dogs of
  `other_photos` (one real ImageNet photo per breed, 59 of the 118 breeds; `benchmarks.teach.ANIMALS`).
  A breed per photo makes it a far broader label than a flower species.
- `tulips`: a real flower species the model never saw. A four-flower model is trained first, as the
  shipped one was (`photobot train flowers`, the same split by content hash) but without tulips, on a
  `flower_photos/` of the other four (the datasets folder then holds only that, `mnist.npz` and
  `other_photos/`, so no tulip is base data); it learns `tulips` from chat photos only.

The first `--photos` of the stand-in, in a fixed order, are taught as `--people` people's captions, as
the bot stores them, after `photobot models add-label flowers LABEL` (what `/addlabel` does);
`run_retrain` (what `/retrain flowers` starts) builds the version and the gate decides. Measured through
the served engine (`photobot evaluate`'s own function), before and after, on the same photos: the old
flowers' held-out test split (the split their version was judged on), the stand-in's photos never taught
(as `none/` too: how many are refused), and the photos of `other_photos` that are not the stand-in
(they must be refused). Prints one JSON object; the folders stay in `DATA_DIR/eval/` for
`photobot evaluate --model flowers --images DIR`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from photobot.settings import Settings

FOUR = ("daisy", "dandelion", "roses", "sunflowers")


def link(path: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / path.name).exists():
        os.symlink(path.resolve(), folder / path.name)


def eval_folders(
    settings: Settings, root: Path, label: str, unseen: list[Path], none: list[Path]
) -> dict[str, Path]:
    """The folders `photobot evaluate --images` reads: the flowers' test split, the untaught photos of the
    new label (once under its name, once as `none/` for the version that cannot answer it), the photos
    of neither."""
    from inference.model_store import ModelStore
    from training.flower_data import find_flower_photos, list_photos, split_photos

    serving = ModelStore(settings.models_dir).active("flowers")
    assert serving is not None
    config = serving.meta.get("config") or {}
    photos = list_photos(find_flower_photos(settings.datasets, settings.data_dir)).photos
    test = split_photos(photos, config.get("validation_percent", 10.0), config.get("test_percent", 10.0))
    folders = {
        "flowers": [(p.path, p.label) for p in test["test"]],
        "new": [(p, label) for p in unseen],
        "new_refused": [(p, "none") for p in unseen],
        "none": [(p, "none") for p in none],
    }
    for name, files in folders.items():
        for path, truth in files:
            link(path, root / name / truth)
    return {name: root / name for name in folders}


async def measure(settings: Settings, folder: Path) -> dict[str, Any]:
    """`photobot evaluate --model flowers --images FOLDER`, and how often the top label was right."""
    from photobot.commands.classify import classify_files
    from photobot.commands.evaluate import evaluate_folder, labelled_photos

    report, outcomes = await evaluate_folder(folder, "flowers", settings)
    photos = labelled_photos(folder)
    answers = await classify_files([p for p, _ in photos], "flower", settings)
    failed = [a for a in answers if isinstance(a, Exception)] + [
        o for o in outcomes if o.answer == "unreadable"
    ]
    if failed:  # a photo not answered would count as wrong: the figure would be the machine's load
        raise RuntimeError(f"{len(failed)} photos of {folder} not answered: {failed[0]}")
    top = sum(bool(a.top) and a.top[0][0] == label for (_, label), a in zip(photos, answers, strict=True))
    return {
        "version": report["version"],
        "n": report["n"],
        "accuracy": round(report["accuracy"], 4),
        "top_label_right": round(top / len(photos), 4),
        "unsure": report["unsure"],
        "not_recognized": report["not_recognized"],
    }


def four_flowers(settings: Settings, photobot: Callable[[Sequence[str]], int]) -> Settings:
    """A datasets folder without tulips, and a four-flower model trained on it as the shipped one was."""
    from training.flower_data import find_photo_folder

    shared = settings.datasets
    datasets = settings.data_dir / "datasets"
    flowers = find_photo_folder(shared, settings.data_dir, "flower_photos")
    for label in FOUR:
        for photo in sorted((flowers / label).iterdir()):
            link(photo, datasets / "flower_photos" / label)
    link(find_photo_folder(shared, settings.data_dir, "other_photos"), datasets)
    for folder in shared:
        if (folder / "mnist.npz").is_file():
            link(folder / "mnist.npz", datasets)
            break
    os.environ["PHOTOBOT_DATASETS"] = str(datasets)
    assert photobot(["train", "flowers", "--images", str(datasets / "flower_photos")]) == 0
    return replace(settings, datasets=(datasets,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stand-in", choices=("dogs", "tulips"), default="dogs")
    parser.add_argument("--photos", type=int, default=20, help="photos of the new label taught")
    parser.add_argument("--people", type=int, default=4, help="who teach them (each teaches as many)")
    parser.add_argument("--data-dir", type=Path, help="default: a new temporary folder")
    args = parser.parse_args()

    from benchmarks.teach import ANIMALS, animal_photos, in_ranges, teach
    from photobot.cli import main as photobot
    from photobot.serving import seed_models
    from photobot.settings import Settings
    from photobot.wiring import retrain_settings, taught_catalogue
    from training.flower_data import find_photo_folder
    from training.retrain import RetrainOptions, run_retrain

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="add-label-"))
    settings = replace(
        Settings.from_env(),
        data_dir=data_dir,
        retrain_min_contributors=args.people,
        retrain_max_user_share=1.0 / args.people,
    )
    # Accuracy, not speed, is measured: a loaded machine must not turn slow answers into failures.
    settings = replace(settings, engine=replace(settings.engine, deadline_s=600.0))
    os.environ["DATA_DIR"] = str(data_dir)  # for the `photobot` commands below
    other = find_photo_folder(settings.datasets, settings.data_dir, "other_photos")
    if args.stand_in == "dogs":
        label, photos = "dog", animal_photos(other)["dog"]
        none = sorted(p for p in other.glob("n*_*.jpg") if not in_ranges(p, ANIMALS["dog"]))
        seed_models(settings, ["flowers"])
    else:
        tulips = find_photo_folder(settings.datasets, settings.data_dir, "flower_photos") / "tulips"
        label, photos = "tulips", sorted(tulips.glob("*.jpg"))
        none = sorted(other.glob("n*_*.jpg"))
        settings = four_flowers(settings, photobot)
    taught, unseen = photos[: args.photos], photos[args.photos :]
    folders = eval_folders(settings, data_dir / "eval", label, unseen, none)

    def measured(names: list[str]) -> dict[str, Any]:
        return {name: asyncio.run(measure(settings, folders[name])) for name in names}

    before = measured(["flowers", "new_refused", "none"])  # no such label yet: new/ has nothing to score
    assert photobot(["models", "add-label", "flowers", label]) == 0
    asyncio.run(teach(settings, "flowers", {label: taught}, args.people, create=False))
    started = time.perf_counter()
    outcome = run_retrain(
        retrain_settings(settings), RetrainOptions(model="flowers"), taught_catalogue(settings)
    )
    retrain_s = time.perf_counter() - started
    after = measured(list(folders))
    cost = (before["flowers"]["accuracy"] - after["flowers"]["accuracy"]) * 100
    print(
        json.dumps(
            {
                "stand_in": args.stand_in,
                "label": label,
                "taught": [p.name for p in taught],
                "people": args.people,
                "decision": outcome.decision,
                "reason": outcome.reason,
                "retrain_s": round(retrain_s, 1),
                "old_flowers_cost_points": round(cost, 2),
                "before": before,
                "after": after,
                "data_dir": str(data_dir),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

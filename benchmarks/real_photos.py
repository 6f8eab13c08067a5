"""The real-photo sets of docs/performance.md "Real photos" (issue 18), as `photobot evaluate` folders.

`python -m benchmarks.real_photos --out DIR [--datasets D]` writes, each with a `none/` sub-folder (or
one per flower):

- `other-held/`, `other-dev/`: `other_photos/` split by class, `sha256(file name)` odd → held;
- `package-held/`, `package-dev/`: `training.non_flowers.package_recipes()` (scikit-image's samples and
  their crops, matplotlib's Grace Hopper, LFW faces) split by source, `sha256(source name)` odd → held
  (a photo's crops stay with it);
- `flowers-test/`, `flowers-validation/`: `flower_photos/` by content hash (`split_of(digest, 10, 10)`).

The held halves are for reporting only: nothing is chosen or fitted on them. Files are linked when the
source is a file, written as PNG when it is made (crops, LFW faces).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from training.halves import half_of, package_source


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.symlink(source.resolve(), target)


def build(out: Path, datasets: Path) -> dict[str, int]:
    from training.flower_data import file_digest, split_of
    from training.non_flowers import package_recipes

    counts: dict[str, int] = {}
    for photo in sorted((datasets / "other_photos").glob("*.jpg")):
        name = f"other-{half_of(photo.name)}"
        _link(photo, out / name / "none" / photo.name)
        counts[name] = counts.get(name, 0) + 1
    for recipe in package_recipes():
        name = f"package-{half_of(package_source(recipe.kind))}"
        target = out / name / "none" / f"{recipe.kind}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            recipe.make().save(target)
        counts[name] = counts.get(name, 0) + 1
    for label_dir in sorted(p for p in (datasets / "flower_photos").iterdir() if p.is_dir()):
        for photo in sorted(label_dir.glob("*.jpg")):
            split = split_of(file_digest(photo), 10, 10)
            if split != "train":
                name = f"flowers-{split}"
                _link(photo, out / name / label_dir.name / photo.name)
                counts[name] = counts.get(name, 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get("PHOTOBOT_DATASETS", ".")))
    args = parser.parse_args()
    for name, count in sorted(build(args.out, args.datasets).items()):
        print(f"{name}: {count}")


if __name__ == "__main__":
    main()

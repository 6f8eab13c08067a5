"""Flower data: folders → labelled photos, the stable content-hash split, and the bottleneck cache."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from training.flower_data import (
    FLOWERS_URL,
    BottleneckCache,
    DatasetError,
    Pixels,
    bottlenecks,
    find_flower_photos,
    find_photo_folder,
    list_photos,
    split_of,
    split_photos,
)


def _photo(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(path, "PNG")


def _folder(root: Path, counts: dict[str, int]) -> Path:
    seed = 0
    for label, count in counts.items():
        for i in range(count):
            seed += 1
            _photo(root / label / f"{i}.png", seed)
    return root


def test_classes_are_folder_names_and_duplicates_and_double_labels_are_dropped_and_counted(
    tmp_path: Path,
) -> None:
    root = _folder(tmp_path / "photos", {"cats": 21, "dogs": 22})
    shutil.copy(root / "cats" / "0.png", root / "cats" / "copy.png")  # same photo twice, same label
    shutil.copy(root / "dogs" / "0.png", root / "cats" / "odd.png")  # same photo under two labels
    (root / "dogs" / "notes.txt").write_text("not a photo")
    found = list_photos(root)
    assert found.classes == ["cats", "dogs"]
    assert found.counts() == {"cats": 21, "dogs": 21}
    assert found.dropped == {"duplicate photo": 1, "same photo under two labels": 2, "not an image file": 1}
    assert all(p.digest == hashlib.sha256(p.path.read_bytes()).hexdigest() for p in found.photos)


def test_a_single_class_or_a_class_with_too_few_photos_is_refused_with_a_clear_message(
    tmp_path: Path,
) -> None:
    with pytest.raises(DatasetError, match="at least two classes"):
        list_photos(_folder(tmp_path / "one", {"cats": 25}))
    with pytest.raises(DatasetError, match=r"at least 20 photos; too few: dogs \(19\)"):
        list_photos(_folder(tmp_path / "two", {"cats": 25, "dogs": 19}))


def test_the_split_depends_on_content_only_and_keeps_its_proportions() -> None:
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(6000)]
    splits = [split_of(d, 10, 15) for d in digests]
    assert splits == [split_of(d, 10, 15) for d in digests]
    shares = {name: splits.count(name) / len(splits) for name in ("train", "validation", "test")}
    assert shares["test"] == pytest.approx(0.15, abs=0.02)
    assert shares["validation"] == pytest.approx(0.10, abs=0.02)
    assert shares["train"] == pytest.approx(0.75, abs=0.02)


def test_new_photos_never_move_old_ones_between_splits(tmp_path: Path) -> None:
    root = _folder(tmp_path / "photos", {"a": 30, "b": 30})
    before = split_photos(list_photos(root).photos, 20, 20)
    for i in range(30, 60):
        _photo(root / "a" / f"{i}.png", 1000 + i)
    after = split_photos(list_photos(root).photos, 20, 20)
    for name in ("train", "validation", "test"):
        old = {p.digest for p in before[name]}
        assert old <= {p.digest for p in after[name]}
    assert sum(len(v) for v in after.values()) == 90


def test_datasets_are_looked_for_in_order_and_a_missing_one_explains_what_to_do(tmp_path: Path) -> None:
    shared, data_dir = tmp_path / "shared", tmp_path / "data"
    (data_dir / "datasets" / "flower_photos").mkdir(parents=True)
    assert find_flower_photos([shared], data_dir) == data_dir / "datasets" / "flower_photos"
    (shared / "flower_photos").mkdir(parents=True)
    assert find_flower_photos([shared], data_dir) == shared / "flower_photos"
    (shared / "pet_photos").mkdir()
    assert find_photo_folder([shared], data_dir, "pet_photos") == shared / "pet_photos"

    # Never downloaded (no network at run time but Telegram's): the error names the variable and source.
    with pytest.raises(DatasetError, match="PHOTOBOT_DATASETS") as error:
        find_flower_photos([tmp_path / "nowhere"], tmp_path / "empty")
    assert FLOWERS_URL in str(error.value) and str(tmp_path / "nowhere") in str(error.value)
    assert not (tmp_path / "empty").exists()  # nothing fetched, not even a folder made for it
    with pytest.raises(DatasetError, match="pet_photos/ was not found") as error:
        find_photo_folder([tmp_path / "nowhere"], tmp_path / "empty", "pet_photos")
    assert "one sub-folder of photos per label" in str(error.value)


def test_the_cache_computes_each_photo_once(
    flower_backbone: keras.Model, flowers_path: Path, tmp_path: Path
) -> None:
    photos = [p for p in list_photos(flowers_path).photos[::300]][:8]
    cache = BottleneckCache(tmp_path / "cache", "backbone-x")
    calls: list[int] = []

    def extract(pixels: np.ndarray) -> np.ndarray:
        calls.append(len(pixels))
        return flower_backbone.predict_on_batch(pixels)

    first = bottlenecks(photos, cache, extract, batch_size=4)
    assert first.extracted == 8 and calls == [4, 4] and first.features.shape == (8, 1280)
    second = bottlenecks(photos, cache, extract)
    assert second.extracted == 0 and calls == [4, 4]
    np.testing.assert_array_equal(second.features, first.features)
    new = Pixels.of(np.full((224, 224, 3), 128, np.uint8))
    third = bottlenecks([*photos, new], cache, extract)
    assert third.extracted == 1 and calls == [4, 4, 1]
    other_backbone = BottleneckCache(tmp_path / "cache", "backbone-y")
    assert other_backbone.get(photos[0].digest) is None


def test_a_damaged_cache_entry_is_recomputed(
    flower_backbone: keras.Model, flowers_path: Path, tmp_path: Path
) -> None:
    photo = list_photos(flowers_path).photos[5]
    cache = BottleneckCache(tmp_path / "cache", "k")
    good = bottlenecks([photo], cache, flower_backbone.predict_on_batch).features
    cache._path(photo.digest).write_bytes(b"\x93NUMPY half a file")
    again = bottlenecks([photo], cache, flower_backbone.predict_on_batch)
    assert again.extracted == 1
    np.testing.assert_allclose(again.features, good, rtol=1e-5, atol=1e-6)

"""Real, small things for the retraining tests: chat photos, stored and labelled as the bot stores them.

The chat photos are MNIST test digits rendered as phone photos by `training.synth_photos`, stored and
labelled through the real storage API (a prediction, then the sender's feedback), exactly as the bot
records them. A data dir with a tiny digit model serving is tests/training/conftest.py's `digit_settings`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from photobot.settings import Settings

SMALL_PHOTO = (320, 240)
# The chat rules before issue 24: one person may be all the chat photos, held out by photo. For tests of
# what training does with chat photos, not of who may teach it (tests/test_retrain_fairness.py).
ONE_PERSON = {"retrain_min_contributors": 1, "retrain_max_user_share": 1.0}
ONE_PERSON_ENV = {"RETRAIN_MIN_CONTRIBUTORS": "1", "RETRAIN_MAX_USER_SHARE": "1"}


def digit_photos(
    mnist_path: Path, n: int, *, seed: int = 0, offset: int = 0, transform=None
) -> list[tuple[bytes, str]]:
    """`n` plain photos of single MNIST test digits (from `offset` on), with their true labels."""
    from training.synth_photos import PhotoStyle, render_photo

    with np.load(mnist_path) as data:
        images, labels = data["x_test"][offset : offset + n], data["y_test"][offset : offset + n]
    rng = np.random.default_rng(seed)
    photos = []
    for image, label in zip(images, labels, strict=True):
        glyph = transform(image) if transform is not None else image
        style = PhotoStyle(size=SMALL_PHOTO, digit_height=0.55, jpeg_quality=92)
        data, _ = render_photo([glyph], rng, style, labels=[int(label)])
        photos.append((data, str(int(label))))
    return photos


async def _label(settings: Settings, photos, user_id: int, wrong: bool, first_message: int) -> list[str]:
    from storage import Store

    store = await Store.open(settings.database_path, settings.images_dir)
    hashes = []
    try:
        for index, (data, label) in enumerate(photos):
            photo = await store.add_photo(data, width=SMALL_PHOTO[0], height=SMALL_PHOTO[1], format="jpeg")
            given = str((int(label) + 1) % 10) if wrong else label
            prediction = await store.record_prediction(
                user_id=user_id,
                chat_id=user_id,
                message_id=first_message + index,
                photo_sha256=photo.sha256,
                model="digits",
                version=1,
                label="0",
                confidence=0.5,
                probabilities=[("0", 0.5)],
                status="ok",
            )
            verdict = "correct" if given == "0" else "wrong"
            await store.record_feedback(prediction, user_id=user_id, verdict=verdict, true_label=given)
            hashes.append(photo.sha256)
    finally:
        await store.close()
    return hashes


def label_photos(
    settings: Settings, photos, *, user_id: int, wrong: bool = False, first_message: int = 1
) -> list[str]:
    """Store the photos and the user's labels (their true ones, or all wrong: label + 1) as feedback."""
    return asyncio.run(_label(settings, photos, user_id, wrong, first_message))


async def _contribute(settings: Settings, photos, model: str, user_id: int) -> None:
    from storage import Store

    store = await Store.open(settings.database_path, settings.images_dir)
    try:
        for index, (data, label) in enumerate(photos):
            photo = await store.add_photo(data, format="jpeg")
            await store.record_contribution(
                user_id=user_id,
                chat_id=user_id,
                message_id=index + 1,
                photo_sha256=photo.sha256,
                model=model,
                label=label,
            )
    finally:
        await store.close()


def store_labels(settings: Settings, photos, *, model: str, user_id: int) -> None:
    """Photos sent with their label as the caption (a contribution), as the bot stores them."""
    asyncio.run(_contribute(settings, photos, model, user_id))

"""Augmentation for the digit CNN: the ways a handwritten digit on a phone photo differs from MNIST's.

After `read_digits` a photo's digit is already cropped, fitted into 20×20 and centred, so what is left to
learn is handwriting and camera variation: slight shifts (centre of mass vs. box), rotation (a tilted
page), scale and shear (slant), and stroke thickness (pens, markers, pencils, blur). The layers run in
the `tf.data` pipeline during training only; the served model stays plain Keras, so it loads on any
backend.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def augmentation(seed: int = 0) -> keras.Sequential:
    """Random geometric distortions of (N, 28, 28, 1) float32 digits in [0, 1]."""
    return keras.Sequential(
        [
            keras.layers.RandomRotation(0.03, fill_mode="constant", seed=seed),  # ±11°
            keras.layers.RandomZoom((-0.1, 0.12), fill_mode="constant", seed=seed + 1),
            keras.layers.RandomShear(x_factor=0.15, y_factor=0.0, fill_mode="constant", seed=seed + 2),
            keras.layers.RandomTranslation(0.06, 0.06, fill_mode="constant", seed=seed + 3),
        ],
        name="digit_augmentation",
    )


def vary_strokes(images: tf.Tensor, seed: int = 0) -> tf.Tensor:
    """Make strokes thicker or thinner per image: grey dilation or erosion, blended in by a random amount."""
    batch = tf.shape(images)[0]
    thicker = tf.nn.max_pool2d(images, 3, 1, "SAME")
    thinner = -tf.nn.max_pool2d(-images, 2, 1, "SAME")
    amount = tf.random.uniform([batch, 1, 1, 1], -0.5, 0.8, seed=seed)
    varied = tf.where(
        amount > 0, images + amount * (thicker - images), images + (-amount) * (thinner - images)
    )
    peak = tf.reduce_max(varied, [1, 2, 3], keepdims=True)
    return tf.clip_by_value(varied / tf.maximum(peak, 0.3), 0.0, 1.0)


def augmented_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int = 0,
    fraction: float = 0.75,
    sample_weight: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Shuffled batches where `fraction` of the digits are distorted and the rest are left as they are.

    Keeping some digits clean keeps the model sharp on well-framed digits (MNIST itself). With
    `sample_weight` each batch also carries its examples' weights (images, labels, weights).
    """
    layers = augmentation(seed)

    def distort(images: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
        changed = vary_strokes(layers(images, training=True), seed)
        keep = tf.random.uniform([tf.shape(images)[0], 1, 1, 1], seed=seed + 5) > fraction
        return (tf.where(keep, images, changed), *rest)

    columns = (x, y) if sample_weight is None else (x, y, sample_weight.astype(np.float32))
    data = tf.data.Dataset.from_tensor_slices(columns).shuffle(
        len(x), seed=seed, reshuffle_each_iteration=True
    )
    return data.batch(batch_size).map(distort, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)

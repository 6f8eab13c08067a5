"""A label added to a built-in image model, as its retrain learns it (`training.new_labels`): the new
output fitted with the others held, and the ImageNet classes its refusal accepts."""

from __future__ import annotations

import numpy as np

from training.new_labels import fit_new_outputs, imagenet_rule, learned_classes, new_label_set, start_head


def test_the_serving_outputs_are_kept_dropped_or_joined_by_a_new_one() -> None:
    kernel = np.arange(12, dtype=np.float32).reshape(4, 3)
    bias = np.array([0.5, -1.0, 2.0], np.float32)
    new_kernel, new_bias = start_head(kernel, bias, ["a", "b", "c"], ["c", "a", "lavender"])
    assert np.array_equal(new_kernel[:, 0], kernel[:, 2]) and np.array_equal(new_kernel[:, 1], kernel[:, 0])
    assert not new_kernel[:, 2].any() and new_bias.tolist() == [2.0, 0.5, -1.0]


def test_a_new_output_learns_its_photos_and_the_others_answer_as_before() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 16))
    y = np.repeat([0, 1, 2], 40)
    x = centres[y] + rng.normal(0, 0.3, (len(y), 16))
    kernel = np.zeros((16, 3), np.float32)
    kernel[:, :2] = centres[:2].T  # a head that knows the first two classes
    start = start_head(kernel[:, :2], np.zeros(2, np.float32), ["a", "b"], ["a", "b", "new"])
    (fitted, bias), losses = fit_new_outputs((x, y, np.ones(len(y))), start, [2], l2=1e-4)
    assert np.array_equal(fitted[:, :2], kernel[:, :2]) and np.array_equal(bias[:2], [0.0, 0.0])
    answers = (x @ fitted + bias).argmax(axis=1)
    assert np.mean(answers == y) > 0.95 and losses[-1] < losses[0]


def test_a_learned_labels_imagenet_classes_join_the_rule_and_leave_with_it() -> None:
    probabilities = np.full((5, 10), 0.01)
    probabilities[[0, 1, 2], 7] = 0.9  # three photos taken for class 7, one for 3, one for 4
    probabilities[3, 3] = probabilities[4, 4] = 0.9
    assert learned_classes(probabilities) == [3, 4, 7]
    assert learned_classes(probabilities, min_photos=2) == [7]
    serving = {"flower_classes": [1, 2], "unsure_above": 0.4, "reject_above": 0.5}
    six = imagenet_rule(serving, {"lavender": [7]})
    assert six["flower_classes"] == [1, 2, 7] and six["label_classes"] == {"lavender": [7]}
    assert six["reject_above"] == 0.5
    five = imagenet_rule(six, {})
    assert five["flower_classes"] == [1, 2] and "label_classes" not in five


def test_a_new_labels_photos_and_their_mirror_images_weigh_as_much_as_an_old_label() -> None:
    x = np.ones((7, 2), np.float32)
    y = np.array([0, 0, 0, 1, 1, 1, 2])  # three photos each of two old labels, one of the new label
    weights = np.array([1, 1, 1, 1, 1, 5, 5], np.float32)  # a chat photo of label 1 weighs 5
    mirrored = (np.zeros((1, 2), np.float32), np.array([2]))
    bx, by, bw = new_label_set((x, y, weights), [2], mirrored)
    assert bx.shape == (8, 2) and by.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert bw[:6].tolist() == [1, 1, 1, 1, 1, 5]  # the old labels' weights are kept
    assert bw[6:].tolist() == [2.5, 2.5]  # photo and mirror image: together (3 + 7) / 2

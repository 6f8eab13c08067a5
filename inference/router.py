"""Auto mode: is this photo a digit on paper, a flower, or neither?

The router must not double the cost of a photo, so it never runs the flower network just to find out
what a photo is. It looks at four cheap things (about 2 ms in all, plus `read_digits`, which the
digit path runs anyway):

- whether `read_digits` found a plausible row of pen strokes;
- how plain the photo is: the share of a 64-pixel thumbnail close to its local background (a page is
  mostly paper; a flower, a face or a street is texture and edges almost everywhere);
- how varied its colours are (the spread term of Hasler & Süsstrunk's colourfulness): paper of any one
  colour under tinted light varies little, a garden a lot;
- where marks were found, whether the paper around them is one sheet under one light: the share of the
  thumbnail's blocks off one smooth surface (`off_page`). Plainness alone cannot tell a blurry grey
  photograph from paper — a low-quality portrait is smooth everywhere, so each pixel is close to its
  neighbourhood — but its tones wander over the whole frame, while a page strays only where a stroke
  fills a block or a shadow's edge crosses it.

    digits found, surely digit-like, → `digit`  (the digit model; only if it is not sure does the
    photo paper-like (plain, few       flower model run too, and only a confident flower
    colours, on one page)               replaces the digit reading: `weigh`)
    no digits found, or marks found  → `flower` (the flower model and its out-of-distribution detector
    that are not digits                         decide between a flower and neither)
    digits found, photo not paper    → `check`  (both models — the digit model costs almost nothing —
    or marks only doubtfully digits             and `weigh` decides)

Thresholds measured on 300 synthetic phone photos of MNIST test digits (`training.synth_photos`, all
paper colours, inks, rulings and lighting) and 500 photos of the flower set: 99% of digit photos go
straight to `digit` (the rest to `check`, still answered as digits); 1.6% of flowers go to `digit`
(and reach the flower model when the digit model is unsure of them); `read_digits` sees strokes in
about 40% of flower photos, which then take `check` and cost one extra digit-model row (~1 ms).

Whether the marks `read_digits` cut out are digits at all is the digit-ness test's
(`inference.digitness`): on a plain-backgrounded photo of something else (a face, the moon, a leaf on a
wall) the reader finds marks, and the digit model, which knows only ten classes, reads them as "1" or
"8" with confidence. Marks that are not digit-like (`DIGITNESS_MIN`) count as no digits found; marks
that are digit-like but not surely so (`DIGITNESS_SURE`: a blurry face, but also 2.4% of other writers'
real handwriting) take `check` even on paper, so the flower network's ImageNet head is heard too.
Some faces' marks are surely digit-like to it (0.97–1.0), and only the page test keeps those photos
off the `digit` route: no rendered digit photo strays from its page as far as `PAPER_MAX_OFF` (at most
0.29 of the blocks, over 2,427 renders of MNIST and UCI digits on every paper, ink, ruling and light),
most blurry grey faces with marks stray 0.45–0.8. Off the page, a confident digit is only asked about
(`combine_off_paper`), never answered.

`weigh` decides when both models have read a photo. The ImageNet head knows what pages of handwriting
are taken for (`PAGE_CLASSES`: envelopes, notebooks, wall clocks, nematodes …) and a thousand other
things: the marks are no digit when it is sure of something that is neither a page nor a flower
(`THING_MIN`: a magpie, a wardrobe), or when the marks are only doubtfully digits and it sees little
of a page in the photo (`PAGE_MIN`: a portrait). Then the flower model's answer stands — usually its
refusal. Doubtful marks on a page it does see are asked about, never answered outright
(`ask_doubtful_marks`): a rocket in a clear sky and the moon look enough like a page to it.

`combine` answers `unsure` with model None when both readings are plausible, so the bot can ask the
user "a digit or a flower?", and `not_recognized` when neither model recognises anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from PIL import Image

from inference.digitness import digitness
from inference.digits.paper import off_the_page
from inference.prediction import Prediction

Route = Literal["digit", "flower", "check"]

THUMBNAIL = 64  # pixels on the longer side for the statistics
PAPER_MAX_SPREAD = 35.0  # colour spread of a page: coloured paper, coloured ink, tinted light
PAPER_MIN_PLAIN = 0.8  # at least this share of a page is plain paper
PLAIN_TOLERANCE = 0.06  # brightness difference to the local background that still counts as plain
PAPER_MAX_OFF = 0.4  # at most this share of a page's blocks strays from one smooth surface …
OFF_PAGE_TOLERANCE = 0.03  # … by more than this much brightness
DIGITNESS_MIN = 0.1  # the least digit-like crop of a photo must be at least this digit-like
DIGITNESS_SURE = 0.9  # below this the marks are doubtful: the ImageNet head is heard too
PAGE_MIN = 0.12  # doubtful marks need this much ImageNet probability on PAGE_CLASSES
THING_MIN = 0.5  # an ImageNet class neither a page's nor a flower's this sure: no digit
# The ImageNet classes photos of handwritten digits on paper are taken for: the top class of at least
# two of 400 phone-photo renders of MNIST *training* digits (`python -m training.page_classes`). Class
# indices are ImageNet's, the same for any backbone with an ImageNet head.
PAGE_CLASSES = (
    4, 21, 65, 78, 107, 111, 405, 416, 417, 418, 473, 499, 504, 530, 549, 591, 600,
    610, 620, 644, 657, 681, 688, 701, 714, 752, 767, 794, 813, 861, 892, 895, 904, 919,
)  # fmt: skip


@dataclass(frozen=True)
class Scene:
    """What the router saw, kept for logs and for tuning the thresholds."""

    colour_spread: float
    plain: float  # share of the thumbnail close to its local background: paper is mostly plain
    digits_found: bool
    digitness: float = 1.0  # how digit-like the least digit-like crop is (1.0 when there are none)
    off_page: float = 0.0  # share of the thumbnail's blocks off one smooth page (0.0 when no marks)

    @property
    def paper_like(self) -> bool:
        return (
            self.colour_spread <= PAPER_MAX_SPREAD
            and self.plain >= PAPER_MIN_PLAIN
            and self.off_page <= PAPER_MAX_OFF
        )

    @property
    def digit_like(self) -> bool:
        """Whether the marks the reader found look like handwritten digits (see `inference.digitness`)."""
        return self.digitness >= DIGITNESS_MIN

    @property
    def digit_sure(self) -> bool:
        """Whether they look surely so: doubtful marks make the router hear the ImageNet head too."""
        return self.digitness >= DIGITNESS_SURE


def colour_spread(image: Image.Image) -> float:
    """σ_rgyb of Hasler & Süsstrunk (2003): how much the opponent colours vary; 0 for a grey image."""
    if image.mode == "L":
        return 0.0
    rgb = np.asarray(_thumbnail(image).convert("RGB"), dtype=np.float32).reshape(-1, 3)
    red, green, blue = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    return float(np.hypot((red - green).std(), (0.5 * (red + green) - blue).std()))


def plainness(image: Image.Image) -> float:
    """Share of a 64-pixel grey thumbnail within PLAIN_TOLERANCE of its block-median background.

    A page with a digit is mostly paper (strokes cover a few percent); a flower, a face or a street is
    texture and edges almost everywhere.
    """
    gray = np.asarray(_thumbnail(image).convert("L"), dtype=np.float32) / 255.0
    side = 8
    rows, cols = gray.shape[0] // side, gray.shape[1] // side
    if rows == 0 or cols == 0:
        return 0.0
    blocks = gray[: rows * side, : cols * side].reshape(rows, side, cols, side).transpose(0, 2, 1, 3)
    medians = np.median(blocks.reshape(rows, cols, -1), axis=2)
    background = np.repeat(np.repeat(medians, side, axis=0), side, axis=1)
    return float(np.mean(np.abs(gray[: rows * side, : cols * side] - background) < PLAIN_TOLERANCE))


def off_page(image: Image.Image) -> float:
    """Share of a 64-pixel grey thumbnail's 4-pixel blocks whose paper is more than OFF_PAGE_TOLERANCE
    off one smooth surface (`inference.digits.paper.off_the_page`, the reader's model of a page).

    Plainness compares each pixel with its own neighbourhood, so a blurry grey photograph — a face, the
    moon's surface, an X-ray — looks as plain as paper; but a page is one sheet under one light, and a
    photograph's tones stray from any one smooth surface almost everywhere.
    """
    gray = np.asarray(_thumbnail(image).convert("L"), dtype=np.float32) / 255.0
    return off_the_page(gray, OFF_PAGE_TOLERANCE)


def look(image: Image.Image, digits_found: bool, crops: np.ndarray | None = None) -> Scene:
    """What the router needs of a photo; `crops` are the digit reader's, for the digit-ness test."""
    thumbnail = _thumbnail(image)  # once for every statistic: shrinking the photo is most of their cost
    least = float(digitness(crops).min()) if crops is not None and len(crops) else 1.0
    return Scene(
        colour_spread=colour_spread(thumbnail),
        plain=plainness(thumbnail),
        digits_found=digits_found,
        digitness=least,
        off_page=off_page(thumbnail) if digits_found else 0.0,  # ~1.5 ms; only marks need a page
    )


def _thumbnail(image: Image.Image) -> Image.Image:
    """The photo box-filtered to THUMBNAIL pixels on its longer side (itself when it is no larger)."""
    if max(image.size) <= THUMBNAIL:
        return image
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    scale = THUMBNAIL / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BOX, reducing_gap=2.0)


def route(scene: Scene) -> Route:
    if not scene.digits_found or not scene.digit_like:
        return "flower"
    return "digit" if scene.paper_like and scene.digit_sure else "check"


def page_evidence(imagenet: np.ndarray, flower_classes: Sequence[int]) -> dict[str, float]:
    """What the ImageNet head says for `weigh`: `page`, its probability on PAGE_CLASSES, and `thing`,
    the largest probability of a class that is neither a page's nor one of `flower_classes`."""
    probabilities = np.asarray(imagenet, dtype=np.float64).reshape(-1)
    others = probabilities.copy()
    others[list(PAGE_CLASSES) + list(flower_classes)] = 0.0
    return {"page": float(probabilities[list(PAGE_CLASSES)].sum()), "thing": float(others.max())}


def no_digit(scene: Scene | None, evidence: Mapping[str, float]) -> str | None:
    """Why the ImageNet head's `evidence` says the reader's marks are no digit, or None."""
    if "thing" not in evidence or scene is None:
        return None
    if evidence["thing"] > THING_MIN:
        return f"the network is sure it is something else ({evidence['thing']:.0%} > {THING_MIN:.0%})"
    if not scene.digit_sure and evidence["page"] < PAGE_MIN:
        return f"doubtful marks and little of a page ({evidence['page']:.0%} < {PAGE_MIN:.0%})"
    return None


def weigh(digit: Prediction | None, flower: Prediction | None, scene: Scene | None) -> Prediction:
    """Auto mode's answer when both models have read a photo (route `check`, or a page the digit model
    doubts): the digit reading is dropped when the ImageNet head says the marks are no digit
    (`no_digit`), and the flower model's answer stands; otherwise a page keeps its reading (`combine`
    with `on_paper`) and a photo that is not one weighs both (`combine_off_paper`)."""
    if digit is None or flower is None:
        return combine(digit, flower)
    why = no_digit(scene, flower.evidence)
    if why is not None:
        if flower.status != "not_recognized":
            return flower
        return replace(flower, reason=f"{flower.reason}; and not a digit: {why}")
    if scene is not None and scene.paper_like:
        if digit.status == "ok":
            return digit if scene.digit_sure else ask_doubtful_marks(digit)
        return combine(digit, flower, on_paper=True)
    return combine_off_paper(digit, flower, scene)


def ask_doubtful_marks(digit: Prediction) -> Prediction:
    """A confident reading of marks that are only doubtfully digits, on what looks like a page, is
    asked rather than answered. The ImageNet head's page evidence is all that keeps such marks a digit,
    and it cannot tell a page from everything a page resembles: a rocket against a clear sky is a "1"
    on a missile-like page, the moon a "6" on a clock-like one. The user confirms or corrects: the
    label stays the digit model's, so another writer's odd "1" is still read right."""
    return replace(digit, status="unsure", reason="the marks look only doubtfully like handwritten digits")


def a_digit_question(prediction: Prediction, scene: Scene | None, reader: str | None) -> bool:
    """Whether an answer is the digit reader's (`reader`) doubtful reading of marks on what looks like a
    page: the bot asks which digit it is, and the models taught from the chat are not asked to replace
    it (a small "1" on yellow paper is a bug to a model taught insects)."""
    return (
        scene is not None
        and scene.digits_found
        and scene.paper_like
        and prediction.status == "unsure"
        and reader is not None
        and prediction.model == reader
    )


def combine(
    digit: Prediction | None,
    flower: Prediction | None,
    *,
    prefer_flower: bool = False,
    on_paper: bool = False,
) -> Prediction:
    """One answer from the readings of a photo that could be either.

    A clear answer from exactly one model wins; clear answers from both, or two doubtful ones, make an
    `unsure` with model None (the bot asks the user); no answer from either is `not_recognized`.
    `prefer_flower` (route `check`: strokes found on a photo that does not look like paper) lets a
    clear flower answer win outright: about 40% of flower photos take that route, 1% of digit photos,
    and the flower model's out-of-distribution detector refuses almost every digit photo.
    `on_paper` (route `digit`: pen strokes on a page) keeps a doubtful digit reading unless the flower
    model is sure: asking "a digit or a flower?" about a handwritten number on paper (2 of 40 of the
    bot benchmark's number photos did) helps nobody; the bot asks which digit instead.
    """
    if prefer_flower and flower is not None and flower.status == "ok":
        return flower
    if on_paper and digit is not None and digit.status == "unsure":
        return flower if flower is not None and flower.status == "ok" else digit
    readings = [p for p in (digit, flower) if p is not None]
    ok = [p for p in readings if p.status == "ok"]
    if len(ok) == 1:
        return ok[0]
    plausible = [p for p in readings if p.status != "not_recognized"]
    if not plausible:
        return Prediction(
            model=None,
            version=None,
            label=None,
            confidence=0.0,
            status="not_recognized",
            reason="neither a digit on paper nor one of the known flowers",
        )
    if len(plausible) == 1:
        return plausible[0]
    best = max(plausible, key=lambda p: p.confidence)
    return replace(
        best,
        model=None,
        version=None,
        status="unsure",
        top=tuple((p.label or "?", p.confidence) for p in sorted(plausible, key=lambda p: -p.confidence)),
        reason="could be a digit on paper or a flower",
    )


def combine_off_paper(digit: Prediction | None, flower: Prediction | None, scene: Scene | None) -> Prediction:
    """Route `check`: strokes on a photo that does not look like paper. A clear flower wins, and a
    confident digit reading is doubted as in `/digit` mode (`unsure`: the bot asks), so a hen or a
    corkscrew with pen-like edges is never answered "5" outright. Refusing such photos outright would
    also refuse digits chalked on a board, which take this route too."""
    doubted = doubt_off_paper(digit, scene) if digit is not None else None
    return combine(doubted, flower, prefer_flower=True)


def doubt_off_paper(prediction: Prediction, scene: Scene | None) -> Prediction:
    """In `/digit` mode: a confident reading of a photo that is not a page, or of marks that are not
    digit-like, becomes `unsure`.

    The digit reader finds stroke-like marks in some photos of other things (on 489 flower photos read
    as digits, 5.5% came out confident); a page is mostly plain, and those photos are not (1% stay
    confident). None of 500 photo-like digit pages is affected: their paper is plain.
    """
    if scene is None or prediction.status != "ok":
        return prediction
    if not scene.paper_like:
        return replace(prediction, status="unsure", reason="this does not look like a digit written on paper")
    if not scene.digit_like:
        return replace(prediction, status="unsure", reason="the marks do not look like handwritten digits")
    return prediction

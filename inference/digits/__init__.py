"""Reading handwritten digits from phone photos: photo → MNIST-like 28×28 crops → an answer.

MNIST digits are light ink on black, fitted into 20×20 and centred by centre of mass in 28×28. A phone
photo is dark ink on white, cream or lined paper under uneven light, anywhere in the frame and at any
size. `read_digits` bridges the gap, in this order:

1. grayscale at a few hundred pixels (the decoder already drafted the JPEG down to about that size);
2. decide the polarity: dark ink on paper, or chalk on a board (which side of the blocks is smooth);
3. estimate the paper's brightness block by block — a robust quadratic surface plus a median-filtered
   correction — and subtract it (uneven light, shadows, vignetting), relative to the paper's brightness;
4. threshold relative to the strongest marks and to the sensor's noise;
5. erase ruled and squared-paper lines (long thin structures spanning the page or running off its
   edge) without cutting the strokes that cross them; drop specks and whatever touches the border;
6. group the remaining strokes into digits (strokes that share columns belong together), keep the row of
   the tallest one and read it left to right;
7. fit each digit into 20×20 keeping its aspect ratio and centre it by centre of mass in 28×28.

Training feeds MNIST through `normalize_digit` (step 7) and photos rendered by `training.synth_photos`
through all of it, so serving and training share this code and cannot drift. When nothing on the photo
through all of it, so serving and training share this code and cannot drift. When nothing on the photo
looks like a row of digits, `read_digits` returns no crops and a reason, and the answer is
`not_recognized` — never a confident digit for a cat.

Only NumPy and Pillow, on arrays of ~70 k pixels: cheap enough to run in the decode processes beside
decoding (timings in docs/performance.md).

The modules, in the order a photo meets them: `reader` (the pipeline), `paper` (steps 1–4), `lines`
(step 5's ruled lines), `components` (connected strokes), `segment` (steps 5–6: grouping into digits),
`framing` (step 7) and `answer` (the model's probabilities → a Prediction).
"""

from inference.digits.answer import LABELS, NOT_RECOGNIZED_BELOW, UNSURE_BELOW, digits_prediction
from inference.digits.components import label_components
from inference.digits.framing import normalize_digit
from inference.digits.lines import remove_ruled_lines
from inference.digits.paper import WORK_SIDE, InkMap, estimate_background, ink_map, working_gray
from inference.digits.reader import DECODE_SIZE, PREPROCESSING_ID, DigitCrops, read_digits
from inference.digits.segment import MAX_DIGITS

__all__ = [
    "DECODE_SIZE",
    "LABELS",
    "MAX_DIGITS",
    "NOT_RECOGNIZED_BELOW",
    "PREPROCESSING_ID",
    "UNSURE_BELOW",
    "WORK_SIDE",
    "DigitCrops",
    "InkMap",
    "digits_prediction",
    "estimate_background",
    "ink_map",
    "label_components",
    "normalize_digit",
    "read_digits",
    "remove_ruled_lines",
    "working_gray",
]

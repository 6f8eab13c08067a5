"""The bot's small parts: answer texts, callback data, keyboards, the flood limiter (on a real SQLite file),
size picking."""

from __future__ import annotations

from pathlib import Path

import pytest
from telegram import Chat, Document, InlineKeyboardMarkup, Message, PhotoSize, User

from bot import callbacks, keyboards
from bot.answers import format_answer as format_in
from bot.errors import reply_for
from bot.handlers.numbers import PENDING_TTL_S, answers_question, typed_number
from bot.handlers.photos import is_heic, is_image_document, pick_photo_size
from bot.limits import FloodLimiter
from bot.retrain_progress import TimeLeft, caption, progress_text
from bot.texts import TEXTS, human_size, language, percent, quoted, text, usage
from inference.catalogue import DEFAULT_CATALOGUE
from inference.errors import (
    DeadlineExceeded,
    EngineBusy,
    ImageTooLarge,
    ModelUnavailable,
    UnsupportedImage,
    WorkerLost,
)
from inference.prediction import DigitAnswer, Prediction
from inference.taught import Taught, with_added_labels, with_taught
from storage import Store
from storage.records import PendingCorrection, RetrainJob


def format_answer(prediction: Prediction, lang: str, mode: str = "auto") -> str:
    return format_in(prediction, lang, DEFAULT_CATALOGUE, mode)


def test_a_sure_answer_names_the_label_its_confidence_and_the_runner_up() -> None:
    prediction = Prediction("flowers", 3, "tulips", 0.912, "ok", top=(("tulips", 0.912), ("roses", 0.05)))
    assert format_answer(prediction, "en") == "tulips — 91%\nRunner-up: roses (5%)"
    assert format_answer(prediction, "ru") == "тюльпаны — 91%\nВторой вариант: розы (5%)"


def test_a_number_lists_every_digit() -> None:
    digits = (
        DigitAnswer("2", 0.99, (("2", 0.99),)),
        DigitAnswer("0", 0.95, (("0", 0.95),)),
        DigitAnswer("2", 0.97, (("2", 0.97),)),
        DigitAnswer("6", 0.9, (("6", 0.9), ("5", 0.08))),
    )
    prediction = Prediction("digits", 1, "2026", 0.82, "ok", top=(("6", 0.9), ("5", 0.08)), digits=digits)
    assert format_answer(prediction, "en") == "2026 — 82%\nDigits: 2 (99%), 0 (95%), 2 (97%), 6 (90%)"


def test_unsure_asks_and_not_recognized_suggests_the_modes() -> None:
    unsure = Prediction("digits", 1, "7", 0.55, "unsure", top=(("7", 0.55), ("1", 0.4)))
    assert format_answer(unsure, "en").splitlines() == [
        "7 — 55%",
        "Runner-up: 1 (40%)",
        "I'm not sure. Is it 7 or 1? Tell me with the buttons below.",
    ]
    nothing = Prediction(None, None, None, 0.0, "not_recognized", reason="no digit")
    text = format_answer(nothing, "en")
    assert "/digit" in text and "/flower" in text and "%" not in text


def test_an_answer_sure_of_its_label_but_not_of_the_photo_says_that_it_doubts_the_photo() -> None:
    drawn = Prediction(
        "digits", 1, "4", 0.9999, "unsure", top=(("4", 0.9999), ("9", 0.0001)), reason="not on paper"
    )
    assert format_answer(drawn, "en").splitlines() == [
        "4 — 99%",
        "If it is one of the things I know, it is 4 — but I'm not sure it is. "
        "Tell me with the buttons below.",
    ]
    assert "9" not in format_answer(drawn, "ru").split("\n", 1)[1]  # a runner-up at 0% is no question


def test_a_refusal_in_auto_mode_names_the_taught_models_it_asked_too() -> None:
    nothing = Prediction(None, None, None, 0.0, "not_recognized", reason="none of them")
    said = format_in(nothing, "en", DEFAULT_CATALOGUE, "auto", taught=["pets", "insects"])
    assert said.startswith("I don't see a digit, one of my flowers or anything the models taught here")
    assert "(pets, insects)" in said and "/use MODEL" in said
    assert format_answer(nothing, "en") == text("en", "not_recognized")  # none taught: as before


def test_a_refusal_of_a_labelled_photo_does_not_ask_for_it_again() -> None:
    nothing = Prediction(None, None, None, 0.0, "not_recognized", reason="no flower")
    labelled = format_in(nothing, "en", DEFAULT_CATALOGUE, "flower", labelled=True)
    assert labelled == "I don't see daisy, dandelion, roses, sunflowers or tulips here."
    assert "/auto" in format_answer(nothing, "en", "flower")  # unlabelled: what to do next


def test_a_refusal_names_the_labels_the_serving_version_answers_with() -> None:
    """/addlabel flowers lavender: until a retrain, the serving version does not look for lavender."""
    nothing = Prediction(None, None, None, 0.0, "not_recognized", reason="no flower")
    catalogue = with_added_labels(DEFAULT_CATALOGUE, [("flowers", "lavender", False)])
    answering = DEFAULT_CATALOGUE["flowers"].label_names
    said = format_in(nothing, "ru", catalogue, "flower", labelled=True, answering=answering)
    assert said == "Я не вижу здесь: ромашка, одуванчик, розы, подсолнухи или тюльпаны."
    assert "lavender" in format_in(nothing, "en", catalogue, "flower", labelled=True)


def test_a_refusal_names_what_the_chats_mode_looked_for() -> None:
    nothing = Prediction(None, None, None, 0.0, "not_recognized", reason="no digit")
    in_digit_mode = format_answer(nothing, "en", "digit")
    assert "digit" in in_digit_mode and "flower" not in in_digit_mode and "/auto" in in_digit_mode
    in_flower_mode = format_answer(nothing, "ru", "flower")
    assert "ромашка, одуванчик, розы, подсолнухи или тюльпаны" in in_flower_mode
    assert "цифр" not in in_flower_mode


def test_a_runner_up_that_rounds_to_0_percent_is_not_shown() -> None:
    sure = Prediction("digits", 1, "3", 0.998, "ok", top=(("3", 0.998), ("7", 0.002)))
    assert format_answer(sure, "en") == "3 — 99%"


def test_percent_never_rounds_an_uncertain_answer_up_to_100() -> None:
    assert (percent(0.999), percent(1.0), percent(0.004), percent(0.5)) == (99, 100, 0, 50)


def test_languages_fall_back_to_english_and_every_text_exists_in_both() -> None:
    assert (language("ru-RU"), language("en-GB"), language("de"), language(None)) == ("ru", "en", "en", "en")
    assert set(TEXTS["en"]) == set(TEXTS["ru"])


def test_callback_data_round_trips_within_64_bytes() -> None:
    biggest = 10**18 - 1  # ids of up to 18 digits: 19 may pass SQLite's largest integer
    samples = [
        callbacks.Verdict(biggest, True),
        callbacks.Verdict(1, False),
        callbacks.LabelChoice(biggest, "sunflowers"),
        callbacks.LabelChoice(biggest, None),
        callbacks.BackToVerdict(biggest),
        callbacks.ForgetChoice(7_000_000_000, True),
    ]
    for data in samples:
        encoded = callbacks.encode(data)
        assert len(encoded.encode()) <= 64
        assert callbacks.decode(encoded) == data


@pytest.mark.parametrize(
    "bad",
    [
        *(None, "", "v:1", "v:01:y", "v:1:y:extra", "l:3:a/b", "q:1", "f:1:maybe", "é" * 40),
        *("v:1000000000000000000:y", "b:9999999999999999999", "f:99999999999999999999:y"),  # 19+ digits
        *("v:12\n:y", "b:7\n", "l:5:roses\n", "v:²:y", "b:٣", "f:1²:n"),  # what `$` and isdigit() let by
    ],
)
def test_malformed_callback_data_is_refused(bad) -> None:
    with pytest.raises(callbacks.MalformedCallback):
        callbacks.decode(bad)


def test_an_id_of_nineteen_digits_is_refused_at_encoding() -> None:
    with pytest.raises(ValueError):
        callbacks.encode(callbacks.Verdict(10**18, True))


def test_a_label_that_cannot_travel_is_refused_at_encoding() -> None:
    with pytest.raises(ValueError, match="cannot travel"):
        callbacks.encode(callbacks.LabelChoice(1, "not/ok"))


def test_label_keyboards_offer_the_answers_model_then_not_a_and_back() -> None:
    flowers = keyboards.labels("en", 9, "flowers", DEFAULT_CATALOGUE)
    rows = [[b.text for b in row] for row in flowers.inline_keyboard]
    assert rows == [["daisy", "dandelion", "roses"], ["sunflowers", "tulips"], ["Not a flower"], ["« Back"]]
    russian = keyboards.labels("ru", 9, "flowers", DEFAULT_CATALOGUE)
    assert [b.text for b in russian.inline_keyboard[0]] == ["ромашка", "одуванчик", "розы"]
    assert [b.callback_data for b in russian.inline_keyboard[0]] == [
        "l:9:daisy",
        "l:9:dandelion",
        "l:9:roses",
    ]
    refused = keyboards.labels("ru", 9, None, DEFAULT_CATALOGUE, refused=True)
    texts = [b.text for row in refused.inline_keyboard for b in row]
    assert texts[:10] == [str(d) for d in range(10)] and "тюльпаны" in texts
    assert texts[-1] == "« Назад" and "Ни то, ни другое" not in texts  # "neither" was the bot's own answer


def test_a_refused_answers_label_keyboard_offers_the_serving_models_within_telegrams_limit() -> None:
    """Two taught models of 50 labels beside the built-in ones: ❌ under a refusal offered all 120 labels,
    those of models that cannot answer too, in a keyboard Telegram refuses (over 100 buttons)."""
    big = [Taught(name, [(f"{name[0]}{i}", {}) for i in range(50)]) for name in ("bugs", "mushrooms")]
    catalogue = with_taught(DEFAULT_CATALOGUE, big)

    def offered(keyboard: InlineKeyboardMarkup) -> list[str]:
        data = [b.callback_data for row in keyboard.inline_keyboard for b in row]
        return [d.split(":", 2)[2] for d in data if isinstance(d, str) and d.startswith("l:")]

    serving = offered(keyboards.labels("en", 9, None, catalogue, offered=["digits", "flowers"], refused=True))
    assert serving == [str(d) for d in range(10)] + list(DEFAULT_CATALOGUE["flowers"].label_names)
    everything = keyboards.labels("en", 9, None, catalogue, offered=catalogue.names, refused=True)
    assert sum(len(row) for row in everything.inline_keyboard) <= keyboards.MAX_BUTTONS
    assert offered(everything) == serving + [f"b{i}" for i in range(50)]  # whole models, in order


def test_an_unsure_answer_asks_with_the_labels_it_offers_never_a_bare_correct() -> None:
    keyboard = keyboards.choices("ru", 9, DEFAULT_CATALOGUE["flowers"], ["dandelion", "tulips"])
    rows = [[(b.text, b.callback_data) for b in row] for row in keyboard.inline_keyboard]
    assert rows == [
        [("одуванчик", "l:9:dandelion"), ("тюльпаны", "l:9:tulips")],
        [("Не цветок", "l:9:"), ("Другое…", "v:9:n")],
    ]
    assert "v:9:y" not in {b.callback_data for row in keyboard.inline_keyboard for b in row}


async def test_the_flood_limiter_counts_per_user_and_tells_once_per_window(tmp_path: Path) -> None:
    now = [0.0]
    async with await Store.open(tmp_path / "db.sqlite3", tmp_path / "images") as store:
        limiter = FloodLimiter(3, store, "photos", clock=lambda: now[0])
        assert [(await limiter.check(1)).allowed for _ in range(3)] == [True, True, True]
        first_refusal = await limiter.check(1)
        assert (first_refusal.allowed, first_refusal.notify) == (False, True)
        assert first_refusal.retry_after_s == pytest.approx(60.0)
        again = await limiter.check(1)
        assert (again.allowed, again.notify) == (False, False)
        assert (await limiter.check(2)).allowed  # someone else is unaffected
        now[0] = 60.5
        assert (await limiter.check(1)).allowed  # the window moved on
        off = FloodLimiter(0, store, "photos")
        assert all([(await off.check(1)).allowed for _ in range(1000)])


def size(width: int, height: int) -> PhotoSize:
    return PhotoSize(f"f{width}", f"u{width}", width, height)


def test_the_smallest_photo_size_large_enough_is_picked() -> None:
    sizes = [size(90, 68), size(320, 240), size(800, 600), size(1280, 960)]
    # 320 × 240 would be enlarged to the flower model's 256: the bot then answered otherwise than
    # `photobot classify` on the same photo (issue 23)
    assert pick_photo_size(sizes).width == 800
    assert pick_photo_size([size(1280, 960), size(90, 68), size(800, 600)]).width == 800
    assert pick_photo_size([size(90, 60), size(200, 150)]).width == 200  # none large enough: the largest
    assert (
        pick_photo_size([size(90, 1600), size(180, 3200), size(240, 4000)]).width == 240
    )  # tall: shorter side


def test_captions_that_name_a_label() -> None:
    caption_label = DEFAULT_CATALOGUE.find_caption
    assert caption_label("7") == ("digits", "7")
    assert caption_label(" Roses ") == ("flowers", "roses")
    assert caption_label("tulip") == ("flowers", "tulips")
    assert caption_label("тюльпан") == ("flowers", "tulips")
    assert caption_label("42") == ("digits", "42")  # a number is a label of the digit reader
    assert caption_label("look!") is None
    assert caption_label(None) is None


def test_image_documents_by_type_or_name() -> None:
    assert is_image_document(Document("a", "b", file_name="x.bin", mime_type="image/png"))
    assert not is_image_document(Document("a", "b", file_name="x.png", mime_type="application/pdf"))
    assert is_image_document(Document("a", "b", file_name="scan.JPG"))
    assert not is_image_document(Document("a", "b", file_name="setup.exe"))
    # Some apps' names for JPEG and PNG, and a type that says nothing: the name decides then.
    assert is_image_document(Document("a", "b", file_name="rose.jpg", mime_type="image/jpg"))
    assert is_image_document(Document("a", "b", file_name="rose.jpg", mime_type="application/octet-stream"))
    assert not is_image_document(
        Document("a", "b", file_name="notes.txt", mime_type="application/octet-stream")
    )
    heic = Document("a", "b", file_name="IMG_1.HEIC", mime_type="image/heic")
    assert not is_image_document(heic) and is_heic(heic)
    assert not is_heic(Document("a", "b", file_name="x.png", mime_type="image/png"))


def test_human_sizes() -> None:
    assert (human_size(512), human_size(2048), human_size(21 * 1024 * 1024)) == (
        "512 bytes",
        "2.0 KB",
        "21.0 MB",
    )


@pytest.mark.parametrize(
    ("error", "key"),
    [
        (ImageTooLarge("50 MP"), "image_too_large"),
        (UnsupportedImage("not a JPEG"), "unsupported_image"),
        (EngineBusy(), "busy"),
        (DeadlineExceeded(), "timeout"),
        (WorkerLost("the decoding process ended"), "internal_error"),
    ],
)
def test_each_inference_error_has_its_reply_in_both_languages(error, key) -> None:
    for lang in ("en", "ru"):
        reply = reply_for(error, lang)
        assert reply
        if key in ("busy", "timeout", "internal_error"):
            assert reply == TEXTS[lang][key]
        else:
            assert str(error) in reply
    assert reply_for(ModelUnavailable("none"), "en", "digit") != reply_for(WorkerLost(), "en")


def test_a_reply_to_the_question_counts_at_any_time_a_plain_text_only_for_a_while() -> None:
    pending = PendingCorrection(5, 77, 5, answer_message_id=40, question_message_id=41, created_at=0.0)
    person = User(5, "Ann", False)

    def text(reply_to: int | None, chat_id: int = 5) -> Message:
        replied = Message(reply_to, None, Chat(chat_id, "private")) if reply_to else None
        return Message(
            50, None, Chat(chat_id, "private"), from_user=person, text="2026", reply_to_message=replied
        )

    now = PENDING_TTL_S * 10  # long after the question
    assert answers_question(pending, text(41), now) and answers_question(pending, text(40), now)
    assert not answers_question(pending, text(39), now)  # a reply to another message
    assert not answers_question(pending, text(None), now)
    assert answers_question(pending, text(None), PENDING_TTL_S - 1)
    assert not answers_question(pending, text(None, chat_id=6), 1.0)  # another chat


def _job(at: float, progress: float, stage: str, status: str = "running") -> RetrainJob:
    return RetrainJob(
        id=4, model="digits", requested_by=1, chat_id=1, message_id=2, status=status, pid=9, stage=stage,
        progress=progress, detail={}, metrics={}, candidate_version=None, decision=None, reason=None,
        error=None, created_at=0.0, started_at=0.0, updated_at=at, finished_at=None,
    )  # fmt: skip


def test_no_time_left_is_shown_before_training_has_a_rate_to_extrapolate() -> None:
    clock = TimeLeft()
    for job in (_job(1, 0.05, "loading"), _job(3, 0.15, "preprocessing"), _job(4, 0.15, "training")):
        clock.observe(job)
        assert clock.seconds_left() is None
        assert "Time left" not in progress_text(job, clock.seconds_left())
    clock.observe(_job(8, 0.17, "training"))  # moved, but over only 4 s
    assert clock.seconds_left() is None


def test_time_left_follows_the_training_rate_and_never_jumps_up() -> None:
    """Loading takes 3 s for 15% of the bar, training 0.5% a second: extrapolating the whole job's
    rate said "~0 min" then grew; the training stage's own rate says about 3 min and counts down."""
    clock, shown = TimeLeft(), []
    clock.observe(_job(1, 0.05, "loading"))
    for second in range(4, 160, 5):
        job = _job(second, 0.15 + 0.005 * (second - 4), "training")
        clock.observe(job)
        shown.append(progress_text(job, clock.seconds_left()).splitlines()[-1])
    minutes = [int(line.split()[3]) for line in shown if line.startswith("Time left: about")]
    assert shown[2] == "Time left: about 3 min"  # 10 s of training at 0.5%/s, 80% left: 160 s
    assert minutes == sorted(minutes, reverse=True) and set(minutes) == {3, 2}
    assert shown[-1] == "Time left: less than a minute"


def test_report_pictures_have_titles() -> None:
    assert caption("confusion") == (
        "Confusion matrix on held-out chat photos: rows are the true labels, columns the answers"
    )
    assert caption("curves").startswith("Training curves") and caption("new_plot") == "new plot"


def test_retrain_progress_and_pictures_speak_the_admins_language() -> None:
    clock = TimeLeft()
    clock.observe(_job(1, 0.05, "loading"))
    for second in (4, 9, 14):
        job = _job(second, 0.15 + 0.005 * (second - 4), "training")
        clock.observe(job)
    lines = progress_text(job, clock.seconds_left(), language="ru").splitlines()
    assert lines[0] == "Дообучение digits (задача 4)"
    assert lines[1] == "Этап: обучение"
    assert lines[-1].startswith("Осталось: около ") and lines[-1].endswith(" мин")
    assert caption("curves", "ru").startswith("Кривые обучения")
    queued = progress_text(_job(1, 0.0, "loading", status="queued"), language="ru")
    assert queued == "Дообучение digits (задача 4)\nЗапускаю…"


def test_only_numbers_are_typed_numbers() -> None:
    assert [typed_number(t) for t in ("2026", " 7 ", "٣", "２０", "+1 000")] == [
        "2026",
        "7",
        "3",
        "20",
        "1000",
    ]
    assert [typed_number(t) for t in ("", "+", "2-0", "²", "twenty", "1" * 13, "-5", "3.5")] == [None] * 8


def test_a_caption_is_repeated_without_its_invisible_formatting() -> None:
    """A right-to-left override in a caption, cut off from its end by the 40-character limit, turned the
    rest of the bot's own sentence around."""
    caption = "\u202e" + "gnp.tohs" * 6 + "\u202c"
    assert quoted(caption) == ("gnp.tohs" * 6)[:40]
    assert quoted("  ro\u200bses \n") == "roses" and quoted(None) == "" and quoted("\u2066\u2069") == ""


def test_a_usage_line_says_first_that_a_name_given_is_no_model() -> None:
    names = ("digits", "flowers")
    assert usage("en", "use_usage", "flowerz", names, models="digits, flowers") == (
        "There is no model “flowerz”.\nSend /use and a model's name: digits, flowers."
    )
    assert usage("ru", "use_usage", None, names, models="x").startswith("Отправьте /use")
    assert usage("en", "use_usage", "digits", names, models="x") == text("en", "use_usage", models="x")

"""Everything the bot says, in English and Russian, chosen by Telegram's `language_code`.

`text(lang, key, **values)` formats one message; unknown languages fall back to English. Labels are
never translated: the answer names them exactly as the model does (`7`, `tulips`).
"""

from __future__ import annotations

from typing import Final

DEFAULT: Final = "en"

TEXTS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "help": (
            "Send me a photo of a handwritten digit (or a number) or of a flower — daisy, dandelion, "
            "roses, sunflowers, tulips — and I'll say what it is and how sure I am.\n"
            "Tell me when I'm wrong with the buttons under the answer: I learn from it.\n"
            "Send a photo with a caption such as 7 or roses to teach me a labelled example.\n\n"
            "/digit — read every photo as a digit or number\n"
            "/flower — read every photo as a flower\n"
            "/auto — let me decide (default)\n"
            "/stats — your numbers\n"
            "/forget — delete everything I stored about you"
        ),
        "help_admin": (
            "Admin commands:\n"
            "/models — each model's versions: which serves, when made, how accurate, why promoted\n"
            "/retrain MODEL [force] — learn from the photos people labelled in chat (force: even with "
            "fewer new labels than the minimum)\n"
            "/rollback MODEL [version] — serve an earlier version (asks to confirm)\n"
            "/block USER_ID, /unblock USER_ID — stop or resume using a person's labels\n"
            "/stats — also shows everyone's figures"
        ),
        "start": "Hello, {name}!",
        "confidence_line": "{label} — {percent}%",
        "runner_up": "Runner-up: {label} ({percent}%)",
        "digits_line": "Digits: {digits}",
        "unsure": "I'm not sure. Is it {label} or {other}? Tell me with the buttons below.",
        "unsure_single": "I'm not sure about this one. Tell me with the buttons below.",
        "not_recognized_digit": (
            "I don't see a handwritten digit or number here.\n"
            "If it shows something else, send /auto and the photo again."
        ),
        "not_recognized_model": (
            "I don't see {labels} here.\nIf it shows something else, send /auto and the photo again."
        ),
        "or": "or",
        "not_recognized": (
            "I don't see a digit or one of my five flowers here.\n"
            "If it is one, send /digit or /flower and the photo again."
        ),
        "contribution_agreed": (
            "You labelled it {label}, and I agree. Stored as a labelled example — thank you!"
        ),
        "contribution_disagreed": (
            "You labelled it {label}; I thought otherwise. Stored as a labelled example — thank you!"
        ),
        "contribution_unknown_label": "“{caption}” is not one of my labels, so I only answered.",
        "contribution_blocked": "Your labels are not being accepted at the moment, so I only answered.",
        "button_correct": "✅ Correct",
        "button_wrong": "❌ Wrong",
        "retrain_title": "Retraining {model} (job {job})",
        "retrain_starting": "Starting…",
        "retrain_failed_line": "Failed: {error}",
        "retrain_done_promote": "done — v{version} promoted",
        "retrain_done_reject": "done — v{version} rejected",
        "retrain_done_skipped": "nothing to do",
        "retrain_done_other": "done ({status})",
        "retrain_finished": "Finished: {outcome}",
        "retrain_stage": "Stage: {stage}",
        "retrain_epoch": " — epoch {epoch}/{epochs}",
        "retrain_accuracy": "Accuracy: {accuracy}",
        "retrain_chat_accuracy": " (held-out chat photos {accuracy})",
        "retrain_time_left": "Time left: {left}",
        "retrain_under_minute": "less than a minute",
        "retrain_minutes": "about {minutes} min",
        "retrain_busy": (
            "A retraining job is already {status}: job {job} ({model}), {stage}{done}. "
            "One job runs at a time; try again when it has finished."
        ),
        "retrain_busy_done": ", {percent} done",
        "retrain_could_not_start": "Retraining {model} could not start: {error}",
        "retrain_job_failed": (
            "Retraining {model} (job {job}) failed: {error}\nNothing changed: v{serving} keeps serving."
        ),
        "retrain_serving_now": "Serving now: {model} v{version}.",
        "retrain_not_loaded": "The new version could not be loaded ({error}); the old one keeps serving.",
        "retrain_ended": "Retraining {model} ended: {reason}",
        "job_queued": "queued",
        "job_running": "running",
        "stage_starting": "starting",
        "stage_loading": "loading data",
        "stage_preprocessing": "reading chat photos",
        "stage_training": "training",
        "stage_evaluating": "evaluating",
        "stage_report": "deciding and writing the report",
        "caption_confusion": (
            "Confusion matrix on held-out chat photos: rows are the true labels, columns the answers"
        ),
        "caption_curves": "Training curves: loss and accuracy per epoch",
        "caption_mistakes": "Chat photos the new version still gets wrong (label → answer)",
        "button_neither": "Neither",
        "button_other": "Something else…",
        "button_back": "« Back",
        "pick_label": "Which is it?",
        "thanks_correct": "Thank you! Recorded: {label} is correct.",
        "thanks_label": "Thank you! Recorded: {label}.",
        "thanks_none_model": "Thank you! Recorded: {what}.",
        "thanks_none": "Thank you! Recorded: neither a digit nor a flower.",
        "feedback_not_yours": "Only the person who sent this photo can answer.",
        "feedback_stale": "This photo is no longer stored, so there is nothing to record.",
        "feedback_malformed": "This button is out of date. Send the photo again.",
        "feedback_already": "Already recorded — thank you!",
        "feedback_bad_label": "That label does not belong to this answer.",
        "ask_number": "Reply with the right number — digits only, such as 2026.",
        "pick_number": "Type the right number",
        "number_expected": "I'm waiting for the right number for your photo: digits only, such as 2026.",
        "mode_auto": "Mode: auto — I decide whether a photo shows a digit or a flower.",
        "mode_digit": "Mode: digits — I read every photo as a digit or a number.",
        "mode_flower": "Mode: flowers — I read every photo as a flower.",
        "mode_model": "Mode: {model} — I read every photo as one of: {labels}.",
        "use_usage": "Send /use and a model's name: {models}.",
        "stats_user": (
            "Photos you sent: {photos} (the same photo sent twice counts once)\n"
            "Answers you rated: {rated}\n"
            "Right: {correct} ({percent})\n"
            "Labelled examples you gave: {contributions}"
        ),
        "forget_confirm": (
            "Delete everything I stored about you — your photos, answers and labels, and the copies of "
            "your photos in retraining reports and caches? This cannot be undone."
        ),
        "forget_not_undone": (
            "What deleting cannot take back: models already trained on your photos, retraining reports "
            "already sent to the admins, and copies an admin has already exported."
        ),
        "forget_block_kept": (
            "I kept your user id, and nothing else, to remember that an admin stopped accepting your labels."
        ),
        "forget_yes": "Yes, delete",
        "forget_no": "No, keep",
        "forget_done": (
            "Done: I deleted the photos you sent ({photos}, as /stats counted them) and everything else "
            "I stored about you."
        ),
        "forget_cancelled": "Nothing was deleted.",
        "not_allowed": "Sorry, this command is for admins only.",
        "retrain_usage": (
            "Usage: /retrain MODEL [force] — MODEL is one of: {models}.\n"
            "It learns from the photos people labelled in chat; add force to retrain with fewer new "
            "labelled photos than the minimum."
        ),
        "models_header": "Models (the newest {shown} versions of each):",
        "models_version": "{name} v{version} — {state}",
        "models_made": "made {when}",
        "models_accuracy": "{percent} on {what}",
        "models_why_promoted": "Why promoted: {reason}",
        "models_why_rejected": "Why rejected: {reason}",
        "model_state_serving": "serving now",
        "model_state_rolled_back": "not serving: rolled back to v{to} on {when}",
        "model_state_replaced": "not serving: replaced by a newer version",
        "model_state_rejected": "not serving: rejected by the retraining check",
        "model_state_candidate": "not serving: a candidate whose retraining did not finish",
        "model_state_idle": "not serving",
        "model_set_mnist": "the MNIST test set",
        "model_set_test": "its test set",
        "models_none": "No models in the store.",
        "rollback_usage": "Usage: /rollback MODEL [version] — MODEL is one of: {models}.",
        "rollback_done": "{name} now serves v{version}.",
        "rollback_confirm": (
            "Roll {name} back from v{current} to v{version}? Every photo is then answered by v{version}, "
            "at once and without a restart."
        ),
        "rollback_yes": "Yes, roll back",
        "rollback_no": "No, keep v{current}",
        "rollback_cancelled": "Nothing changed: {name} v{current} keeps serving.",
        "rollback_not_yours": "Only the admin who asked for this rollback can confirm it.",
        "rollback_stale": "{name} changed meanwhile (now v{current}). Send /rollback again.",
        "rollback_failed": "Could not roll back: {reason}",
        "block_usage": "Usage: /block <user id>",
        "unblock_usage": "Usage: /unblock <user id>",
        "blocked": "User {user} can no longer contribute labels.",
        "blocked_unknown": (
            "I have no photos from user {user} yet. Blocked in advance: labels from this id will not be used."
        ),
        "unblocked": "User {user} can contribute labels again.",
        "stats_global": (
            "Users: {users}\nPhotos people sent: {photos} (each person's distinct photos)\n"
            "Answers given: {predictions}\n"
            "Feedback: {feedback} (right {percent})\nLabelled examples: {labelled}\nBlocked users: {blocked}"
        ),
        "not_an_image": (
            "“{name}” is not an image. Send a photo or an image file (JPEG, PNG, WebP, GIF, BMP)."
        ),
        "too_large": "This file is too large ({size}). I read images up to {limit}.",
        "unsupported_image": "I can't read this image: {reason}",
        "image_too_large": "This image is too large for me: {reason}",
        # Why a photo was refused (inference.errors: `reason`), each with the next step to take.
        "reason_empty": "the file is empty. Please send the photo again.",
        "reason_file_bytes": (
            "the file has {megabytes:.1f} MB and I read files up to {limit:.1f} MB. "
            "Send it as a photo instead of a file: Telegram makes it smaller."
        ),
        "reason_not_image": (
            "this is not an image in a format I read (JPEG, PNG, WebP, GIF, BMP). "
            "Send it as a photo instead of a file."
        ),
        "reason_damaged": (
            "the image is damaged or truncated. Send it again, or send it as a photo instead of a file."
        ),
        "reason_too_small": "the image is only {width}×{height} pixels. Send a larger photo.",
        "reason_too_narrow": (
            "the image is {width}×{height}: too long and narrow to be a photo. "
            "Crop it closer to the digit or flower and send it again."
        ),
        "reason_pixels_jpeg": (
            "it has {width}×{height} pixels ({megapixels:.1f} MP) and I read JPEGs up to {limit:g} MP. "
            "Send it as a photo instead of a file, or crop or resize it below {limit:g} megapixels."
        ),
        "reason_pixels_full": (
            "it is a {format} of {width}×{height} pixels ({megapixels:.1f} MP) and I read {format} files "
            "up to {limit:g} MP (JPEG photos up to {jpeg_limit:g} MP). "
            "Send it as a photo instead of a file, or crop or resize it below {limit:g} megapixels."
        ),
        "reason_pixels_declared": (
            "it declares far more pixels than a photo has. "
            "Send it as a photo instead of a file, or crop or resize it below {limit:g} megapixels."
        ),
        "reason_memory": (
            "reading it needs more memory than I give one image. "
            "Send it as a photo instead of a file, or crop or resize it below {limit:g} megapixels."
        ),
        "sticker": "Stickers are fun, but I read photos only. Send a photo of a digit or a flower.",
        "video": "I read still photos only, not videos or animations.",
        "voice": "I can't listen, I only look: send a photo.",
        "text_hint": "Send me a photo of a digit or a flower. /help explains more.",
        "unknown_command": "I don't know that command. /help lists what I understand.",
        "flood": "You're sending photos faster than I can look. Please wait {seconds} s and try again.",
        "slow_down": "Slow down, please: you're sending messages faster than I can answer. "
        "Please wait {seconds} s and try again.",
        "download_failed": "I couldn't fetch your photo from Telegram in time. Please send it again.",
        "busy": "I'm busy right now — please send the photo again in a moment.",
        "timeout": "That took too long — please send the photo again.",
        "model_unavailable": "My {mode} model is not available right now. Please try again later.",
        "internal_error": "Something went wrong on my side. Please try again.",
        # Teaching new models from the chat (bot.handlers.teach).
        "newmodel_usage": (
            "Usage: /newmodel NAME LABEL LABEL … — NAME: up to 20 lowercase letters, digits or _, "
            "starting with a letter; 2 to 50 labels, each up to 30 Latin letters, digits, _ or -."
        ),
        "newmodel_done": (
            "New model “{model}” with the labels {labels}.\n"
            "To teach it, send photos with a label as the caption (“{example}”), or “{model}: {example}” "
            "when another model has that label too. It needs at least {minimum} photos of each label, "
            "from several people; then an admin sends /retrain {model}. "
            "/use {model} answers every photo of a chat with it."
        ),
        "teach_bad_name": (
            "“{name}” cannot be a model's name: use up to 20 lowercase letters, digits or _, "
            "starting with a letter."
        ),
        "teach_name_taken": "The name “{name}” is taken (by a model or a chat mode, maybe a deleted one).",
        "teach_bad_label": (
            "“{label}” cannot be a label: use Latin letters, digits, _ or -, and not only digits."
        ),
        "teach_label_too_long": "“{label}” is too long for a label: at most {limit} characters.",
        "teach_label_twice": "The label “{label}” is there twice.",
        "teach_label_count": "A model has {low} to {high} labels; this would make {count}.",
        "teach_unknown_model": (
            "There is no model taught from the chat called “{model}”. Taught models: {models}."
        ),
        "addlabel_usage": "Usage: /addlabel MODEL LABEL — MODEL one of the taught models: {models}.",
        "addlabel_done": (
            "“{model}” now has the labels {labels}. Send photos captioned “{label}” "
            "(at least {minimum}), then /retrain {model}."
        ),
        "dellabel_usage": "Usage: /dellabel MODEL LABEL — MODEL one of the taught models: {models}.",
        "dellabel_unknown": "“{model}” has no label “{label}”. Its labels: {labels}.",
        "dellabel_done": (
            "“{label}” is no longer a label of “{model}” (its photos stay stored). "
            "Labels now: {labels}. The next /retrain {model} learns without it."
        ),
        "delmodel_usage": "Usage: /delmodel NAME — NAME one of the taught models: {models}.",
        "delmodel_confirm": (
            "Delete the model “{model}”? It stops answering at once; the {photos} photos people labelled "
            "for it stay stored, and its name cannot be used again."
        ),
        "delmodel_yes": "Yes, delete {model}",
        "delmodel_no": "No, keep it",
        "delmodel_done": "“{model}” is deleted. Its labelled photos stay stored.",
        "delmodel_cancelled": "Nothing changed: “{model}” stays.",
        "delmodel_not_yours": "Only the admin who asked can confirm deleting the model.",
        "teach_count": "{label}: {count} of at least {minimum} photos",
        "models_labels_header": "Labels (labelled photos of each):",
        "models_labels_line": "{model} — {labels} · {serving}",
        "models_labels_serving": "v{version} serves",
        "models_labels_not_serving": "no version serves yet",
        "teach_not_serving": (
            "“{model}” is still learning: no version answers yet, so I only recorded the label."
        ),
    },
    "ru": {
        "help": (
            "Пришлите фото рукописной цифры (или числа) или цветка — ромашки (daisy), одуванчика "
            "(dandelion), розы (roses), подсолнуха (sunflowers), тюльпана (tulips) — и я скажу, что это "
            "и насколько я уверен.\n"
            "Если я ошибся, скажите кнопками под ответом: я учусь на этом.\n"
            "Фото с подписью, например 7 или roses, станет размеченным примером.\n\n"
            "/digit — считать каждое фото цифрой или числом\n"
            "/flower — считать каждое фото цветком\n"
            "/auto — решаю сам (по умолчанию)\n"
            "/stats — ваша статистика\n"
            "/forget — удалить всё, что я о вас храню"
        ),
        "help_admin": (
            "Команды администратора:\n"
            "/models — версии каждой модели: какая работает, когда создана, её точность, почему принята\n"
            "/retrain МОДЕЛЬ [force] — дообучить на фото, подписанных в чате (force — даже если новых "
            "меток меньше минимума)\n"
            "/rollback МОДЕЛЬ [версия] — вернуть более раннюю версию (с подтверждением)\n"
            "/block ID, /unblock ID — перестать или снова начать учитывать метки человека\n"
            "/stats — также общая статистика"
        ),
        "start": "Здравствуйте, {name}!",
        "confidence_line": "{label} — {percent}%",
        "runner_up": "Второй вариант: {label} ({percent}%)",
        "digits_line": "Цифры: {digits}",
        "unsure": "Я не уверен. Это {label} или {other}? Ответьте кнопками ниже.",
        "unsure_single": "Я не уверен. Ответьте кнопками ниже.",
        "not_recognized_digit": (
            "Я не вижу здесь рукописной цифры или числа.\n"
            "Если на фото что-то другое, отправьте /auto и фото ещё раз."
        ),
        "not_recognized_model": (
            "Я не вижу здесь: {labels}.\nЕсли на фото что-то другое, отправьте /auto и фото ещё раз."
        ),
        "or": "или",
        "not_recognized": (
            "Я не вижу здесь ни цифры, ни одного из пяти моих цветков.\n"
            "Если это цифра или цветок, отправьте /digit или /flower и фото ещё раз."
        ),
        "contribution_agreed": (
            "Вы подписали это как {label}, и я согласен. Сохранено как размеченный пример — спасибо!"
        ),
        "contribution_disagreed": (
            "Вы подписали это как {label}; я думал иначе. Сохранено как размеченный пример — спасибо!"
        ),
        "contribution_unknown_label": "«{caption}» — не одна из моих меток, поэтому я только ответил.",
        "contribution_blocked": "Ваши метки сейчас не принимаются, поэтому я только ответил.",
        "button_correct": "✅ Верно",
        "button_wrong": "❌ Неверно",
        "retrain_title": "Переобучение {model} (задача {job})",
        "retrain_starting": "Запускаю…",
        "retrain_failed_line": "Не удалось: {error}",
        "retrain_done_promote": "готово — v{version} принята",
        "retrain_done_reject": "готово — v{version} отклонена",
        "retrain_done_skipped": "делать нечего",
        "retrain_done_other": "готово ({status})",
        "retrain_finished": "Завершено: {outcome}",
        "retrain_stage": "Этап: {stage}",
        "retrain_epoch": " — эпоха {epoch}/{epochs}",
        "retrain_accuracy": "Точность: {accuracy}",
        "retrain_chat_accuracy": " (отложенные фото из чата: {accuracy})",
        "retrain_time_left": "Осталось: {left}",
        "retrain_under_minute": "меньше минуты",
        "retrain_minutes": "около {minutes} мин",
        "retrain_busy": (
            "Переобучение уже {status}: задача {job} ({model}), {stage}{done}. "
            "Одновременно идёт одна задача; попробуйте, когда она закончится."
        ),
        "retrain_busy_done": ", готово {percent}",
        "retrain_could_not_start": "Переобучение {model} не запустилось: {error}",
        "retrain_job_failed": (
            "Переобучение {model} (задача {job}) не удалось: {error}\n"
            "Ничего не изменилось: работает v{serving}."
        ),
        "retrain_serving_now": "Теперь работает: {model} v{version}.",
        "retrain_not_loaded": "Новую версию не удалось загрузить ({error}); работает прежняя.",
        "retrain_ended": "Переобучение {model} завершено: {reason}",
        "job_queued": "в очереди",
        "job_running": "идёт",
        "stage_starting": "запуск",
        "stage_loading": "загрузка данных",
        "stage_preprocessing": "чтение фото из чата",
        "stage_training": "обучение",
        "stage_evaluating": "оценка",
        "stage_report": "решение и отчёт",
        "caption_confusion": (
            "Матрица ошибок на отложенных фото из чата: строки — верные метки, столбцы — ответы"
        ),
        "caption_curves": "Кривые обучения: потери и точность по эпохам",
        "caption_mistakes": "Фото из чата, на которых новая версия всё ещё ошибается (метка → ответ)",
        "button_neither": "Ни то, ни другое",
        "button_other": "Другое…",
        "button_back": "« Назад",
        "pick_label": "Что это?",
        "thanks_correct": "Спасибо! Записал: {label} — верно.",
        "thanks_label": "Спасибо! Записал: {label}.",
        "thanks_none_model": "Спасибо! Записал: {what}.",
        "thanks_none": "Спасибо! Записал: ни цифра, ни цветок.",
        "feedback_not_yours": "Ответить может только тот, кто прислал это фото.",
        "feedback_stale": "Это фото больше не хранится, записывать нечего.",
        "feedback_malformed": "Эта кнопка устарела. Пришлите фото ещё раз.",
        "feedback_already": "Уже записано — спасибо!",
        "feedback_bad_label": "Эта метка не относится к этому ответу.",
        "ask_number": "Ответьте правильным числом — только цифры, например 2026.",
        "pick_number": "Напишите правильное число",
        "number_expected": "Жду правильное число для вашего фото: только цифры, например 2026.",
        "mode_auto": "Режим: авто — я сам решаю, цифра на фото или цветок.",
        "mode_digit": "Режим: цифры — каждое фото читаю как цифру или число.",
        "mode_flower": "Режим: цветы — каждое фото считаю цветком.",
        "mode_model": "Режим: {model} — каждое фото считаю одним из: {labels}.",
        "use_usage": "Отправьте /use и название модели: {models}.",
        "stats_user": (
            "Присланных вами фото: {photos} (одно и то же фото дважды считается один раз)\n"
            "Оценённых ответов: {rated}\n"
            "Верных: {correct} ({percent})\n"
            "Ваших размеченных примеров: {contributions}"
        ),
        "forget_confirm": (
            "Удалить всё, что я о вас храню — фото, ответы и метки, а также копии ваших фото в отчётах "
            "и кэше переобучения? Это нельзя отменить."
        ),
        "forget_not_undone": (
            "Удаление не вернёт: модели, уже обученные на ваших фото, отчёты о переобучении, уже "
            "отправленные администраторам, и копии, которые администратор уже выгрузил."
        ),
        "forget_block_kept": (
            "Я сохранил только ваш id, чтобы помнить, что администратор перестал принимать ваши метки."
        ),
        "forget_yes": "Да, удалить",
        "forget_no": "Нет, оставить",
        "forget_done": (
            "Готово: удалил присланные вами фото ({photos}, как их считала /stats) и всё остальное, "
            "что хранил о вас."
        ),
        "forget_cancelled": "Ничего не удалено.",
        "not_allowed": "Извините, эта команда только для администраторов.",
        "retrain_usage": (
            "Использование: /retrain МОДЕЛЬ [force] — МОДЕЛЬ одна из: {models}.\n"
            "Модель учится на фото, подписанных в чате; force — переобучить, даже если новых "
            "подписанных фото меньше минимума."
        ),
        "models_header": "Модели (последние {shown} версий каждой):",
        "models_version": "{name} v{version} — {state}",
        "models_made": "создана {when}",
        "models_accuracy": "{percent} на {what}",
        "models_why_promoted": "Почему принята: {reason}",
        "models_why_rejected": "Почему отклонена: {reason}",
        "model_state_serving": "работает сейчас",
        "model_state_rolled_back": "не работает: откат на v{to} {when}",
        "model_state_replaced": "не работает: её сменила более новая версия",
        "model_state_rejected": "не работает: отклонена проверкой переобучения",
        "model_state_candidate": "не работает: кандидат, переобучение которого не завершилось",
        "model_state_idle": "не работает",
        "model_set_mnist": "тестовом наборе MNIST",
        "model_set_test": "своём тестовом наборе",
        "models_none": "В хранилище нет моделей.",
        "rollback_usage": "Использование: /rollback МОДЕЛЬ [версия] — МОДЕЛЬ одна из: {models}.",
        "rollback_done": "{name} теперь работает на v{version}.",
        "rollback_confirm": (
            "Откатить {name} с v{current} на v{version}? Тогда все фото будет сразу, без перезапуска, "
            "читать v{version}."
        ),
        "rollback_yes": "Да, откатить",
        "rollback_no": "Нет, оставить v{current}",
        "rollback_cancelled": "Ничего не изменилось: работает {name} v{current}.",
        "rollback_not_yours": "Подтвердить откат может только администратор, который его запросил.",
        "rollback_stale": "{name} за это время изменилась (теперь v{current}). Отправьте /rollback снова.",
        "rollback_failed": "Не удалось откатить: {reason}",
        "block_usage": "Использование: /block <id пользователя>",
        "unblock_usage": "Использование: /unblock <id пользователя>",
        "blocked": "Пользователь {user} больше не может присылать метки.",
        "blocked_unknown": (
            "От пользователя {user} у меня пока нет фото. Заблокирован заранее: метки с этого id "
            "использоваться не будут."
        ),
        "unblocked": "Пользователь {user} снова может присылать метки.",
        "stats_global": (
            "Пользователей: {users}\nПрисланных фото: {photos} (у каждого без повторов)\n"
            "Ответов: {predictions}\n"
            "Оценок: {feedback} (верных {percent})\nРазмеченных примеров: {labelled}\n"
            "Заблокированных: {blocked}"
        ),
        "not_an_image": "«{name}» — не изображение. Пришлите фото или файл JPEG, PNG, WebP, GIF, BMP.",
        "too_large": "Файл слишком большой ({size}). Я читаю изображения до {limit}.",
        "unsupported_image": "Не могу прочитать это изображение: {reason}",
        "image_too_large": "Это изображение для меня слишком большое: {reason}",
        "reason_empty": "файл пустой. Пришлите фото ещё раз.",
        "reason_file_bytes": (
            "в файле {megabytes:.1f} МБ, а я читаю файлы до {limit:.1f} МБ. "
            "Отправьте его как фото, а не файлом: Telegram его уменьшит."
        ),
        "reason_not_image": (
            "это не изображение в формате, который я читаю (JPEG, PNG, WebP, GIF, BMP). "
            "Отправьте его как фото, а не файлом."
        ),
        "reason_damaged": (
            "файл повреждён или обрезан. Пришлите его ещё раз или отправьте как фото, а не файлом."
        ),
        "reason_too_small": "в нём всего {width}×{height} пикселей. Пришлите фото побольше.",
        "reason_too_narrow": (
            "при размере {width}×{height} оно слишком длинное и узкое для фото. "
            "Обрежьте его ближе к цифре или цветку и пришлите снова."
        ),
        "reason_pixels_jpeg": (
            "в нём {width}×{height} пикселей ({megapixels:.1f} Мп), а JPEG я читаю до {limit:g} Мп. "
            "Отправьте его как фото, а не файлом, или обрежьте либо уменьшите его меньше чем до "
            "{limit:g} мегапикселей."
        ),
        "reason_pixels_full": (
            "это {format} размером {width}×{height} пикселей ({megapixels:.1f} Мп), а файлы {format} я "
            "читаю до {limit:g} Мп (фото JPEG — до {jpeg_limit:g} Мп). Отправьте его как фото, а не "
            "файлом, или обрежьте либо уменьшите его меньше чем до {limit:g} мегапикселей."
        ),
        "reason_pixels_declared": (
            "в нём заявлено намного больше пикселей, чем бывает у фото. Отправьте его как фото, а не "
            "файлом, или обрежьте либо уменьшите его меньше чем до {limit:g} мегапикселей."
        ),
        "reason_memory": (
            "для его чтения нужно больше памяти, чем я выделяю на одно изображение. Отправьте его как "
            "фото, а не файлом, или обрежьте либо уменьшите его меньше чем до {limit:g} мегапикселей."
        ),
        "sticker": "Стикеры — это весело, но я читаю только фото. Пришлите фото цифры или цветка.",
        "video": "Я читаю только фотографии, не видео и не анимации.",
        "voice": "Я не слушаю, я смотрю: пришлите фото.",
        "text_hint": "Пришлите мне фото цифры или цветка. Подробнее — /help.",
        "unknown_command": "Я не знаю такой команды. Список — /help.",
        "flood": (
            "Вы присылаете фото быстрее, чем я успеваю смотреть. Подождите {seconds} с и попробуйте снова."
        ),
        "slow_down": (
            "Помедленнее, пожалуйста: вы пишете быстрее, чем я успеваю отвечать. "
            "Подождите {seconds} с и попробуйте снова."
        ),
        "download_failed": "Не удалось вовремя получить ваше фото от Telegram. Пришлите его ещё раз.",
        "busy": "Я сейчас занят — пришлите фото ещё раз чуть позже.",
        "timeout": "Это заняло слишком много времени — пришлите фото ещё раз.",
        "model_unavailable": "Модель ({mode}) сейчас недоступна. Попробуйте позже.",
        "internal_error": "У меня что-то пошло не так. Попробуйте ещё раз.",
        # Обучение новых моделей из чата (bot.handlers.teach).
        "newmodel_usage": (
            "Использование: /newmodel ИМЯ МЕТКА МЕТКА … — ИМЯ: до 20 строчных латинских букв, цифр "
            "или _, начиная с буквы; от 2 до 50 меток, каждая до 30 латинских букв, цифр, _ или -."
        ),
        "newmodel_done": (
            "Новая модель «{model}» с метками {labels}.\n"
            "Чтобы научить её, присылайте фото с меткой в подписи («{example}») или «{model}: {example}», "
            "если такая метка есть и у другой модели. Нужно не меньше {minimum} фото каждой метки "
            "от нескольких человек; затем администратор отправляет /retrain {model}. "
            "/use {model} — отвечать этой моделью на все фото чата."
        ),
        "teach_bad_name": (
            "«{name}» не может быть именем модели: до 20 строчных латинских букв, цифр или _, "
            "начиная с буквы."
        ),
        "teach_name_taken": "Имя «{name}» занято (моделью или режимом чата, возможно удалённой).",
        "teach_bad_label": (
            "«{label}» не может быть меткой: латинские буквы, цифры, _ или -, и не только цифры."
        ),
        "teach_label_too_long": "«{label}» — слишком длинная метка: не больше {limit} символов.",
        "teach_label_twice": "Метка «{label}» указана дважды.",
        "teach_label_count": "У модели от {low} до {high} меток; получилось бы {count}.",
        "teach_unknown_model": "Модели из чата с именем «{model}» нет. Модели из чата: {models}.",
        "addlabel_usage": "Использование: /addlabel МОДЕЛЬ МЕТКА — МОДЕЛЬ одна из моделей из чата: {models}.",
        "addlabel_done": (
            "У «{model}» теперь метки {labels}. Присылайте фото с подписью «{label}» "
            "(не меньше {minimum}), затем /retrain {model}."
        ),
        "dellabel_usage": "Использование: /dellabel МОДЕЛЬ МЕТКА — МОДЕЛЬ одна из моделей из чата: {models}.",
        "dellabel_unknown": "У «{model}» нет метки «{label}». Её метки: {labels}.",
        "dellabel_done": (
            "«{label}» больше не метка «{model}» (её фото остаются в хранилище). "
            "Метки теперь: {labels}. Следующий /retrain {model} обучит модель без неё."
        ),
        "delmodel_usage": "Использование: /delmodel ИМЯ — ИМЯ одна из моделей из чата: {models}.",
        "delmodel_confirm": (
            "Удалить модель «{model}»? Она сразу перестанет отвечать; {photos} размеченных для неё фото "
            "останутся в хранилище, а имя нельзя будет использовать снова."
        ),
        "delmodel_yes": "Да, удалить {model}",
        "delmodel_no": "Нет, оставить",
        "delmodel_done": "«{model}» удалена. Размеченные фото остаются в хранилище.",
        "delmodel_cancelled": "Ничего не изменилось: «{model}» остаётся.",
        "delmodel_not_yours": "Подтвердить удаление может только администратор, который его запросил.",
        "teach_count": "{label}: {count} из минимум {minimum} фото",
        "models_labels_header": "Метки (размеченных фото каждой):",
        "models_labels_line": "{model} — {labels} · {serving}",
        "models_labels_serving": "работает v{version}",
        "models_labels_not_serving": "ни одна версия пока не работает",
        "teach_not_serving": (
            "«{model}» ещё учится: ни одна версия пока не отвечает, поэтому я только записал метку."
        ),
    },
}

COMMANDS: Final[dict[str, list[tuple[str, str]]]] = {
    "en": [
        ("help", "what I do"),
        ("digit", "read photos as digits"),
        ("flower", "read photos as flowers"),
        ("auto", "decide by myself"),
        ("stats", "your numbers"),
        ("forget", "delete your data"),
    ],
    "ru": [
        ("help", "что я умею"),
        ("digit", "читать фото как цифры"),
        ("flower", "читать фото как цветы"),
        ("auto", "решать самому"),
        ("stats", "ваша статистика"),
        ("forget", "удалить ваши данные"),
    ],
}


def language(code: str | None) -> str:
    """Our language for Telegram's IETF `language_code` (`ru`, `ru-RU`, `en-GB`, None)."""
    base = (code or "").split("-")[0].lower()
    return base if base in TEXTS else DEFAULT


def text(lang: str, key: str, **values: object) -> str:
    template = TEXTS.get(lang, TEXTS[DEFAULT]).get(key) or TEXTS[DEFAULT][key]
    return template.format(**values)


def percent(fraction: float) -> int:
    """A confidence in whole percent, never showing 100% for an answer that is not certain."""
    value = round(fraction * 100)
    return 99 if value == 100 and fraction < 1.0 else value


def human_size(size: int) -> str:
    amount: float = size
    for unit in ("bytes", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount} {unit}" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount} bytes"

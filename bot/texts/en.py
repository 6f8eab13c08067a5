"""Everything the bot says in English, by key; `bot.texts.text` picks and formats one.

Every key here has a twin in `ru.py` (a test checks both languages have the same keys).
"""

from __future__ import annotations

from typing import Final

EN: Final[dict[str, str]] = {
    "help": (
        "Send me a photo of a handwritten digit (or a number) or of a flower — {flowers} — and I'll "
        "say what it is and how sure I am.\n"
        "Tell me when I'm wrong with the buttons under the answer: I learn from it.\n"
        "Send a photo with a caption such as 7 or roses to teach me a labelled example (an album's "
        "caption labels all its photos).\n\n"
        "/digit — read every photo as a digit or number\n"
        "/flower — read every photo as a flower\n"
        "/auto — let me decide (default)\n"
        "/use MODEL — read every photo with a model taught here (/use alone lists them)\n"
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
        "/newmodel NAME LABEL LABEL… — a new model, taught with photos captioned with its labels\n"
        "/addlabel MODEL LABEL, /dellabel MODEL LABEL — a label more or less (the flowers too)\n"
        "/delmodel NAME — delete a taught model (asks to confirm; its photos stay stored)\n"
        "/stats — also shows everyone's figures"
    ),
    "start": "Hello, {name}!",
    "confidence_line": "{label} — {percent}%",
    "runner_up": "Runner-up: {label} ({percent}%)",
    "digits_line": "Digits: {digits}",
    "unsure": "I'm not sure. Is it {label} or {other}? Tell me with the buttons below.",
    "unsure_whether": (
        "If it is one of the things I know, it is {label} — but I'm not sure it is. "
        "Tell me with the buttons below."
    ),
    "unsure_single": "I'm not sure about this one. Tell me with the buttons below.",
    "not_recognized_digit": (
        "I don't see a handwritten digit or number here.\n"
        "If it shows something else, send /auto and the photo again."
    ),
    "not_recognized_model": (
        "I don't see {labels} here.\nIf it shows something else, send /auto and the photo again."
    ),
    "or": "or",
    "not_recognized_taught": (
        "I don't see a digit, one of my flowers or anything the models taught here know ({models}).\n"
        "If it is one of them, send /digit, /flower or /use MODEL and the photo again."
    ),
    "not_recognized": (
        "I don't see a digit or one of my flowers here.\n"
        "If it is one, send /digit or /flower and the photo again."
    ),
    "contribution_agreed": (
        "You labelled it {label}, and I agree. Stored as a labelled example — thank you!"
    ),
    "contribution_disagreed": (
        "You labelled it {label}; I thought otherwise. Stored as a labelled example — thank you!"
    ),
    "caption_ambiguous": (
        "“{caption}” is a label of several models ({models}), so I did not record it. Send the photo "
        "again captioned “{example}”: the model, a colon, the label."
    ),
    "contribution_unknown_label": "“{caption}” is not one of my labels, so I only answered.",
    "contribution_model_deleted": "“{model}” was deleted, so I did not record the label; I only answered.",
    "contribution_not_a_label_of": (
        "{model} has no label “{label}”, so I only answered. Its labels: {labels}."
    ),
    "contribution_blocked": "Your labels are not being accepted at the moment, so I only answered.",
    "button_correct": "✅ Correct",
    "button_wrong": "❌ Wrong",
    "retrain_title": "Retraining {model} (job {job})",
    "retrain_starting": "Starting…",
    "retrain_waiting_worker": "Queued: waiting for a worker to take it…",
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
    "retrain_job_failed": ("Retraining {model} (job {job}) failed: {error}\nNothing changed: {kept}"),
    "retrain_kept": "v{version} keeps serving.",
    "retrain_none_serving": "no version serves yet.",
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
    "forget_not_yours": "Only the person who asked to delete their data can answer this.",
    "feedback_not_yours": "Only the person who sent this photo can answer.",
    "feedback_stale": "This photo is no longer stored, so there is nothing to record.",
    "feedback_malformed": "This button is out of date. Send the photo again.",
    "feedback_already": "Already recorded — thank you!",
    "feedback_bad_label": "That label does not belong to this answer.",
    "ask_number": "Reply with the right number — digits only, such as 2026.",
    "pick_number": "Type the right number",
    "number_expected": "I'm waiting for the right number for your photo: digits only, such as 2026.",
    "mode_auto": (
        "Mode: auto — I decide whether a photo shows a digit, a flower or what a model taught here knows."
    ),
    "mode_digit": "Mode: digits — I read every photo as a digit or a number.",
    "mode_flower": "Mode: flowers — I read every photo as a flower.",
    "mode_model": "Mode: {model} — I read every photo as one of: {labels}.",
    "no_such_model": "There is no model “{name}”.",
    "use_usage": "Send /use and a model's name: {models}.",
    "use_not_serving": (
        "“{model}” cannot answer yet: no version of it serves. Teach it with photos captioned with a "
        "label ({labels}; “{model}: {example}” when another model has that label too); then an admin "
        "sends /retrain {model}. Your chat stays in its mode."
    ),
    "mode_gone": "“{model}” was deleted, so this chat is back in auto mode.",
    "stats_user": (
        "Photos you sent: {photos} (the same photo sent twice counts once)\n"
        "Answers you rated: {rated}\n"
        "Right: {correct} ({percent})\n"
        "Photos you labelled with a caption: {contributions}"
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
    "model_state_rejected": "not serving: rejected by the check against the version serving",
    "model_state_candidate": "not serving: a candidate whose training did not finish",
    "model_state_idle": "not serving",
    "model_set_mnist": "the MNIST test set",
    "model_set_test": "its test set",
    "models_none": "No models in the store.",
    "rollback_usage": "Usage: /rollback MODEL [version] — MODEL is one of: {models}.",
    "rollback_done": "{name} now serves v{version}.",
    "rollback_serving": "{name} v{version} is the version serving now: nothing to roll back.",
    "rollback_confirm": (
        "Roll {name} back from v{current} to v{version}? Every photo is then answered by v{version}, "
        "at once and without a restart."
    ),
    "rollback_rejected": "Careful: v{version} was rejected when it was made ({reason}).",
    "rollback_yes": "Yes, roll back",
    "rollback_no": "No, keep v{current}",
    "rollback_cancelled": "Nothing changed: {name} v{current} keeps serving.",
    "rollback_not_yours": "Only the admin who asked for this rollback can confirm it.",
    "rollback_stale": "{name} changed meanwhile (now v{current}). Send /rollback again.",
    "rollback_failed": "Could not roll back: {reason}",
    "rollback_no_version": "{name} has no version {version}. /models lists its versions.",
    "rollback_no_earlier": "{name} has no earlier version to roll back to.",
    "block_admin": "User {user} is an admin (ADMIN_IDS): an admin cannot be blocked.",
    "block_usage": "Usage: /block <user id>",
    "unblock_usage": "Usage: /unblock <user id>",
    "blocked": "User {user} can no longer contribute labels.",
    "blocked_unknown": (
        "I have no photos from user {user} yet. Blocked in advance: labels from this id will not be used."
    ),
    "unblocked_not_blocked": "User {user} was not blocked: their labels count already.",
    "unblocked": "User {user} can contribute labels again.",
    "stats_global": (
        "Users: {users}\nPhotos people sent: {photos} (each person's distinct photos)\n"
        "Answers given: {predictions}\n"
        "Feedback: {feedback} (right {percent})\nPhotos labelled with a caption: {labelled}\n"
        "Blocked users: {blocked}"
    ),
    "heic_not_readable": (
        "“{name}” is a HEIC photo, which I cannot read. Send it as a photo rather than a file "
        "(Telegram then sends it as JPEG), or as a JPEG or PNG file."
    ),
    "not_an_image": ("“{name}” is not an image. Send a photo or an image file (JPEG, PNG, WebP, GIF, BMP)."),
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
        "If it is a picture, send it as a photo instead of a file: Telegram converts it."
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
    "download_failed": "I couldn't fetch your photo from Telegram. Please send it again.",
    "busy": "I'm busy right now — please send the photo again in a moment.",
    "timeout": "That took too long — please send the photo again.",
    "model_unavailable": "My {mode} model is not available right now. Please try again later.",
    # The inference service (INFERENCE_URL) did not answer, also when asked again.
    "inference_down": (
        "I can't look at photos right now: my recognition service is not answering. "
        "Please send the photo again in a few minutes."
    ),
    "inference_down_kept": (
        "I can't look at photos right now: my recognition service is not answering. "
        "I kept your photo as an example of “{label}”, so it still counts for my next training."
    ),
    "database_busy": "I couldn't store that just now. Please send it again in a minute.",
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
        "“{label}” cannot be a label: use Latin letters, digits, _ or -, with at least one letter."
    ),
    "teach_label_too_long": "“{label}” is too long for a label: at most {limit} characters.",
    "teach_name_reserved": "“{name}” cannot be a model's name: it marks photos of none of a model's labels.",
    "teach_name_command": "“{name}” is one of my commands: choose another name for the model.",
    "teach_reserved_label": (
        "“{label}” cannot be a label: none and labels beginning with not_ mark photos of none of a "
        "model's labels."
    ),
    "teach_label_named": "A caption “{label}” already means the label “{existing}”: choose another word.",
    "teach_label_exists": "The model already has the label “{label}”.",
    "teach_label_twice": "The label “{label}” is there twice.",
    "teach_label_count": "A model has {low} to {high} labels; this would make {count}.",
    "teach_unknown_model": (
        "There is no model taught from the chat called “{model}”. Taught models: {models}."
    ),
    "addlabel_usage": "Usage: /addlabel MODEL LABEL — MODEL one of the image models: {models}.",
    "addlabel_done": (
        "“{model}” now has the labels {labels}. Send photos captioned “{label}” "
        "(at least {minimum}), then /retrain {model}."
    ),
    "addlabel_done_builtin": (
        "“{model}” now has the labels {labels}. Send photos captioned “{label}” (at least {minimum}, "
        "from several people), then /retrain {model}: until a version has learned “{label}”, "
        "it answers with the labels it knows."
    ),
    "dellabel_usage": "Usage: /dellabel MODEL LABEL — MODEL one of the image models: {models}.",
    "dellabel_unknown": "“{model}” has no label “{label}”. Its labels: {labels}.",
    "dellabel_builtin": (
        "“{label}” is one of {model}'s own labels: it cannot be removed. "
        "Only labels added with /addlabel can: {added}."
    ),
    "dellabel_done": (
        "“{label}” is no longer a label of “{model}” (its photos stay stored). "
        "Labels now: {labels}. The next /retrain {model} learns without it; until then, a version "
        "serving now may still answer “{label}”."
    ),
    "delmodel_usage": "Usage: /delmodel NAME — NAME one of the taught models: {models}.",
    "delmodel_confirm": (
        "Delete the model “{model}”? It stops answering at once; the {photos} photos people labelled "
        "for it stay stored, and its name cannot be used again."
    ),
    "delmodel_yes": "Yes, delete {model}",
    "delmodel_no": "No, keep it",
    "delmodel_done": "“{model}” is deleted. Its labelled photos stay stored.",
    "delmodel_already": "“{model}” is already deleted.",
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
}

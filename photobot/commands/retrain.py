"""`photobot retrain --model digits|flowers`: learn from the photos people labelled in chat.

The bot's /retrain starts this in its own process with `--job-id`; by hand it creates its own job.
"""

from __future__ import annotations

import argparse

from inference.catalogue import DEFAULT_CATALOGUE
from photobot.errors import UserFacingError
from photobot.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=DEFAULT_CATALOGUE.names, required=True)
    parser.add_argument("--job-id", type=int, help="the job the bot queued (default: create one)")
    parser.add_argument(
        "--force", action="store_true", help="retrain even with fewer new labelled photos than the minimum"
    )
    parser.add_argument(
        "--fine-tune", action="store_true", help="flowers: also fine-tune the backbone (not available yet)"
    )
    parser.add_argument(
        "--limit",
        type=int,
        help="digits: MNIST training digits used (default 20000); flowers: photos per class",
    )
    parser.add_argument("--test-limit", type=int, help="digits: first N MNIST test digits for the gate")
    parser.add_argument(
        "--epochs", type=int, help="default: 2 for digits; flowers: up to 300, early stopping"
    )
    parser.add_argument(
        "--chat-share",
        type=float,
        default=0.15,
        help="chat photos' share of the training weight, at most (default 0.15; each ≤ 5 base examples)",
    )
    parser.add_argument(
        "--max-chat-weight",
        type=float,
        default=5.0,
        help="what one chat photo may weigh, in base examples (default 5)",
    )
    parser.add_argument(
        "--learning-rate", type=float, help="default: 3e-4 for digits, 1e-4 for the flower head"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--nice", type=int, default=0, help="lower this process's CPU priority by N (the bot passes 10)"
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from training.retrain import RetrainError, RetrainOptions, run_retrain

    if args.nice > 0:
        os.nice(args.nice)  # the bot that started this job keeps the CPU it needs to answer photos

    for name in ("limit", "test_limit", "epochs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserFacingError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if not 0 <= args.chat_share < 1:
        raise UserFacingError(f"--chat-share must be within [0, 1), got {args.chat_share}")
    if not args.max_chat_weight > 0:
        raise UserFacingError(f"--max-chat-weight must be positive, got {args.max_chat_weight}")
    options = RetrainOptions(
        model=args.model,
        job_id=args.job_id,
        force=args.force,
        fine_tune=args.fine_tune,
        limit=args.limit,
        test_limit=args.test_limit,
        epochs=args.epochs,
        chat_share=args.chat_share,
        max_chat_weight=args.max_chat_weight,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    try:
        outcome = run_retrain(settings, options)
    except RetrainError as error:
        raise UserFacingError(str(error)) from None
    print(outcome.report.text)
    print(f"report: {outcome.report.folder}")
    return 0

"""`photobot train digits`: the course's MLP (`--arch mlp --hidden 800`) or the default CNN."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from photobot.commands.train import add_promotion_flags, serve_if_better
from photobot.errors import UserFacingError
from photobot.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=("cnn", "mlp"), default="cnn", help="model family (default: cnn)")
    parser.add_argument(
        "--hidden",
        default="800",
        help="MLP hidden layer sizes, comma-separated: 800 (the course), 10, 10,10, 1",
    )
    parser.add_argument("--epochs", type=int, help="default: 20 for the MLP (the course), 10 for the CNN")
    parser.add_argument(
        "--batch-size", type=int, help="default: 200 for the MLP (the course), 128 for the CNN"
    )
    parser.add_argument("--limit", type=int, help="train on the first N MNIST training digits (quick runs)")
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="distort digits while training (default: CNN only)",
    )
    parser.add_argument(
        "--photo-digits",
        type=int,
        default=0,
        help="also train on N MNIST digits rendered as phone photos and read back by the serving code",
    )
    parser.add_argument(
        "--style-copies",
        type=int,
        default=0,
        help="also train on N copies of every MNIST digit redrawn in other writers' styles "
        "(flagged 1s, crossed 7s, slant, aspect, elastic, pen width); photo digits are restyled too",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the shuffles, the augmentation and the initial weights (0)"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=1e-3, help="Adam's starting rate (default 1e-3)"
    )
    parser.add_argument("--init-from", help="start from this .keras model's weights (fine-tuning)")
    parser.add_argument(
        "--checkpoint", type=Path, help="also save the model to this .keras file after every epoch"
    )
    add_promotion_flags(parser)


def main(args: argparse.Namespace, settings: Settings) -> int:
    from photobot.serving import model_store
    from training.datasets import load_mnist
    from training.train_digits import (
        DigitTrainingConfig,
        parse_hidden,
        photo_training_digits,
        save_trained,
        train_digits,
    )

    try:
        hidden = parse_hidden(args.hidden)
    except ValueError as error:
        raise UserFacingError(str(error)) from None
    for name in ("epochs", "batch_size", "limit", "photo_digits", "style_copies"):
        value = getattr(args, name)
        if value is not None and value < (0 if name in ("photo_digits", "style_copies") else 1):
            raise UserFacingError(f"--{name.replace('_', '-')} must be positive, got {value}")
    config = DigitTrainingConfig(
        arch=args.arch,
        hidden=hidden,
        epochs=args.epochs,
        batch_size=args.batch_size,
        limit=args.limit,
        augment=args.augment,
        photo_digits=args.photo_digits,
        style_copies=args.style_copies,
        seed=args.seed,
        learning_rate=args.learning_rate,
        init_from=args.init_from,
    )
    mnist = load_mnist(settings.datasets, settings.data_dir)  # never downloads
    photo_data = None
    if config.photo_digits:
        limit = config.limit or len(mnist[0])
        photo_data = photo_training_digits(
            mnist[0][:limit],
            mnist[1][:limit],
            config.photo_digits,
            config.seed,
            restyle=config.style_copies > 0,
        )
    epochs = config.resolved_epochs
    print(f"training {config.describe()} for {epochs} epoch{'s' if epochs != 1 else ''} …", flush=True)
    trained = train_digits(
        config, mnist, photo_data=photo_data, checkpoint=args.checkpoint
    )  # logs each epoch
    command = "photobot " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else "photobot train digits"
    store = model_store(settings)
    version = save_trained(store, trained, command=command, promote=False)
    print(f"MNIST test accuracy: {trained.test_accuracy:.2%} ({trained.seconds:.0f} s of training)")
    state = serve_if_better(store, "digits", version, args)
    print(f"saved digits v{version.version} in {version.path} ({state})")
    return 0

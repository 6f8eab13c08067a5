"""`photobot bench scale`: PostgreSQL, Ray Serve, bot replicas behind nginx and a fake Telegram on this
machine; people send photos and tap, and with --kill a bot replica and an inference replica are SIGKILLed
mid-run (`benchmarks.scale`). The last stdout line is one JSON object with --json.

    photobot bench scale --bot-replicas 3 --inference-replicas 2 --kill --json

Needs PostgreSQL's server and nginx from the OS packages (`make postgres nginx`), Ray Serve (the `cluster`
extra) and the MNIST test set in PHOTOBOT_DATASETS.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from photobot.commands import positive_int
from photobot.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bot-replicas", type=positive_int, default=3, help="photobot run processes (3)")
    parser.add_argument(
        "--inference-replicas", type=positive_int, default=2, help="replicas per Ray Serve deployment (2)"
    )
    parser.add_argument("--users", type=positive_int, default=20, help="people sending photos (20)")
    parser.add_argument("--photos", type=positive_int, default=200, help="photos in all (200)")
    parser.add_argument(
        "--kill",
        action="store_true",
        help="SIGKILL one bot replica and one inference replica once a third of the photos are sent",
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    parser.add_argument("--dir", type=Path, help="work (and keep the processes' logs) here")


def main(args: argparse.Namespace, settings: Settings) -> int:
    from benchmarks.scale import ScaleConfig, json_line, run_scale

    config = ScaleConfig(
        bot_replicas=args.bot_replicas,
        inference_replicas=args.inference_replicas,
        users=args.users,
        photos=args.photos,
        kill=args.kill,
        datasets=settings.datasets,
    )
    with tempfile.TemporaryDirectory(prefix="photobot-scale-") as temp:
        work = args.dir or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(run_scale(config, work))
    kills = sum(1 for k in result["killed"] if k.startswith("bot"))
    ok = result["lost"] == 0 and result["duplicates"] <= kills and result["feedback_stored"] == result["taps"]
    result["ok"] = ok
    if args.json:
        print(json_line(result), flush=True)
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0 if ok else 1

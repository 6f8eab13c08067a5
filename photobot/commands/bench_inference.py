"""`photobot bench inference [--json]`: the engine against per-request serving, and a hot swap under load.

For each model (digits, flowers) and concurrency (1, 8, 64 callers): throughput and p50/p95/p99 latency
of `classify` on real JPEG photos — MNIST test digits rendered as 640×480 phone photos by
`training.synth_photos`, and photos of the flower set — and, in the same run, two baselines with the
same decoding and preprocessing in as many threads: `model.predict` per photo and a direct `model(x)`
call per photo. Then a hot swap under load: 32 callers for 30 s while the digit model's active
version switches every 5 s.

The models are the serving ones (DATA_DIR's store, seeded with the shipped defaults if empty), copied
into a temporary store, so the swap never touches the real `active` pointers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from photobot.errors import UserFacingError
from photobot.settings import Settings

# A flower batch of 32 takes ~0.3-1 s here: a window of many batches keeps the count from jumping.
DEFAULT_SECONDS = {"digits": 6.0, "flowers": 15.0}
# EfficientNet-Lite0 at 224×224 does 0.41 G multiply-adds (the "0.39 GFLOPs" papers quote are
# multiply-adds); each is two floating-point operations, as in the matmul rate it is divided by.
FLOPS_PER_FLOWER_PHOTO = 2 * 0.41e9


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument("--models", default="digits,flowers", help="comma-separated (default digits,flowers)")
    parser.add_argument(
        "--concurrency", default="1,8,64", help="comma-separated caller counts (default 1,8,64)"
    )
    parser.add_argument(
        "--seconds", type=float, help="measured seconds per cell (default: 6 for digits, 15 for flowers)"
    )
    parser.add_argument("--photos", type=int, default=200, help="distinct photos per model (default 200)")
    parser.add_argument("--swap-seconds", type=float, default=30.0, help="hot-swap run length; 0 skips it")
    parser.add_argument("--swap-every", type=float, default=5.0, help="seconds between swaps (default 5)")
    parser.add_argument(
        "--swap-model", default="digits", choices=("digits", "flowers"), help="the model hot-swapped (digits)"
    )
    parser.add_argument("--no-baselines", action="store_true", help="measure the engine only")
    parser.add_argument(
        "--remote",
        action="store_true",
        help="also measure inference on Ray Serve (a local cluster on this machine's cores, the "
        "application of `photobot serve inference`) through the bot's client, after the engine",
    )
    parser.add_argument(
        "--baseline-threads",
        type=int,
        help="threads serving the per-request baselines (default: as many as the engine's decode pool; "
        "1 is a bot that calls the model inside its handler)",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    report = asyncio.run(_bench(args, settings, models, concurrencies))
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 0


async def _bench(
    args: argparse.Namespace, settings: Settings, models: list[str], concurrencies: list[int]
) -> dict:
    from photobot.serving import build_classifier, use_serving_threads

    use_serving_threads()  # before the flower model is seeded: the first TensorFlow op fixes its threads
    import keras

    from benchmarks import inference as bench

    peak = bench.arithmetic_peak()
    _say(
        f"CPU: {peak.cores} cores at {peak.ghz or '?'} GHz, nominal float32 peak "
        f"{peak.nominal_gflops or float('nan'):.0f} GFLOP/s ({peak.flops_per_cycle} FLOP/cycle/core); "
        f"numpy matmul now: {peak.measured_gflops:.0f} GFLOP/s"
    )
    with tempfile.TemporaryDirectory(prefix="photobot-bench-") as temp:
        store = _bench_store(settings, Path(temp) / "models", models)
        photos = {name: _photos(name, settings, args.photos) for name in models}
        classifier = build_classifier(
            _with_models_dir(settings, Path(temp)), names=models, reload_poll_s=0, queue_size=4096
        )
        await classifier.start()
        await classifier.conversions_done()  # measure what serves for good (LiteRT on the CPU)
        status = classifier.models()
        for name in models:
            _say(f"{name}: v{status[name].version} on {status[name].backend} {status[name].device}")
        config = classifier.config
        _say(
            f"engine: max_batch {config.max_batch}, max_wait_ms {config.max_wait_ms}, "
            f"decoding in a {config.pool} pool of {config.decode_workers()}"
        )
        rows: list[dict] = []
        try:
            for name in models:
                mode = {"digits": "digit", "flowers": "flower"}[name]
                version = store.active(name)
                baseline = None
                if not args.no_baselines:
                    model = keras.saving.load_model(version.model_file, compile=False, safe_mode=True)
                    baseline = bench.PerRequest(
                        version,
                        model,
                        threads=args.baseline_threads or config.decode_workers(),
                        limits={
                            "max_bytes": settings.max_image_bytes,
                            "max_pixels": settings.max_image_pixels,
                        },
                    )
                seconds = args.seconds or DEFAULT_SECONDS[name]
                for concurrency in concurrencies:
                    cell = [
                        await bench.measure_engine(classifier, name, mode, photos[name], concurrency, seconds)
                    ]
                    if baseline is not None:
                        for method in ("predict", "call"):
                            cell.append(await baseline.measure(method, photos[name], concurrency, seconds))
                    for result in cell:
                        rows.append(result.as_json())
                        _say(_row_text(result, cell[0]))
                if baseline is not None:
                    baseline.close()
            swap = None
            if args.swap_seconds > 0 and args.swap_model in models:
                swap = await _swap(args, classifier, store, photos[args.swap_model])
        finally:
            await classifier.close()
        if args.remote:  # after the engine has stopped: Ray gets the machine to itself
            for result in await _remote(args, settings, Path(temp), models, photos, concurrencies):
                rows.append(result.as_json())
                engine = next(
                    r
                    for r in rows
                    if (r["model"], r["concurrency"], r["method"])
                    == (result.model, result.concurrency, "engine")
                )
                _say(_row_text(result, _Engine(engine["throughput"])))
    report: dict = {"cpu": peak.__dict__, "engine": config.__dict__, "rows": rows, "ratios": _ratios(rows)}
    for line in _ratio_lines(report["ratios"]):
        _say(line)
    if "flowers" in models:
        best = max(r["throughput"] for r in rows if r["model"] == "flowers" and r["method"] == "engine")
        report["flowers_arithmetic"] = _arithmetic(best, peak)
        _say(_arithmetic_text(report["flowers_arithmetic"]))
    if swap is not None:
        report["hot_swap"] = swap.as_json()
        _say(_swap_text(swap))
    return report


async def _remote(
    args: argparse.Namespace,
    settings: Settings,
    data_dir: Path,
    models: list[str],
    photos: dict[str, list[bytes]],
    concurrencies: list[int],
) -> list:
    """The same load on the Ray Serve application over the same copied store: a local cluster on this
    machine's cores, each deployment (the ingress and one per model) on an equal share of them."""
    import dataclasses
    import os

    from benchmarks import serve as bench_serve
    from inference.catalogue import DEFAULT_CATALOGUE
    from inference.model_store import ModelStore
    from photobot.commands.serve import APP_NAME, application

    cores = os.cpu_count() or 1
    share = min(settings.serve.cpus_per_replica, cores / (len(models) + 1))
    local = dataclasses.replace(
        settings,
        data_dir=data_dir,
        database_url=None,
        serve=dataclasses.replace(settings.serve, cpus_per_replica=share),
    )
    catalogue = DEFAULT_CATALOGUE.only(models)

    def deploy(catalogue, port: int) -> None:
        from ray import serve

        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(application(local, catalogue), name=APP_NAME, route_prefix="/")

    _say(f"Ray Serve: a local cluster of {cores} CPUs, {share:g} CPU per replica; deploying")
    cluster = bench_serve.RayServe.start(deploy, catalogue, num_cpus=cores)
    client = bench_serve.remote_client(catalogue, ModelStore(data_dir / "models"), 60.0)
    results = []
    try:
        for name in models:
            mode = {"digits": "digit", "flowers": "flower"}[name]
            seconds = args.seconds or DEFAULT_SECONDS[name]
            for concurrency in concurrencies:
                result, status = await bench_serve.measure_remote(
                    cluster.url, client, name, mode, photos[name], concurrency, seconds
                )
                if status is not None:
                    _say(f"{name} on Ray Serve: v{status.version} on {status.backend} {status.device}")
                results.append(result)
    finally:
        cluster.stop()
    return results


class _Engine:
    """What `_row_text` reads of the engine's row of a cell."""

    def __init__(self, throughput: float) -> None:
        self.throughput = throughput


def _bench_store(settings: Settings, root: Path, models: list[str]):
    """A temporary store holding a copy of each serving version (seeded into DATA_DIR first if empty)."""
    from inference.classifier import seed_shipped
    from inference.model_store import ModelStore
    from photobot.serving import SEEDERS, model_store

    real = model_store(settings)
    store = ModelStore(root)
    for name in models:
        if real.active(name) is None and name in SEEDERS:
            SEEDERS[name](real)
        elif real.active(name) is None:
            seed_shipped(real, name)
        source = real.active(name)
        if source is None:
            raise UserFacingError(f"no {name} model to measure: run `photobot train {name}`")
        copied = store.add_version(
            name, source.path, {k: v for k, v in source.meta.items() if k not in ("name", "version")}
        )
        store.promote(name, copied.version)
    return store


def _with_models_dir(settings: Settings, data_dir: Path) -> Settings:
    from dataclasses import replace

    return replace(settings, data_dir=data_dir)


def _photos(name: str, settings: Settings, count: int) -> list[bytes]:
    """Real JPEG photos: MNIST test digits as 640×480 phone photos, or photos of the flower set."""
    import numpy as np

    if name == "digits":
        from training import synth_photos
        from training.datasets import load_mnist

        _, _, x_test, y_test = load_mnist(settings.datasets, settings.data_dir)
        rng = np.random.default_rng(2026)
        photos = []
        for i in range(count):
            style = synth_photos.random_style(rng, size=(640, 480), exif_orientation=1)
            data, _ = synth_photos.render_photo([x_test[i]], rng, style, labels=[y_test[i]])
            photos.append(data)
        return photos
    from training.flower_data import find_flower_photos

    folder = find_flower_photos(settings.datasets, settings.data_dir)
    files = sorted(folder.glob("*/*.jpg"))
    step = max(1, len(files) // count)
    return [f.read_bytes() for f in files[::step][:count]]


async def _swap(args: argparse.Namespace, classifier, store, photos: list[bytes]):
    from benchmarks import inference as bench

    name = args.swap_model
    first = store.active(name)
    second = store.add_version(
        name, first.path, {k: v for k, v in first.meta.items() if k not in ("name", "version")}
    )
    mode = {"digits": "digit", "flowers": "flower"}[name]
    _say(
        f"hot swap: {name} v{first.version} ⇄ v{second.version} every {args.swap_every:g} s, "
        f"32 callers, {args.swap_seconds:g} s"
    )
    return await bench.hot_swap_under_load(
        classifier,
        store,
        name,
        mode,
        photos,
        (first.version, second.version),
        concurrency=32,
        seconds=args.swap_seconds,
        every_s=args.swap_every,
    )


def _ratios(rows: list[dict]) -> list[dict]:
    engine = {(r["model"], r["concurrency"]): r for r in rows if r["method"] == "engine"}
    ratios = []
    for row in rows:
        if row["method"] == "engine":
            continue
        mine = engine[(row["model"], row["concurrency"])]
        ratios.append(
            {
                "model": row["model"],
                "concurrency": row["concurrency"],
                "versus": row["method"],
                "throughput_ratio": _ratio(mine["throughput"], row["throughput"]),
                "per_cpu_second_ratio": _ratio(mine["photos_per_cpu_s"], row["photos_per_cpu_s"]),
            }
        )
    return ratios


def _ratio(mine: float, theirs: float) -> float | None:
    return round(mine / theirs, 2) if theirs and theirs == theirs and mine == mine else None


def _arithmetic(photos_per_s: float, peak) -> dict:
    gflops = photos_per_s * FLOPS_PER_FLOWER_PHOTO / 1e9
    return {
        "photos_per_s": round(photos_per_s, 2),
        "gflops_per_photo": FLOPS_PER_FLOWER_PHOTO / 1e9,
        "achieved_gflops": round(gflops, 2),
        "nominal_peak_gflops": round(peak.nominal_gflops, 1) if peak.nominal_gflops else None,
        "matmul_gflops_now": round(peak.measured_gflops, 1),
        "limit_photos_per_s_nominal": round(peak.nominal_gflops * 1e9 / FLOPS_PER_FLOWER_PHOTO, 1)
        if peak.nominal_gflops
        else None,
        "limit_photos_per_s_matmul": round(peak.measured_gflops * 1e9 / FLOPS_PER_FLOWER_PHOTO, 1),
    }


def _row_text(result, engine) -> str:
    ratio = (
        f"   engine ×{engine.throughput / result.throughput:.1f}"
        if result is not engine and result.throughput
        else ""
    )
    batch = f"   batch {result.mean_batch:.1f}" if result.mean_batch else ""
    return (
        f"{result.model:8} c={result.concurrency:<3} {result.method:8} {result.throughput:8.1f} photos/s   "
        f"p50 {result.p50_ms:7.1f}  p95 {result.p95_ms:7.1f}  p99 {result.p99_ms:7.1f} ms   "
        f"{result.photos_per_cpu_s:6.1f}/cpu-s  failed {result.failed}{batch}{ratio}"
    )


def _ratio_lines(ratios: list[dict]) -> list[str]:
    return [
        f"ratio {r['model']} c={r['concurrency']}: engine / {r['versus']} = "
        f"×{r['throughput_ratio']} photos/s, ×{r['per_cpu_second_ratio']} photos per CPU-second"
        for r in ratios
    ]


def _arithmetic_text(a: dict) -> str:
    return (
        f"flowers: {a['photos_per_s']:.1f} photos/s × {a['gflops_per_photo']} GFLOP = "
        f"{a['achieved_gflops']:.1f} GFLOP/s; limit {a['limit_photos_per_s_nominal']} photos/s at the "
        f"nominal peak ({a['nominal_peak_gflops']} GFLOP/s), {a['limit_photos_per_s_matmul']} photos/s "
        f"at the matmul rate measured now ({a['matmul_gflops_now']} GFLOP/s)"
    )


def _swap_text(s) -> str:
    return (
        f"hot swap {s.model}: {s.swaps} swaps in {s.seconds:g} s at c={s.concurrency}: "
        f"{s.answered} answered, {s.failed} failed, versions {s.versions_seen}; latency steady p50/p95/p99 "
        f"{s.steady_p50_ms:.1f}/{s.steady_p95_ms:.1f}/{s.steady_p99_ms:.1f} ms, within 1 s of a swap "
        f"{s.swap_p50_ms:.1f}/{s.swap_p95_ms:.1f}/{s.swap_p99_ms:.1f} ms (max {s.swap_max_ms:.1f}); "
        f"reload {s.reload_ms} ms"
    )


def _say(line: str) -> None:
    print(line, flush=True)

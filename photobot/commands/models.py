"""`photobot models [list|promote|rollback|add-shipped|new|add-label]`: the model store, and models
taught from labelled photos (`new`, `add-label`: what /newmodel and /addlabel do in the chat).

`add-shipped` stores this release's shipped default of a built-in model as a new version that does not
serve yet: a fresh store is seeded with it, a store that has versions keeps them after an upgrade, and
`promote` then serves the new default (`rollback` goes back).

`promote` and `rollback` replace a model's `active` pointer atomically (with DATABASE_URL on PostgreSQL:
the database's row, which every machine follows); a running bot picks the new version up within
ENGINE_RELOAD_POLL_S seconds (loaded and warmed beside the old one, no request lost).
`promote` first loads and runs the version, so a corrupt file is refused here rather than in the bot.
"""

from __future__ import annotations

import argparse
import json

from inference.catalogue import DEFAULT_CATALOGUE, Catalogue, ModelSpec
from photobot.errors import UserFacingError
from photobot.settings import Settings

NAMES = DEFAULT_CATALOGUE.names


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    listing = sub.add_parser("list", help="every version of every model; * marks the serving one")
    listing.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    promote = sub.add_parser("promote", help="make a version the serving one")
    promote.add_argument("name", help=f"{', '.join(NAMES)} or a taught model")
    promote.add_argument("version", type=_version_number, help="a version number (v3 or 3)")
    promote.add_argument(
        "--no-check", action="store_true", help="do not load and run the version before promoting it"
    )
    shipped = [name for name in NAMES if DEFAULT_CATALOGUE[name].shipped]
    add_shipped = sub.add_parser(
        "add-shipped", help="store this release's shipped default as a new version (not serving yet)"
    )
    add_shipped.add_argument("name", choices=shipped, help="the shipped model to store")
    new = sub.add_parser("new", help="a new image model taught from labelled photos (as /newmodel)")
    new.add_argument("name", help="up to 20 lowercase letters, digits or _, starting with a letter")
    new.add_argument("--labels", nargs="+", required=True, help="2 to 50 labels")
    add_label = sub.add_parser(
        "add-label", help="one more label for a taught model or the flowers (as /addlabel)"
    )
    add_label.add_argument(
        "name", help="the flowers or a taught model (not the digits, whose labels are fixed)"
    )
    add_label.add_argument("label", help="up to 30 characters, with a letter; a label it has is refused")
    rollback = sub.add_parser("rollback", help="serve an earlier version (default: the one before)")
    rollback.add_argument("name", help=f"{', '.join(NAMES)} or a taught model")
    rollback.add_argument(
        "version", type=_version_number, nargs="?", help="a version number (default: previous)"
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    from photobot.serving import model_store

    store = model_store(settings)
    action = args.action or "list"
    if action == "list":
        from photobot.wiring import taught_catalogue

        return _list(store, taught_catalogue(settings), as_json=getattr(args, "json", False))
    if action == "new":
        return _new(settings, args.name, args.labels)
    if action == "add-label":
        return _add_label(settings, args.name, args.label)
    if action == "add-shipped":
        return _add_shipped(store, args.name)
    from photobot.wiring import taught_catalogue

    known = taught_catalogue(settings)
    spec = known.named(args.name)  # a model's name (`digits`) or its mode (`digit`)
    if spec is None:
        raise UserFacingError(f"unknown model {args.name!r}; choose from {', '.join(known.names)}")
    args.name = spec.name
    if action == "promote":
        return _promote(store, args.name, args.version, check=not args.no_check)
    return _rollback(store, args.name, args.version)


def _add_shipped(store, name: str) -> int:
    from photobot.serving import add_shipped_version

    version = add_shipped_version(store, name)
    if version is None:
        raise UserFacingError(f"this release ships no default for {name}")
    serving = store.active_version(name)
    now = f"v{serving}" if serving is not None else "none"
    print(f"{name} v{version.version}: this release's shipped default (serving: {now})")
    print(f"serve it with: photobot models promote {name} {version.version}")
    return 0


def _new(settings: Settings, name: str, labels: list[str]) -> int:
    """Create a taught model in the database, with the bot's rules for its name and labels."""
    from inference.taught import TaughtError, check_labels, check_name
    from photobot.serving import model_store
    from photobot.wiring import taught_catalogue
    from storage import SyncStore
    from storage.taught import TaughtLabel

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with SyncStore(settings.database, settings.images_dir) as store:
        taken = [model.name for model in store.taught_models()]
        taken += model_store(settings).names()  # old versions must not serve a new model
        try:
            checked = check_labels(labels)
            check_name(name, taught_catalogue(settings), taken)
        except TaughtError as error:
            raise UserFacingError(_why(error)) from None
        try:
            store.create_taught_model(name, [TaughtLabel(label) for label in checked])
        except ValueError:
            raise UserFacingError(f"the name {name!r} was used by a deleted model") from None
    print(f"{name}: a new model with the labels {', '.join(checked)}")
    print(f"teach it with photos captioned with a label, then: photobot retrain --model {name}")
    return 0


def _add_label(settings: Settings, name: str, label: str) -> int:
    from inference.taught import TaughtError, check_labels, takes_added_labels
    from storage import SyncStore
    from storage.taught import TaughtLabel

    builtin = DEFAULT_CATALOGUE.get(name)
    if builtin is not None and takes_added_labels(builtin):
        return _add_builtin_label(settings, name, label)
    with SyncStore(settings.database, settings.images_dir) as store:
        found = next((model for model in store.taught_models() if model.name == name), None)
        if found is None:
            raise UserFacingError(f"no taught model called {name!r} (photobot models new)")
        try:
            (checked,) = check_labels([label], existing=found.label_names)
        except TaughtError as error:
            raise UserFacingError(_why(error)) from None
        store.set_taught_labels(name, [*found.labels, TaughtLabel(checked)])
    print(f"{name}: labels {', '.join((*found.label_names, checked))}")
    return 0


def _add_builtin_label(settings: Settings, name: str, label: str) -> int:
    """One more label for a built-in image model (flowers), as /addlabel: its next retrain learns it."""
    from inference.taught import TaughtError, check_labels
    from photobot.serving import model_store
    from photobot.wiring import taught_catalogue
    from storage import SyncStore
    from storage.added_labels import LabelAlreadyAdded

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    spec = taught_catalogue(settings)[name]
    serving = model_store(settings).active(name)
    labels = spec.labels_for(serving.labels) if serving is not None and serving.labels else spec.label_names
    try:
        (checked,) = check_labels([label], model=spec.with_label_names(labels))
        with SyncStore(settings.database, settings.images_dir) as store:
            store.add_model_label(name, checked)
    except TaughtError as error:
        raise UserFacingError(_why(error)) from None
    except LabelAlreadyAdded:
        raise UserFacingError(_why(TaughtError("teach_label_twice", label=label))) from None
    print(f"{name}: labels {', '.join((*labels, checked))}")
    print(f"teach it with photos captioned {checked}, then: photobot retrain --model {name}")
    return 0


def _why(error: Exception) -> str:
    """A TaughtError in the bot's English words."""
    from bot.texts import text
    from inference.taught import TaughtError

    assert isinstance(error, TaughtError)
    return text("en", error.key, **error.values)


def _version_number(text: str) -> int:
    try:
        return int(text.lower().removeprefix("v"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a version number: {text!r}") from None


def _list(store, catalogue: Catalogue, *, as_json: bool) -> int:
    """Every model of the catalogue (taught ones and their labels too) and of the store, its versions.
    A model the store has but the catalogue does not (a taught model deleted since) serves nothing: its
    versions are kept, and shown as such."""
    names = sorted(set(catalogue.names) | set(store.names()))
    if as_json:
        report = {
            name: {
                "active": store.active_version(name) if name in catalogue else None,
                "labels": list(catalogue[name].label_names) if name in catalogue else None,
                "versions": [{"version": v.version, **_summary(v.meta)} for v in store.versions(name)],
            }
            for name in names
        }
        print(json.dumps(report, sort_keys=True))
        return 0
    for name in names:
        spec = catalogue.get(name)
        active = store.active_version(name) if spec is not None else None
        versions = store.versions(name)
        if spec is None:
            print(f"{name} (deleted: its versions are kept, none serves)")
        elif _is_taught(spec):
            print(f"{name} (taught: {', '.join(spec.label_names)})")
        else:
            print(name)
        if not versions:
            print(f"    (no versions yet: {_how_to_get_one(spec, name)})")
        for version in versions:
            mark = "*" if version.version == active else " "
            facts = _summary(version.meta)
            details = "  ".join(
                part
                for part in (
                    facts.get("created", "?"),
                    facts.get("accuracy_text", ""),
                    facts.get("arch", ""),
                    facts.get("status", ""),
                    facts.get("source", ""),
                )
                if part
            )
            print(f"  {mark} v{version.version:<4} {details}")
    print("(* = serving)")
    return 0


def _is_taught(spec: ModelSpec | None) -> bool:
    from inference.taught import is_taught

    return spec is not None and is_taught(spec)


def _how_to_get_one(spec: ModelSpec | None, name: str) -> str:
    if _is_taught(spec):
        return f"teach it photos captioned with its labels, then `photobot retrain --model {name}`"
    return f"the shipped default comes on first start; or `photobot train {name}`"


def _summary(meta: dict) -> dict:
    """The few facts of a meta.json worth a line: when, how good, what, and whether it was rejected."""
    facts = {"created": meta.get("created", "?"), "preprocessing": meta.get("preprocessing")}
    accuracy = _accuracy(meta)
    if accuracy is not None:
        facts["accuracy"] = accuracy
        facts["accuracy_text"] = f"test accuracy {accuracy:.2%}"
    arch = meta.get("arch") or meta.get("architecture")
    if isinstance(arch, str):
        facts["arch"] = arch
    if meta.get("status"):
        facts["status"] = str(meta["status"])
    source = meta.get("source") or meta.get("seeded_from")
    if source:
        facts["source"] = str(source)
    return facts


def _accuracy(meta: dict) -> float | None:
    for key in ("test_accuracy", "accuracy", "mnist_test_accuracy"):
        if isinstance(meta.get(key), int | float):
            return float(meta[key])
    metrics = meta.get("metrics")
    if isinstance(metrics, dict):
        for key in ("test_accuracy", "accuracy", "mnist_test_accuracy", "test"):
            if isinstance(metrics.get(key), int | float):
                return float(metrics[key])
    return None


def _promote(store, name: str, version: int, *, check: bool) -> int:
    target = store.get(name, version)
    if check:
        _check_loads(target)
    before = store.active_version(name)
    store.promote(name, version)
    print(f"{name}: v{version} is now serving (was {'v' + str(before) if before else 'none'})")
    return 0


def _rollback(store, name: str, version: int | None) -> int:
    before = store.active_version(name)
    target = store.get(name, version) if version is not None else None
    if target is not None:
        _check_loads(target)
    now = store.rollback(name, version)
    was = f"v{before}" if before else "none"
    went = "rolled back to" if before is None or now.version < before else "now serving"  # a newer one
    print(f"{name}: {went} v{now.version} (was {was})")
    return 0


def _check_loads(version) -> None:
    """Load, warm and run the version as the engine would; refuse it with the reason if that fails."""
    from inference.errors import ModelUnavailable
    from inference.loading import load_version
    from inference.preparation import adapter_for, check_fits

    try:
        adapter = adapter_for(version)
        loaded = load_version(version, max_batch=2, padded_sizes=())
        check_fits(loaded, adapter)
    except ModelUnavailable as error:
        raise UserFacingError(f"refusing to serve it: {error}") from None

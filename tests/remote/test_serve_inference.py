"""Inference on Ray Serve against the engine in the bot's process: the same photos, the same answers.

A real local Ray cluster (2 CPUs) runs the application `photobot serve inference` deploys, over a real
model store with real tiny models; the bot's client talks to it over HTTP through Ray Serve's proxy.
"""

from __future__ import annotations

import functools
import io

import pytest
from aiohttp import ClientSession, web
from PIL import Image

from inference.catalogue import DEFAULT_CATALOGUE
from inference.classifier import Classifier
from inference.engine import EngineConfig
from inference.errors import UnsupportedImage
from inference.model_store import ModelStore
from inference.remote.client import RemoteClassifier
from inference.remote.config import RemoteConfig, ServeConfig
from tests.remote.test_client import Front
from tests.support.models import (
    add_version,
    digit_meta,
    digit_photo,
    flower_files,
    flower_meta,
    load_mnist_subset,
    scene_photo,
)

pytestmark = pytest.mark.ray

APP = "photobot-test"
# Every deployment on half a CPU: the ingress and two models fit the session's 2-CPU cluster.
SERVE = ServeConfig(min_replicas=1, max_replicas=1, cpus_per_replica=0.5, max_batch=8)
ENGINE = EngineConfig(pool="thread", workers=1, reload_poll_s=0.5)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory, digit_model_file, tiny_flower_model):
    root = tmp_path_factory.mktemp("serve-models")
    store = ModelStore(root)
    add_version(store, "digits", digit_model_file, digit_meta())
    model_file, ood = tiny_flower_model(tmp_path_factory.mktemp("flowers") / "flowers.keras")
    add_version(store, "flowers", model_file, flower_meta(ood))
    return root


@pytest.fixture(scope="module")
def service(ray_serve, store_root):
    """The application on the session's cluster (its replicas load and convert the models first)."""
    from ray import serve

    from inference.remote.serve_app import build_app

    catalogue = DEFAULT_CATALOGUE.only(["digits", "flowers"])
    app = build_app(
        functools.partial(ModelStore, store_root),
        catalogue,
        ENGINE,
        SERVE,
        gpus=0,
        max_image_bytes=20 * 1024 * 1024,
        max_image_pixels=40_000_000,
    )
    serve.run(app, name=APP, route_prefix="/")
    yield f"http://127.0.0.1:{ray_serve}"
    serve.delete(APP)


def remote(url: str, store_root, **changes) -> RemoteClassifier:
    config = RemoteConfig(url, **{"timeout_s": 60.0, "status_poll_s": 0, **changes})
    catalogue = DEFAULT_CATALOGUE.only(["digits", "flowers"])
    return RemoteClassifier(config, ModelStore(store_root), catalogue=catalogue)


def blank_page() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (235, 232, 225)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos(mnist_path, flowers_path):
    """(photo, mode): digits, flowers, and photos each engine must refuse."""
    _, _, x_test, _ = load_mnist_subset(mnist_path, n_test=6)
    digits = [digit_photo(x_test[i], seed=i) for i in range(6)]
    flowers = [path.read_bytes() for path, _ in flower_files(flowers_path, per_class=1, offset=60)]
    others = [path.read_bytes() for path in sorted((flowers_path.parent / "other_photos").glob("*.jpg"))[:4]]
    refused = [*others, scene_photo(seed=1), scene_photo(seed=2)]
    return [
        *[(p, "digit") for p in digits],
        *[(p, "auto") for p in digits],
        *[(p, "flower") for p in flowers],
        *[(p, "auto") for p in flowers],
        *[(p, "flower") for p in refused],
        *[(p, "auto") for p in refused],
        (blank_page(), "digit"),
        (blank_page(), "auto"),
    ]


async def test_ray_serve_answers_as_the_embedded_engine(service, store_root, photos):
    async with remote(service, store_root) as served:
        from_ray = [await served.classify(photo, mode) for photo, mode in photos]
        statuses = served.models()
    # The embedded default (decode processes, LiteRT) on the same store: the service's replicas have
    # cached each model's LiteRT conversion, so both run the same converted models.
    embedded_config = EngineConfig(reload_poll_s=0)
    async with Classifier(ModelStore(store_root), embedded_config, shipped_dir=None) as classifier:
        await classifier.conversions_done()
        from_here = [await classifier.classify(photo, mode) for photo, mode in photos]
        backends = {name: status.backend for name, status in classifier.models().items()}
    assert {status.backend for status in statuses.values()} == set(backends.values()) == {"litert"}
    for (_, mode), there, here in zip(photos, from_ray, from_here, strict=True):
        assert (there.model, there.version, there.label, there.status) == (
            here.model,
            here.version,
            here.label,
            here.status,
        ), mode
        assert there.confidence == pytest.approx(here.confidence, abs=1e-4)
        assert [label for label, _ in there.top] == [label for label, _ in here.top]
        assert [d.label for d in there.digits] == [d.label for d in here.digits]
    answered = {p.status for p in from_ray}
    assert {"ok", "not_recognized"} <= answered  # the comparison covers answers and refusals
    assert {p.model for p in from_ray if p.status == "ok"} == {"digits", "flowers"}


async def test_a_bad_photo_gets_the_same_error_and_reason_as_in_process(service, store_root):
    async with remote(service, store_root) as served:
        with pytest.raises(UnsupportedImage) as caught:
            await served.classify(b"this is not a photo", "auto")
    assert caught.value.reason == "not_image"


async def test_a_retry_after_a_failed_try_reaches_the_service(service, store_root, photos):
    """A front that fails the first try (a replica dying mid-request answers 500) and passes the next
    on to Ray Serve's proxy: the client's one retry brings the real answer."""
    photo, mode = photos[0]

    async def first_fails(n, request):
        if n == 1:
            return web.Response(status=500, text="replica died")
        async with ClientSession() as session:
            url = f"{service}{request.path_qs}"
            async with session.post(url, data=await request.read()) as answer:
                body = await answer.read()
                return web.Response(status=answer.status, body=body, content_type="application/json")

    async with Front(first_fails) as front, remote(front.url, store_root) as flaky:
        through_retry = await flaky.classify(photo, mode)
    async with remote(service, store_root) as direct:
        straight = await direct.classify(photo, mode)
    assert front.requests == 2
    assert (through_retry.label, through_retry.status) == (straight.label, straight.status)
    assert through_retry.confidence == pytest.approx(straight.confidence, abs=1e-4)


async def test_replicas_follow_a_promotion_and_answers_name_the_new_version(
    service, store_root, tiny_digit_model, tmp_path, photos
):
    store = ModelStore(store_root)
    second = tiny_digit_model(tmp_path / "digits-v2.keras", seed=1)
    add_version(store, "digits", second, digit_meta(note="v2"))
    async with remote(service, store_root) as served:
        version = await served.reload("digits")
        assert version.version == 2
        assert served.models()["digits"].version == 2
        photo, mode = photos[0]
        answer = await served.classify(photo, mode)
    assert (answer.model, answer.version) == ("digits", 2)
    # keep the store as the other tests found it
    store.promote("digits", 1)
    async with remote(service, store_root) as served:
        assert (await served.reload("digits")).version == 1


def test_the_application_is_one_deployment_per_model_behind_the_ingress(service):
    from ray import serve

    status = serve.status().applications[APP]
    assert set(status.deployments) == {"photo-answers", "model-digits", "model-flowers"}
    assert {d.status for d in status.deployments.values()} == {"HEALTHY"}

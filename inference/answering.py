"""How one photo's answer is put together from its prepared inputs and the models' answers.

The chat mode's model alone, or in auto mode the digit reader weighed against the image classifier
(the route the photo's scene suggests, a second look for a page the digit reader doubts), and as a
last resort the other image classifiers (models taught from the chat). The same decisions serve two
engines, so their answers cannot drift apart:

- the in-process `Classifier` (decode processes, a batching thread per model: `inference.classifier`);
- the Ray Serve ingress (`inference.remote.serve_app`), whose models run in deployments of their own.

Each engine says what serves (`_serving`), prepares a photo (`_prepare`: `prepare_photo` in its pool)
and gets the models' answers for the prepared inputs (`_answer`); this class does the rest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from inference import router
from inference.catalogue import Catalogue, ModelKind
from inference.errors import ModelUnavailable
from inference.model_store import ModelVersion
from inference.prediction import Mode, Prediction
from inference.preparation import Adapter, Plan, auto_pair


class Served(Protocol):
    """A model version that answers, as the decisions see it: what it is and how photos are fed to it."""

    @property
    def version(self) -> ModelVersion: ...

    @property
    def adapter(self) -> Adapter: ...


S = TypeVar("S", bound=Served)


class Answering(ABC, Generic[S]):
    """Auto mode's and the chat modes' decisions over an engine's `_serving`, `_prepare` and `_answer`."""

    catalogue: Catalogue

    @abstractmethod
    def _serving(self) -> Mapping[str, S | None]:
        """What serves each model name now (None: nothing), in the order the models were added."""

    @abstractmethod
    async def _prepare(self, data: bytes | Path, target: str | None, servings: dict[str, S]) -> Plan:
        """Decode `data` and build the inputs of `servings` (`target` alone, or auto mode's pair)."""

    @abstractmethod
    async def _answer(
        self, plan: Plan, servings: dict[str, S], deadline: float, timings: dict[str, float]
    ) -> dict[str, Prediction]:
        """Every prepared input answered by the version it was prepared for (`timings` gets queue, model
        and batch)."""

    async def _classify(self, data: bytes | Path, mode: Mode, deadline: float) -> Prediction:
        spec = self.catalogue.for_mode(mode)
        target = spec.name if spec else None
        servings = self._servings_for(target)
        plan = await self._prepare(data, target, servings)
        timings = {"decode": plan.decode_ms, "preprocess": plan.preprocess_ms}
        answers = await self._answer(plan, servings, deadline, timings)
        reader, seer = auto_pair({name: s.adapter for name, s in servings.items()})
        if target is not None and servings[target].adapter.kind == ModelKind.DIGIT_READER:
            prediction = router.doubt_off_paper(answers[target], plan.scene)
        elif target is not None:
            prediction = answers[target]
        elif plan.route == "digit" and reader and answers[reader].status != "ok" and seer:
            # a page-like photo the digit model is not sure of: a sure image answer may replace it
            second = await self._prepare(data, seer, {seer: servings[seer]})
            timings["decode"] += second.decode_ms
            timings["preprocess"] += second.preprocess_ms
            answers.update(await self._answer(second, servings, deadline, timings))
            prediction = router.weigh(answers[reader], answers[seer], plan.scene)
        elif plan.route == "check":  # strokes on a photo that is not a page, or doubtful marks
            prediction = router.weigh(answers.get(reader or ""), answers.get(seer or ""), plan.scene)
        else:
            prediction = answers[(reader if plan.route == "digit" else seer) or ""]
        if (
            target is None
            and prediction.status != "ok"
            and not router.a_digit_question(prediction, plan.scene, reader)
        ):
            prediction = await self._ask_others(data, prediction, deadline, timings)
        if mode == "auto" and prediction.status == "not_recognized":
            prediction = replace(prediction, model=None, version=None)
        return replace(prediction, timings_ms=timings)

    async def _ask_others(
        self, data: bytes | Path, prediction: Prediction, deadline: float, timings: dict[str, float]
    ) -> Prediction:
        """Auto mode's last resort: a photo that the digit reader and the first image classifier are not
        sure of goes to every other serving image classifier (models taught from the chat), and the
        surest `ok` answer wins; none sure leaves the answer (and the refusal) as it was. Only then, so
        a photo they are sure of costs nothing more."""
        paired = set(self._auto_names())
        others = {
            name: serving
            for name, serving in self._serving().items()
            if name not in paired
            and serving is not None
            and serving.adapter.kind == ModelKind.IMAGE_CLASSIFIER
            and name in self.catalogue
        }
        best: Prediction | None = None
        for name, serving in others.items():
            plan = await self._prepare(data, name, {name: serving})
            timings["decode"] += plan.decode_ms
            timings["preprocess"] += plan.preprocess_ms
            answer = (await self._answer(plan, {name: serving}, deadline, timings))[name]
            if answer.status == "ok" and (best is None or answer.confidence > best.confidence):
                best = answer
        return best or prediction

    def _servings_for(self, target: str | None) -> dict[str, S]:
        """The model `target` alone, or in auto mode the digit reader and the image classifier."""
        names = [target] if target is not None else self._auto_names()
        serving = self._serving()
        servings = {}
        for name in names:
            found = serving.get(name)
            if found is not None:
                servings[name] = found
        if not servings:
            what = " or ".join(names)
            raise ModelUnavailable(f"no {what} model is loaded (see `photobot models list`)")
        return servings

    def _auto_names(self) -> list[str]:
        """Auto mode weighs one digit reader against one image classifier: the first of each kind."""
        names = [specs[0].name for kind in ModelKind if (specs := self.catalogue.of_kind(kind))]
        return [name for name in self._serving() if name in names]

"""A background conversion to LiteRT never holds up stopping: SIGTERM to a process whose classifier is
converting ends it at once, with the conversion abandoned and nothing half-written left to trust."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from inference.lite import has_conversion, read_verified
from inference.model_store import ModelStore
from tests.support.models import add_version, digit_meta

# A process like `photobot run`: start the classifier, say whether it converts, close it on SIGTERM.
SERVE_UNTIL_SIGTERM = """
import asyncio, logging, signal, sys
from pathlib import Path
from inference.classifier import Classifier
from inference.engine import EngineConfig
from inference.model_store import ModelStore

async def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    classifier = Classifier(ModelStore(Path(sys.argv[1])), EngineConfig(reload_poll_s=0), shipped_dir=None)
    await classifier.start()
    print("converting" if classifier.converting else "not converting", flush=True)
    await stop.wait()
    await classifier.close()
    print("closed", flush=True)

asyncio.run(main())
"""


async def test_sigterm_during_a_conversion_abandons_it_and_exits(
    tmp_path: Path, digit_model_file: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    add_version(store, "digits", digit_model_file, digit_meta())
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVE_UNTIL_SIGTERM,
        str(store.root),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        while not lines or lines[-1] not in ("converting", "not converting"):
            line = await asyncio.wait_for(process.stdout.readline(), 120)
            assert line, "".join(lines)
            lines.append(line.decode().strip())
        assert lines[-1] == "converting", "\n".join(lines)
        # The converting process imports TensorFlow before it converts (seconds): it is mid-way now.
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = "\n".join(lines) + "\n" + rest.decode()
    assert process.returncode == 0, output
    assert "conversion to LiteRT abandoned" in output and output.rstrip().endswith("closed"), output
    assert "now served by LiteRT" not in output, output
    version = store.get("digits", 1)
    assert not has_conversion(version.model_file)  # the next start converts again
    for cached in version.path.glob("model-*.tflite"):  # none expected; any there must check out
        read_verified(cached)

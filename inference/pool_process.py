"""The start of a decode/preprocess pool process, before it imports numpy or Pillow.

The pool already runs one process per core. OpenBLAS's own threads on top of that (busy-waiting after
each call) made two pool processes fight the model for two cores: on the 2-core development machine,
`photobot bench inference --models digits` went from 77 to 158 photos/s at 8 callers with one native
thread per pool process. The variables are read when numpy's and OpenBLAS's libraries load, so this
module imports nothing heavy and the pool runs `one_native_thread` as its initializer, before the
first photo's work brings numpy in. A value set in the environment is left as it is.
"""

from __future__ import annotations

import os

NATIVE_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_native_thread() -> None:
    for name in NATIVE_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


def native_threads() -> dict[str, str | None]:
    """What this process runs with (the tests ask a pool process)."""
    return {name: os.environ.get(name) for name in NATIVE_THREAD_VARIABLES}

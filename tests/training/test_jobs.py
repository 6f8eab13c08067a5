"""A retrain job stopped by SIGTERM says so, whatever exception the signal surfaced as."""

from __future__ import annotations

import os
import signal
import time

import pytest

from training.jobs import Stop, error_text, sigterm_as_exit


def test_a_sigterm_is_the_jobs_reason_even_when_it_surfaces_as_another_exception() -> None:
    stop = Stop()
    with pytest.raises(ValueError) as raised, sigterm_as_exit(stop):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises SystemExit in here
        except SystemExit as error:  # what Keras' tf.data iterator makes of it
            raise ValueError("An unusually high number of get_next() calls was detected") from error
    assert stop.reason == "stopped by signal SIGTERM"
    assert error_text(raised.value).startswith("ValueError")  # which is why the reason is kept apart


def test_no_signal_no_reason_and_the_handler_is_put_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    stop = Stop()
    with sigterm_as_exit(stop):
        pass
    assert stop.reason is None
    assert signal.getsignal(signal.SIGTERM) == before

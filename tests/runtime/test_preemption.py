"""The stop points inside a unit of work: nothing happens outside an interruptible block or without a request;
inside one, the next point raises."""
from __future__ import annotations

import os
import signal

import pytest

from mst_clipiqa.runtime.preemption import Interrupted, StopSignals, interruptible, interruption_point


def test_a_stop_request_cuts_an_interruptible_block():
    with StopSignals():
        interruption_point()  # no block: nothing
        with interruptible():
            interruption_point()  # no request: nothing
        with pytest.raises(Interrupted) as cut:
            with interruptible():
                os.kill(os.getpid(), signal.SIGTERM)
                interruption_point()
                raise AssertionError("the block went on after the stop request")
        assert cut.value.signum == signal.SIGTERM
        with interruptible(requested=lambda: 0):  # an outer block that asks no one
            interruption_point()
            with interruptible():
                with pytest.raises(Interrupted):
                    interruption_point()
            interruption_point()  # the outer block decides again
    interruption_point()  # no StopSignals: no request


def test_a_block_asks_what_it_is_given_at_every_point():
    """Several processes: each point asks every process (here a stand-in), which may stop this one although it got
    no signal, or not yet although it did."""
    answers = iter([0, 0, signal.SIGINT])
    with StopSignals(), interruptible(requested=lambda: next(answers)):
        interruption_point()
        os.kill(os.getpid(), signal.SIGTERM)
        interruption_point()  # this process got SIGTERM, the processes did not agree yet
        with pytest.raises(Interrupted) as cut:
            interruption_point()
        assert cut.value.signum == signal.SIGINT


def test_a_block_belongs_to_the_thread_that_opened_it():
    from concurrent.futures import ThreadPoolExecutor

    with StopSignals(), interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
        with ThreadPoolExecutor(1) as pool:  # e.g. a scoring thread running a sampler: not cut
            assert pool.submit(interruption_point).result() is None
        with pytest.raises(Interrupted):
            interruption_point()

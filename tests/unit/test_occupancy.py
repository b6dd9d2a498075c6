"""The models run on more threads only while the router decides one request alone."""

from __future__ import annotations

import pytest

from extproc_router.encoder import Sessions
from extproc_router.occupancy import busy, deciding


def test_busy_while_another_decision_is_under_way() -> None:
    sessions = Sessions(solo="two threads", shared="one thread")
    assert not busy()
    with deciding():
        assert not busy()
        assert sessions.pick() == "two threads"
        with deciding():
            assert busy()
            assert sessions.pick() == "one thread"
        assert not busy()
    assert not busy()


def test_a_failed_decision_leaves_the_count() -> None:
    with pytest.raises(RuntimeError), deciding(), deciding():
        raise RuntimeError("stage failed")
    assert not busy()

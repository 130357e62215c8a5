"""``PreEventBuffer.drain_later``: the buffer empties at once, the payload copies come later.

A camera shows that it is recording before it copies and writes 30 s of pre-roll; the copies must
still be of the buffer as it was drained, whatever the buffer does next (fed, cleared, released,
drained again), and match what ``drain`` hands out.
"""

from __future__ import annotations

import pytest

from device.prebuffer import PreEventBuffer, PreEventBufferConfig, PreRoll
from sim.media import VIDEO_PRESETS, MediaSource


def _filled(seconds: float) -> tuple[PreEventBuffer, MediaSource]:
    source = MediaSource(1, "cam-1", VIDEO_PRESETS["720p30"])
    buffer = PreEventBuffer(PreEventBufferConfig(seconds=5.0, max_bytes=8 * 1024 * 1024))
    for packet in source.packets_until(seconds):
        buffer.push(packet, source)
    return buffer, source


def _check(preroll: PreRoll, source: MediaSource, expected: PreRoll) -> None:
    assert [b.packet for b in preroll.packets] == [b.packet for b in expected.packets]
    assert all(source.check_payload(b.packet, b.payload) for b in preroll.packets)
    assert (preroll.requested_s, preroll.delivered_s, preroll.continuous, preroll.limit) == (
        expected.requested_s,
        expected.delivered_s,
        expected.continuous,
        expected.limit,
    )


@pytest.mark.parametrize("then", ["take", "push", "clear", "release", "drain", "drain_later"])
def test_the_copies_are_of_the_buffer_as_drained_whatever_comes_next(then: str) -> None:
    expected = _filled(12.0)[0].drain()
    buffer, source = _filled(12.0)
    terms, take = buffer.drain_later()
    assert len(buffer) == 0  # empty at once
    assert buffer.packets() == []
    assert terms.delivered_s == expected.delivered_s
    if then == "push":  # new packets overwrite the arena from its start
        for packet in source.packets_until(20.0):
            buffer.push(packet, source)
    elif then == "clear":
        buffer.clear()
    elif then == "release":
        assert buffer.release()
    elif then == "drain":
        assert buffer.drain().packets == ()
    elif then == "drain_later":
        assert buffer.drain_later()[1]().packets == ()
    preroll = take()
    _check(preroll, source, expected)
    assert take() is preroll  # made once
    assert len(expected.packets) > 100

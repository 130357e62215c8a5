"""Every (state, input) pair of the SerialLink state machine: a legal transition to the state
the table names, or ``LocalProtocolError`` with the state unchanged (after h2's state tests)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError
from protocol.serial import (
    TRANSITIONS,
    Capability,
    Hello,
    Led,
    LedPattern,
    LinkInput,
    LinkState,
    Role,
    SerialLink,
    encode_frame,
)
from protocol.serial.frames import Frame
from protocol.serial.link_types import next_state
from tests.serial_support import LinkPair, make_link

LED = Led(1, 0, 255, 0, LedPattern.SOLID)


def link_in(state: LinkState) -> SerialLink:
    """A host endpoint brought into ``state`` through the public API only."""
    if state is LinkState.CONNECTED:
        return LinkPair.connected().host
    link = make_link(Role.HOST, 0x1111)
    if state is LinkState.HANDSHAKING:
        link.connect(0.0)
    elif state is LinkState.CLOSED:
        link.close()
    assert link.state is state
    return link


def _hello(boot_id: int, peer_boot_id: int) -> bytes:
    hello = Hello(1, Role.MCU, Capability.BUTTONS, boot_id, "mcu", peer_boot_id)
    return encode_frame(Frame(hello.TYPE, 0, hello.pack()))


CALLS: dict[LinkInput, Callable[[SerialLink], object]] = {
    LinkInput.CONNECT: lambda link: link.connect(0.0),
    LinkInput.RECEIVE_DATA: lambda link: link.receive_data(b"", 0.0),
    LinkInput.SEND: lambda link: link.send(LED, 0.0),
    LinkInput.HANDLE_TIMEOUT: lambda link: link.handle_timeout(0.0),
    LinkInput.CLOSE: lambda link: link.close(),
    # The internal inputs, provoked the only way a shell can: a peer's Hello, a long silence.
    # The connected host's peer is boot 0x2222; its own boot is 0x1111.
    LinkInput.PEER_HELLO: lambda link: link.receive_data(_hello(0x2222, 0x1111), 0.0),
    LinkInput.PEER_REBOOTED: lambda link: link.receive_data(_hello(0x9999, 0), 0.0),
    LinkInput.LINK_TIMEOUT: lambda link: link.handle_timeout(1000.0),
}

INTERNAL = (LinkInput.PEER_HELLO, LinkInput.PEER_REBOOTED, LinkInput.LINK_TIMEOUT)
PAIRS = [(state, event) for state in LinkState for event in LinkInput]


def test_every_input_has_a_call() -> None:
    assert set(CALLS) == set(LinkInput)


@pytest.mark.parametrize(("state", "event"), PAIRS, ids=[f"{s.name}-{e.name}" for s, e in PAIRS])
def test_every_state_input_pair(state: LinkState, event: LinkInput) -> None:
    link = link_in(state)
    expected = TRANSITIONS.get((state, event))
    internal = event in INTERNAL
    if expected is None:
        with pytest.raises(LocalProtocolError):
            next_state(state, event)
    try:
        CALLS[event](link)
    except LocalProtocolError:
        assert expected is None or internal
        assert link.state is state
        return
    if expected is not None:
        assert link.state is expected
    else:
        # An internal input the table forbids cannot happen: the provoking call left the state.
        assert internal
        assert link.state is state


def test_table_shape() -> None:
    assert TRANSITIONS[LinkState.CONNECTED, LinkInput.LINK_TIMEOUT] is LinkState.HANDSHAKING
    assert {s for (s, _) in TRANSITIONS} == set(LinkState)
    assert all(TRANSITIONS[s, LinkInput.CLOSE] is LinkState.CLOSED for s in LinkState)
    assert not any(
        state is LinkState.CLOSED and nxt is not LinkState.CLOSED
        for (state, _), nxt in TRANSITIONS.items()
    )


def test_drain_and_inspect_work_in_every_state() -> None:
    for state in LinkState:
        link = link_in(state)
        link.data_to_send()
        link.next_deadline()
        assert link.counters.frames_sent >= 0


def test_error_message_names_the_call_and_the_state() -> None:
    with pytest.raises(
        LocalProtocolError, match="send is not allowed while the serial link is handshaking"
    ):
        link_in(LinkState.HANDSHAKING).send(LED, 0.0)


API = [
    LinkInput.CONNECT,
    LinkInput.RECEIVE_DATA,
    LinkInput.SEND,
    LinkInput.HANDLE_TIMEOUT,
    LinkInput.CLOSE,
]
# What a call may additionally cause inside itself, possibly several times.
FOLLOW_UPS = {
    LinkInput.RECEIVE_DATA: (LinkInput.PEER_HELLO, LinkInput.PEER_REBOOTED),
    LinkInput.HANDLE_TIMEOUT: (LinkInput.LINK_TIMEOUT,),
}


def reachable(state: LinkState, internal: tuple[LinkInput, ...]) -> set[LinkState]:
    """``state`` and every state the internal inputs can lead it to."""
    found = {state}
    frontier = [state]
    while frontier:
        current = frontier.pop()
        for event in internal:
            nxt = TRANSITIONS.get((current, event))
            if nxt is not None and nxt not in found:
                found.add(nxt)
                frontier.append(nxt)
    return found


@given(st.lists(st.tuples(st.sampled_from(API), st.floats(0.0, 4.0)), max_size=30))
def test_random_call_sequences_follow_the_table(calls: list[tuple[LinkInput, float]]) -> None:
    host, mcu = make_link(Role.HOST, 1), make_link(Role.MCU, 2)
    mcu.connect(0.0)
    now = 0.0
    for event, dt in calls:
        now += dt
        mcu.handle_timeout(now)
        before = host.state
        try:
            if event is LinkInput.RECEIVE_DATA:
                host.receive_data(mcu.data_to_send(), now)
            elif event is LinkInput.HANDLE_TIMEOUT:
                host.handle_timeout(now)
            elif event is LinkInput.SEND:
                host.send(LED, now)
            elif event is LinkInput.CONNECT:
                host.connect(now)
            else:
                host.close()
        except LocalProtocolError:
            assert (before, event) not in TRANSITIONS
            assert host.state is before
            continue
        after = TRANSITIONS[before, event]
        assert host.state in reachable(after, FOLLOW_UPS.get(event, ()))
        if host.state is not LinkState.CLOSED:
            mcu.receive_data(host.data_to_send(), now)

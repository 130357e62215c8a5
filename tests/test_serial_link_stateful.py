"""Reliable delivery over a hostile wire.

A Hypothesis rule-based machine drives two endpoints over a pipe that drops, duplicates,
corrupts and delays frames while the clock jumps: every reliable message must be delivered
exactly once, or reported in a ``DeliveryFailed`` (never twice, never silently lost). Then line
noise at 1% of bytes: valid frames keep arriving and the counters show what was dropped.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass, field

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from protocol.serial import (
    Button,
    ButtonEdge,
    DeliveryFailed,
    Frame,
    FrameDecoder,
    ImuBatch,
    ImuSample,
    Led,
    LedPattern,
    LinkEvent,
    LinkState,
    MessageReceived,
    MessageRejected,
    Role,
    SerialLink,
    SerialMessage,
    VersionMismatch,
    encode_frame,
)
from tests.fuzz import STATEFUL_EXAMPLES
from tests.serial_support import inputs, make_link, outputs

MAX_LATENCY = 0.1
"""A wire does not store bytes: a frame not delivered within this many seconds is lost."""

Key = tuple[int, int]
"""(boot id of the sender, seq): unique even when a rebooted MCU numbers its frames afresh."""


def other(role: Role) -> Role:
    return Role.MCU if role is Role.HOST else Role.HOST


def split_frames(data: bytes) -> list[bytes]:
    """Cut a link's output into frames (delimiter included); lone flushing 0x00s go."""
    return [part + b"\x00" for part in data.split(b"\x00")[:-1] if part]


@dataclass
class Ledger:
    """What was sent reliably, delivered and reported failed, by (sender boot, seq)."""

    sent: dict[Key, SerialMessage] = field(default_factory=dict)
    delivered: Counter[Key] = field(default_factory=Counter)
    failed: set[Key] = field(default_factory=set)
    dead_boots: set[int] = field(default_factory=set)
    """Boots that were power-cycled: what they had in flight died with them."""

    def sent_by(self, link: SerialLink, seq: int, message: SerialMessage) -> None:
        key = (link.hello.boot_id, seq)
        assert key not in self.sent
        self.sent[key] = message

    def record(self, receiver: SerialLink, events: list[LinkEvent]) -> None:
        for happened in events:
            assert not isinstance(happened, MessageRejected | VersionMismatch), happened
            if isinstance(happened, MessageReceived):
                # Data is only accepted from the confirmed peer boot, so this is the sender.
                assert receiver.peer is not None
                key = (receiver.peer.boot_id, happened.seq)
                if key not in self.sent:  # only best-effort messages are not in the ledger
                    assert not happened.message.RELIABLE, happened
                    continue
                assert happened.message == self.sent[key]
                self.delivered[key] += 1
            elif isinstance(happened, DeliveryFailed):
                key = (receiver.hello.boot_id, happened.seq)
                assert self.sent[key] == happened.message
                assert key not in self.failed
                self.failed.add(key)

    def check_settled(self) -> None:
        for key in self.sent:
            if key[0] not in self.dead_boots:
                assert self.delivered[key] == 1 or key in self.failed, key


class LossyWire(RuleBasedStateMachine):
    """Host and MCU over a pipe whose every frame's fate is chosen by Hypothesis."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.links = {
            Role.HOST: make_link(Role.HOST, 0x1111),
            Role.MCU: make_link(Role.MCU, 0x2222),
        }
        self.wires: dict[Role, deque[tuple[float, bytes]]] = {Role.HOST: deque(), Role.MCU: deque()}
        self.ledger = Ledger()
        for link in self.links.values():
            link.connect(0.0)
        self._collect()

    @initialize(handshake=st.sampled_from([True, True, True, False]))
    def start(self, handshake: bool) -> None:
        """Mostly start from a completed handshake; sometimes make it fight the wire too."""
        while handshake and any(self.wires.values()):
            for sender in Role:
                while self.wires[sender]:
                    self._deliver(sender, self.wires[sender].popleft()[1])
        assert not handshake or all(
            link.state is LinkState.CONNECTED for link in self.links.values()
        )

    def _collect(self) -> None:
        for role, link in self.links.items():
            self.wires[role].extend(
                (self.now, frame) for frame in split_frames(link.data_to_send())
            )

    def _deliver(self, sender: Role, data: bytes) -> None:
        receiver = other(sender)
        link = self.links[receiver]
        self.ledger.record(link, link.receive_data(data, self.now))
        self._collect()

    def _tick(self) -> None:
        for link in self.links.values():
            deadline = link.next_deadline()
            if deadline is not None and deadline <= self.now:
                self.ledger.record(link, link.handle_timeout(self.now))
        self._collect()

    def _send(self, role: Role, message: SerialMessage) -> None:
        link = self.links[role]
        self.ledger.sent_by(link, link.send(message, self.now), message)
        self._collect()

    def _can_send(self, role: Role) -> bool:
        link = self.links[role]
        return link.state is LinkState.CONNECTED and link.in_flight < link.config.max_in_flight

    @precondition(lambda self: self._can_send(Role.MCU))
    @rule(message=inputs)
    def mcu_sends(self, message: SerialMessage) -> None:
        self._send(Role.MCU, message)

    @precondition(lambda self: self._can_send(Role.HOST))
    @rule(message=outputs)
    def host_sends(self, message: SerialMessage) -> None:
        self._send(Role.HOST, message)

    @precondition(lambda self: len(self.ledger.dead_boots) < 2)
    @rule()
    def reboot_mcu(self) -> None:
        """Power-cycle the MCU: a new boot id, seq from 0; its bytes already on the wire stay."""
        old = self.links[Role.MCU]
        self.ledger.dead_boots.add(old.hello.boot_id)
        self.links[Role.MCU] = make_link(Role.MCU, old.hello.boot_id + 1)
        self.links[Role.MCU].connect(self.now)
        self._collect()

    @rule(
        sender=st.sampled_from(Role),
        fate=st.sampled_from(["deliver", "deliver", "drop", "duplicate", "corrupt"]),
        where=st.integers(0, 2000),
        xor=st.integers(1, 255),
    )
    def transmit(self, sender: Role, fate: str, where: int, xor: int) -> None:
        if not self.wires[sender]:
            return
        _, frame = self.wires[sender].popleft()
        if fate == "corrupt":
            damaged = bytearray(frame)
            damaged[where % len(damaged)] ^= xor
            frame = bytes(damaged)
        if fate != "drop":
            self._deliver(sender, frame)
        if fate == "duplicate":
            self._deliver(sender, frame)

    @rule(dt=st.floats(0.0, 0.6))
    def advance(self, dt: float) -> None:
        self.now += dt
        for wire in self.wires.values():
            while wire and wire[0][0] < self.now - MAX_LATENCY:
                wire.popleft()
        self._tick()

    @invariant()
    def never_delivered_twice(self) -> None:
        assert all(count <= 1 for count in self.ledger.delivered.values())

    def teardown(self) -> None:
        # Heal the wire and let the retry timers run out; then every message is accounted for.
        for _ in range(1000):
            for sender in Role:
                while self.wires[sender]:
                    self._deliver(sender, self.wires[sender].popleft()[1])
            if not any(link.in_flight for link in self.links.values()):
                break
            deadlines = [link.next_deadline() for link in self.links.values()]
            self.now = max(self.now, min(d for d in deadlines if d is not None))
            self._tick()
        assert not any(link.in_flight for link in self.links.values())
        self.ledger.check_settled()
        # Shown by --hypothesis-show-statistics: evidence the wire's faults were exercised.
        counters = [link.counters for link in self.links.values()]
        sent = len(self.ledger.sent)
        event(f"reliable messages sent: {'0' if not sent else '1-4' if sent < 5 else '5+'}")
        event(f"delivery failures: {bool(self.ledger.failed)}")
        event(f"MCU reboots: {len(self.ledger.dead_boots)}")
        event(f"duplicates suppressed: {any(c.duplicates for c in counters)}")
        event(f"corrupt frames dropped: {any(c.resyncs for c in counters)}")


LossyWire.TestCase.settings = settings(max_examples=STATEFUL_EXAMPLES, stateful_step_count=50)
TestLossyWire = LossyWire.TestCase


# -- line noise at 1% of bytes --------------------------------------------------------------


def add_noise(data: bytes, rng: random.Random, rate: float = 0.01) -> bytes:
    """Insert a random byte (0x00 included) after about ``rate`` of the bytes."""
    out = bytearray()
    for byte in data:
        out.append(byte)
        if rng.random() < rate:
            out.append(rng.randrange(256))
    return bytes(out)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_decoder_under_one_percent_line_noise(seed: int) -> None:
    rng = random.Random(seed)
    sent = [Frame(0x10, seq, rng.randbytes(rng.randrange(0, 40)), 1) for seq in range(2000)]
    noisy = add_noise(b"".join(encode_frame(frame) for frame in sent), rng)
    decoder = FrameDecoder()
    got: list[Frame] = []
    for start in range(0, len(noisy), 37):
        got += decoder.feed(noisy[start : start + 37])
    # Every frame that came through is one that was sent, in order: noise never forges one.
    assert [frame.seq for frame in got] == sorted({frame.seq for frame in got})
    assert all(frame == sent[frame.seq] for frame in got)
    assert len(got) >= 0.6 * len(sent)
    counters = decoder.counters
    assert counters.frames_ok == len(got)
    assert counters.bytes_dropped > 0
    assert counters.resyncs >= len(sent) - len(got)


@pytest.mark.parametrize("seed", [11, 12])
def test_link_under_one_percent_line_noise(seed: int) -> None:
    rng = random.Random(seed)
    host, mcu = make_link(Role.HOST, 0xAAAA), make_link(Role.MCU, 0xBBBB)
    ledger = Ledger()
    links = {Role.HOST: host, Role.MCU: mcu}
    now = 0.0
    host.connect(now)
    mcu.connect(now)
    sample = ImuSample(1, 2, 1000, 3, 4, 5)
    for step in range(3000):  # 30 s in 10 ms ticks
        now = step * 0.01
        if mcu.state is LinkState.CONNECTED and step % 20 == 0 and mcu.in_flight < 32:
            message: SerialMessage = ButtonEdge(step, Button.EVENT, pressed=step % 40 == 0)
            ledger.sent_by(mcu, mcu.send(message, now), message)
            mcu.send(ImuBatch(step, 10, (sample,) * 10), now)
        if host.state is LinkState.CONNECTED and step % 50 == 0 and host.in_flight < 32:
            led = Led(step % 4, 255, 0, 0, LedPattern.SOLID)
            ledger.sent_by(host, host.send(led, now), led)
        for link in links.values():
            deadline = link.next_deadline()
            if deadline is not None and deadline <= now:
                ledger.record(link, link.handle_timeout(now))
        for role, link in links.items():
            peer = links[other(role)]
            ledger.record(peer, peer.receive_data(add_noise(link.data_to_send(), rng), now))
    while host.in_flight or mcu.in_flight:  # quiet wire: let retries finish
        now += 0.05
        for link in links.values():
            ledger.record(link, link.handle_timeout(now))
        for role, link in links.items():
            peer = links[other(role)]
            ledger.record(peer, peer.receive_data(link.data_to_send(), now))
    ledger.check_settled()
    assert sum(ledger.delivered.values()) >= 0.99 * len(ledger.sent)
    assert len(ledger.sent) >= 200
    for link in links.values():
        counters = link.counters
        assert counters.bytes_dropped > 0
        assert counters.crc_errors + counters.cobs_errors > 0
        assert counters.retries > 0
    assert host.counters.duplicates + mcu.counters.duplicates > 0

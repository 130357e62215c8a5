"""SerialLink behaviour over an in-memory pipe with a fake clock: handshake, delivery,
heartbeats, link loss and recovery, peer reboot, retransmission, dedup, naks, version checks."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from protocol.errors import LocalProtocolError
from protocol.serial import (
    SERIAL_PROTOCOL_VERSION,
    Ack,
    Battery,
    Button,
    ButtonEdge,
    Capability,
    Connected,
    DeliveryFailed,
    DisplayText,
    Frame,
    FrameDecoder,
    FrameFlag,
    Heartbeat,
    Hello,
    ImuBatch,
    ImuSample,
    Led,
    LedPattern,
    LinkConfig,
    LinkEvent,
    LinkLost,
    LinkState,
    MessageReceived,
    MessageRejected,
    MessageType,
    Nak,
    NakReason,
    PeerRebooted,
    Role,
    SerialLink,
    SerialMessage,
    VersionMismatch,
    decode_message,
    encode_frame,
)
from protocol.serial.cobs import cobs_encode, crc16
from tests.serial_support import LinkPair, make_link

PRESS = ButtonEdge(t_ms=1000, button=Button.EVENT, pressed=True)
LED = Led(led=0, r=255, g=0, b=0, pattern=LedPattern.BLINK_FAST)


def decoded(data: bytes) -> list[tuple[Frame, SerialMessage]]:
    """Frames and messages in bytes a link wrote."""
    return [(f, decode_message(f.type_code, f.payload)) for f in FrameDecoder().feed(data)]


def sent(data: bytes, kind: type[SerialMessage]) -> list[SerialMessage]:
    return [message for _, message in decoded(data) if isinstance(message, kind)]


def frame_bytes(message: SerialMessage, seq: int, *, reliable: bool = False) -> bytes:
    flags = int(FrameFlag.ACK_REQUESTED) if reliable else 0
    return encode_frame(Frame(message.TYPE, seq, message.pack(), flags))


def received(events: Sequence[LinkEvent]) -> list[SerialMessage]:
    return [event.message for event in events if isinstance(event, MessageReceived)]


def received_with_seq(events: Sequence[LinkEvent]) -> list[tuple[SerialMessage, int]]:
    return [(e.message, e.seq) for e in events if isinstance(e, MessageReceived)]


def state_of(link: SerialLink) -> LinkState:
    """Read the state through a call, so mypy does not keep an earlier narrowing."""
    return link.state


# -- handshake ------------------------------------------------------------------------------


def test_handshake_connects_both_sides_and_goes_quiet() -> None:
    pair = LinkPair.connected()
    assert pair.host.state is pair.mcu.state is LinkState.CONNECTED
    assert [type(e) for e in pair.host_events] == [Connected]
    assert [type(e) for e in pair.mcu_events] == [Connected]
    assert pair.host.peer is not None
    assert pair.host.peer.boot_id == 0x2222
    assert pair.mcu.peer is not None
    assert pair.mcu.peer.role is Role.HOST
    # Each side: its periodic Hello, an answer naming the peer, a confirmation on connecting.
    assert pair.host.counters.frames_sent == pair.mcu.counters.frames_sent == 3
    pair.advance(0.9)
    assert pair.host.data_to_send() == b""


def test_connect_starts_with_a_flushing_delimiter_and_a_hello() -> None:
    link = make_link(Role.HOST, 7)
    link.connect(10.0)
    data = link.data_to_send()
    assert data.startswith(b"\x00")
    (hello,) = sent(data, Hello)
    assert hello == Hello(SERIAL_PROTOCOL_VERSION, Role.HOST, Capability(0), 7, "test-host")
    assert link.next_deadline() == pytest.approx(10.5)


def test_hello_repeats_every_interval_until_the_peer_answers() -> None:
    host, mcu = make_link(Role.HOST, 1), make_link(Role.MCU, 2)
    host.connect(0.0)
    hellos: list[SerialMessage] = []
    now = 0.0
    while now < 2.0:
        hellos += sent(host.data_to_send(), Hello)  # the MCU is still powered off
        now = host.next_deadline() or 0.0
        host.handle_timeout(now)
    assert hellos == [Hello(1, Role.HOST, Capability(0), 1, "test-host")] * 4
    assert host.state is LinkState.HANDSHAKING
    mcu.connect(now)
    pair = LinkPair(host, mcu, now)
    pair.pump()
    assert [type(e) for e in pair.host_events] == [Connected]
    assert [type(e) for e in pair.mcu_events] == [Connected]


def test_connected_side_answers_a_peer_that_lost_the_link() -> None:
    pair = LinkPair.connected()
    # The MCU timed out on its side and is handshaking again: its Hellos name nobody.
    rejoin = Hello(1, Role.MCU, Capability.BUTTONS, 0x2222, "test-mcu")
    assert pair.host.receive_data(frame_bytes(rejoin, 50), 0.2) == []
    (answer,) = sent(pair.host.data_to_send(), Hello)
    assert isinstance(answer, Hello)
    assert answer.peer_boot_id == 0x2222
    assert pair.host.state is LinkState.CONNECTED


def test_a_hello_naming_us_while_connected_is_not_answered() -> None:
    pair = LinkPair.connected()
    again = Hello(1, Role.MCU, Capability.BUTTONS, 0x2222, "test-mcu", peer_boot_id=0x1111)
    assert pair.host.receive_data(frame_bytes(again, 50), 0.2) == []
    assert pair.host.data_to_send() == b""


def test_a_hello_not_naming_us_does_not_connect() -> None:
    host = make_link(Role.HOST, 1)
    host.connect(0.0)
    host.data_to_send()
    assert host.receive_data(frame_bytes(Hello(1, Role.MCU, Capability(0), 2), 0), 0.1) == []
    assert host.state is LinkState.HANDSHAKING
    (answer,) = sent(host.data_to_send(), Hello)
    assert answer == Hello(1, Role.HOST, Capability(0), 1, "test-host", peer_boot_id=2)
    confirm = Hello(1, Role.MCU, Capability(0), 2, peer_boot_id=1)
    (event,) = host.receive_data(frame_bytes(confirm, 1), 0.2)
    assert event == Connected(confirm)
    assert state_of(host) is LinkState.CONNECTED


def test_simultaneous_start_ends_without_hello_ping_pong() -> None:
    pair = LinkPair(make_link(Role.HOST, 1), make_link(Role.MCU, 2))
    pair.host.connect(0.0)
    pair.mcu.connect(0.0)
    pair.pump()  # raises if the sides never go quiet
    assert pair.host.counters.frames_sent == 3
    assert pair.mcu.counters.frames_sent == 3


def test_two_hosts_never_connect() -> None:
    a, b = make_link(Role.HOST, 1), make_link(Role.HOST, 2)
    a.connect(0.0)
    b.connect(0.0)
    events = a.receive_data(b.data_to_send(), 0.0)
    assert a.state is LinkState.HANDSHAKING
    (event,) = events
    assert isinstance(event, MessageRejected)
    assert "HOST too" in event.reason


# -- versions -------------------------------------------------------------------------------


def _v2_frame() -> bytes:
    body = bytes([2, MessageType.HELLO, 0, 0, 0]) + b"future"
    return cobs_encode(body + crc16(body).to_bytes(2, "big")) + b"\x00"


def test_peer_on_another_frame_version_is_reported_once_clearly() -> None:
    host = make_link(Role.HOST, 1)
    host.connect(0.0)
    (mismatch,) = host.receive_data(_v2_frame(), 0.1)
    assert mismatch == VersionMismatch(peer_version=2, local_version=1)
    assert isinstance(mismatch, VersionMismatch)
    assert "wrong protocol version" in mismatch.description
    assert host.receive_data(_v2_frame() * 3, 0.6) == []
    assert host.counters.bad_version == 4
    assert host.state is LinkState.HANDSHAKING


def test_hello_announcing_another_version_is_a_mismatch_too() -> None:
    host = make_link(Role.HOST, 1)
    host.connect(0.0)
    hello = Hello(3, Role.MCU, Capability(0), 5, "new")
    assert host.receive_data(frame_bytes(hello, 0), 0.0) == [VersionMismatch(3)]
    assert host.state is LinkState.HANDSHAKING


# -- delivery -------------------------------------------------------------------------------


def test_reliable_messages_are_delivered_and_acknowledged_both_ways() -> None:
    pair = LinkPair.connected()
    seq = pair.mcu.send(PRESS, pair.now)
    pair.host.send(LED, pair.now)
    assert pair.mcu.in_flight == pair.host.in_flight == 1
    pair.pump()
    assert MessageReceived(PRESS, seq) in pair.host_events
    assert received(pair.mcu_events) == [LED]
    assert pair.mcu.in_flight == pair.host.in_flight == 0


def test_best_effort_messages_are_not_tracked_or_acked() -> None:
    pair = LinkPair.connected()
    batch = ImuBatch(5, 10, (ImuSample(0, 0, 1000, 0, 0, 0),))
    pair.mcu.send(batch, pair.now)
    assert pair.mcu.in_flight == 0
    data = pair.mcu.data_to_send()
    pair.host_events += pair.host.receive_data(data, pair.now)
    assert received(pair.host_events) == [batch]
    assert sent(pair.host.data_to_send(), Ack) == []


def test_reliability_can_be_chosen_per_send() -> None:
    pair = LinkPair.connected()
    pair.mcu.send(Battery(0, 9, 3300, charging=False), pair.now, reliable=True)
    pair.mcu.send(PRESS, pair.now, reliable=False)
    assert pair.mcu.in_flight == 1


def test_retransmits_after_ack_timeout_and_delivers_once() -> None:
    pair = LinkPair.connected()
    seq = pair.mcu.send(PRESS, pair.now)
    pair.mcu.data_to_send()  # lost on the wire
    pair.advance(0.25)
    assert pair.mcu.counters.retries == 1
    assert received(pair.host_events) == [PRESS]
    assert pair.mcu.in_flight == 0
    assert MessageReceived(PRESS, seq) in pair.host_events


def test_duplicate_after_a_lost_ack_is_acked_but_not_delivered_again() -> None:
    pair = LinkPair.connected()
    pair.mcu.send(PRESS, pair.now)
    pair.host_events += pair.host.receive_data(pair.mcu.data_to_send(), pair.now)
    pair.host.data_to_send()  # the ack is lost
    pair.advance(0.3)
    assert received(pair.host_events) == [PRESS]
    assert pair.host.counters.duplicates == 1
    assert pair.mcu.in_flight == 0


def test_delivery_fails_after_max_retries() -> None:
    pair = LinkPair.connected()
    seq = pair.mcu.send(PRESS, pair.now)
    transmissions = 0
    events: list[LinkEvent] = []
    while not events:
        transmissions += len(sent(pair.mcu.data_to_send(), ButtonEdge))  # all lost
        pair.now = pair.mcu.next_deadline() or pair.now
        events += pair.mcu.handle_timeout(pair.now)
    assert transmissions == 1 + LinkConfig().max_retries
    assert events == [DeliveryFailed(PRESS, seq, "no ack after 6 transmissions")]
    assert pair.mcu.counters.delivery_failures == 1
    assert pair.mcu.counters.retries == 5
    assert pair.now == pytest.approx(0.25 * 6)
    assert pair.mcu.state is LinkState.CONNECTED


def test_a_late_ack_after_failure_is_ignored() -> None:
    pair = LinkPair.connected()
    link = pair.mcu
    seq = link.send(PRESS, 0.0)
    events = link.close()
    assert events == [DeliveryFailed(PRESS, seq, "link closed")]
    assert link.next_deadline() is None
    with pytest.raises(LocalProtocolError):
        link.receive_data(frame_bytes(Ack(seq), 1), 0.1)


# -- naks -----------------------------------------------------------------------------------


def test_frame_of_the_wrong_direction_is_rejected_with_a_nak() -> None:
    pair = LinkPair.connected()
    events = pair.host.receive_data(frame_bytes(LED, 40, reliable=True), 0.0)
    assert [type(e) for e in events] == [MessageRejected]
    assert sent(pair.host.data_to_send(), Nak) == [Nak(40, NakReason.UNKNOWN_TYPE)]
    assert pair.host.counters.naks_sent == 1


@pytest.mark.parametrize(
    ("type_code", "payload", "reason"),
    [(0x7F, b"", NakReason.UNKNOWN_TYPE), (MessageType.HOLSTER, b"\x00", NakReason.BAD_PAYLOAD)],
)
def test_undecodable_reliable_frame_is_nakked(
    type_code: int, payload: bytes, reason: NakReason
) -> None:
    pair = LinkPair.connected()
    raw = encode_frame(Frame(type_code, 77, payload, int(FrameFlag.ACK_REQUESTED)))
    (event,) = pair.host.receive_data(raw, 0.0)
    assert isinstance(event, MessageRejected)
    assert event.seq == 77
    assert sent(pair.host.data_to_send(), Nak) == [Nak(77, reason)]
    assert pair.host.counters.rejected == 1


def test_nak_for_a_bad_message_fails_delivery_at_once() -> None:
    pair = LinkPair.connected()
    seq = pair.host.send(DisplayText("hi"), 0.0)
    pair.host.data_to_send()
    (event,) = pair.host.receive_data(frame_bytes(Nak(seq, NakReason.BAD_PAYLOAD), 3), 0.01)
    assert event == DeliveryFailed(DisplayText("hi"), seq, "peer refused it: BAD_PAYLOAD")
    assert pair.host.in_flight == 0
    assert pair.host.counters.naks == 1


def test_nak_crc_resends_now_and_busy_waits_for_the_timer() -> None:
    pair = LinkPair.connected()
    seq = pair.host.send(LED, 0.0)
    pair.host.data_to_send()
    pair.host.receive_data(frame_bytes(Nak(seq, NakReason.BUSY), 3), 0.01)
    assert pair.host.data_to_send() == b""
    pair.host.receive_data(frame_bytes(Nak(seq, NakReason.CRC), 4), 0.02)
    assert sent(pair.host.data_to_send(), Led) == [LED]
    assert pair.host.counters.retries == 1


def test_frames_before_the_handshake_are_ignored_unacked() -> None:
    host = make_link(Role.HOST, 1)
    host.connect(0.0)
    host.data_to_send()
    assert host.receive_data(frame_bytes(PRESS, 5, reliable=True), 0.1) == []
    assert host.data_to_send() == b""
    assert host.counters.ignored == 1


# -- time: heartbeats, link loss, recovery, reboot ------------------------------------------


def test_heartbeats_every_interval_with_uptime() -> None:
    pair = LinkPair.connected()
    assert pair.host.next_deadline() == pytest.approx(1.0)
    beats: list[SerialMessage] = []
    for step in range(1, 11):
        pair.now = float(step)
        pair.host.handle_timeout(pair.now)
        beats += sent(pair.host.data_to_send(), Heartbeat)
        pair.host.receive_data(frame_bytes(Heartbeat(step * 1000), 100 + step), pair.now)
    assert beats == [Heartbeat(step * 1000) for step in range(1, 11)]
    assert pair.host.state is LinkState.CONNECTED


def test_heartbeats_keep_an_idle_link_up() -> None:
    pair = LinkPair.connected()
    pair.advance(60.0)
    assert pair.host.state is pair.mcu.state is LinkState.CONNECTED
    assert [type(e) for e in pair.host_events] == [Connected]
    assert 60 <= pair.host.counters.frames_sent <= 64


def test_link_lost_after_timeout_then_recovered() -> None:
    pair = LinkPair.connected()
    seq = pair.host.send(LED, 0.0)
    host_events: list[LinkEvent] = []
    now = 0.0
    while pair.host.state is LinkState.CONNECTED:  # the MCU is unplugged: nothing arrives
        pair.host.data_to_send()
        now = pair.host.next_deadline() or now
        host_events += pair.host.handle_timeout(now)
    assert now == pytest.approx(3.0)
    assert [type(e) for e in host_events] == [DeliveryFailed, LinkLost]
    assert host_events[0] == DeliveryFailed(LED, seq, "no ack after 6 transmissions")
    assert pair.host.peer is None
    assert pair.host.next_deadline() == pytest.approx(3.5)
    # Plugged back in: the host's Hellos reach the MCU, which answers, and both carry on.
    pair.mcu.data_to_send()
    pair.now = now
    pair.host_events.clear()
    pair.advance(1.0)
    assert state_of(pair.host) is state_of(pair.mcu) is LinkState.CONNECTED
    assert [type(e) for e in pair.host_events] == [Connected]
    pair.mcu.send(PRESS, pair.now)
    pair.pump()
    assert received(pair.host_events) == [PRESS]


def test_link_lost_fails_pending_frames() -> None:
    pair = LinkPair.connected(LinkConfig(max_retries=20, dedup_window_s=10.0))
    seq = pair.host.send(LED, 0.0)
    events: list[LinkEvent] = []
    now = 0.0
    while pair.host.state is LinkState.CONNECTED:
        pair.host.data_to_send()
        now = pair.host.next_deadline() or now
        events += pair.host.handle_timeout(now)
    assert [type(e) for e in events] == [LinkLost, DeliveryFailed]
    assert events[1] == DeliveryFailed(LED, seq, "link lost")
    lost = events[0]
    assert isinstance(lost, LinkLost)
    assert "3.000 s" in lost.reason


def test_peer_reboot_is_detected_and_dedup_state_reset() -> None:
    pair = LinkPair.connected()
    first = pair.mcu.send(PRESS, 0.0)
    pair.pump()
    pair.mcu = make_link(Role.MCU, 0x3333)  # the MCU rebooted: new boot id, seq from 0
    pair.mcu.connect(0.1)
    pair.now = 0.1
    pair.pump()
    reboot = [e for e in pair.host_events if isinstance(e, PeerRebooted)]
    assert reboot == [PeerRebooted(old_boot_id=0x2222, new_boot_id=0x3333)]
    assert isinstance(pair.host_events[-1], Connected)
    assert pair.host.peer is not None
    assert pair.host.peer.boot_id == 0x3333
    assert pair.mcu.state is LinkState.CONNECTED
    # The new boot reuses seq numbers: they must not be taken for duplicates.
    again = None
    while again != first:
        again = pair.mcu.send(PRESS, pair.now)
        pair.pump()
    assert received_with_seq(pair.host_events)[-1] == (PRESS, first)
    assert pair.host.counters.duplicates == 0


def test_reboot_fails_frames_in_flight_and_handshakes_again() -> None:
    pair = LinkPair.connected()
    seq = pair.host.send(LED, 0.0)
    pair.host.data_to_send()  # the MCU reset before it could read it
    pair.mcu = make_link(Role.MCU, 0x3333)
    pair.mcu.connect(0.05)
    events = pair.host.receive_data(pair.mcu.data_to_send(), 0.05)
    assert events == [
        PeerRebooted(0x2222, 0x3333),
        DeliveryFailed(LED, seq, "peer rebooted"),
    ]
    assert pair.host.state is LinkState.HANDSHAKING
    assert pair.host.peer is None
    pair.now = 0.05
    pair.pump()
    assert state_of(pair.host) is LinkState.CONNECTED
    assert isinstance(pair.host_events[-1], Connected)


def test_reboot_during_an_outage_is_reported_on_reconnect() -> None:
    pair = LinkPair.connected()
    pair.advance(0.0)
    now = 0.0
    while pair.host.state is LinkState.CONNECTED:
        pair.host.data_to_send()
        now = pair.host.next_deadline() or now
        pair.host.handle_timeout(now)
    pair.mcu = make_link(Role.MCU, 0x4444)
    pair.mcu.connect(now)
    pair.now = now
    pair.host_events.clear()
    pair.pump()
    assert [type(e) for e in pair.host_events] == [PeerRebooted, Connected]


# -- limits and misuse ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "message"),
    [
        (Role.MCU, Hello(1, Role.MCU, Capability(0), 9)),
        (Role.MCU, Ack(1)),
        (Role.MCU, Heartbeat(1)),
        (Role.MCU, Nak(1, NakReason.BUSY)),
        (Role.MCU, LED),
        (Role.HOST, PRESS),
    ],
)
def test_send_refuses_link_messages_and_the_wrong_direction(
    role: Role, message: SerialMessage
) -> None:
    pair = LinkPair.connected()
    link = pair.mcu if role is Role.MCU else pair.host
    with pytest.raises(LocalProtocolError):
        link.send(message, 0.0)
    assert link.data_to_send() == b""


def test_send_refuses_more_than_max_in_flight() -> None:
    pair = LinkPair.connected(LinkConfig(max_in_flight=3))
    for _ in range(3):
        pair.mcu.send(PRESS, 0.0)
    with pytest.raises(LocalProtocolError, match="await an ack"):
        pair.mcu.send(PRESS, 0.0)
    pair.mcu.send(Battery(0, 50, 3700, charging=True), 0.0)  # best-effort still goes


def test_seq_wraps_and_skips_seqs_still_in_flight() -> None:
    pair = LinkPair.connected()
    pending = pair.mcu.send(PRESS, 0.0)
    battery = Battery(0, 50, 3700, charging=True)
    seqs = {pair.mcu.send(battery, 0.0) for _ in range(0xFFFF)}
    pair.mcu.data_to_send()
    assert pending not in seqs
    assert len(seqs) == 0xFFFF
    assert pair.mcu.send(battery, 0.0) == (pending + 1) & 0xFFFF


@pytest.mark.parametrize(
    "kwargs",
    [
        {"heartbeat_interval_s": 0},
        {"heartbeat_interval_s": float("nan")},
        {"link_timeout_s": -1.0},
        {"ack_timeout_s": "0.25"},
        {"max_retries": -1},
        {"max_retries": 2.5},
        {"hello_interval_s": float("inf")},
        {"dedup_capacity": 0},
        {"max_in_flight": 0},
        {"max_in_flight": 40_000},
        {"link_timeout_s": 1.0},
        {"dedup_window_s": 1.5},
        {"max_retries": True},
    ],
)
def test_config_is_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        LinkConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args",
    [
        (Role.HOST, Capability(0), 0, ""),
        (Role.HOST, Capability(0), 1, "x" * 33),
        (3, Capability(0), 1, ""),
    ],
)
def test_link_identity_is_validated(args: tuple[object, ...]) -> None:
    with pytest.raises(LocalProtocolError):
        SerialLink(*args)  # type: ignore[arg-type]

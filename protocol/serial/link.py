"""``SerialLink``: one end of the serial bench link, as a sans-IO state machine.

The shell (asyncio, a thread, a test) owns the port and the clock. It calls ``connect(now)``
once, passes every chunk read from the port to ``receive_data(data, now)``, writes whatever
``data_to_send()`` returns, and calls ``handle_timeout(now)`` when ``next_deadline()`` passes.
Nothing here reads a clock or touches a port, so the host and the fake microcontroller are the
same class with a different ``role``, joined in tests by a list of bytes.
"""

from __future__ import annotations

from dataclasses import replace

from protocol.errors import DecodeError, LocalProtocolError
from protocol.serial._base import SerialMessage
from protocol.serial.control import Ack, Capability, Heartbeat, Hello, Nak, NakReason, Role
from protocol.serial.events import (
    Connected,
    DeliveryFailed,
    LinkEvent,
    LinkLost,
    MessageReceived,
    MessageRejected,
    PeerRebooted,
    VersionMismatch,
)
from protocol.serial.frames import (
    SERIAL_PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    FrameFlag,
    encode_frame,
)
from protocol.serial.link_types import (
    LinkConfig,
    LinkCounters,
    LinkInput,
    LinkState,
    LinkStats,
    next_state,
)
from protocol.serial.messages import LINK_MESSAGES, MESSAGE_CLASSES, accepts, decode_message
from protocol.serial.reliability import DedupWindow, PendingFrame, RetransmitQueue


class SerialLink:
    """One endpoint of the serial bench link (host or MCU side).

    ``now`` is any monotonic time in seconds, from the same clock in every call. Calls not
    allowed in the current state (see ``link_types.TRANSITIONS``) raise ``LocalProtocolError``;
    ``data_to_send``, ``next_deadline``, ``state`` and ``counters`` work in every state.
    """

    def __init__(
        self,
        role: Role,
        capabilities: Capability,
        boot_id: int,
        firmware: str = "",
        config: LinkConfig | None = None,
    ) -> None:
        self.config = config if config is not None else LinkConfig()
        # Built once: this validates role, capabilities, boot_id and firmware up front.
        self.hello = Hello(SERIAL_PROTOCOL_VERSION, role, capabilities, boot_id, firmware)
        self._state = LinkState.DISCONNECTED
        self._decoder = FrameDecoder()
        self._out = bytearray()
        self._tx_seq = 0
        self._epoch = 0.0
        self._peer: Hello | None = None
        self._last_peer_boot: int | None = None
        self._dedup = DedupWindow(self.config.dedup_window_s, self.config.dedup_capacity)
        self._pending = RetransmitQueue()
        self._next_hello: float | None = None
        self._next_heartbeat: float | None = None
        self._last_rx = 0.0
        self._reported_version: int | None = None
        self._stats = LinkStats()

    @property
    def state(self) -> LinkState:
        """The current state."""
        return self._state

    @property
    def role(self) -> Role:
        """This side's role."""
        return self.hello.role

    @property
    def peer(self) -> Hello | None:
        """The connected peer's Hello, or None when not connected."""
        return self._peer if self._state is LinkState.CONNECTED else None

    @property
    def in_flight(self) -> int:
        """Reliable frames sent and not yet acknowledged or given up."""
        return len(self._pending)

    @property
    def counters(self) -> LinkCounters:
        """A snapshot of this endpoint's counters, the frame decoder's included."""
        decoded = self._decoder.counters
        stats = self._stats
        return LinkCounters(
            frames_sent=stats.frames_sent,
            frames_received=stats.frames_received,
            crc_errors=decoded.crc_errors,
            cobs_errors=decoded.cobs_errors,
            bytes_dropped=decoded.bytes_dropped,
            resyncs=decoded.resyncs,
            retries=stats.retries,
            duplicates=stats.duplicates,
            naks=stats.naks,
            naks_sent=stats.naks_sent,
            bad_version=decoded.bad_version + stats.hello_version_errors,
            rejected=stats.rejected,
            ignored=stats.ignored,
            delivery_failures=stats.delivery_failures,
        )

    # -- public calls -----------------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Start the handshake: the first Hello is queued at once."""
        self._apply(LinkInput.CONNECT)
        self._epoch = now
        # A lone delimiter first ends whatever half-frame the peer's receiver holds.
        self._out += b"\x00"
        self._hello_due(now)

    def receive_data(self, data: bytes, now: float) -> list[LinkEvent]:
        """Consume bytes read from the port; return what they meant, in order."""
        self._apply(LinkInput.RECEIVE_DATA)
        events: list[LinkEvent] = []
        bad_versions = self._decoder.counters.bad_version
        for frame in self._decoder.feed(data):
            self._on_frame(frame, now, events)
        version = self._decoder.last_bad_version
        if self._decoder.counters.bad_version != bad_versions and version is not None:
            self._on_wrong_version(version, events)
        return events

    def send(self, message: SerialMessage, now: float, *, reliable: bool | None = None) -> int:
        """Queue ``message``; return its seq. ``reliable`` overrides ``message.RELIABLE``.

        Raises ``LocalProtocolError`` unless connected, for link-control messages, for a message
        the peer's role does not accept, and when ``config.max_in_flight`` reliable frames
        already await their ack.
        """
        self._apply(LinkInput.SEND)
        self._check_sendable(message)
        reliable = message.RELIABLE if reliable is None else reliable
        if reliable and len(self._pending) >= self.config.max_in_flight:
            raise LocalProtocolError(
                f"{self.config.max_in_flight} reliable frames already await an ack"
            )
        seq, data = self._emit(message, ack_requested=reliable)
        if reliable:
            deadline = now + self.config.ack_timeout_s
            self._pending.add(PendingFrame(seq, message, data, 1, deadline))
        return seq

    def handle_timeout(self, now: float) -> list[LinkEvent]:
        """Run every timer that has expired by ``now`` (calling early is harmless)."""
        self._apply(LinkInput.HANDLE_TIMEOUT)
        events: list[LinkEvent] = []
        if self._state is LinkState.HANDSHAKING:
            if self._next_hello is not None and now >= self._next_hello:
                self._hello_due(now)
            return events
        if now >= self._last_rx + self.config.link_timeout_s:
            self._lose_link(now, events)
            return events
        self._retransmit_due(now, events)
        if self._next_heartbeat is not None and now >= self._next_heartbeat:
            self._emit(Heartbeat(self._uptime_ms(now)), ack_requested=False)
            self._next_heartbeat = now + self.config.heartbeat_interval_s
        return events

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` must next be called; None if no timer is armed."""
        if self._state is LinkState.HANDSHAKING:
            return self._next_hello
        if self._state is not LinkState.CONNECTED:
            return None
        deadlines = [self._last_rx + self.config.link_timeout_s, self._pending.next_deadline()]
        deadlines.append(self._next_heartbeat)
        return min(deadline for deadline in deadlines if deadline is not None)

    def data_to_send(self) -> bytes:
        """Return and forget the bytes queued for the port."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def close(self) -> list[LinkEvent]:
        """Stop for good. Reliable frames still in flight are reported as ``DeliveryFailed``."""
        self._apply(LinkInput.CLOSE)
        events: list[LinkEvent] = []
        self._fail_all_pending("link closed", events)
        self._next_hello = self._next_heartbeat = None
        return events

    # -- receiving --------------------------------------------------------------------------

    def _on_frame(self, frame: Frame, now: float, events: list[LinkEvent]) -> None:
        self._stats.frames_received += 1
        self._last_rx = now
        try:
            message = decode_message(frame.type_code, frame.payload)
        except DecodeError as error:
            known = frame.type_code in MESSAGE_CLASSES
            nak = NakReason.BAD_PAYLOAD if known else NakReason.UNKNOWN_TYPE
            self._reject(frame, str(error), nak, events)
            return
        if isinstance(message, Hello):
            self._on_hello(message, frame, now, events)
        elif self._state is not LinkState.CONNECTED:
            # The peer's frames mean nothing before we know its boot; unacked, they are resent.
            self._stats.ignored += 1
        elif not accepts(self.role, type(message)):
            reason = f"{type(message).__name__} is not accepted by the {self.role.name} side"
            self._reject(frame, reason, NakReason.UNKNOWN_TYPE, events)
        else:
            self._on_message(message, frame, now, events)

    def _on_message(
        self, message: SerialMessage, frame: Frame, now: float, events: list[LinkEvent]
    ) -> None:
        if isinstance(message, Ack):
            self._pending.pop(message.seq)
            return
        if isinstance(message, Nak):
            self._on_nak(message, now, events)
            return
        if frame.ack_requested:
            self._emit(Ack(frame.seq), ack_requested=False)
            if self._dedup.is_duplicate(frame.seq, now):
                self._stats.duplicates += 1
                return
        if not isinstance(message, Heartbeat):
            events.append(MessageReceived(message, frame.seq))

    def _on_hello(self, hello: Hello, frame: Frame, now: float, events: list[LinkEvent]) -> None:
        if hello.protocol_version != SERIAL_PROTOCOL_VERSION:
            self._stats.hello_version_errors += 1
            self._on_wrong_version(hello.protocol_version, events)
            return
        if hello.role is self.role:
            reason = f"peer says it is a {hello.role.name} too: one side must be the other role"
            self._reject(frame, reason, None, events)
            return
        if hello.boot_id != self._last_peer_boot:
            self._on_new_peer_boot(hello.boot_id, now, events)
        named = hello.peer_boot_id == self.hello.boot_id
        if named and self._state is LinkState.HANDSHAKING:
            # The peer has our Hello and we have its: confirmed both ways.
            self._apply(LinkInput.PEER_HELLO)
            self._attach(hello, now, events)
            self._send_hello(hello.boot_id)
        elif not named:
            # The peer has not heard this boot of ours yet: answer, naming it. A Hello that
            # names us is answered only on the way into CONNECTED, so Hellos cannot ping-pong.
            self._send_hello(hello.boot_id)
        if self._state is LinkState.CONNECTED:
            self._peer = hello

    def _on_new_peer_boot(self, boot_id: int, now: float, events: list[LinkEvent]) -> None:
        previous, self._last_peer_boot = self._last_peer_boot, boot_id
        # Its seq numbers start afresh: remembered ones would swallow new messages as duplicates.
        self._dedup.reset()
        if previous is None:
            return
        events.append(PeerRebooted(previous, boot_id))
        if self._state is LinkState.CONNECTED:
            self._apply(LinkInput.PEER_REBOOTED)
            self._fail_all_pending("peer rebooted", events)
            self._leave_connected(now)

    def _attach(self, hello: Hello, now: float, events: list[LinkEvent]) -> None:
        self._peer = hello
        self._reported_version = None
        self._next_hello = None
        self._next_heartbeat = now + self.config.heartbeat_interval_s
        events.append(Connected(hello))

    def _on_nak(self, nak: Nak, now: float, events: list[LinkEvent]) -> None:
        self._stats.naks += 1
        entry = self._pending.get(nak.seq)
        if entry is None:
            return
        if nak.reason in (NakReason.UNKNOWN_TYPE, NakReason.BAD_PAYLOAD):
            # Resending the same bytes cannot help: give up now rather than after the retries.
            self._pending.pop(nak.seq)
            self._fail(entry, f"peer refused it: {nak.reason.name}", events)
        elif nak.reason is NakReason.CRC:
            entry.deadline = now
            self._retransmit_due(now, events)
        # BUSY: the ack timer resends it, pacing a busy receiver.

    def _on_wrong_version(self, version: int, events: list[LinkEvent]) -> None:
        if version != self._reported_version:
            self._reported_version = version
            events.append(VersionMismatch(version))

    def _reject(
        self, frame: Frame, reason: str, nak: NakReason | None, events: list[LinkEvent]
    ) -> None:
        self._stats.rejected += 1
        events.append(MessageRejected(frame.type_code, frame.seq, reason))
        if nak is not None and frame.ack_requested:
            self._stats.naks_sent += 1
            self._emit(Nak(frame.seq, nak), ack_requested=False)

    # -- timers and sending -----------------------------------------------------------------

    def _lose_link(self, now: float, events: list[LinkEvent]) -> None:
        self._apply(LinkInput.LINK_TIMEOUT)
        silence = now - self._last_rx
        events.append(LinkLost(f"no valid frame for {silence:.3f} s"))
        self._fail_all_pending("link lost", events)
        self._leave_connected(now)
        self._hello_due(now)

    def _leave_connected(self, now: float) -> None:
        self._peer = None
        self._next_heartbeat = None
        self._next_hello = now + self.config.hello_interval_s

    def _retransmit_due(self, now: float, events: list[LinkEvent]) -> None:
        for entry in self._pending.due(now):
            if entry.transmissions > self.config.max_retries:
                self._pending.pop(entry.seq)
                self._fail(entry, f"no ack after {entry.transmissions} transmissions", events)
                continue
            self._out += entry.data
            entry.transmissions += 1
            entry.deadline = now + self.config.ack_timeout_s
            self._stats.retries += 1
            self._stats.frames_sent += 1

    def _fail_all_pending(self, reason: str, events: list[LinkEvent]) -> None:
        for entry in self._pending.clear():
            self._fail(entry, reason, events)

    def _fail(self, entry: PendingFrame, reason: str, events: list[LinkEvent]) -> None:
        self._stats.delivery_failures += 1
        events.append(DeliveryFailed(entry.message, entry.seq, reason))

    def _hello_due(self, now: float) -> None:
        # Periodic Hellos name nobody: any live peer, in whatever state, must answer them.
        self._send_hello(0)
        self._next_hello = now + self.config.hello_interval_s

    def _send_hello(self, peer_boot_id: int) -> None:
        self._emit(replace(self.hello, peer_boot_id=peer_boot_id), ack_requested=False)

    def _check_sendable(self, message: SerialMessage) -> None:
        if not isinstance(message, SerialMessage):
            raise LocalProtocolError(f"expected a serial message, got {message!r}")
        name = type(message).__name__
        if isinstance(message, LINK_MESSAGES):
            raise LocalProtocolError(f"{name} is sent by the link itself, not by send()")
        peer_role = Role.MCU if self.role is Role.HOST else Role.HOST
        if not accepts(peer_role, type(message)):
            raise LocalProtocolError(
                f"{name} goes {message.DIRECTION.value}, so the {self.role.name} cannot send it"
            )

    def _emit(self, message: SerialMessage, *, ack_requested: bool) -> tuple[int, bytes]:
        seq = self._next_seq()
        flags = FrameFlag.ACK_REQUESTED if ack_requested else 0
        data = encode_frame(Frame(message.TYPE, seq, message.pack(), int(flags)))
        self._out += data
        self._stats.frames_sent += 1
        return seq, data

    def _next_seq(self) -> int:
        # Skip seqs still in flight after a wrap-around, so an ack can never match two frames.
        seq = self._tx_seq
        while seq in self._pending:
            seq = (seq + 1) & 0xFFFF
        self._tx_seq = (seq + 1) & 0xFFFF
        return seq

    def _uptime_ms(self, now: float) -> int:
        return int((now - self._epoch) * 1000) & 0xFFFFFFFF

    def _apply(self, event: LinkInput) -> None:
        self._state = next_state(self._state, event)

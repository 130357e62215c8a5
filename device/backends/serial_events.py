"""The serial backend's inbound side: the link's events in, backend events out, in order.

``LinkEvents`` turns what ``protocol.serial.SerialLink`` reports into what ``SerialBackend.events``
yields: inputs (through ``serial_delivery.InputHold``, which holds them after a loss and releases
them in ``t_ms`` order), ``LinkUpEvent`` after a handshake (then every kept output state is sent
again) and ``LinkDownEvent`` after a loss, a reboot or an unplug (the inputs of the link that went
away first). It also settles a pending ``open``: the first handshake, or the reason it failed.

``horizon_lag_s`` says how far before the present the camera's world must stay: while inputs are
held after a loss (``InputHold.horizon``), and while inputs that arrived wait in the queue for the
consumer. The latter matters after a host stall: the reader may have decoded the frames that
waited behind it before the consumer (the hardware shell) has placed them, and the camera must
not judge a deadline (a gesture window) that those inputs may still change.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from device.backends.events import LinkDownEvent, LinkUpEvent
from device.backends.serial_convert import (
    INPUT_MESSAGES,
    McuClock,
    capability_names,
    input_event,
)
from device.backends.serial_delivery import Delivery, EventQueue, InputHold, loss_marks
from device.backends.serial_outputs import OutputKeeper
from device.errors import HardwareError
from protocol.serial import (
    Connected,
    DeliveryFailed,
    Hello,
    LinkEvent,
    LinkLost,
    MessageReceived,
    MessageRejected,
    PeerRebooted,
    SerialLink,
    VersionMismatch,
)

log = logging.getLogger(__name__)


class LinkEvents:
    """From link events to the backend's event queue (see the module docstring).

    ``url`` names the port in logs and events; ``clock`` is the link's clock; ``count(name)``
    bumps a backend counter; ``outputs`` sends the kept states again after a handshake.
    """

    def __init__(
        self,
        url: str,
        *,
        queue: EventQueue,
        hold: InputHold,
        outputs: OutputKeeper,
        clock: Callable[[], float],
        count: Callable[[str], None],
    ) -> None:
        self.queue = queue
        self.hold = hold
        self.capabilities: frozenset[str] = frozenset()
        """What the MCU announced in its last Hello (empty before the first handshake)."""
        self.up = False
        self.first_up: asyncio.Future[None] | None = None
        """Set by ``open``: resolved at the first handshake, or failed with the reason."""
        self._url = url
        self._outputs = outputs
        self._clock = clock
        self._count = count
        self._mcu_clock = McuClock()
        self._peer_boot: int | None = None
        self._ever_up = False
        self._waiting_since: float | None = None
        """When the queue, empty before, was given an event the consumer has not yet taken."""

    def horizon_lag_s(self) -> float | None:
        """How far before the present the camera's world must stay (module docstring): while
        inputs are held, back to ``InputHold.horizon``; while some wait in the queue (for at
        most ``max_hold_s``: a consumer that stopped must not stop the camera), back to wherever
        the camera has got (``math.inf``: the consumer places them); else None."""
        now = self._clock()
        since = self._waiting_since
        if since is not None and self.queue and now - since < self.hold.config.max_hold_s:
            return math.inf
        horizon = self.hold.horizon(now)
        return None if horizon is None else max(0.0, now - horizon)

    def taken(self) -> None:
        """The consumer has taken everything queued."""
        self._waiting_since = None
        self.hold.taken()  # released inputs no longer hold the world back

    def receive(self, link: SerialLink, data: bytes, now: float) -> None:
        """Bytes from the port at ``now``: feed the link and handle what it reports."""
        # A hold that is over ends before these bytes: what they carry comes after its inputs.
        self._release(self.hold.handle_timeout(now))
        marks = loss_marks(link.counters)
        events = link.receive_data(data, now)
        if loss_marks(link.counters) != marks:
            self.hold.lost(now)  # before the events: the inputs that came with the loss wait
        self.handle(link, events)

    def timeout(self, link: SerialLink, now: float) -> None:
        """Run the hold's and the link's timers due at ``now``."""
        self._release(self.hold.handle_timeout(now))
        if (due := link.next_deadline()) is not None and due <= now:
            self.handle(link, link.handle_timeout(now))

    def handle(self, link: SerialLink, events: list[LinkEvent]) -> None:
        """Handle what the link reported."""
        for event in events:
            match event:
                case MessageReceived(message=message) if isinstance(message, INPUT_MESSAGES):
                    received = input_event(message, self._mcu_clock.seconds(message.t_ms))
                    if (delivery := self.hold.put(received, self._clock())) is not None:
                        self._put(delivery)
                case Connected(peer=peer):
                    self._on_connected(link, peer)
                case PeerRebooted():
                    self.link_down("the bench MCU restarted")
                case LinkLost(reason=reason):
                    self.link_down(f"serial link lost: {reason}")
                case DeliveryFailed(message=message, reason=reason):
                    self._count("delivery_failed")
                    # While down it is expected, and the state is re-sent on the way back up.
                    level = logging.WARNING if self.up else logging.DEBUG
                    log.log(level, "bench MCU did not take %r: %s", message, reason)
                case VersionMismatch():
                    self._on_version_mismatch(event)
                case MessageRejected(reason=reason):
                    log.debug("serial backend: refused a frame from the MCU: %s", reason)

    def link_down(self, reason: str) -> None:
        """The link went away: its held inputs first, then ``LinkDownEvent`` (once)."""
        self.end_hold()  # the inputs of the link that went away come first
        if not self.up:
            return
        self.up = False
        self._count("link_losses")
        log.warning("serial link down (%s): %s", self._url, reason)
        self._put(Delivery(LinkDownEvent(reason)))

    def port_gone(self, reason: str) -> None:
        """The port vanished (``reason``): the link is down, and a pending ``open`` fails."""
        self._count("port_losses")
        self.link_down(reason)
        self._fail_open(f"serial port {self._url} went away during the handshake: {reason}")

    def end_hold(self) -> None:
        """Deliver the inputs held after a loss now, in order."""
        self._release(self.hold.release(self._clock()))

    def _put(self, delivery: Delivery) -> None:
        if self._waiting_since is None or not self.queue:
            self._waiting_since = self._clock()
        self.queue.put(delivery)

    def _release(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self._put(delivery)

    def _on_connected(self, link: SerialLink, peer: Hello) -> None:
        self.end_hold()  # the previous connection's inputs come first
        rebooted = self._peer_boot is not None and peer.boot_id != self._peer_boot
        if peer.boot_id != self._peer_boot:
            self._mcu_clock.restart()
        self._peer_boot = peer.boot_id
        self.capabilities = capability_names(peer.capabilities)
        if self._ever_up:
            self._count("reconnects")
        self.up = self._ever_up = True
        firmware = peer.firmware or "MCU"
        description = f"{self._url}: {firmware} (boot {peer.boot_id:08x})"
        log.info("serial link up: %s%s", description, ", rebooted" if rebooted else "")
        self._put(Delivery(LinkUpEvent(description, self.capabilities, rebooted)))
        # The MCU may have rebooted or missed outputs while the link was down: send it all.
        self._outputs.resend_all(link)
        if self.first_up is not None and not self.first_up.done():
            self.first_up.set_result(None)

    def _on_version_mismatch(self, event: VersionMismatch) -> None:
        message = f"{event.description} (serial port {self._url})"
        if not self._fail_open(message):
            log.error("%s", message)

    def _fail_open(self, message: str) -> bool:
        """Make a pending ``open`` raise ``message``; False when ``open`` is not waiting."""
        if self.first_up is None or self.first_up.done():
            return False
        self.first_up.set_exception(HardwareError(message))
        return True

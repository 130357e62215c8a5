"""The serial backend's outputs: LED, display, tone and haptic messages sent reliably to the MCU.

``OutputKeeper`` keeps the latest state of each LED and of the display (``state_key``), so that it
can send them all again after a reconnect (the MCU may have rebooted, or missed them). A tone or
a vibration has no state: asked for while the link is down it is dropped (``outputs_dropped``),
being moot by the time the link is back. When ``max_in_flight`` frames already await acks, a state
is sent later, as acks come back (``outputs_deferred``); a beep or buzz is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from device.backends.serial_convert import OutputMessage, StateKey, state_key
from protocol.errors import LocalProtocolError
from protocol.serial import LinkState, SerialLink

log = logging.getLogger(__name__)


class OutputKeeper:
    """Sends output messages on the current link and keeps the states to send again.

    ``clock`` is the link's clock; ``count(name)`` bumps a backend counter; ``wake()`` tells the
    backend's writer and timer tasks that the link has something to send.
    """

    def __init__(
        self, *, clock: Callable[[], float], count: Callable[[str], None], wake: Callable[[], None]
    ) -> None:
        self._clock = clock
        self._count = count
        self._wake = wake
        self._state: dict[StateKey, OutputMessage] = {}
        self._dirty: set[StateKey] = set()

    def output(self, message: OutputMessage, link: SerialLink | None) -> None:
        """Send ``message`` if ``link`` is connected; keep it if it is a state."""
        key = state_key(message)
        if key is not None:
            self._state[key] = message
        if link is not None and link.state is LinkState.CONNECTED:
            self._send(link, message, key)
        elif key is None:
            self._count("outputs_dropped")  # a beep or buzz is moot by the time the link is back

    def resend_all(self, link: SerialLink) -> None:
        """Send every kept state again (after a handshake)."""
        for key, message in self._state.items():
            self._send(link, message, key)

    def flush_deferred(self, link: SerialLink) -> None:
        """Send the states deferred while ``max_in_flight`` frames awaited acks."""
        for key in list(self._dirty):
            if link.state is not LinkState.CONNECTED or link.in_flight >= link.config.max_in_flight:
                return
            self._send(link, self._state[key], key)

    def _send(self, link: SerialLink, message: OutputMessage, key: StateKey | None) -> None:
        try:
            link.send(message, self._clock(), reliable=True)
        except LocalProtocolError as error:
            # max_in_flight frames await acks: a state is sent later, a beep or buzz is moot.
            if key is not None:
                self._dirty.add(key)
                self._count("outputs_deferred")
            else:
                self._count("outputs_dropped")
                log.warning("serial backend: dropped %r: %s", message, error)
            return
        if key is not None:
            self._dirty.discard(key)
        self._wake()

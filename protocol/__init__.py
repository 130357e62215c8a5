"""bwc-sim wire protocols, sans-IO.

Everything in this package turns bytes or dicts into typed messages and back, or runs a protocol
state machine that takes ``now`` as an argument. Nothing here touches sockets, files, clocks or
asyncio, so the same code runs in the device, in the evidence receiver, in a bench
microcontroller's fake, and in tests. The specification is ``docs/protocol.md``.
"""

PROTOCOL_VERSION = 1
"""Version of the MQTT topic namespace, JSON message schema and upload protocol."""

__all__ = ["PROTOCOL_VERSION"]

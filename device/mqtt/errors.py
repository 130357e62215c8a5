"""Errors raised by the device's MQTT link, one small hierarchy under ``DeviceError``.

aiomqtt and paho errors never leave ``device.mqtt``: the link translates them here, with
``raise ... from`` so the original stays attached.

``MqttLinkError``
    ``LinkDown``: not connected; the message was not handed to the broker on this call.
        ``PublishInterrupted`` (also a ``PublishUncertain``): the connection dropped while a
        publish waited for its acknowledgement.
    ``PublishUncertain``: the outcome is unknown; the message may still be delivered (paho keeps
    it and resends it on the next connection). Callers replay it later with the same event ID so
    receivers drop the duplicate.
        ``PublishTimeout``: no PUBACK within the timeout. A publish larger than the broker's
        packet limit also ends this way (the broker drops it silently, or disconnects).
    ``PublishRejected``: the local client refused the message outright (e.g. a malformed topic).
    ``ConnectFailed``: one connection attempt failed (network, CONNACK refusal, timeout).

The names describe what happened (``LinkDown``, ``PublishTimeout``) rather than ending in
``Error``; they are the names the upload and daemon code were specified against.
"""

from __future__ import annotations

from device.errors import DeviceError


class MqttLinkError(DeviceError):
    """Root of the MQTT link's errors."""


class LinkDown(MqttLinkError):  # noqa: N818 - names a link state, as the API brief does
    """The link is not connected: nothing was sent by this call; wait for ``connected``."""


class PublishUncertain(MqttLinkError):  # noqa: N818 - names a link state, as the API brief does
    """Unknown outcome: the message may still be delivered. Replay it (same ID) to be sure."""


class PublishTimeout(PublishUncertain):
    """No acknowledgement within the timeout; unknown: the message may still be delivered."""


class PublishInterrupted(LinkDown, PublishUncertain):
    """The connection dropped while waiting for the acknowledgement; may still be delivered."""


class PublishRejected(MqttLinkError):  # noqa: N818 - names a link state, as the API brief does
    """The client refused the message before sending it (bad topic, payload or QoS)."""


class ConnectFailed(MqttLinkError):  # noqa: N818 - names a link state, as the API brief does
    """A connection attempt failed; the link retries it with backoff.

    ``refused`` is true when the broker answered with a negative CONNACK (bad credentials, not
    authorised, ...), false for network failures and timeouts.
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused

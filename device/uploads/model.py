"""The upload manager's settings and its progress report.

``UploadConfig`` is parsed and validated once (``ConfigError`` naming the field); the protocol's
``SenderConfig`` is derived from it. ``UploadProgress`` is what telemetry needs, and converts to
the ``upload`` object of the ``telemetry`` message.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final

from device.errors import ConfigError
from protocol.errors import LocalProtocolError
from protocol.messages import UploadQueue
from protocol.upload import DEFAULT_CHUNK_SIZE, SenderConfig

DEFAULT_MAX_MESSAGE_SIZE: Final = 128_000
"""Payload limit assumed when the broker announces none: AWS IoT Core's 128 KB, the smallest of
the common brokers, so the default works everywhere (docs/protocol.md, "Sizing chunks")."""


class SegmentStatus(enum.Enum):
    """Where one closed segment stands. ``verified`` lives in receipts, the rest in state files."""

    QUEUED = "queued"  # waiting (first seen, or after a transient failure)
    SENDING = "sending"  # an attempt was started (it resumes after a restart by re-offering)
    VERIFIED = "verified"  # the receiver verified it; receipt written; the segment is deleted
    REJECTED = "rejected"  # permanent refusal: kept on the device, never retried on its own


@dataclass(frozen=True, slots=True)
class UploadConfig:
    """Upload settings. Sizes in bytes, times in seconds, bandwidth in bits per second.

    ``chunk_size`` defaults to the protocol's 1 MiB, the receiver's default ``max_chunk_size``
    (a chunk size above the receiver's limit is *rejected*, permanently). The chunk size actually
    used is never above what the broker's message limit leaves after the header: the limit the
    broker announces (MQTT 5 CONNACK), else ``max_message_size`` (128,000 B, AWS IoT Core's
    publish limit, which every common broker takes).
    ``bandwidth_bps`` caps the bytes published (chunks and offers, headers included) with a
    token bucket of ``burst_bytes`` (default: one largest message). ``durable`` false skips the
    fsyncs of state files (virtual-time runs); the write order is the same. ``rescan_s`` is
    how often ``refresh`` rescans the evidence store for changes made behind its back (its
    index follows the store's own closes and deletions at once): files removed by hand leave
    the queue within that time.
    """

    chunk_size: int = DEFAULT_CHUNK_SIZE
    window: int = 16
    ack_timeout_s: float = 10.0
    max_retries: int = 5
    min_chunk_size: int = 1024
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    bandwidth_bps: float | None = None
    burst_bytes: int | None = None
    retry_base_s: float = 5.0
    retry_max_s: float = 600.0
    retry_jitter: float = 0.5
    durable: bool = True
    rescan_s: float = 300.0

    def __post_init__(self) -> None:
        try:
            self.sender_config()
        except LocalProtocolError as exc:
            raise ConfigError(f"upload: {exc}") from exc
        if self.max_message_size < 1:
            raise ConfigError(f"upload.max_message_size must be >= 1, got {self.max_message_size}")
        if self.bandwidth_bps is not None and not (
            math.isfinite(self.bandwidth_bps) and self.bandwidth_bps > 0
        ):
            raise ConfigError(f"upload.bandwidth_bps must be > 0, got {self.bandwidth_bps}")
        if self.burst_bytes is not None and self.burst_bytes < 1:
            raise ConfigError(f"upload.burst_bytes must be >= 1, got {self.burst_bytes}")
        if not 0 < self.retry_base_s <= self.retry_max_s:
            raise ConfigError(
                f"upload: need 0 < retry_base_s ({self.retry_base_s}) <= retry_max_s "
                f"({self.retry_max_s})"
            )
        if not 0 <= self.retry_jitter < 1:
            raise ConfigError(f"upload.retry_jitter must be in [0, 1), got {self.retry_jitter}")
        if not self.rescan_s > 0:
            raise ConfigError(f"upload.rescan_s must be > 0, got {self.rescan_s}")

    def sender_config(self) -> SenderConfig:
        """The protocol sender's settings (``LocalProtocolError`` if out of range)."""
        return SenderConfig(
            chunk_size=self.chunk_size,
            window=self.window,
            ack_timeout_s=self.ack_timeout_s,
            max_retries=self.max_retries,
            min_chunk_size=self.min_chunk_size,
        )

    def retry_delay(self, failures: int, draw: float) -> float:
        """Back-off after ``failures`` consecutive failed attempts; ``draw`` uniform in [0, 1).

        Exponential from ``retry_base_s``, capped at ``retry_max_s``, then shortened by up to
        ``retry_jitter`` of itself so that a fleet does not retry in step.
        """
        exponent = min(max(failures - 1, 0), 60)
        delay = min(self.retry_max_s, self.retry_base_s * 2.0**exponent)
        return delay * (1.0 - self.retry_jitter * draw)


@dataclass(frozen=True, slots=True)
class RejectedSegment:
    """A segment the receiver refused permanently: kept on the device for an operator."""

    recording: str
    index: int
    upload_id: str
    code: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class UploadProgress:
    """A snapshot for telemetry. ``verified_*`` and ``bytes_sent`` count since the manager began.

    ``queued_*`` are the closed segments not yet verified nor rejected (the current one
    included); ``rejected_segments`` the quarantined ones on the device.
    """

    queued_segments: int
    queued_bytes: int
    current_upload_id: str | None
    current_committed: int
    current_size: int
    verified_segments: int
    verified_bytes: int
    rejected_segments: int
    bytes_sent: int
    link_up: bool

    def to_message(self) -> UploadQueue:
        """The ``upload`` object of a ``telemetry`` message."""
        return UploadQueue(
            pending_segments=self.queued_segments,
            pending_bytes=self.queued_bytes,
            current=self.current_upload_id,
            current_committed_bytes=self.current_committed,
            current_size_bytes=self.current_size,
            verified_segments=self.verified_segments,
            verified_bytes=self.verified_bytes,
        )

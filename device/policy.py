"""The recording policy: how long the buffers are, how recordings are cut, what storage allows.

Validated once, at start-up, into a frozen object; the recorder never reads configuration from
anywhere else. Later issues extend it with triggers, stop rules and modes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from device.prebuffer import PreEventBufferConfig
from device.validate import check_bool, check_number


class Durability(Enum):
    """When evidence is forced to stable storage.

    ``RECORD``: segment files are fsynced every ``sync_interval_s`` of media and at close, the audit
    log at every append (a real camera). ``SEGMENT``: fsync at segment close only. ``NONE``: data
    is written but never fsynced, for virtual-time runs where the host's page cache is the
    simulated flash and forcing gigabytes to disk would only measure the host's disk.
    """

    RECORD = "record"
    SEGMENT = "segment"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class RecordingPolicy:
    """Buffering, segmenting and storage rules. Times in seconds, sizes in bytes."""

    pre_event_s: float = 30.0
    pre_event_max_bytes: int = 96 * 1024 * 1024
    audio_in_buffer: bool = False
    post_event_s: float = 0.0
    segment_s: float = 300.0
    max_recording_s: float = 4 * 3600.0
    storage_bytes: int = 64 * 10**9
    storage_reserve_bytes: int = 256 * 1024 * 1024
    durability: Durability = Durability.RECORD
    sync_interval_s: float = 1.0

    def __post_init__(self) -> None:
        check_number("policy", "pre_event_s", self.pre_event_s, 0.0, 120.0, integer=False)
        check_number(
            "policy", "pre_event_max_bytes", self.pre_event_max_bytes, 1, 2**34, integer=True
        )
        check_bool("policy", "audio_in_buffer", self.audio_in_buffer)
        check_number("policy", "post_event_s", self.post_event_s, 0.0, 600.0, integer=False)
        check_number("policy", "segment_s", self.segment_s, 1.0, 3600.0, integer=False)
        check_number(
            "policy", "max_recording_s", self.max_recording_s, 60.0, 24 * 3600.0, integer=False
        )
        check_number("policy", "storage_bytes", self.storage_bytes, 1, 2**50, integer=True)
        check_number(
            "policy",
            "storage_reserve_bytes",
            self.storage_reserve_bytes,
            0,
            self.storage_bytes,
            integer=True,
        )
        check_number("policy", "sync_interval_s", self.sync_interval_s, 0.01, 60.0, integer=False)

    def buffer_config(self) -> PreEventBufferConfig:
        """The pre-event buffer's bounds under this policy."""
        return PreEventBufferConfig(
            seconds=self.pre_event_s,
            max_bytes=self.pre_event_max_bytes,
            keep_audio=self.audio_in_buffer,
        )

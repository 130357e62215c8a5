"""The device's upload manager: closed segments to the evidence receiver, verified, then deleted.

A pure core (``UploadManager``) driven by the daemon's asyncio shell: it takes ``now`` on every
entry point, returns the ``Publish`` actions to carry out, and says when to wake it. Priority
queue (``queue.py``), bandwidth cap (``bandwidth.py``), on-disk state and receipts (``state.py``,
docs/upload-state.md), one attempt's sender and outbox (``attempt.py``).
"""

from device.uploads.bandwidth import TokenBucket
from device.uploads.manager import CODE_CANNOT_OFFER, CODE_SEGMENT_UNREADABLE, UploadManager
from device.uploads.model import (
    DEFAULT_MAX_MESSAGE_SIZE,
    RejectedSegment,
    SegmentStatus,
    UploadConfig,
    UploadProgress,
)
from device.uploads.queue import QueueEntry, SegmentKey, UploadQueue
from device.uploads.state import Receipt, SegmentRecord, UploadStateDir

__all__ = [
    "CODE_CANNOT_OFFER",
    "CODE_SEGMENT_UNREADABLE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "QueueEntry",
    "Receipt",
    "RejectedSegment",
    "SegmentKey",
    "SegmentRecord",
    "SegmentStatus",
    "TokenBucket",
    "UploadConfig",
    "UploadManager",
    "UploadProgress",
    "UploadQueue",
    "UploadStateDir",
]

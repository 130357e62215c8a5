"""One upload attempt of one segment: the protocol's sender and its outbox.

The ``UploadSender`` says what to publish (the offer; ``length`` bytes at ``offset``) as soon as
its window allows. The outbox holds what the bandwidth cap has not let out yet, in offset order,
each chunk once: a go-back-N resend of a chunk still waiting is not queued twice, and a new
offer drops every waiting chunk (its answer says where to resume). Chunk bytes are read from the
segment file only when the chunk is published, and only those bytes: segments may be gigabytes.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

from device.durable import storage_error
from device.errors import EvidenceError
from device.uploads.queue import QueueEntry
from protocol.publish import Publish
from protocol.upload import (
    CHUNK_HEADER_SIZE,
    Finished,
    SendChunk,
    SenderAction,
    SendOffer,
    UploadSender,
    encode_chunk,
)


class Attempt:
    """The segment being uploaded now, its sender, and what waits to be published."""

    def __init__(
        self, entry: QueueEntry, sender: UploadSender, *, offer_topic: str, chunk_topic: str
    ) -> None:
        self.entry = entry
        self.sender = sender
        self._offer_topic = offer_topic
        self._chunk_topic = chunk_topic
        self._outbox: deque[SendOffer | SendChunk] = deque()
        self._waiting: set[int] = set()

    @property
    def upload_id(self) -> str:
        """The upload ID of this segment."""
        return self.sender.upload_id

    def push(self, actions: list[SenderAction]) -> Finished | None:
        """Queue what the sender asked to publish; return its outcome if it finished."""
        reorder = False
        for action in actions:
            if isinstance(action, Finished):
                self._outbox.clear()
                self._waiting.clear()
                return action
            if isinstance(action, SendOffer):
                self._outbox.clear()
                self._waiting.clear()
                self._outbox.append(action)
            elif action.offset not in self._waiting:
                reorder = reorder or bool(
                    self._outbox
                    and isinstance(self._outbox[-1], SendChunk)
                    and self._outbox[-1].offset > action.offset
                )
                self._waiting.add(action.offset)
                self._outbox.append(action)
        if reorder:
            self._outbox = deque(sorted(self._outbox, key=_order))
        return None

    def next_size(self) -> int | None:
        """Bytes of the next message to publish, or ``None`` if nothing waits."""
        if not self._outbox:
            return None
        action = self._outbox[0]
        if isinstance(action, SendOffer):
            return len(action.payload)
        return CHUNK_HEADER_SIZE + action.length

    def pop(self) -> Publish:
        """Build the next message (reading the chunk's bytes from the file) and dequeue it.

        Raises ``StorageError`` if the file cannot be read, ``EvidenceError`` if it is shorter
        than its manifest says; the message stays queued then.
        """
        action = self._outbox[0]
        if isinstance(action, SendOffer):
            publish = Publish(self._offer_topic, action.payload)
        else:
            data = read_exact(self.entry.segment.path, action.offset, action.length)
            payload = encode_chunk(action.upload_id, action.offset, data)
            publish = Publish(self._chunk_topic, payload)
            self._waiting.discard(action.offset)
        self._outbox.popleft()
        return publish


def _order(action: SendOffer | SendChunk) -> int:
    return -1 if isinstance(action, SendOffer) else action.offset


def read_exact(path: Path, offset: int, length: int) -> bytes:
    """``length`` bytes of ``path`` at ``offset``; ``EvidenceError`` if the file ends first."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            data = file.read(length)
    except OSError as exc:
        raise storage_error("reading", path, exc) from exc
    if len(data) != length:
        raise EvidenceError(
            f"{path}: {length} bytes expected at offset {offset}, found {len(data)}: the file is "
            "shorter than its manifest says"
        )
    return data

"""What the upload manager writes down: status files, receipts, deletions, audit records.

The order of effects is the safety argument, so it lives here in one place:

1. ``verified`` ack (checked by the protocol sender against the manifest's size and SHA-256);
2. the receipt is written atomically and fsynced (``state.py``);
3. the audit record ``segment_uploaded`` is appended and the audit log synced;
4. the segment file is deleted, then its manifest, then the directory fsynced
   (``EvidenceStore.remove_verified``);
5. the segment's status file is removed.

A crash after 2 leaves a receipt beside a segment: the next ``refresh`` finds both and does
3-5 again (the audit record then says ``repaired``). A crash inside 4 leaves a manifest without
its file: the first ``refresh`` finds it by ``orphan_manifests`` and, given a receipt, removes it.
"""

from __future__ import annotations

from typing import Final

from device.auditformat import JsonValue
from device.camera_audit import CameraAudit
from device.store import ClosedSegment, EvidenceStore
from device.uploads.model import RejectedSegment, SegmentStatus
from device.uploads.queue import QueueEntry
from device.uploads.state import Receipt, RecordStatus, SegmentRecord, UploadStateDir

_RECORD_STATUS: Final[dict[SegmentStatus, RecordStatus]] = {
    SegmentStatus.QUEUED: "queued",
    SegmentStatus.SENDING: "sending",
    SegmentStatus.REJECTED: "rejected",
}


class UploadLedger:
    """The durable side effects of uploads, on the store, the state directory and the audit log."""

    def __init__(
        self, store: EvidenceStore, state: UploadStateDir, audit: CameraAudit | None
    ) -> None:
        self._store = store
        self._state = state
        self._audit = audit

    def receipt_for(self, segment: ClosedSegment) -> Receipt | None:
        """The receipt of exactly this segment (same upload ID, size and SHA-256), if any."""
        manifest = segment.manifest
        receipt = self._state.read_receipt(manifest.recording, manifest.index)
        if receipt is None or not (
            receipt.upload_id == segment.signed.upload_id()
            and receipt.sha256 == manifest.sha256
            and receipt.size == manifest.size
        ):
            return None
        return receipt

    def record_for(self, segment: ClosedSegment) -> SegmentRecord | None:
        """The status file of this segment, if it describes this manifest."""
        manifest = segment.manifest
        record = self._state.read_record(manifest.recording, manifest.index)
        if record is None or record.upload_id != segment.signed.upload_id():
            return None
        return record

    def save(self, entry: QueueEntry, now: float, *, message: str | None = None) -> None:
        """Write the entry's status file (status, failures, last code)."""
        self._state.write_record(_record_of(entry, now, message=message))

    def verified(self, entry: QueueEntry, now: float) -> Receipt:
        """Steps 2-5 above for a segment whose upload was just verified."""
        manifest = entry.segment.manifest
        receipt = Receipt(
            upload_id=entry.upload_id,
            recording=manifest.recording,
            index=manifest.index,
            size=manifest.size,
            sha256=manifest.sha256,
            verified_mono_s=now,
            verified_utc=None if self._audit is None else self._audit.clock.utc(now),
            signed_manifest=entry.segment.signed,
        )
        self._state.write_receipt(receipt)
        self.delete(receipt, now, repaired=False)
        return receipt

    def delete(self, receipt: Receipt, now: float, *, repaired: bool) -> None:
        """Steps 3-5 above: only ever called with a receipt on disk."""
        fields: dict[str, JsonValue] = {
            "recording": receipt.recording,
            "index": receipt.index,
            "sha256": receipt.sha256,
            "upload_id": receipt.upload_id,
            "size": receipt.size,
        }
        if repaired:
            fields["repaired"] = True
        self._record("segment_uploaded", now, fields, sync=True)
        self._store.remove_verified(receipt.recording, receipt.index)
        self._state.remove_record(receipt.recording, receipt.index)

    def repair_orphans(self) -> None:
        """Finish step 4 for manifests whose segment file is gone and whose receipt exists."""
        for recording, index in self._store.orphan_manifests():
            if self._state.read_receipt(recording, index) is not None:
                self._store.remove_verified(recording, index)
                self._state.remove_record(recording, index)

    def rejected(
        self, entry: QueueEntry, code: str | None, message: str | None, now: float
    ) -> RejectedSegment:
        """Quarantine: mark the segment rejected (it stays on the device) and audit it."""
        entry.status = SegmentStatus.REJECTED
        entry.last_code = code
        self.save(entry, now, message=message)
        fields: dict[str, JsonValue] = {
            "recording": entry.key[0],
            "index": entry.key[1],
            "upload_id": entry.upload_id,
            "code": code,
            "message": message,
        }
        self._record("upload_rejected", now, fields, sync=False)
        return RejectedSegment(*entry.key, entry.upload_id, code, message)

    def release(self, recording: str, index: int) -> None:
        """Forget a rejection: the segment's status file goes, so it is queued afresh."""
        self._state.remove_record(recording, index)

    def _record(self, kind: str, now: float, fields: dict[str, JsonValue], *, sync: bool) -> None:
        if self._audit is None:
            return
        self._audit.record(kind, now, **fields)
        if sync:
            self._audit.log.sync()


def _record_of(entry: QueueEntry, now: float, *, message: str | None) -> SegmentRecord:
    return SegmentRecord(
        upload_id=entry.upload_id,
        recording=entry.key[0],
        index=entry.key[1],
        status=_RECORD_STATUS[entry.status],
        attempts=entry.failures,
        code=entry.last_code,
        message=message,
        updated_mono_s=now,
    )

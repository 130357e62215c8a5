"""The hash-chained audit log: chain rule, tampering, torn-tail recovery, checkpoints, crashes."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.audit import AuditLog, AuditSync
from device.auditformat import (
    GENESIS_PREV,
    MAX_LINE_BYTES,
    AuditProblem,
    AuditRecord,
    JsonValue,
    verify_audit,
)
from device.errors import ConfigError, EvidenceError
from device.signing import DeviceKey
from tests.fuzz import FUZZ_EXAMPLES

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
KEY = DeviceKey.generate()
TMP_SETTINGS = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def independent_verify(data: bytes) -> int | None:
    """The chain rule of docs/storage.md, from scratch: the first bad line, or None."""
    prev, lines = "0" * 64, data.split(b"\n")
    if lines[-1]:
        return len(lines)  # the last line has no newline: torn
    for number, line in enumerate(lines[:-1], start=1):
        match = re.fullmatch(rb'(\{.*),"hash":"([0-9a-f]{64})"\}', line, re.DOTALL)
        if match is None:
            return number
        body, claimed = match[1] + b"}", match[2].decode()
        if hashlib.sha256(body).hexdigest() != claimed:
            return number
        try:
            record = json.loads(body)
        except ValueError:
            return number
        if record.get("seq") != number - 1 or record.get("prev") != prev:
            return number
        prev = claimed
    return None


def _open(
    path: Path,
    *,
    sync: AuditSync = AuditSync.EVERY_APPEND,
    signer: DeviceKey | None = None,
    checkpoint_every: int = 0,
    key_id: str | None = None,
) -> AuditLog:
    return AuditLog.open(
        path,
        "cam-1",
        utc=T0,
        mono_s=0.0,
        sync=sync,
        signer=signer,
        checkpoint_every=checkpoint_every,
        key_id=key_id,
    )


def _write_log(
    path: Path,
    count: int = 6,
    *,
    signer: DeviceKey | None = None,
    checkpoint_every: int = 0,
    key_id: str | None = None,
) -> list[AuditRecord]:
    with _open(path, signer=signer, checkpoint_every=checkpoint_every, key_id=key_id) as log:
        return [
            log.append(
                "trigger",
                T0 + timedelta(seconds=step),
                float(step),
                source="button",
                detail={"press": step, "ok": True},
                note="ünïcødé\n",
            )
            for step in range(1, count + 1)
        ]


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_a_fresh_log_starts_with_genesis_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    records = _write_log(path, key_id=KEY.key_id)
    genesis = json.loads(_lines(path)[0])
    assert genesis["seq"] == 0
    assert genesis["kind"] == "genesis"
    assert (genesis["device"], genesis["key_id"]) == ("cam-1", KEY.key_id)
    assert (genesis["format"], genesis["prev"]) == ("bwc-audit/1", GENESIS_PREV)
    result = verify_audit(path)
    assert result.ok, result.message()
    assert (result.records, result.device, result.key_id) == (7, "cam-1", KEY.key_id)
    assert result.head == records[-1].hash
    assert [r.seq for r in records] == list(range(1, 7))
    assert records[0].utc == "2026-11-29T14:00:01.000000Z"
    assert records[0].fields["detail"] == {"press": 1, "ok": True}
    assert independent_verify(path.read_bytes()) is None
    assert path.read_bytes().isascii()


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = _write_log(path, 3)
    with _open(path) as log:
        assert (log.next_seq, log.head, log.recovered) == (4, first[-1].hash, ())
        record = log.append("stop", T0, 9.0)
    assert (record.seq, record.prev) == (4, first[-1].hash)
    assert verify_audit(path).records == 5


def test_every_tampered_byte_is_named_by_its_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 2)
    data = path.read_bytes()
    starts = [0]
    for line in _lines(path):
        starts.append(starts[-1] + len(line))
    damaged_path = tmp_path / "damaged.jsonl"
    for position in range(len(data)):
        line_no = next(n for n, start in enumerate(starts[1:], start=1) if position < start)
        for mask in (0x01, 0x20):
            damaged = bytearray(data)
            damaged[position] ^= mask
            damaged_path.write_bytes(damaged)
            fault = verify_audit(damaged_path).fault
            assert fault is not None, (position, mask)
            assert fault.line == line_no, (position, mask, fault)
            assert fault.offset == starts[line_no - 1]
            assert independent_verify(bytes(damaged)) == line_no


@pytest.mark.parametrize(
    ("edit", "line", "problem"),
    [
        (lambda ls: ls[:2] + ls[3:], 3, AuditProblem.SEQ_GAP),  # a line deleted
        (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], 2, AuditProblem.SEQ_GAP),  # two swapped
        (lambda ls: [*ls[:3], ls[2], *ls[3:]], 4, AuditProblem.SEQ_GAP),  # a line repeated
        (lambda ls: ls[1:], 1, AuditProblem.SEQ_GAP),  # genesis removed
        (lambda ls: [*ls, ls[-1][:-1]], 8, AuditProblem.TORN_LINE),  # torn tail
    ],
)
def test_structural_edits_are_named(
    tmp_path: Path, edit: Callable[[list[bytes]], list[bytes]], line: int, problem: AuditProblem
) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path)
    path.write_bytes(b"".join(edit(_lines(path))))
    result = verify_audit(path)
    assert result.fault is not None
    assert (result.fault.line, result.fault.problem) == (line, problem)
    assert f"line {line} " in result.message()
    with pytest.raises(EvidenceError, match=f"line {line} "):
        result.raise_for_fault()


def _line(document: dict[str, object]) -> bytes:
    """A line built by the documented rule, for any document (without ``hash``)."""
    body = json.dumps(document, separators=(",", ":")).encode()
    digest = hashlib.sha256(body).hexdigest()
    return body[:-1] + b',"hash":"' + digest.encode() + b'"}\n'


def _rechain(lines: list[bytes], start: int) -> list[bytes]:
    """What a forger without the key can do: rewrite lines and recompute every later hash."""
    out = list(lines[:start])
    for line in lines[start:]:
        document = json.loads(line)
        document.pop("hash")
        document["prev"] = json.loads(out[-1])["hash"] if out else GENESIS_PREV
        out.append(_line(document))
    return out


def test_a_rewritten_chain_is_caught_only_by_a_signed_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 9, signer=KEY, checkpoint_every=4)
    good = verify_audit(path, public_keys=[KEY.public_bytes()])
    assert good.ok, good.message()
    assert (good.checkpoints_verified, good.last_verified_seq) == (2, 10)
    assert verify_audit(path).checkpoints_unverified == 2
    lines = _lines(path)
    lines[2] = lines[2].replace(b'"source":"button"', b'"source":"forged"')
    path.write_bytes(b"".join(_rechain(lines, 2)))
    assert verify_audit(path).ok  # a plain hash chain proves nothing against a forger
    forged = verify_audit(path, public_keys=[KEY.public_bytes()])
    assert forged.fault is not None
    assert (forged.fault.line, forged.fault.problem) == (6, AuditProblem.BAD_SIGNATURE)
    other = verify_audit(path, public_keys=[DeviceKey.generate().public_bytes()])
    assert other.fault is not None
    assert "is not trusted" in other.fault.detail


def test_truncating_at_any_offset_recovers_and_records_the_cut(tmp_path: Path) -> None:
    source = tmp_path / "source.jsonl"
    _write_log(source, 2)
    data = source.read_bytes()
    ends = [0]
    for line in _lines(source):
        ends.append(ends[-1] + len(line))
    # Every offset inside the last line (where a crash tears), every 11th before it (fsyncs cost).
    cuts = sorted({*range(1, ends[-2], 11), *range(ends[-2], len(data) + 1)})
    for cut in cuts:
        directory = tmp_path / f"cut{cut}"
        directory.mkdir()
        path = directory / "audit.jsonl"
        path.write_bytes(data[:cut])
        valid_end = max(end for end in ends if end <= cut)
        with _open(path) as log:
            recovered = log.recovered
        if valid_end == cut:
            assert recovered == ()
        else:
            (record,) = recovered
            assert record.fields["dropped_bytes"] == cut - valid_end
            assert record.fields["offset"] == valid_end
            saved = directory / str(record.fields["saved_as"])
            assert saved.read_bytes() == data[valid_end:cut]
            assert record.fields["dropped_sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()
        assert path.read_bytes().startswith(data[:valid_end] if valid_end else b'{"seq":0,')
        assert verify_audit(path).ok


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        (b"\x00" * 4096, "torn line"),  # power loss: size grew, data blocks never written
        (b'{"seq":7,"garbage":true}\n', "bad format"),
        (b"x\n" * 3 + b"partial", "torn line"),
    ],
)
def test_damaged_tails_are_cut_saved_and_recorded(tmp_path: Path, tail: bytes, reason: str) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 2)
    size = path.stat().st_size
    path.write_bytes(path.read_bytes() + tail)
    with _open(path) as log:
        (record,) = log.recovered
    assert record.kind == "audit_recovered"
    assert record.fields["dropped_bytes"] == len(tail)
    assert str(record.fields["reason"]).startswith(reason)
    assert (tmp_path / str(record.fields["saved_as"])).read_bytes() == tail
    assert record.offset == size
    assert verify_audit(path).ok


def test_an_interrupted_recovery_is_still_recorded_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 2)
    good = path.read_bytes()
    path.write_bytes(good + b'{"seq":3,"ut')
    with _open(path) as log:
        (first,) = log.recovered
    # The crash came after the cut but before the recovery record was durable.
    path.write_bytes(good)
    with _open(path) as log:
        (again,) = log.recovered
    assert again.fields["saved_as"] == first.fields["saved_as"]
    assert "interrupted" in str(again.fields["reason"])
    # Now the record was written late (not at the tail's offset); it must not repeat.
    with _open(path) as log:
        log.append("stop", T0, 1.0)
    with _open(path) as log:
        assert log.recovered == ()
    assert verify_audit(path).ok


def test_a_log_of_another_device_or_not_a_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 1)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="belongs to device 'cam-1'"):
        AuditLog.open(path, "cam-2", utc=T0, mono_s=0.0)
    other = tmp_path / "video.mp4"
    other.write_bytes(b"\x00\x00\x00\x18ftypmp42" * 10)
    with pytest.raises(EvidenceError, match="not an audit log"):
        AuditLog.open(other, "cam-1", utc=T0, mono_s=0.0)
    assert path.read_bytes() == before
    assert other.read_bytes() == b"\x00\x00\x00\x18ftypmp42" * 10


@pytest.mark.parametrize(
    ("kind", "fields", "match"),
    [
        ("Trigger", {}, "must match"),
        ("trigger", {"seq": 5}, "reserved"),
        ("trigger", {"hash": "x"}, "reserved"),
        ("trigger", {"value": math.nan}, "not JSON"),
        ("trigger", {"value": [math.inf]}, "not JSON"),
        ("trigger", {"value": object()}, "not JSON"),
        ("trigger", {"blob": "x" * MAX_LINE_BYTES}, "exceeds"),
    ],
)
def test_bad_appends_raise_and_write_nothing(
    tmp_path: Path, kind: str, fields: dict[str, object], match: str
) -> None:
    path = tmp_path / "audit.jsonl"
    with _open(path) as log:
        size = path.stat().st_size
        with pytest.raises(ValueError, match=match):
            log.append(kind, T0, 1.0, **fields)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="time zone"):
            log.append("trigger", datetime(2026, 1, 1), 1.0)
        with pytest.raises(ValueError, match="mono_s"):
            log.append("trigger", T0, -1.0)
        assert (path.stat().st_size, log.next_seq) == (size, 1)
    with pytest.raises(ValueError, match="closed"):
        log.append("trigger", T0, 1.0)


def test_sync_policies(tmp_path: Path) -> None:
    with _open(tmp_path / "a.jsonl", sync=AuditSync.EXPLICIT) as log:
        log.append("a", T0, 1.0)
        log.append("b", T0, 2.0)
        assert log.unsynced == 2
        log.sync()
        assert log.unsynced == 0
    with _open(tmp_path / "b.jsonl") as log:
        log.append("a", T0, 1.0)
        assert log.unsynced == 0
        with pytest.raises(ValueError, match="signer"):
            log.checkpoint(T0, 1.0)
    with pytest.raises(ValueError, match="differs"):
        _open(tmp_path / "c.jsonl", signer=KEY, key_id="0000000000000000")


def test_verify_names_a_bad_genesis_and_an_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"")
    fault = verify_audit(path).fault
    assert fault is not None
    assert (fault.line, fault.problem) == (1, AuditProblem.BAD_GENESIS)
    _write_log(path, 2)
    lines = _lines(path)
    fake = json.loads(lines[0]) | {"kind": "trigger"}
    del fake["hash"]
    path.write_bytes(b"".join(_rechain([_line(fake), *lines[1:]], 1)))
    fault = verify_audit(path).fault
    assert fault is not None
    assert (fault.line, fault.problem) == (1, AuditProblem.BAD_GENESIS)
    assert independent_verify(path.read_bytes()) is None  # the 20-line check stops at the chain


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_random_bytes_never_make_verify_raise(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(data)
    result = verify_audit(path)
    assert result.fault is not None


field_names = st.from_regex(r"[a-z]{1,6}\Z").filter(
    lambda name: name not in {"seq", "utc", "kind", "prev", "hash"}
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@TMP_SETTINGS
@given(st.lists(st.dictionaries(field_names, json_values, max_size=4), max_size=5))
def test_any_json_fields_round_trip(tmp_path: Path, field_sets: list[dict[str, JsonValue]]) -> None:
    path = tmp_path / "audit.jsonl"
    path.unlink(missing_ok=True)
    with _open(path, sync=AuditSync.EXPLICIT) as log:
        written = [log.append("event", T0, 1.5, **fields) for fields in field_sets]
    assert verify_audit(path).ok
    for record, line in zip(written, _lines(path)[1:], strict=True):
        document = json.loads(line)
        assert {name: document[name] for name in record.fields} == record.fields


def test_sigkill_at_random_instants_keeps_every_reported_record(tmp_path: Path) -> None:
    rng = random.Random(1129)
    for run in range(10):
        path = tmp_path / f"audit-{run}.jsonl"
        child = subprocess.Popen(  # noqa: S603 - our own interpreter and test module
            [sys.executable, "-m", "tests.crashchild", "audit", str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert child.stdout is not None
        assert child.stderr is not None
        reported = 0
        try:
            for _ in range(rng.randint(1, 50)):
                line = child.stdout.readline()
                assert line, child.stderr.read().decode()
                reported = int(line)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
            child.stderr.close()
        with AuditLog.open(path, "cam-crash", utc=T0, mono_s=0.0) as log:
            assert log.next_seq > reported
        result = verify_audit(path)
        assert result.ok, result.message()

"""EventJournal: append, pending, marks, restarts, torn tails; crashes never lose synced data."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.errors import StorageError
from device.journal import MAGIC, EventJournal, JournalEntry, JournalError, encode_record


def entries(journal: EventJournal) -> list[tuple[int, str, bytes]]:
    return [(e.seq, e.topic, e.payload) for e in journal.pending()]


def test_append_pending_mark_and_restart(tmp_path: Path) -> None:
    path = tmp_path / "events.jrn"
    with EventJournal(path, checkpoint_every=1) as journal:
        assert journal.append("t/a", b"1") == 1
        assert journal.append("t/b", b"2") == 2
        assert journal.append("t/c", b"3") == 3
        journal.mark_published(2)  # out of order: the watermark stays at 0
        assert journal.watermark == 0
        assert entries(journal) == [(1, "t/a", b"1"), (3, "t/c", b"3")]
        journal.mark_published(1)
        assert journal.watermark == 2
        journal.mark_published(1)  # idempotent
    with EventJournal(path) as journal:
        assert entries(journal) == [(3, "t/c", b"3")]
        assert journal.append("t/d", b"4") == 4
    with EventJournal(path) as journal:
        assert [e.seq for e in journal.pending()] == [3, 4]


def test_mark_unknown_seq_is_an_error(tmp_path: Path) -> None:
    with EventJournal(tmp_path / "j") as journal:
        journal.append("t", b"")
        with pytest.raises(ValueError, match="no journalled message 2"):
            journal.mark_published(2)


def test_crash_between_checkpoints_replays_but_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = EventJournal(path, checkpoint_every=10)
    for i in range(5):
        journal.append("t", bytes([i]))
    for seq in (1, 2, 3):
        journal.mark_published(seq)
    journal.close(checkpoint=False)  # crash: the watermark was never saved
    with EventJournal(path) as again:
        assert [e.seq for e in again.pending()] == [1, 2, 3, 4, 5]


def test_compaction_when_everything_is_published(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with EventJournal(path, compact_min_bytes=100) as journal:
        for i in range(10):
            journal.append("topic", b"x" * 20 + bytes([i]))
        for seq in range(1, 11):
            journal.mark_published(seq)
        assert journal.size_bytes == len(MAGIC)
        assert journal.pending() == []
    with EventJournal(path) as journal:
        assert journal.pending() == []
        assert journal.append("topic", b"next") == 11  # sequence numbers are never reused


def test_explicit_compaction_keeps_the_unpublished_tail(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with EventJournal(path) as journal:
        for i in range(6):
            journal.append("t", bytes([i]))
        for seq in (1, 2, 3, 5):
            journal.mark_published(seq)
        before = journal.size_bytes
        journal.compact()
        assert journal.size_bytes < before
        assert [e.seq for e in journal.pending()] == [4, 6]
    with EventJournal(path) as journal:
        assert [e.seq for e in journal.pending()] == [4, 6]
        assert journal.append("t", b"") == 7


@pytest.mark.parametrize("cut", [1, 5, 8, 13])
def test_torn_tail_is_cut_off(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "j"
    with EventJournal(path) as journal:
        journal.append("t/a", b"kept")
        journal.append("t/b", b"torn-record")
    path.write_bytes(path.read_bytes()[:-cut])
    with EventJournal(path) as journal:
        assert entries(journal) == [(1, "t/a", b"kept")]
        assert journal.dropped_tail_bytes > 0
        assert journal.append("t/c", b"after") == 2
    with EventJournal(path) as journal:
        assert entries(journal) == [(1, "t/a", b"kept"), (2, "t/c", b"after")]


def test_garbage_tail_fails_its_crc_and_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with EventJournal(path) as journal:
        journal.append("t", b"ok")
    bad = bytearray(encode_record(JournalEntry(2, "t", b"flipped")))
    bad[-1] ^= 0x01
    with path.open("ab") as out:
        out.write(bytes(bad))
    with EventJournal(path) as journal:
        assert [e.seq for e in journal.pending()] == [1]


def test_not_a_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(b"something else entirely")
    with pytest.raises(JournalError, match="not an event journal"):
        EventJournal(path)
    assert issubclass(JournalError, StorageError)


def test_corrupt_watermark_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with EventJournal(path, checkpoint_every=1) as journal:
        journal.append("t", b"")
        journal.mark_published(1)
    mark = path.with_name("j.mark")
    mark.write_bytes(struct.pack(">QI", 5, 0))
    with pytest.raises(JournalError, match="CRC"):
        EventJournal(path)


op = st.one_of(
    st.tuples(st.just("append"), st.binary(max_size=40), st.booleans()),
    st.tuples(st.just("flush")),
    st.tuples(st.just("mark"), st.integers(min_value=0, max_value=1000)),
    st.tuples(st.just("crash"), st.integers(min_value=0), st.booleans()),
    st.tuples(st.just("restart")),
)


@given(ops=st.lists(op, max_size=40), checkpoint_every=st.integers(1, 5))
def test_crashes_never_lose_a_synced_message(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[object, ...]], checkpoint_every: int
) -> None:
    path = tmp_path_factory.mktemp("j") / "events.jrn"
    journal = EventJournal(path, checkpoint_every=checkpoint_every, compact_min_bytes=64)
    appended: dict[int, bytes] = {}
    must_survive: set[int] = set()  # synced and never marked published
    unsynced: set[int] = set()
    try:
        for step in ops:
            if step[0] == "append":
                payload, sync = step[1], step[2]
                assert isinstance(payload, bytes)
                seq = journal.append(f"t/{len(payload)}", payload, sync=bool(sync))
                appended[seq] = payload
                (must_survive if sync else unsynced).add(seq)
                if sync:  # an fsync makes every earlier record durable too
                    must_survive |= unsynced
                    unsynced.clear()
            elif step[0] == "flush":
                journal.flush()
                must_survive |= unsynced
                unsynced.clear()
            elif step[0] == "mark":
                pending = journal.pending()
                if pending:
                    chosen = pending[int(str(step[1])) % len(pending)].seq
                    journal.mark_published(chosen)
                    must_survive.discard(chosen)
                    unsynced.discard(chosen)
            else:
                if step[0] == "crash":
                    # Lose or garble anything after the last fsync, then reopen.
                    offset, garble = int(str(step[1])), bool(step[2])
                    journal.close(checkpoint=False)
                    data = path.read_bytes()
                    span = len(data) - journal.synced_bytes
                    cut = journal.synced_bytes + (offset % (span + 1))
                    tail = bytes(b ^ 0x5A for b in data[cut:]) if garble else b""
                    path.write_bytes(data[:cut] + tail)
                else:
                    journal.close()
                journal = EventJournal(path, checkpoint_every=checkpoint_every)
                unsynced &= {e.seq for e in journal.pending()}
            pending = journal.pending()
            seqs = [e.seq for e in pending]
            assert seqs == sorted(seqs), "replay order is append order"
            assert must_survive <= set(seqs), "a synced, unpublished message was lost"
            for entry in pending:
                assert appended[entry.seq] == entry.payload
                assert entry.topic == f"t/{len(entry.payload)}"
    finally:
        journal.close()

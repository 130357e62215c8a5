"""The evidence receiver's core, without a network: real signed segments from the device's own
store, delivered as MQTT messages in any order, with duplicates, damage, bad trust and restarts.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.errors import EvidenceError
from device.identity import DeviceIdentity
from device.signing import DeviceKey, TrustStore
from device.store import ClosedSegment
from protocol.manifest import SegmentManifest
from protocol.upload import (
    CODE_BAD_SIGNATURE,
    CODE_HASH_MISMATCH,
    CODE_UNKNOWN_DEVICE,
    Ack,
    encode_chunk,
    make_offer,
)
from sim.cli import main
from sim.receiver.core import CODE_CONFLICT, EvidenceReceiverConfig
from sim.receiver.trust import TrustMode
from sim.receiver.verify import verify_receiver_store
from tests.receiver_support import (
    DEVICE,
    Rig,
    chunks_of,
    make_segments,
    offer_of,
)

DeviceStore = tuple[DeviceIdentity, list[ClosedSegment]]


@pytest.fixture(scope="module")
def device_store(tmp_path_factory: pytest.TempPathFactory) -> DeviceStore:
    return make_segments(tmp_path_factory.mktemp("device"), count=2)


def _upload(rig: Rig, closed: ClosedSegment, *, chunk_size: int = 1024) -> list[Ack]:
    offer = offer_of(closed, chunk_size=chunk_size)
    answers = rig.offer(offer)
    for payload in chunks_of(offer, closed.path.read_bytes()):
        answers += rig.chunk(payload)
    return answers


def test_a_real_segment_is_stored_verified_and_byte_identical(
    tmp_path: Path, device_store: DeviceStore
) -> None:
    identity, closed = device_store
    rig = Rig(tmp_path)
    rig.trust(identity)
    answers = _upload(rig, closed[0])
    assert answers[0].state == "receiving"
    assert answers[0].in_reply_to == "offer"
    committed = [a.committed for a in answers[1:-1]]
    assert committed == sorted(committed)
    assert all(a.state == "receiving" for a in answers[1:-1])
    final = answers[-1]
    data = closed[0].path.read_bytes()
    assert final.state == "verified"
    assert final.committed == len(data)
    assert final.sha256 == hashlib.sha256(data).hexdigest() == closed[0].manifest.sha256
    stored = rig.stored(closed[0])
    assert stored.read_bytes() == data
    manifest = stored.with_name("seg-000000.manifest.json")
    assert manifest.read_bytes() == closed[0].manifest_path.read_bytes()
    receipt = rig.receiver.store.receipt(offer_of(closed[0]).upload_id)
    assert receipt is not None
    assert receipt.sha256 == final.sha256
    assert not any((tmp_path / "incoming").iterdir())
    assert rig.receiver.counters.verified == 1
    assert rig.receiver.active_uploads == ()


def test_duplicates_get_the_same_answer_and_store_nothing_new(
    tmp_path: Path, device_store: DeviceStore
) -> None:
    identity, closed = device_store
    rig = Rig(tmp_path)
    rig.trust(identity)
    offer = offer_of(closed[0])
    chunks = chunks_of(offer, closed[0].path.read_bytes())
    rig.offer(offer)
    first = rig.chunk(chunks[0])
    assert rig.chunk(chunks[0]) == first  # a duplicate mid-upload: same committed
    assert rig.offer(offer)[0].committed == first[0].committed
    for payload in chunks[1:]:
        verified = rig.chunk(payload)[-1]
    files = rig.files()
    stat = rig.stored(closed[0]).stat()
    for _ in range(2):
        assert rig.offer(offer) == [msgspec.structs.replace(verified, in_reply_to="offer")]
        assert rig.chunk(chunks[1]) == [verified]
    rig.restart()
    assert rig.offer(offer) == [msgspec.structs.replace(verified, in_reply_to="offer")]
    assert rig.chunk(chunks[-1]) == [verified]
    assert rig.files() == files
    assert rig.stored(closed[0]).stat().st_mtime_ns == stat.st_mtime_ns
    assert rig.receiver.counters.verified == 0  # nothing verified twice


def test_a_damaged_chunk_is_counted_never_committed_nor_answered(
    tmp_path: Path, device_store: DeviceStore
) -> None:
    identity, closed = device_store
    rig = Rig(tmp_path)
    rig.trust(identity)
    offer = offer_of(closed[0])
    rig.offer(offer)
    damaged = bytearray(chunks_of(offer, closed[0].path.read_bytes())[0])
    damaged[-1] ^= 0x40
    assert rig.chunk(bytes(damaged)) == []
    assert rig.chunk(b"BWCK garbage") == []
    assert rig.receiver.counters.corrupt_chunks == 1
    assert rig.receiver.counters.undecodable == 1
    assert rig.receiver.store.durable_length(offer.upload_id) == 0


def test_a_bad_signature_is_rejected_permanently_and_nothing_is_kept(
    tmp_path: Path, device_store: DeviceStore
) -> None:
    identity, closed = device_store
    rig = Rig(tmp_path)
    rig.trust(identity)
    signed = closed[0].signed
    forged = msgspec.structs.replace(
        signed, signature=("00" if signed.signature[:2] != "00" else "11") + signed.signature[2:]
    )
    answers = rig.offer(make_offer(forged, chunk_size=1024, window=8))
    assert [(a.state, a.code) for a in answers] == [("rejected", CODE_BAD_SIGNATURE)]
    assert answers[0].committed == 0
    assert not any((tmp_path / "incoming").iterdir())


def test_a_manifest_on_another_devices_topic_is_rejected(
    tmp_path: Path, device_store: DeviceStore
) -> None:
    identity, closed = device_store
    rig = Rig(tmp_path)
    rig.trust(identity)
    answers = rig.offer(offer_of(closed[0]), device="cam-2")
    assert [(a.state, a.code) for a in answers] == [("rejected", CODE_UNKNOWN_DEVICE)]
    # ...and once cam-1 uploads, cam-2's topic cannot feed or query that upload.
    offer = offer_of(closed[0])
    rig.offer(offer)
    chunk = chunks_of(offer, closed[0].path.read_bytes())[0]
    assert rig.chunk(chunk, device="cam-2") == []
    assert rig.receiver.counters.ignored == 1


def test_an_unknown_key_is_rejected_under_pinned_trust(
    tmp_path: Path, device_store: DeviceStore
) -> None:
    _, closed = device_store
    rig = Rig(tmp_path, mode=TrustMode.PINNED)
    answers = rig.offer(offer_of(closed[0]))
    assert [(a.state, a.code) for a in answers] == [("rejected", CODE_UNKNOWN_DEVICE)]
    other = DeviceKey.from_seed(bytes(32)).public_bytes()
    rig.receiver.present_key(DEVICE, other)  # the operator vouches for another key
    assert rig.offer(offer_of(closed[0]))[0].code == CODE_UNKNOWN_DEVICE
    assert TrustStore(tmp_path / "trust").keys(DEVICE) == (other,)


def test_tofu_enrols_the_first_key_and_refuses_a_different_one(
    tmp_path: Path, device_store: DeviceStore
) -> None:
    identity, closed = device_store
    rig = Rig(tmp_path, mode=TrustMode.TOFU)
    rig.receiver.present_key(DEVICE, identity.key.public_bytes())
    assert TrustStore(tmp_path / "trust").keys(DEVICE) == (identity.key.public_bytes(),)
    impostor = make_segments(tmp_path / "impostor", seed=99)
    with pytest.raises(EvidenceError, match="not enrolled"):
        rig.receiver.present_key(DEVICE, impostor[0].key.public_bytes())
    answers = rig.offer(offer_of(impostor[1][0]))
    assert [(a.state, a.code) for a in answers] == [("rejected", CODE_UNKNOWN_DEVICE)]
    rig.restart()  # the enrolment was recorded in the store
    assert _upload(rig, closed[0])[-1].state == "verified"


def test_a_segment_that_does_not_match_its_manifest_fails_and_is_discarded(
    tmp_path: Path, device_store: DeviceStore
) -> None:
    identity, closed = device_store
    rig = Rig(tmp_path)
    rig.trust(identity)
    wrong: SegmentManifest = msgspec.structs.replace(closed[0].manifest, sha256="0" * 64)
    offer = make_offer(identity.key.sign_manifest(wrong), chunk_size=1024, window=8)
    rig.offer(offer)
    answers = [a for c in chunks_of(offer, closed[0].path.read_bytes()) for a in rig.chunk(c)]
    assert (answers[-1].state, answers[-1].code, answers[-1].committed) == (
        "failed",
        CODE_HASH_MISMATCH,
        0,
    )
    assert rig.receiver.store.durable_length(offer.upload_id) == 0
    assert not rig.stored(closed[0]).exists()


def test_a_different_manifest_for_a_stored_segment_is_a_conflict(
    tmp_path: Path, device_store: DeviceStore
) -> None:
    identity, closed = device_store
    rig = Rig(tmp_path)
    rig.trust(identity)
    _upload(rig, closed[0])
    other: SegmentManifest = msgspec.structs.replace(closed[0].manifest, case_id="case-2")
    answers = rig.offer(make_offer(identity.key.sign_manifest(other), chunk_size=1024, window=8))
    assert [(a.state, a.code) for a in answers] == [("rejected", CODE_CONFLICT)]


def test_a_restarted_receiver_resumes_from_its_committed_prefix(
    tmp_path: Path, device_store: DeviceStore
) -> None:
    identity, closed = device_store
    rig = Rig(tmp_path)
    rig.trust(identity)
    data = closed[1].path.read_bytes()
    offer = offer_of(closed[1], chunk_size=700)
    chunks = chunks_of(offer, data)
    rig.offer(offer)
    half = len(chunks) // 2
    acked = max(a.committed for c in chunks[:half] for a in rig.chunk(c))
    rig.restart()
    answer = rig.offer(offer)
    assert (answer[0].state, answer[0].committed) == ("receiving", acked)
    rig.restart()  # again, and this time the next chunk arrives before any offer
    answers = [a for c in chunks[half:] for a in rig.chunk(c)]
    assert answers[-1].state == "verified"
    assert rig.stored(closed[1]).read_bytes() == data


def test_an_idle_upload_is_released_and_resumed(tmp_path: Path, device_store: DeviceStore) -> None:
    identity, closed = device_store
    config = EvidenceReceiverConfig()
    rig = Rig(tmp_path, config=config)
    rig.trust(identity)
    offer = offer_of(closed[0])
    rig.offer(offer, now=0.0)
    deadline = rig.receiver.next_deadline()
    assert deadline == config.upload.idle_timeout_s
    assert rig.receiver.handle_timeout(deadline - 1) == []
    assert rig.receiver.active_uploads
    rig.receiver.handle_timeout(deadline)
    assert rig.receiver.active_uploads == ()
    assert rig.receiver.next_deadline() is None
    answers = [a for c in chunks_of(offer, closed[0].path.read_bytes()) for a in rig.chunk(c)]
    assert answers[-1].state == "verified"


def test_other_topics_and_unknown_uploads(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    receiver = rig.receiver
    assert receiver.on_message("bwc/v1/dev/cam-1/status", b"{}", 0.0) == []
    assert receiver.on_message("other/topic", b"x", 0.0) == []
    assert receiver.on_message("bwc/v1/dev/cam-1/upload/offer", b"not json", 0.0) == []
    assert receiver.counters.ignored == 2
    assert receiver.counters.undecodable == 1
    answers = rig.chunk(encode_chunk("ab" * 16, 0, b"x"))
    assert [(a.state, a.committed) for a in answers] == [("unknown", 0)]
    assert receiver.subscriptions() == (
        "bwc/v1/dev/+/upload/offer",
        "bwc/v1/dev/+/upload/chunk",
        "bwc/v1/dev/+/audit",
    )


def test_busy_when_too_many_uploads_are_in_progress(
    tmp_path: Path, device_store: DeviceStore
) -> None:
    identity, closed = device_store
    rig = Rig(tmp_path, config=EvidenceReceiverConfig(max_active_uploads=1))
    rig.trust(identity)
    rig.offer(offer_of(closed[0]))
    answers = rig.offer(offer_of(closed[1]))
    assert [(a.state, a.code) for a in answers] == [("failed", "busy")]


# -- any order, duplicates, drops and restarts end in one byte-identical segment -------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("chunk"), st.integers(0, 10**6)),
        st.tuples(st.just("offer"), st.just(0)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=40)
@given(ops=_OPS)
def test_any_delivery_with_restarts_ends_byte_identical(
    ops: list[tuple[str, int]], device_store: DeviceStore
) -> None:
    identity, closed = device_store
    data = closed[0].path.read_bytes()
    offer = offer_of(closed[0], chunk_size=max(1, len(data) // 9), window=4)
    chunks = chunks_of(offer, data)
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        rig = Rig(root)
        rig.trust(identity)
        promised = 0  # the highest committed any ack promised: must survive every restart
        for op, pick in [("offer", 0), *ops]:
            if op == "restart":
                rig.restart()
                continue
            answers = rig.offer(offer) if op == "offer" else rig.chunk(chunks[pick % len(chunks)])
            for ack in answers:
                if ack.state == "unknown":
                    continue
                assert ack.state in {"receiving", "verified"}
                if ack.in_reply_to == "offer":
                    assert ack.committed >= promised  # nothing promised was lost
                promised = max(promised, ack.committed)
                if ack.state == "receiving":
                    assert rig.receiver.store.durable_length(offer.upload_id) >= ack.committed
        answers = rig.offer(offer) + [a for c in chunks for a in rig.chunk(c)]
        assert answers[-1].state == "verified"
        assert rig.stored(closed[0]).read_bytes() == data
        segments = [f for f in rig.files() if f.endswith(".bwcseg")]
        assert segments == [rig.stored(closed[0]).relative_to(root).as_posix()]
        assert not any((root / "incoming").iterdir())
        rig.receiver.close()


def test_bwc_sim_verify_checks_a_receiver_store(tmp_path: Path, device_store: DeviceStore) -> None:
    identity, closed = device_store
    rig = Rig(tmp_path)
    rig.trust(identity)
    for segment in closed:
        assert _upload(rig, segment)[-1].state == "verified"
    report = verify_receiver_store(tmp_path)
    assert report.ok, report.lines()
    assert (report.store, report.segments, report.device) == ("receiver", 2, DEVICE)
    assert main(["verify", str(tmp_path)]) == 0
    stored = rig.stored(closed[1])
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    report = verify_receiver_store(tmp_path)
    assert [f.path for f in report.faults] == [stored.relative_to(tmp_path).as_posix()]
    assert main(["verify", str(tmp_path)]) == 1


def test_a_trust_key_directory_enrols_every_device_below_it(tmp_path: Path) -> None:
    """``--trust-key DIR``: every ``device.json`` below DIR (a fleet's data directory)."""
    from device.errors import ConfigError
    from sim.receiver.trust import TrustMode, TrustPolicy, present_all

    fleet = tmp_path / "fleet" / "cameras"
    made = {}
    for n, device in enumerate(("cam-00001", "cam-00002", "cam-00003")):
        (fleet / device).mkdir(parents=True)
        made[device] = DeviceIdentity.load_or_create(fleet / device, device, seed=n)
    policy = TrustPolicy(tmp_path / "trust", TrustMode.PINNED)
    presented = present_all(policy, [tmp_path / "fleet"])
    assert sorted(presented) == sorted((d, i.key.key_id) for d, i in made.items())
    for device, identity in made.items():
        assert policy.keys(device) == (identity.key.public_bytes(),)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no device\.json below"):
        present_all(policy, [tmp_path / "empty"])

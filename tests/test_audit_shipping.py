"""Audit log shipping: the wire codec, the device's shipper and the receiver's copy, end to end.

In-process, the device's ``AuditShipper`` and the receiver's ``EvidenceReceiver`` exchange their
messages as bytes with some dropped, duplicated and reordered; through a real mosquitto the
receiver runs as ``ReceiverService``. Either way the receiver's ``audit.log`` must end up byte
for byte the device's shipped prefix, and verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.auditformat import verify_audit
from device.auditship import (
    CODE_DIVERGED,
    CODE_LOG_SHORTER,
    CODE_RECEIVER_AHEAD,
    SHIP_TRANSITIONS,
    AuditShipConfig,
    AuditShipper,
    ShipProblem,
    ShipState,
)
from device.auditshipstate import STATE_FILE
from device.errors import ConfigError
from device.identity import DeviceIdentity
from device.mqtt.settings import Backoff, parse_broker_url
from protocol.auditship import (
    AUDIT_HEADER_SIZE,
    MAX_AUDIT_DATA,
    MAX_AUDIT_MESSAGE,
    AuditAck,
    AuditRange,
    decode_audit_ack,
    decode_audit_range,
    encode_audit_ack,
    encode_audit_range,
)
from protocol.errors import DecodeError, LocalProtocolError
from protocol.publish import Publish
from protocol.topics import DeviceChannel, DeviceTopic, Topics
from sim.broker import PrivateBroker
from sim.cli_decode import describe
from sim.receiver.core import EvidenceReceiver
from sim.receiver.service import ReceiverService
from sim.receiver.store import ReceiverStore
from sim.receiver.trust import TrustMode, TrustPolicy
from sim.receiver.verify import verify_receiver_store
from tests.audit_support import FAST, Camera, Link, Net, ship_over_mqtt
from tests.mqtt_support import mosquitto, wait_for, wait_until  # noqa: F401
from tests.receiver_support import DEVICE, Rig, device_client

pytestmark = pytest.mark.timeout(60)
TOPICS = Topics()
AUDIT_TOPIC = TOPICS.device(DEVICE, DeviceChannel.AUDIT)
ACK_TOPIC = TOPICS.device(DEVICE, DeviceChannel.AUDIT_ACK)
lines = st.lists(
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"") + b"\n"), max_size=20
).map(b"".join)


def _rig(root: Path, camera: Camera, *, trust: bool = True) -> Rig:
    rig = Rig(root)
    if trust:
        rig.trust(camera.identity)
    return rig


def _problem(shipper: AuditShipper) -> ShipProblem:
    problem = shipper.progress().problem
    assert problem is not None, shipper.progress()
    return problem


def _acks(publishes: list[Publish]) -> list[AuditAck]:
    assert all(p.topic == ACK_TOPIC and p.qos == 1 and not p.retain for p in publishes)
    return [decode_audit_ack(p.payload) for p in publishes]


# -- the wire --------------------------------------------------------------------------------


@given(st.integers(0, 2**40), lines.filter(lambda d: len(d) <= MAX_AUDIT_DATA))
def test_ranges_round_trip(offset: int, data: bytes) -> None:
    message = encode_audit_range(offset, data)
    assert len(message) == AUDIT_HEADER_SIZE + len(data)
    assert decode_audit_range(message) == AuditRange(offset, data)


@given(lines.filter(bool), st.data())
def test_any_damaged_byte_or_cut_is_a_decode_error(data: bytes, pick: st.DataObject) -> None:
    message = encode_audit_range(5, data)
    where = pick.draw(st.integers(0, len(message) - 1))
    flipped = bytearray(message)
    flipped[where] ^= pick.draw(st.integers(1, 255))
    with pytest.raises(DecodeError):
        decode_audit_range(bytes(flipped))
    with pytest.raises(DecodeError):
        decode_audit_range(message[:where])
    with pytest.raises(DecodeError):
        decode_audit_range(b"\x00" + message)  # garbage before


@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_decoders(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_audit_range(raw)
    with contextlib.suppress(DecodeError):
        decode_audit_ack(raw)


def test_the_encoder_refuses_what_no_receiver_would_take() -> None:
    with pytest.raises(LocalProtocolError, match="whole line"):
        encode_audit_range(0, b'{"seq":0}')
    with pytest.raises(LocalProtocolError, match="exceeds"):
        encode_audit_range(0, b"x" * MAX_AUDIT_DATA + b"\n")
    with pytest.raises(LocalProtocolError, match="out of range"):
        encode_audit_range(-1, b"")


@given(
    st.sampled_from(["stored", "resend", "rejected", "failed"]),
    st.integers(0, 2**53 - 1),
    st.integers(0, 2**53 - 1),
)
def test_acks_round_trip(state: str, offset: int, length: int) -> None:
    head = None if length == 0 else "ab" * 32
    code = "chain_broken" if state in ("rejected", "failed") else None
    ack = decode_audit_ack(
        encode_audit_ack(
            AuditAck(offset=offset, state=state, length=length, head=head, code=code)  # type: ignore[arg-type]
        )
    )
    assert (ack.offset, ack.state, ack.length, ack.head, ack.code) == (
        offset,
        state,
        length,
        head,
        code,
    )


_ACK = b'{"v":1,"type":"audit_ack","offset":0,'


@pytest.mark.parametrize(
    "rest",
    [
        b'"state":"stored","length":5}',  # no head for a non-empty copy
        b'"state":"stored","length":0,"head":"' + b"a" * 64 + b'"}',  # a head for an empty one
        b'"state":"rejected","length":0}',  # a rejection without its code
        b'"state":"stored","length":0,"code":"x"}',  # a code without a failure
        b'"state":"stored","length":0,"extra":1}',
        b'"state":"verified","length":0}',
    ],
)
def test_acks_that_break_a_rule_do_not_decode(rest: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_audit_ack(_ACK + rest)
    with pytest.raises(DecodeError, match=r"\$\.v"):
        decode_audit_ack(b'{"v":2,"type":"audit_ack","offset":0,"state":"stored","length":0}')


def test_the_audit_topics_parse_and_decode() -> None:
    assert AUDIT_TOPIC == "bwc/v1/dev/cam-1/audit"
    assert ACK_TOPIC == "bwc/v1/dev/cam-1/audit/ack"
    assert TOPICS.parse(AUDIT_TOPIC) == DeviceTopic(DEVICE, DeviceChannel.AUDIT)
    assert TOPICS.parse(ACK_TOPIC) == DeviceTopic(DEVICE, DeviceChannel.AUDIT_ACK)
    summary = describe(TOPICS, AUDIT_TOPIC, encode_audit_range(7, b"a\nb\n"))
    assert summary == {"type": "audit_range", "offset": 7, "length": 4, "lines": 2}
    ack = AuditAck(offset=7, state="resend", length=0)
    assert describe(TOPICS, ACK_TOPIC, encode_audit_ack(ack))["state"] == "resend"


# -- the receiver alone ----------------------------------------------------------------------


def test_the_receiver_appends_only_at_its_length(tmp_path: Path) -> None:
    camera = Camera(tmp_path / "device")
    camera.write(3)
    rig = _rig(tmp_path / "store", camera)
    data = camera.data()
    first = data[: data.index(b"\n") + 1]
    receiver = rig.receiver
    assert AUDIT_TOPIC in {t.replace("+", DEVICE) for t in receiver.subscriptions()}

    gap = _acks(
        receiver.on_message(AUDIT_TOPIC, encode_audit_range(len(first), data[len(first) :]), 0)
    )
    assert (gap[0].state, gap[0].length, gap[0].head) == ("resend", 0, None)
    stored = _acks(receiver.on_message(AUDIT_TOPIC, encode_audit_range(0, first), 0))
    assert (stored[0].state, stored[0].length) == ("stored", len(first))
    again = _acks(receiver.on_message(AUDIT_TOPIC, encode_audit_range(0, data), 0))
    assert (again[0].state, again[0].length) == ("resend", len(first))
    query = _acks(receiver.on_message(AUDIT_TOPIC, encode_audit_range(len(first), b""), 0))
    assert (query[0].state, query[0].length, query[0].head) == (
        "stored",
        len(first),
        stored[0].head,
    )
    rest = _acks(
        receiver.on_message(AUDIT_TOPIC, encode_audit_range(len(first), data[len(first) :]), 0)
    )
    assert (rest[0].state, rest[0].length) == ("stored", len(data))
    assert rig.receiver.store.audit_path(DEVICE).read_bytes() == data


def test_damaged_and_foreign_messages_are_dropped_unanswered(tmp_path: Path) -> None:
    camera = Camera(tmp_path / "device")
    rig = _rig(tmp_path / "store", camera)
    message = bytearray(encode_audit_range(0, camera.data()))
    message[-3] ^= 0x10
    assert rig.receiver.on_message(AUDIT_TOPIC, bytes(message), 0) == []
    assert rig.receiver.on_message(AUDIT_TOPIC, b"garbage", 0) == []
    assert rig.receiver.audit.counters.corrupt == 1
    assert rig.receiver.audit.counters.undecodable == 1


def test_an_untrusted_device_is_rejected(tmp_path: Path) -> None:
    camera = Camera(tmp_path / "device")
    rig = _rig(tmp_path / "store", camera, trust=False)
    Link.lossless(camera, rig).run()
    problem = _problem(camera.shipper)
    assert problem.remote
    assert problem.code == "unknown_device"
    assert Link.lossless(camera, rig).copy() == b""


def test_another_devices_log_is_rejected(tmp_path: Path) -> None:
    other = Camera(tmp_path / "other", device="cam-2")
    camera = Camera(tmp_path / "device")
    rig = _rig(tmp_path / "store", camera)
    rig.receiver.present_key("cam-1", other.identity.key.public_bytes())
    acks = _acks(rig.receiver.on_message(AUDIT_TOPIC, encode_audit_range(0, other.data()), 0))
    assert (acks[0].state, acks[0].code) == ("rejected", "bad_genesis")
    assert "names device cam-2" in (acks[0].message or "")


# -- device and receiver together ------------------------------------------------------------


def test_a_log_ships_and_the_copy_verifies(tmp_path: Path) -> None:
    camera = Camera(tmp_path / "device")
    camera.write(60)
    rig = _rig(tmp_path / "store", camera)
    link = Link.lossless(camera, rig)
    link.run()
    assert link.copy() == camera.data()
    assert camera.shipper.progress().pending_bytes == 0
    report = verify_receiver_store(tmp_path / "store")
    assert report.ok, report.faults
    assert report.audit_records == 61 + 60 // 4
    assert any("records received and verified" in note.note for note in report.notes)
    assert verify_audit(
        rig.receiver.store.audit_path(DEVICE), public_keys=[camera.identity.key.public_bytes()]
    ).ok


def test_verify_names_a_line_altered_in_the_receivers_copy(tmp_path: Path) -> None:
    camera = Camera(tmp_path / "device")
    camera.write(12)
    rig = _rig(tmp_path / "store", camera)
    Link.lossless(camera, rig).run()
    copy = rig.receiver.store.audit_path(DEVICE)
    data = bytearray(copy.read_bytes())
    data[data.index(b'"pad":"x') + 7] = ord("y")
    copy.write_bytes(bytes(data))
    report = verify_receiver_store(tmp_path / "store", all_faults=True)
    assert [fault.path for fault in report.faults] == ["devices/cam-1/audit.log"]
    assert "line 2 (seq ?, byte 292)" in report.faults[0].problem
    assert "hash mismatch" in report.faults[0].problem


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    drop=st.sampled_from([0.0, 0.2, 0.5]),
    dup=st.sampled_from([0.0, 0.3]),
    hold=st.sampled_from([0.0, 0.4]),
    budget=st.sampled_from([AUDIT_HEADER_SIZE + 1, 600, 4096, MAX_AUDIT_MESSAGE]),
)
def test_a_lossy_link_still_yields_an_identical_copy(
    seed: int, drop: float, dup: float, hold: float, budget: int
) -> None:
    config = AuditShipConfig(
        max_message_bytes=budget,
        ack_timeout_s=0.5,
        retry_base_s=0.05,
        retry_max_s=0.5,
        durable=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        camera = Camera(root / "device", config=config)
        rig = _rig(root / "store", camera)
        rng = random.Random(seed)
        link = Link(camera, rig, Net(rng, drop, dup, hold), Net(rng, drop, dup, hold))
        for _ in range(3):  # the log grows while it ships
            camera.write(rng.randrange(1, 15), pad=rng.randrange(0, 300))
            link.run(lambda: rng.random() < 0.01)
        link.run()
        assert link.copy() == camera.data()
        assert camera.shipper.progress().problem is None
        assert verify_receiver_store(root / "store").ok


def test_no_message_exceeds_the_budget_unless_one_line_does(tmp_path: Path) -> None:
    config = AuditShipConfig(max_message_bytes=500, durable=False)
    camera = Camera(tmp_path / "device", config=config)
    camera.write(5, pad=100)
    camera.write(1, pad=2000)  # one line far longer than the budget goes alone
    camera.write(5, pad=100)
    rig = _rig(tmp_path / "store", camera)
    link = Link.lossless(camera, rig)
    link.run()
    sizes = link.sent
    assert link.copy() == camera.data()
    longest = max(len(line) + 1 for line in camera.data().split(b"\n"))
    assert max(sizes) == AUDIT_HEADER_SIZE + longest
    assert sorted(sizes)[-2] <= 500


def test_receiver_restart_mid_ship_resumes(tmp_path: Path) -> None:
    camera = Camera(tmp_path / "device")
    camera.write(80)
    rig = _rig(tmp_path / "store", camera)
    link = Link.lossless(camera, rig)
    link.run(lambda: camera.shipper.progress().acked_bytes > len(camera.data()) // 2)
    rig.restart()
    link.run()
    assert link.copy() == camera.data()


def test_a_torn_tail_of_the_copy_is_cut_at_restart(tmp_path: Path) -> None:
    camera = Camera(tmp_path / "device")
    camera.write(30)
    rig = _rig(tmp_path / "store", camera)
    link = Link.lossless(camera, rig)
    link.run(lambda: camera.shipper.progress().acked_bytes > 0)
    copy = rig.receiver.store.audit_path(DEVICE)
    acked = copy.stat().st_size
    rig.receiver.close()
    with copy.open("ab") as file:  # a crash mid-append: part of a line, never acknowledged
        file.write(camera.data()[acked : acked + 50])
    rig.restart()
    assert rig.receiver.audit_recovered == [DEVICE]
    assert copy.stat().st_size == acked
    link.run()
    assert link.copy() == camera.data()
    report = verify_receiver_store(tmp_path / "store")
    assert report.ok
    assert any(".torn-" in note.path for note in report.notes)


def test_device_restart_resumes_from_its_state_file(tmp_path: Path) -> None:
    camera = Camera(tmp_path / "device")
    camera.write(40)
    rig = _rig(tmp_path / "store", camera)
    link = Link.lossless(camera, rig)
    link.run(lambda: camera.shipper.progress().acked_bytes > len(camera.data()) // 3)
    acked = camera.shipper.progress().acked_bytes
    camera.log.close()
    camera.log = camera.open_log()
    camera.shipper = camera.new_shipper(seed=2)  # memory lost, the state file kept
    assert (tmp_path / "device" / "uploads" / STATE_FILE).is_file()
    assert camera.shipper.progress().acked_bytes == acked
    camera.shipper.link_up(link.now)
    first = camera.shipper.poll(link.now)
    assert decode_audit_range(first[0].payload).offset == acked
    link.up.send(first)
    camera.write(10)
    link.run()
    assert link.copy() == camera.data()


def test_a_device_that_lost_its_state_is_repositioned_by_the_receiver(tmp_path: Path) -> None:
    camera = Camera(tmp_path / "device")
    camera.write(40)
    rig = _rig(tmp_path / "store", camera)
    Link.lossless(camera, rig).run()
    (tmp_path / "device" / "uploads" / STATE_FILE).unlink()
    camera.shipper = camera.new_shipper()
    camera.write(5)
    link = Link.lossless(camera, rig)
    link.run()
    assert link.copy() == camera.data()
    assert rig.receiver.audit.counters.resends >= 1


@pytest.mark.parametrize("how", ["hash", "rehashed"])
def test_a_tampered_range_is_rejected_for_good(tmp_path: Path, how: str) -> None:
    camera = Camera(tmp_path / "device")
    camera.write(20)
    rig = _rig(tmp_path / "store", camera)
    link = Link.lossless(camera, rig)
    link.run()
    shipped = len(camera.data())
    camera.write(20)
    data = bytearray(camera.data())
    at = data.index(b'"pad":"x', shipped + 100)
    data[at + 7] = ord("y")  # a line changed after it was written
    if how == "rehashed":  # ...and its hash recomputed: the next line's prev no longer matches
        data = bytearray(_rehash_line_at(bytes(data), at))
    camera.audit_path.write_bytes(bytes(data))
    link.run()
    shipper = camera.shipper
    problem = _problem(shipper)
    assert shipper.state is ShipState.STOPPED
    assert problem.remote
    assert problem.code == "chain_broken"
    assert shipper.take_problem() == problem
    assert shipper.take_problem() is None
    assert link.copy() == camera.data()[: len(link.copy())]
    assert len(link.copy()) < len(camera.data())
    sent = shipper.ranges_sent
    for _ in range(50):
        link.step()
    assert shipper.ranges_sent == sent  # no loop: nothing is sent again
    restarted = camera.new_shipper()  # the rejection survives a restart
    assert restarted.state is ShipState.STOPPED
    assert restarted.progress().problem == problem
    assert verify_receiver_store(tmp_path / "store").ok  # nothing of the range was stored


def _rehash_line_at(data: bytes, at: int) -> bytes:
    start = data.rindex(b"\n", 0, at) + 1
    end = data.index(b"\n", at) + 1
    line = data[start:end]
    body = line[: -len(b',"hash":"' + b"0" * 64 + b'"}\n')] + b"}"
    digest = hashlib.sha256(body).hexdigest().encode()
    return data[:start] + body[:-1] + b',"hash":"' + digest + b'"}\n' + data[end:]


def test_a_checkpoint_signed_by_another_key_is_rejected(tmp_path: Path) -> None:
    camera = Camera(tmp_path / "device")
    rig = _rig(tmp_path / "store", camera)  # trusts the camera's own key
    camera.log.close()
    camera.audit_path.unlink()
    # The same device ID, another key: its log's checkpoints do not verify with the trusted key.
    (tmp_path / "rogue").mkdir()
    camera.identity = DeviceIdentity.load_or_create(tmp_path / "rogue", DEVICE, seed=99)
    camera.log = camera.open_log()
    camera.write(4)
    link = Link.lossless(camera, rig)
    link.run()
    assert _problem(camera.shipper).code == "bad_signature"


def test_a_receiver_that_cannot_write_is_retried_later(tmp_path: Path) -> None:
    camera = Camera(tmp_path / "device")
    camera.write(10)
    rig = _rig(tmp_path / "store", camera)
    blocker = tmp_path / "store" / "devices" / DEVICE
    blocker.write_bytes(b"not a directory")  # every write of the copy fails
    link = Link.lossless(camera, rig)
    link.run(lambda: rig.receiver.audit.counters.storage_errors >= 3)
    assert camera.shipper.state is not ShipState.STOPPED
    assert camera.shipper.progress().acked_bytes == 0
    blocker.unlink()  # fixed: the next retry goes through, no restart needed
    link.run()
    assert link.copy() == camera.data()


def test_a_log_cut_below_the_acked_offset_is_reported_not_a_crash(tmp_path: Path) -> None:
    camera = Camera(tmp_path / "device")
    camera.write(20)
    rig = _rig(tmp_path / "store", camera)
    link = Link.lossless(camera, rig)
    link.run()
    camera.log.close()
    with camera.audit_path.open("r+b") as file:  # what a repair of a torn tail leaves
        file.truncate(len(camera.data()) - 10)
    assert camera.shipper.poll(link.now + 5) == []
    problem = _problem(camera.shipper)
    assert problem.code == CODE_LOG_SHORTER
    assert not problem.remote


def test_a_replaced_log_is_reported_as_diverged(tmp_path: Path) -> None:
    camera = Camera(tmp_path / "device")
    camera.write(10)
    rig = _rig(tmp_path / "store", camera)
    Link.lossless(camera, rig).run()
    camera.log.close()
    camera.audit_path.unlink()
    camera.log = camera.open_log()  # a new genesis, another chain
    camera.write(20)
    camera.shipper = camera.new_shipper()
    Link.lossless(camera, rig).run()
    assert _problem(camera.shipper).code == CODE_DIVERGED
    assert camera.shipper.release(0.0)
    Link.lossless(camera, rig).run()  # released: the receiver's copy still differs
    assert _problem(camera.shipper).code == CODE_DIVERGED


def test_a_receiver_holding_more_than_the_log_is_reported(tmp_path: Path) -> None:
    camera = Camera(tmp_path / "device")
    camera.write(20)
    rig = _rig(tmp_path / "store", camera)
    Link.lossless(camera, rig).run()
    camera.log.close()
    camera.audit_path.write_bytes(camera.data()[: camera.data().index(b"\n") + 1])
    (tmp_path / "device" / "uploads" / STATE_FILE).unlink()
    camera.shipper = camera.new_shipper()
    Link.lossless(camera, rig).run(lambda: False, max_steps=200)
    assert _problem(camera.shipper).code == CODE_RECEIVER_AHEAD


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="max_message_bytes"):
        AuditShipConfig(max_message_bytes=MAX_AUDIT_MESSAGE + 1)
    with pytest.raises(ConfigError, match="ack_timeout_s"):
        AuditShipConfig(ack_timeout_s=0)


# -- the shipper's state machine -------------------------------------------------------------

_INPUTS = ["link_up", "link_down", "poll", "timeout", "ack", "stale", "junk", "release", "grow"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(_INPUTS), max_size=40), st.integers(0, 3))
def test_every_input_in_every_state_leads_to_a_legal_state(inputs: list[str], seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        camera = Camera(Path(tmp) / "device")
        rig = _rig(Path(tmp) / "store", camera)
        shipper, now, rng = camera.shipper, 0.0, random.Random(seed)
        pending: list[Publish] = []
        for name in inputs:
            before = shipper.state
            now += rng.choice([0.0, 0.5, 5.0, 50.0])
            if name == "link_up":
                shipper.link_up(now)
            elif name == "link_down":
                shipper.link_down(now)
            elif name == "poll":
                pending += shipper.poll(now)
            elif name == "timeout":
                shipper.handle_timeout(now)
            elif name == "ack" and pending:
                answer = rig.receiver.on_message(AUDIT_TOPIC, pending.pop(0).payload, now)
                for ack in answer:
                    shipper.on_message(ack.topic, ack.payload, now)
            elif name == "stale":
                stale = AuditAck(offset=123, state="rejected", length=0, code="chain_broken")
                shipper.on_message(ACK_TOPIC, encode_audit_ack(stale), now)
            elif name == "junk":
                shipper.on_message(ACK_TOPIC, b"{", now)
            elif name == "release":
                shipper.release(now)
            elif name == "grow":
                camera.write(1)
            after = shipper.state
            assert after is before or after in SHIP_TRANSITIONS[before]
            deadline = shipper.next_deadline()
            assert (deadline is None) == (after in (ShipState.DOWN, ShipState.STOPPED))
        assert camera.data().startswith(Link.lossless(camera, rig).copy())


# -- through a real mosquitto ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _receiver(store_dir: Path, url: str, key: bytes) -> AsyncIterator[ReceiverService]:
    store = ReceiverStore(store_dir)
    core = EvidenceReceiver(store, TrustPolicy(store.trust, TrustMode.TOFU))
    core.present_key(DEVICE, key)
    service = ReceiverService(core, parse_broker_url(url, backoff=Backoff(base_s=0.05, cap_s=0.2)))
    task = asyncio.create_task(service.run())
    try:
        await wait_for(service.connected.wait(), timeout_s=10, what="receiver subscribed")
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        core.close()


@pytest.mark.asyncio
async def test_shipping_through_mosquitto_survives_restarts_and_duplicates(
    tmp_path: Path,
    mosquitto: PrivateBroker,  # noqa: F811 - the fixture imported above
) -> None:
    config = AuditShipConfig(
        max_message_bytes=1024, ack_timeout_s=0.5, retry_base_s=0.05, retry_max_s=0.3
    )
    camera = Camera(tmp_path / "device", config=config)
    camera.write(50)
    key = camera.identity.key.public_bytes()
    store = tmp_path / "store"

    def third() -> bool:
        return camera.shipper.progress().acked_bytes > len(camera.data()) // 3

    def grow() -> None:
        if camera.records < 120:
            camera.write(1)

    def everything() -> bool:
        return camera.records >= 120 and camera.shipper.progress().acked_bytes == len(camera.data())

    async with device_client(mosquitto.url, DEVICE) as client:
        async with _receiver(store, mosquitto.url, key):
            await wait_for(ship_over_mqtt(client, camera.shipper, until=third), what="a third")
        # The receiver is down. The device restarts (a new shipper on its state file) and ships
        # into the receiver's broker session, duplicating every range and growing its log.
        camera.shipper = camera.new_shipper()
        run = ship_over_mqtt(client, camera.shipper, until=everything, duplicate=True, between=grow)
        shipping = asyncio.create_task(run)
        # Let it ship (and duplicate) a few ranges into the broker while nobody receives them.
        await wait_until(lambda: camera.shipper.ranges_sent >= 2, what="ranges while down")
        async with _receiver(store, mosquitto.url, key) as service:
            await wait_for(shipping, timeout_s=30, what="the whole log")
            assert service.core.audit.counters.resends >= 1  # the duplicates
    copy = (store / "devices" / DEVICE / "audit.log").read_bytes()
    assert copy == camera.data()
    report = verify_receiver_store(store)
    assert report.ok, report.faults
    assert report.audit_records == camera.log.next_seq


@pytest.mark.asyncio
async def test_a_tampered_log_is_rejected_through_mosquitto(
    tmp_path: Path,
    mosquitto: PrivateBroker,  # noqa: F811 - the fixture imported above
) -> None:
    camera = Camera(tmp_path / "device", config=FAST)
    camera.write(10)
    camera.log.close()
    data = bytearray(camera.data())
    data[data.rindex(b'"pad":"x') + 7] = ord("z")
    camera.audit_path.write_bytes(bytes(data))
    key = camera.identity.key.public_bytes()
    async with (
        _receiver(tmp_path / "store", mosquitto.url, key),
        device_client(mosquitto.url, DEVICE) as client,
    ):
        run = ship_over_mqtt(client, camera.shipper, until=lambda: False)
        await wait_for(run, timeout_s=20, what="the rejection")
    problem = _problem(camera.shipper)
    assert problem.remote
    assert problem.code == "chain_broken"
    copy = (tmp_path / "store" / "devices" / DEVICE / "audit.log").read_bytes()
    assert copy
    assert camera.data().startswith(copy)

"""The topic namespace: builders, filters and a strict parser."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import DecodeError, LocalProtocolError
from protocol.topics import (
    DeviceChannel,
    DeviceTopic,
    GroupChannel,
    GroupTopic,
    Topics,
    require_concrete,
)
from tests.strategies import safe_ids

TOPICS = Topics()


def test_device_topics_are_versioned() -> None:
    assert TOPICS.device("cam-1", DeviceChannel.STATUS) == "bwc/v1/dev/cam-1/status"
    assert TOPICS.device("cam-1", DeviceChannel.UPLOAD_ACK) == "bwc/v1/dev/cam-1/upload/ack"
    assert TOPICS.group("squad-7", GroupChannel.PEER) == "bwc/v1/group/squad-7/peer"


def test_filters_use_single_level_wildcards() -> None:
    assert TOPICS.device_filter(DeviceChannel.EVENT) == "bwc/v1/dev/+/event"
    assert TOPICS.device_filter(DeviceChannel.COMMAND, "cam-1") == "bwc/v1/dev/cam-1/cmd"
    assert TOPICS.group_filter(GroupChannel.COMMAND) == "bwc/v1/group/+/cmd"


@given(safe_ids, st.sampled_from(DeviceChannel))
def test_device_topics_round_trip(device: str, channel: DeviceChannel) -> None:
    assert TOPICS.parse(TOPICS.device(device, channel)) == DeviceTopic(device, channel)


@given(safe_ids, st.sampled_from(GroupChannel))
def test_group_topics_round_trip(group: str, channel: GroupChannel) -> None:
    assert TOPICS.parse(TOPICS.group(group, channel)) == GroupTopic(group, channel)


def test_a_tenant_prefix_may_have_several_levels() -> None:
    tenant = Topics("agency-a/bwc")
    topic = tenant.device("cam-1", DeviceChannel.EVENT)
    assert topic == "agency-a/bwc/v1/dev/cam-1/event"
    assert tenant.parse(topic) == DeviceTopic("cam-1", DeviceChannel.EVENT)
    with pytest.raises(DecodeError, match="not under"):
        TOPICS.parse(topic)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "1-512 bytes"),
        ("bwc/v1/dev/+/status", "wildcard"),
        ("bwc/v1/dev/#", "wildcard"),
        ("$SYS/broker/uptime", "wildcard"),
        ("bwc/v2/dev/cam-1/status", "not under"),
        ("bwc/v1/dev/cam-1", "too short"),
        ("bwc/v1/dev/cam 1/status", "invalid ID"),
        ("bwc/v1/dev/-cam/status", "invalid ID"),
        ("bwc/v1/dev/cam-1/selfie", "unknown scope"),
        ("bwc/v1/dev/cam-1/upload/offer/extra", "unknown scope"),
        ("bwc/v1/group/squad/status", "unknown scope"),
        ("bwc/v1/fleet/squad/status", "unknown scope"),
        ("bwc/v1/dev//status", "invalid ID"),
        ("bwc/v1/dev/" + "a" * 600 + "/status", "1-512 bytes"),
    ],
)
def test_malformed_topics_are_rejected(topic: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        TOPICS.parse(topic)


@pytest.mark.parametrize("bad", ["", "a/b", "cam+1", "#", "$SYS", "x" * 65, "é"])
def test_builders_refuse_unsafe_ids(bad: str) -> None:
    with pytest.raises(LocalProtocolError, match="not a valid ID"):
        TOPICS.device(bad, DeviceChannel.STATUS)


def test_prefix_levels_must_be_safe() -> None:
    with pytest.raises(LocalProtocolError):
        Topics("bwc/+")


def test_publish_targets_must_be_concrete() -> None:
    assert require_concrete("bwc/v1/dev/cam-1/status") == "bwc/v1/dev/cam-1/status"
    for bad in ("bwc/v1/dev/+/status", "bwc/#", "$SYS/x", ""):
        with pytest.raises(LocalProtocolError):
            require_concrete(bad)


@given(st.text(max_size=100))
def test_random_topics_raise_only_decode_error(topic: str) -> None:
    with contextlib.suppress(DecodeError):
        TOPICS.parse(topic)


@given(st.lists(st.sampled_from(["bwc", "v1", "dev", "group", "cam", "+", "#", "", "status"])))
def test_random_level_soup_raises_only_decode_error(levels: list[str]) -> None:
    try:
        parsed = TOPICS.parse("/".join(levels))
    except DecodeError:
        return
    assert isinstance(parsed, DeviceTopic | GroupTopic)

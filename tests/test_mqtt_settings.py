"""Broker URL parsing and the reconnection backoff (pure, no broker)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.errors import ConfigError
from device.mqtt import Backoff, parse_broker_url


def test_plain_and_tls_urls(tmp_path: Path) -> None:
    plain = parse_broker_url("mqtt://broker.local")
    assert (plain.host, plain.port, plain.tls, plain.protocol) == ("broker.local", 1883, False, "5")
    assert (plain.keepalive_s, plain.session_expiry_s) == (30, 86_400)
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    secret = "pw"  # noqa: S105 - a test credential
    tls = parse_broker_url("mqtts://10.0.0.1:9883", username="cam", password=secret, ca_file=ca)
    assert (tls.port, tls.tls, tls.username, tls.ca_file) == (9883, True, "cam", ca)
    assert "pw" not in repr(tls)
    creds = parse_broker_url("mqtt://cam:s%40cret@h:1", protocol="3.1.1")
    assert (creds.username, creds.password, creds.protocol) == ("cam", "s@cret", "3.1.1")


@pytest.mark.parametrize(
    ("url", "kwargs", "match"),
    [
        ("http://h", {}, "mqtt:// or mqtts://"),
        ("mqtt://", {}, "no host"),
        ("mqtt://h:99999", {}, "malformed"),
        ("mqtt://h:0", {}, "port"),
        ("mqtt://h/path", {}, "path"),
        ("mqtt://h?x=1", {}, "path, query"),
        ("mqtt://u@h", {"username": "v"}, "not both"),
        ("mqtt://h", {"password": "p"}, "needs a username"),
        ("mqtt://h", {"ca_file": "/nonexistent/ca.pem"}, "ca_file"),
        ("mqtt://h", {"protocol": "4"}, "protocol"),
        ("mqtt://h", {"session_expiry_s": 0}, "session_expiry_s"),
        ("mqtt://h", {"keepalive_s": 1}, "keepalive_s"),
        ("mqtt://h", {"connect_timeout_s": 0.0}, "connect_timeout_s"),
    ],
)
def test_bad_settings_are_config_errors(url: str, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_broker_url(url, **kwargs)  # type: ignore[arg-type]


def test_ca_file_needs_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ConfigError, match="TLS"):
        parse_broker_url("mqtt://h", ca_file=ca)


def test_backoff_rejects_a_cap_below_the_base() -> None:
    with pytest.raises(ConfigError, match="cap_s"):
        Backoff(base_s=2.0, cap_s=1.0)


@given(attempt=st.integers(0, 200), seed=st.integers(0, 2**32))
def test_backoff_delay_is_jittered_within_the_exponential_ceiling(attempt: int, seed: int) -> None:
    backoff = Backoff()
    delay = backoff.delay(attempt, random.Random(seed))
    ceiling = min(30.0, 0.5 * 2**attempt)
    assert ceiling / 2 <= delay <= ceiling
    assert backoff.ceiling(attempt) == ceiling

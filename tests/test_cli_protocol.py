"""The protocol-facing commands: ``bwc-sim demo`` and ``bwc-sim decode``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from protocol.upload import UploadResult
from sim.cli import main
from sim.linksim import LinkProfile
from sim.upload_demo import run_upload_demo


def test_demo_verifies_a_segment_over_a_bad_link(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--json", "--size", "300000", "--drop", "0.1", "--corrupt", "0.05"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["result"] == "verified"
    assert summary["stored_identical"] is True
    assert summary["link"]["dropped"] > 0


def test_demo_is_deterministic_for_a_seed() -> None:
    profile = LinkProfile(drop=0.1, duplicate=0.05, corrupt=0.05)
    first = run_upload_demo(size=200_000, profile=profile, seed=7)
    second = run_upload_demo(size=200_000, profile=profile, seed=7)
    assert first == second


def test_corrupted_chunks_are_refused_and_resent() -> None:
    profile = LinkProfile(corrupt=0.3)
    result = run_upload_demo(size=500_000, profile=profile, seed=3)
    assert result.result is UploadResult.VERIFIED
    assert result.stored_identical
    assert result.corrupt_chunks_refused > 0


def test_an_empty_segment_uploads() -> None:
    result = run_upload_demo(size=0, profile=LinkProfile(), seed=1)
    assert result.result is UploadResult.VERIFIED
    assert result.stored_identical


@pytest.mark.parametrize("argv", [["--drop", "1.5"], ["--size", "-1"], ["--chunk-size", "0"]])
def test_demo_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *argv]) == 2
    assert "bwc-sim demo:" in capsys.readouterr().err


def test_decode_accepts_a_valid_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = tmp_path / "cmd.json"
    payload.write_text(
        '{"v":1,"type":"ping","ts":"2026-11-29T14:00:00Z","id":"c-1","sender":"dispatch"}'
    )
    assert main(["decode", "--topic", "bwc/v1/dev/cam-1/cmd", str(payload)]) == 0
    assert json.loads(capsys.readouterr().out)["type"] == "ping"


def test_decode_names_the_broken_field(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    document = b'{"v":1,"type":"deactivate","ts":"2026-11-29T14:00:00Z","id":"c","sender":"d"}'
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(document)))
    assert main(["decode", "--topic", "bwc/v1/dev/cam-1/cmd", "-"]) == 2
    assert "missing required field `reason`" in capsys.readouterr().err


def test_decode_refuses_a_wildcard_topic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = tmp_path / "x"
    payload.write_bytes(b"{}")
    assert main(["decode", "--topic", "bwc/v1/dev/+/cmd", str(payload)]) == 2
    assert "wildcard" in capsys.readouterr().err


def test_decode_missing_file_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decode", "--topic", "bwc/v1/dev/c/cmd", str(tmp_path / "nope")]) == 2
    assert "cannot read" in capsys.readouterr().err

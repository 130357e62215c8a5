"""Policy files: the default written out, the two agency examples, the docs, errors and fuzzing."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import get_type_hints

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.policy import Durability, RecordingPolicy
from device.policyfile import POLICY_KEYS, AgencyPolicy, load_policy, parse_policy
from device.rules import (
    DEFAULT_TRIGGER_RULES,
    CategoryRules,
    ComplianceRules,
    GeofenceRule,
    ModeRules,
    PeerRules,
    PolicyRules,
    StopRules,
    TriggerRule,
)
from device.tomlfields import ConfigFileError, Problem, expected, parse_time
from device.triggers import CONFIGURABLE_KINDS
from sim.scenario import load_scenario, parse_scenario
from tests.fuzz import FUZZ_EXAMPLES, mutated, toml_documents

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = ROOT / "policies" / "default.toml"
FEDERAL = ROOT / "examples" / "policies" / "agency-federal.toml"
METRO = ROOT / "examples" / "policies" / "agency-metro.toml"
POLICY_FILES = (DEFAULT_FILE, FEDERAL, METRO)
DOC = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
RULE_CLASSES = (
    RecordingPolicy,
    TriggerRule,
    StopRules,
    ModeRules,
    CategoryRules,
    PeerRules,
    ComplianceRules,
    GeofenceRule,
)


def _error(text: str) -> str:
    with pytest.raises(ConfigFileError) as caught:
        parse_policy(text, "agency.toml")
    return str(caught.value)


# -- the default file -----------------------------------------------------------------------------


def test_the_default_file_is_the_default_policy() -> None:
    policy = load_policy(DEFAULT_FILE)
    assert policy == AgencyPolicy()
    assert policy.name == AgencyPolicy().name == "default"
    assert policy.recording.durability is Durability.RECORD


def test_the_default_file_writes_every_key_out() -> None:
    text = DEFAULT_FILE.read_text(encoding="utf-8")
    for kind in CONFIGURABLE_KINDS:
        assert re.search(rf"^\[triggers\.{kind}\] ", text, re.MULTILINE), kind
    tables = {
        "stop": StopRules,
        "modes": ModeRules,
        "categories": CategoryRules,
        "peer": PeerRules,
        "compliance": ComplianceRules,
    }
    for table, cls in tables.items():
        assert f"\n[{table}]\n" in text, table
        for field in dataclasses.fields(cls):
            # min_pre_roll_s is None by default, which TOML cannot write: it is a comment.
            assert re.search(rf"^#? ?{field.name} = ", text, re.MULTILINE), field.name
    for key in (*POLICY_KEYS[: POLICY_KEYS.index("triggers")], "geofences"):
        assert re.search(rf"^{key} = ", text, re.MULTILINE), key


def test_a_changed_default_file_is_no_longer_the_default() -> None:
    # The equality above must be able to fail: one value changed anywhere is seen.
    text = DEFAULT_FILE.read_text(encoding="utf-8")
    for old, new in [
        ("debounce_s = 10.0", "debounce_s = 9.0"),
        ('"serious injury",\n', '"serious injuries",\n'),
        ("range_m = 9.1", "range_m = 9.2"),
        ('name = "default"', 'name = "Default"'),
    ]:
        assert old in text
        assert parse_policy(text.replace(old, new, 1)) != AgencyPolicy()


# -- the agency examples --------------------------------------------------------------------------


def test_the_federal_example_differs_where_it_says() -> None:
    policy = load_policy(FEDERAL)
    default = AgencyPolicy()
    rules = policy.rules
    assert policy.name != default.name
    assert policy.recording == default.recording  # 30 s, video-only buffer: the defaults
    assert not rules.triggers["vehicle_door"].enabled
    assert not rules.triggers["vehicle_speed"].enabled
    assert not rules.triggers["geofence"].enabled
    assert rules.stop == default.rules.stop
    assert rules.modes.stealth_allowed
    assert not rules.modes.mute_allowed
    assert rules.categories.critical_upload_deadline_s == 1800.0
    default_deadline_s = default.rules.categories.critical_upload_deadline_s
    assert rules.categories.critical_upload_deadline_s < default_deadline_s
    assert rules.categories.is_critical(("Death in Custody",))
    assert rules.compliance.min_pre_roll_s == 30.0
    assert rules.compliance.activation_grace_s == 10.0
    assert "at-large arrest" in rules.compliance.covered
    assert "removal order" in rules.compliance.covered
    assert rules.compliance.prohibited == ("first amendment",)
    assert rules.geofences == ()


def test_the_metro_example_differs_where_it_says() -> None:
    policy = load_policy(METRO)
    default = AgencyPolicy()
    rules = policy.rules
    assert policy.recording.pre_event_s == 120.0
    assert policy.recording.audio_in_buffer
    assert policy.recording.post_event_s == 10.0
    # 120 s of 1080p30 (17.5 Mb/s) with 64 kb/s audio fits the byte bound; the default does not.
    needed = 120 * (17_500_000 + 64_000) / 8
    assert default.recording.pre_event_max_bytes < needed <= policy.recording.pre_event_max_bytes
    for kind in ("vehicle_door", "vehicle_speed", "geofence"):
        assert rules.triggers[kind].enabled
        assert not default.rules.triggers[kind].enabled
    assert rules.triggers["vehicle_door"].debounce_s == 2.0
    assert rules.triggers["vehicle_speed"] == dataclasses.replace(
        DEFAULT_TRIGGER_RULES["vehicle_speed"], enabled=True
    )
    assert rules.stop.members_may_stop_group
    assert not rules.modes.sleep_allowed
    assert not rules.modes.stealth_allowed
    assert rules.modes.recording_reminder_s == 120.0
    assert rules.peer.range_m == 15.0
    assert rules.compliance.min_pre_roll_s == 30.0
    assert [fence.name for fence in rules.geofences] == ["courthouse", "lincoln elementary"]
    for fence in rules.geofences:
        lats = [lat for lat, _ in fence.polygon]
        lons = [lon for _, lon in fence.polygon]
        # A city block or a school's grounds: a few hundred metres at most, not a city.
        assert max(lats) - min(lats) < 0.005
        assert max(lons) - min(lons) < 0.005


def test_the_two_examples_differ_from_each_other() -> None:
    federal, metro = load_policy(FEDERAL), load_policy(METRO)
    assert federal.recording != metro.recording
    assert federal.rules.modes.stealth_allowed != metro.rules.modes.stealth_allowed
    assert federal.rules.stop.members_may_stop_group != metro.rules.stop.members_may_stop_group
    assert set(federal.rules.compliance.covered) != set(metro.rules.compliance.covered)


# -- the docs -------------------------------------------------------------------------------------


def test_every_policy_key_and_trigger_kind_is_documented() -> None:
    for cls in RULE_CLASSES:
        for name, hint in get_type_hints(cls, include_extras=True).items():
            expected(hint)  # raises TypeError for a type the file format cannot express
            assert f"`{name}`" in DOC, f"{cls.__name__}.{name} is not in docs/policy.md"
    for kind in CONFIGURABLE_KINDS:
        assert f"`{kind}`" in DOC, f"trigger kind {kind} is not in docs/policy.md"
    for key in POLICY_KEYS:
        spelled = (f"`{key}`", f"`[{key}]`", f"`[[{key}]]`", f"`[{key}.KIND]`")
        assert any(spelling in DOC for spelling in spelled), key
    for table in ("[triggers.KIND]", "[stop]", "[modes]", "[categories]", "[peer]"):
        assert f"`{table}`" in DOC
    assert "`[compliance]`" in DOC
    assert "`[[geofences]]`" in DOC


def test_policy_rules_has_one_table_per_rule_class() -> None:
    # A new rule table in PolicyRules must be added to RULE_CLASSES (and so to the docs).
    hints = get_type_hints(PolicyRules)
    tables = {hints[f.name] for f in dataclasses.fields(PolicyRules)}
    assert {StopRules, ModeRules, CategoryRules, PeerRules, ComplianceRules} <= tables
    assert len(tables) == 7  # plus triggers (a mapping) and geofences (a tuple)


# -- errors ---------------------------------------------------------------------------------------

ERRORS = [
    (
        "unknown table",
        "[trigger.gunshot]\nenabled = true\n",
        (
            "agency.toml:1: trigger: unknown key 'trigger' (did you mean 'triggers'?); expected "
            "one of name, pre_event_s, pre_event_max_bytes, audio_in_buffer, post_event_s, "
            "segment_s, max_recording_s, storage_bytes, storage_reserve_bytes, durability, "
            "sync_interval_s, triggers, stop, modes, categories, peer, compliance, geofences"
        ),
    ),
    (
        "unknown trigger kind",
        'name = "x"\n\n[triggers.gunshoot]\ncancel_window_s = 10\n',
        (
            "agency.toml:3: triggers.gunshoot: unknown trigger kind 'gunshoot' (did you mean "
            "'gunshot'?); expected one of button, holster, vehicle_lightbar, vehicle_siren, "
            "vehicle_door, vehicle_speed, taser_armed, taser_trigger, taser_arc, gunshot, "
            "foot_pursuit, officer_down, geofence, remote, peer"
        ),
    ),
    (
        "unknown key in a rule table",
        "[stop]\nconfirm_window = 5\n",
        "agency.toml:2: stop.confirm_window: unknown key 'confirm_window' (did you mean",
    ),
    (
        "out of range",
        "[triggers.gunshot]\ncancel_window_s = 900\n",
        "agency.toml:2: triggers.gunshot.cancel_window_s: must be a number from 0 to 600, got 900",
    ),
    (
        "recording key out of range",
        "pre_event_s = 300\n",
        "agency.toml:1: pre_event_s: must be a number from 0.0 to 120.0, got 300",
    ),
    (
        "wrong type",
        '[stop]\nreason_required = "yes"\n',
        'agency.toml:2: stop.reason_required: must be true or false, got text "yes"',
    ),
    (
        "integer wanted",
        "pre_event_max_bytes = 8.5\n",
        "agency.toml:1: pre_event_max_bytes: must be an integer, got 8.5",
    ),
    (
        "empty category",
        '[categories]\ncritical = [\n  "serious injury",\n  "",\n]\n',
        'agency.toml:4: categories.critical[1]: must be text of 1 to 200 characters, got text ""',
    ),
    (
        "duplicate geofence",
        (
            '[[geofences]]\nname = "school"\npolygon = [[1.0, 2.0], [1.0, 2.1], [1.1, 2.0]]\n\n'
            '[[geofences]]\nname = "school"\npolygon = [[1.0, 2.0], [1.0, 2.1], [1.1, 2.0]]\n'
        ),
        "agency.toml:6: geofences[1].name: a second geofence named 'school'",
    ),
    (
        "polygon with 2 vertices",
        '[[geofences]]\nname = "school"\npolygon = [[1.0, 2.0], [1.0, 2.1]]\n',
        "agency.toml:3: geofences[0].polygon: must be an array ",
    ),
    (
        "vertex off the globe",
        '[[geofences]]\nname = "school"\npolygon = [[91.0, 2.0], [1.0, 2.1], [1.1, 2.0]]\n',
        "agency.toml:3: geofences[0].polygon: vertex [91.0, 2.0] is not a [latitude, longitude]",
    ),
    (
        "geofence without a name",
        "[[geofences]]\npolygon = [[1.0, 2.0], [1.0, 2.1], [1.1, 2.0]]\n",
        "agency.toml:1: geofences[0].name: missing; expected text of 1 to 200 characters",
    ),
    (
        "covered and prohibited overlap",
        '[compliance]\ncovered = ["arrest", "protest"]\nprohibited = ["Protest"]\n',
        "agency.toml:3: compliance.prohibited: names ['protest'], which covered also lists",
    ),
    (
        "durability",
        'durability = "always"\n',
        'agency.toml:1: durability: must be one of "record", "segment", "none", got text "always"',
    ),
    (
        "not a table",
        "triggers = 5\n",
        "agency.toml:1: triggers: must be a table, got 5",
    ),
    (
        "geofences not tables",
        "geofences = 5\n",
        "agency.toml:1: geofences: must be [[geofences]] tables, got 5",
    ),
    (
        "a reserve larger than the storage",
        "storage_bytes = 1000\n",
        (
            "agency.toml:1: storage_reserve_bytes: must be an integer from 0 to 1000, "
            "got 268435456 (its default)"
        ),
    ),
    ("invalid TOML", "name = \n", "agency.toml:1: invalid TOML: Invalid value (column 8)"),
]


@pytest.mark.parametrize(("case", "text", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_each_error_names_the_file_line_and_field(case: str, text: str, message: str) -> None:
    assert _error(text).startswith(message)


def test_polygon_error_says_how_many_vertices_it_got() -> None:
    message = _error('[[geofences]]\nname = "school"\npolygon = [[1.0, 2.0], [1.0, 2.1]]\n')
    assert message.endswith("got 2 items")


def test_load_policy_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"nope\.toml: cannot read: No such file") as caught:
        load_policy(tmp_path / "nope.toml")
    assert caught.value.line is None
    bad = tmp_path / "bad.toml"
    bad.write_text("[modes]\nrecording_reminder_s = -5\n", encoding="utf-8")
    with pytest.raises(ConfigFileError) as caught:
        load_policy(bad)
    assert (caught.value.source, caught.value.line, caught.value.path) == (
        str(bad),
        2,
        "modes.recording_reminder_s",
    )


# -- policy files from scenarios ------------------------------------------------------------------

SCENARIO = """\
[scenario]
duration = "00:10:00"
[device]
id = "cam-1"
seed = 1
[policy]
file = "{file}"
{extra}
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_scenario_finds_its_policy_file_relative_to_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "policies" / "agency.toml", 'name = "agency"\npre_event_s = 60\n')
    # A decoy where a path relative to the working directory would look.
    _write(tmp_path / "elsewhere" / "policies" / "agency.toml", 'name = "wrong"\n')
    scenario_file = _write(
        tmp_path / "scenarios" / "s.toml",
        SCENARIO.format(file="../policies/agency.toml", extra=""),
    )
    monkeypatch.chdir(tmp_path / "elsewhere" / "policies")
    scenario = load_scenario(scenario_file)
    assert scenario.policy_name == "agency"
    assert scenario.policy.pre_event_s == 60.0
    assert scenario.policy.durability is Durability.NONE  # scenarios: none unless written


def test_a_scenario_writes_over_its_policy_file_key_by_key(tmp_path: Path) -> None:
    _write(
        tmp_path / "agency.toml",
        "[triggers.vehicle_door]\nenabled = true\ndebounce_s = 3.0\n[stop]\nconfirm_window_s = 9\n",
    )
    extra = "[policy.triggers.vehicle_door]\ndebounce_s = 4.0\n"
    scenario = load_scenario(
        _write(tmp_path / "s.toml", SCENARIO.format(file="agency.toml", extra=extra))
    )
    door = scenario.rules.triggers["vehicle_door"]
    assert (door.enabled, door.debounce_s) == (True, 4.0)
    assert scenario.rules.stop.confirm_window_s == 9.0
    assert scenario.policy_name == "default, as the scenario changes it"


def test_the_examples_run_from_a_scenario(tmp_path: Path) -> None:
    for path in POLICY_FILES:
        scenario = parse_scenario(SCENARIO.format(file=path.as_posix(), extra=""))
        assert scenario.rules == load_policy(path).rules
        assert scenario.policy_name == load_policy(path).name


def test_a_bad_policy_file_is_reported_where_the_scenario_names_it(tmp_path: Path) -> None:
    _write(tmp_path / "policies" / "bad.toml", "[triggers.gunshot]\ncancel_window_s = 900\n")
    scenario_file = _write(
        tmp_path / "scenarios" / "s.toml",
        SCENARIO.format(file="../policies/bad.toml", extra=""),
    )
    with pytest.raises(ConfigFileError) as caught:
        load_scenario(scenario_file)
    message = str(caught.value)
    assert message.startswith(f"{scenario_file}:7: policy.file: the policy file is wrong: ")
    assert message.endswith(
        "bad.toml:2: triggers.gunshot.cancel_window_s: must be a number from 0 to 600, got 900.0"
    )
    _write(scenario_file, SCENARIO.format(file="../policies/none.toml", extra=""))
    with pytest.raises(ConfigFileError, match=r"none\.toml: cannot read: No such file"):
        load_scenario(scenario_file)


# -- fuzzing --------------------------------------------------------------------------------------


def _parse_or_config_error(text: str) -> None:
    error = None
    try:
        parse_policy(text, "f.toml")
    except ConfigFileError as caught:
        error = caught
    if error is not None:
        assert error.line is not None
        assert str(error).startswith(f"f.toml:{error.line}: ")
        assert 1 <= error.line <= max(1, len(text.splitlines()))


@settings(max_examples=FUZZ_EXAMPLES)
@given(st.text(max_size=300))
def test_random_text_raises_only_config_file_error(text: str) -> None:
    _parse_or_config_error(text)


@settings(max_examples=FUZZ_EXAMPLES)
@given(mutated(POLICY_FILES))
def test_mutated_policy_files_raise_only_config_file_error(text: str) -> None:
    _parse_or_config_error(text)


_VALUES = st.one_of(
    st.integers(-5, 10**12).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(repr),
    st.sampled_from(["true", "false", "nan", "inf", "-inf", "[]", "{}", '["a", 1]', "[[1]]"]),
    st.sampled_from(['"arrest"', '""', '"record"', '"none"', '"first amendment"', '"x" ']),
    st.sampled_from(['["arrest", "Arrest"]', '["first amendment"]', '["a", ""]', "[1.5, 2]"]),
    st.sampled_from(
        [
            "[[1.0, 2.0], [1.0, 2.1], [1.1, 2.0]]",
            "[[1.0, 2.0], [1.0, 2.1]]",
            "[[91.0, 2.0], [1.0, 2.1], [1.1, 2.0]]",
            "[[1.0, 2.0, 3.0], [1.0, 2.1], [1.1, 2.0]]",
            "[[1.0, true], [1.0, 2.1], [1.1, 2.0]]",
        ]
    ),
    st.sampled_from(["2026-11-29T06:00:00Z", "06:00:00", "{ enabled = true }"]),
)
_KEYS = sorted(
    {
        "bogus",
        *POLICY_KEYS,
        *(f.name for cls in RULE_CLASSES for f in dataclasses.fields(cls)),
        *CONFIGURABLE_KINDS,
    }
)
_HEADERS = [
    "",
    "[stop]",
    "[modes]",
    "[categories]",
    "[peer]",
    "[compliance]",
    "[[geofences]]",
    "[triggers]",
    "[trigger.gunshot]",
    "[bogus]",
    *(f"[triggers.{kind}]" for kind in CONFIGURABLE_KINDS),
]


@settings(max_examples=FUZZ_EXAMPLES)
@given(toml_documents(_HEADERS, _KEYS, _VALUES))
def test_random_policy_documents_raise_only_config_file_error(text: str) -> None:
    _parse_or_config_error(text)


def test_a_huge_integer_for_a_number_is_a_config_file_error() -> None:
    with pytest.raises(ConfigFileError, match="confirm_window_s: must be a number from 1 to 60"):
        parse_policy("[stop]\nconfirm_window_s = 1" + "0" * 400 + "\n", "f.toml")
    with pytest.raises(Problem, match="must be a time"):
        parse_time(10**400)

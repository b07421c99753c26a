"""The YAML loader: every broken rule file and its exact errors, plus the edges.

Each `tests/data/rules/bad_*.yaml` file is paired below with the exact
`line:col: message` lines `load_rules()` must report for it.
"""

# ruff: noqa: E501  (expected messages are quoted whole, as users see them)

from __future__ import annotations

import zoneinfo
from pathlib import Path

import pytest

from sipguard.errors import RuleFileError, RuleFileErrors
from sipguard.rules import loader
from sipguard.rules.loader import compose_tree, load_rules, parse_rules
from sipguard.rules.schema import (
    Endpoint,
    LocatedMapping,
    LocatedScalar,
    LocatedSequence,
    SourceMatch,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "rules"
EXAMPLE = ROOT / "rules" / "example.yaml"

MINIMAL = """\
version: 1
numbering: {country_code: "86"}
trunks:
  - name: sh-callcenter
    sources: ["10.1.0.0/24"]
    route: "udp:127.0.0.1:5080"
"""

BAD_FILES: list[tuple[str, list[str]]] = [
    (
        "bad_alias.yaml",
        [
            "3:9: an alias refers to a mapping or list that contains it",
        ],
    ),
    (
        "bad_calling_hours.yaml",
        [
            "8:11: trunk 'sh-callcenter': calling_hours.tz 'Asia Shanghai' is not a time zone name (use an IANA name such as 'Asia/Shanghai')",
            "9:15: trunk 'sh-callcenter': calling_hours.allow window '9-12': expected HH:MM-HH:MM, e.g. '09:00-12:00'",
            "9:23: trunk 'sh-callcenter': calling_hours.allow window '25:00-26:00': 25:00 is not a time of day",
            "9:38: trunk 'sh-callcenter': calling_hours.allow window '12:00-12:00': the window is empty; write '00:00-24:00' for the whole day",
            "9:53: trunk 'sh-callcenter': calling_hours.allow window '09:00-24:30': 24:30 is not a time of day",
            "13:20: trunk 'intl-gateway': missing required key 'tz' in calling_hours (an IANA time zone, e.g. tz: Asia/Shanghai)",
            "13:28: trunk 'intl-gateway': calling_hours.allow must not be empty",
        ],
    ),
    (
        "bad_duplicate_keys.yaml",
        [
            "4:1: duplicate key 'mode' (first at line 2)",
            "9:5: trunk 'sh-callcenter': duplicate key 'route' (first at line 8)",
        ],
    ),
    (
        "bad_duplicate_trunk.yaml",
        [
            "7:11: duplicate trunk name 'sh-callcenter' (first at line 4)",
        ],
    ),
    (
        "bad_durations.yaml",
        [
            "8:39: trunk 'sh-callcenter': limits.per_caller.window must be a duration with a unit, such as '30m', got 30",
            "9:38: trunk 'sh-callcenter': limits.per_callee.window '1w': a duration is a number and a unit (s, m, h, d), e.g. '30m' or '1h30m'",
            "10:28: trunk 'sh-callcenter': limits.one_ring.max_ring '0s': a duration must be longer than zero",
            "10:51: trunk 'sh-callcenter': limits.one_ring.window '1 h': a duration is a number and a unit (s, m, h, d), e.g. '30m' or '1h30m'",
            "10:69: trunk 'sh-callcenter': limits.one_ring.block_for 'soon': a duration is a number and a unit (s, m, h, d), e.g. '30m' or '1h30m'",
        ],
    ),
    (
        "bad_empty.yaml",
        [
            "1:1: the rule file is empty; it needs at least 'numbering' and 'trunks'",
        ],
    ),
    (
        "bad_encoding.yaml",
        [
            "4:14: the rule file is not valid UTF-8 (byte 0xe9)",
        ],
    ),
    (
        "bad_endpoints.yaml",
        [
            "5:5: listen endpoint 'udp:127.0.0.1:5060' is listed twice (first at line 4)",
            "6:5: listen endpoint 'tls:127.0.0.1:5061': unsupported transport 'tls'; use 'udp' or 'tcp'",
            "7:5: listen endpoint '127.0.0.1:5060': missing transport; write 'udp:127.0.0.1:5060' or 'tcp:127.0.0.1:5060'",
            "8:5: listen endpoint 'udp:::1:5060': write an IPv6 address in brackets, e.g. '[2001:db8::1]:5060'",
            "9:10: metrics '127.0.0.1': add a port, e.g. '127.0.0.1:9060'",
            "13:12: trunk 'sh-callcenter': route 'udp:sbc.example.net:5060': 'sbc.example.net' is a host name; write the IP address (names are not resolved)",
            "16:12: trunk 'intl-gateway': route 'udp:127.0.0.1:0': port 0 is out of range (1-65535)",
            "19:12: trunk 'lab': route '5080': expected TRANSPORT:ADDRESS[:PORT], e.g. 'udp:192.0.2.10:5060'",
        ],
    ),
    (
        "bad_limits.yaml",
        [
            "8:12: trunk 'sh-callcenter': limits.cps must be a number greater than 0, got -1",
            "9:19: trunk 'sh-callcenter': limits.concurrent must be a whole number of at least 1, got 0",
            "10:19: trunk 'sh-callcenter': missing required key 'calls' in limits.per_caller",
            "11:17: trunk 'sh-callcenter': missing required key 'block_for' in limits.one_ring",
            "11:17: trunk 'sh-callcenter': missing required key 'calls' in limits.one_ring",
            "11:17: trunk 'sh-callcenter': missing required key 'window' in limits.one_ring",
            "16:14: trunk 'intl-gateway': limits.burst needs limits.cps (the refill rate)",
            "17:19: trunk 'intl-gateway': limits.concurrent must be a whole number of at least 1, got 2.5",
            "18:27: trunk 'intl-gateway': limits.per_callee.calls must be a whole number of at least 1, got true",
        ],
    ),
    (
        "bad_misplaced_keys.yaml",
        [
            "2:1: unknown key 'country_code'; put it under 'numbering'",
            "4:1: unknown key 'sources'; it belongs in a trunk, under 'trunks'",
            "9:5: trunk 'sh-callcenter': unknown key 'cps'; put it under 'limits'",
            "11:7: trunk 'sh-callcenter': unknown key 'calls' in limits; put it under 'per_caller' or 'per_callee'",
            "12:7: trunk 'sh-callcenter': unknown key 'window' in limits; put it under 'per_caller' or 'per_callee'",
        ],
    ),
    (
        "bad_missing_required.yaml",
        [
            "3:3: missing required key 'country_code' in numbering (e.g. country_code: \"86\")",
            "5:5: suspended: missing required key 'until' (e.g. until: \"2027-05-01\")",
            "7:5: trunk #1: missing required key 'name' (e.g. name: sh-callcenter)",
            "7:5: trunk #1: missing required key 'route' (the next hop, e.g. route: \"udp:192.0.2.10:5060\")",
            "7:5: trunk #1: missing required key 'sources' (addresses the trunk's calls come from, e.g. ['10.1.0.0/24'])",
            "9:10: trunk #2: name needs a value (e.g. name: sh-callcenter)",
            "10:14: trunk #2: sources must not be empty",
        ],
    ),
    (
        "bad_modes.yaml",
        [
            "2:7: mode must be 'enforce' or 'monitor', got 'enforcing'; did you mean 'enforce'?",
            "6:11: trunk 'sh-callcenter': kind must be 'national' or 'international', got 'intl'",
            "7:11: trunk 'sh-callcenter': mode must be 'enforce' or 'monitor', got 'shadow'",
            "10:30: trunk 'sh-callcenter': identity.display_name must be 'reject', 'strip' or 'ignore', got 'drop'",
        ],
    ),
    (
        "bad_numbering.yaml",
        [
            "3:17: numbering.country_code must not start with 0, got '086'; did you mean '86'?",
            "5:25: numbering.international_prefix must differ from national_prefix",
        ],
    ),
    (
        "bad_numbers.yaml",
        [
            "3:20: do_not_originate entry '*': '*' (any number) is not allowed here",
            "3:25: do_not_originate entry '0400123': not in E.164 form: write '+', the country code and the number; did you mean '+86400123'?",
            "3:36: do_not_originate entry '+86 400': only digits may follow '+'",
            "4:26: emergency_numbers entry '11a': expected digits such as '110'",
            "10:9: trunk 'sh-callcenter': ranges entry '02131771200': not in E.164 form: write '+', the country code and the number; did you mean '+862131771200'?",
            "11:9: trunk 'sh-callcenter': ranges entry '008613800138000': not in E.164 form: write '+', the country code and the number; did you mean '+8613800138000'?",
            "12:9: trunk 'sh-callcenter': ranges entry '+0123': country codes never start with 0",
            "13:9: trunk 'sh-callcenter': ranges entry '+1234567890123456': 16 digits; E.164 numbers have at most 15",
            "14:9: trunk 'sh-callcenter': ranges entry '+': '+' needs digits after it",
            "15:9: trunk 'sh-callcenter': ranges entry '+86-21-3177-1200': a range is START-END, e.g. '+862131771200-+862131771299'",
            "16:9: trunk 'sh-callcenter': ranges entry '+862131771200-862131771299': range end '862131771299': not in E.164 form: write '+', the country code and the number",
        ],
    ),
    (
        "bad_range_order.yaml",
        [
            "8:9: trunk 'sh-callcenter': ranges entry '+862131771299-+862131771200': range start is greater than its end",
            "9:9: trunk 'sh-callcenter': ranges entry '+862131771200-+86213177129': range ends differ in length (12 and 11 digits); give both ends the same number of digits",
        ],
    ),
    (
        "bad_shared_source.yaml",
        [
            "8:15: trunk 'bj-callcenter': source '10.1.0.0/24' is already claimed by trunk 'sh-callcenter' (line 5)",
            "8:48: trunk 'bj-callcenter': source '192.0.2.7/32' is already claimed by trunk 'sh-callcenter' (line 5)",
            "11:29: trunk 'lab': source '[0:0::1]:5071' is listed twice (first at line 11)",
        ],
    ),
    (
        "bad_sources.yaml",
        [
            "6:9: trunk 'sh-callcenter': source '10.1.0.5/24': host bits are set; did you mean '10.1.0.0/24'?",
            "7:9: trunk 'sh-callcenter': source '10.1.0.0/33': prefix length 33 is too long for IPv4 (at most 32)",
            "8:9: trunk 'sh-callcenter': source '300.1.1.1': not an IP address",
            "9:9: trunk 'sh-callcenter': source '127.0.0.1:70000': port 70000 is out of range (1-65535)",
            "10:9: trunk 'sh-callcenter': source '127.0.0.1:': ':' with no port after it",
            "11:9: trunk 'sh-callcenter': source 'sbc.example.net': a host name; write the IP address (names are not resolved)",
            "12:9: trunk 'sh-callcenter': source '10.0.0.0/8:5060': a network cannot carry a port; use one address for IP:port",
            "13:9: trunk 'sh-callcenter': source '[10.0.0.1]:5071': brackets are for IPv6 addresses only",
            "14:9: trunk 'sh-callcenter': source '2001:db8::/129': prefix length 129 is too long for IPv6 (at most 128)",
        ],
    ),
    (
        "bad_suspended.yaml",
        [
            "4:38: suspended: until '2027-13-01': not a valid date (month must be in 1..12)",
            "6:14: suspended: number '+869521345678' is already suspended (line 5)",
            "7:14: suspended: number '013800138000': not in E.164 form: write '+', the country code and the number; did you mean '+8613800138000'?",
            "7:37: suspended: until must be a date written YYYY-MM-DD, got 'next year'",
            "8:38: suspended: until must be a date written YYYY-MM-DD, got the date and time 2027-05-01 10:00:00",
            "9:5: suspended: an entry must be a mapping of keys, got '+869521111111'",
        ],
    ),
    (
        "bad_tag.yaml",
        [
            "3:9: unsupported YAML tag '!include'; write plain values",
        ],
    ),
    (
        "bad_top_level_list.yaml",
        [
            "1:1: the rule file must be a mapping of keys, got a list",
        ],
    ),
    (
        "bad_types.yaml",
        [
            "1:10: version must be 1, got 'one'",
            "2:7: mode must be 'enforce' or 'monitor', got 1",
            "4:9: listen must be a list, got a mapping",
            "5:20: do_not_originate entry must be a string, got a list",
            "8:14: trunk 'sh-callcenter': sources must be a list, got a mapping",
            "10:15: trunk 'sh-callcenter': identity must be a mapping of keys, got a list",
            "12:12: trunk 'sh-callcenter': limits.cps must be a number greater than 0, got 'fast'",
            "13:19: trunk 'sh-callcenter': limits.concurrent must be a whole number of at least 1, got true",
            "14:11: trunk #2: name must be a string, got a list",
            "18:20: trunk #2: identity.require_pai must be true or false, got 'yes'",
        ],
    ),
    (
        "bad_unknown_keys.yaml",
        [
            "3:1: unknown key 'lisen'; did you mean 'listen'?",
            "5:5: trunk 'sh-callcenter': missing required key 'sources' (addresses the trunk's calls come from, e.g. ['10.1.0.0/24'])",
            "6:5: trunk 'sh-callcenter': unknown key 'soruces'; did you mean 'sources'?",
            "9:7: trunk 'sh-callcenter': unknown key 'colour' in identity; expected one of: require_pai, from_must_match_pai, display_name",
            "11:7: trunk 'sh-callcenter': unknown key 'cpss' in limits; did you mean 'cps'?",
        ],
    ),
    (
        "bad_version.yaml",
        [
            "1:10: version must be 1, got 2",
        ],
    ),
    (
        "bad_yaml_syntax.yaml",
        [
            "6:5: invalid YAML: expected ',' or ']', but got '<scalar>' (while parsing a flow sequence at 5:14)",
        ],
    ),
    (
        "bad_yaml_tab.yaml",
        [
            "6:1: invalid YAML: a tab character here; YAML indents with spaces only",
        ],
    ),
    (
        "bad_yaml_two_documents.yaml",
        [
            "3:1: the rule file must hold one YAML document; remove the second '---'",
        ],
    ),
]


def errors_of(path: Path) -> list[RuleFileError]:
    with pytest.raises(RuleFileErrors) as caught:
        load_rules(path)
    return list(caught.value.errors)


def lines_of(errors: list[RuleFileError]) -> list[str]:
    return [f"{error.line}:{error.column}: {error.message}" for error in errors]


@pytest.mark.parametrize(("name", "expected"), BAD_FILES, ids=[name for name, _ in BAD_FILES])
def test_bad_file_reports_exact_errors(name: str, expected: list[str]) -> None:
    errors = errors_of(DATA / name)
    assert lines_of(errors) == expected
    assert {error.path for error in errors} == {str(DATA / name)}


def test_every_bad_file_has_expected_errors() -> None:
    on_disk = {path.name for path in DATA.glob("bad_*.yaml")}
    assert on_disk == {name for name, _ in BAD_FILES}


def test_str_is_one_path_line_col_message_per_line() -> None:
    path = DATA / "bad_modes.yaml"
    with pytest.raises(RuleFileErrors) as caught:
        load_rules(path)
    text = str(caught.value)
    assert text.splitlines()[0] == (
        f"{path}:2:7: mode must be 'enforce' or 'monitor', got 'enforcing'; did you mean 'enforce'?"
    )
    assert len(text.splitlines()) == 4


def test_example_file_loads() -> None:
    rules = load_rules(EXAMPLE)
    assert rules.path == str(EXAMPLE)
    assert rules.mode == "enforce"
    assert rules.listen == (
        Endpoint(transport="udp", host="127.0.0.1", port=5060),
        Endpoint(transport="tcp", host="127.0.0.1", port=5060),
    )
    assert rules.audit_log == "logs/decisions.jsonl"
    assert rules.metrics == "127.0.0.1:9060"
    assert rules.do_not_originate == ("+86400", "+86110")
    assert [trunk.name for trunk in rules.trunks] == ["sh-callcenter", "intl-gateway"]
    callcenter, gateway = rules.trunks
    assert [str(source) for source in callcenter.sources] == ["10.1.0.0/24", "127.0.0.1:5071"]
    assert callcenter.route == Endpoint(transport="udp", host="127.0.0.1", port=5080)
    assert callcenter.ranges == ("+862131771200-+862131771299", "+869521")
    assert callcenter.limits.per_caller is not None
    assert callcenter.limits.per_caller.window == 1800.0
    assert callcenter.limits.one_ring is not None
    assert callcenter.limits.one_ring.block_for == 86400.0
    assert callcenter.calling_hours is not None
    assert callcenter.calling_hours.allow == ((540, 720), (840, 1200))
    assert callcenter.refused_callees == "rules/refused-sh.txt"
    assert gateway.kind == "international"
    assert gateway.ranges == ("*",)


def test_example_refused_callees_file_exists() -> None:
    rules = load_rules(EXAMPLE)
    refused = rules.trunks[0].refused_callees
    assert refused is not None
    lines = (ROOT / refused).read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#")
    assert [line for line in lines if not line.startswith("#")] == [
        "+862131770000",
        "+8613800138000",
    ]


def test_accepts_path_objects_and_strings(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    assert load_rules(path) == load_rules(str(path))


def test_missing_file_is_a_rule_file_error(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    errors = errors_of(path)
    assert lines_of(errors) == ["1:1: cannot read the rule file: No such file or directory"]
    assert errors[0].path == str(path)


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_rules(path).trunks[0].name == "sh-callcenter"


def test_control_character_reports_its_position() -> None:
    with pytest.raises(RuleFileErrors) as caught:
        parse_rules("version: 1\nmode: enf\x07rce\n")
    assert lines_of(list(caught.value.errors)) == [
        "2:10: invalid YAML: character '\\x07' is not allowed in a YAML file"
    ]


def test_string_path_defaults_for_parse_rules() -> None:
    with pytest.raises(RuleFileErrors) as caught:
        parse_rules("version: 2\nnumbering: {country_code: '86'}\n")
    assert str(caught.value) == "<string>:1:10: version must be 1, got 2"


def test_unquoted_digits_keep_their_text() -> None:
    rules = parse_rules(
        "numbering: {country_code: 86, national_prefix: 0, international_prefix: 00}\n"
        "do_not_originate: [+86400]\n"
        "emergency_numbers: [110, 0119]\n"
        "trunks:\n"
        "  - {name: 1001, sources: 10.1.0.0/24, route: 'udp:127.0.0.1:5080', ranges: [+869521]}\n"
    )
    assert rules.numbering.international_prefix == "00"
    assert rules.numbering.national_prefix == "0"
    assert rules.do_not_originate == ("+86400",)
    assert rules.emergency_numbers == ("110", "0119")
    assert rules.trunks[0].name == "1001"
    assert rules.trunks[0].ranges == ("+869521",)


def test_unquoted_and_quoted_dates_are_the_same() -> None:
    unquoted = parse_rules(
        "numbering: {country_code: '86'}\nsuspended: [{number: '+869521345678', until: 2027-05-01}]\n"
    )
    quoted = parse_rules(
        "numbering: {country_code: '86'}\nsuspended: [{number: '+869521345678', until: '2027-05-01'}]\n"
    )
    assert unquoted.suspended == quoted.suspended


def test_merge_keys_share_settings_and_explicit_keys_win() -> None:
    rules = parse_rules(
        "x-defaults:\n"
        "  limits: &limits {cps: 50, burst: 100}\n"
        + MINIMAL
        + "    limits: {<<: *limits, cps: 5}\n"
        "  - name: bj-callcenter\n"
        "    sources: ['10.2.0.0/24']\n"
        "    route: 'udp:127.0.0.1:5080'\n"
        "    limits: *limits\n"
    )
    first, second = rules.trunks
    assert (first.limits.cps, first.limits.burst) == (5.0, 100)
    assert (second.limits.cps, second.limits.burst) == (50.0, 100)


def test_merge_of_a_list_of_mappings_takes_the_first_value() -> None:
    tree = compose_tree("a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc: {<<: [*a, *b]}\n")
    assert isinstance(tree, LocatedMapping)
    merged = tree.entries[2][1]
    assert isinstance(merged, LocatedMapping)
    assert [(key.text, value.text) for key, value in merged.entries] == [("x", "1"), ("y", "2")]  # type: ignore[union-attr]


def test_merge_of_a_scalar_is_an_error() -> None:
    with pytest.raises(RuleFileErrors) as caught:
        compose_tree("a: 1\nb: {<<: 5}\n")
    assert lines_of(list(caught.value.errors)) == [
        "2:9: '<<' merges mappings only, e.g. '<<: *defaults'"
    ]


def test_duplicate_keys_are_kept_in_the_tree_for_the_schema() -> None:
    tree = compose_tree("a: 1\na: 2\n")
    assert isinstance(tree, LocatedMapping)
    assert [key.text for key, _ in tree.entries] == ["a", "a"]  # type: ignore[union-attr]


def test_tree_positions_are_one_based() -> None:
    tree = compose_tree("trunks:\n  - name: a\n    sources: [x, y]\n")
    assert isinstance(tree, LocatedMapping)
    assert (tree.line, tree.column) == (1, 1)
    trunks = tree.entries[0][1]
    assert isinstance(trunks, LocatedSequence)
    assert (trunks.line, trunks.column) == (2, 3)
    trunk = trunks.items[0]
    assert isinstance(trunk, LocatedMapping)
    assert (trunk.line, trunk.column) == (2, 5)
    sources = trunk.entries[1][1]
    assert isinstance(sources, LocatedSequence)
    second = sources.items[1]
    assert second == LocatedScalar(value="y", text="y", line=3, column=18)


def test_alias_expansion_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_NODES", 50)
    laughs = "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
    with pytest.raises(RuleFileErrors) as caught:
        compose_tree(laughs)
    assert lines_of(list(caught.value.errors)) == [
        "1:1: the rule file expands to more than 50 values through aliases"
    ]


def test_aliased_values_report_an_error_once() -> None:
    text = (
        "numbering: {country_code: '86'}\n"
        "x-networks: &nets ['10.1.0.5/24']\n"
        "trunks:\n"
        "  - {name: a, sources: *nets, route: 'udp:127.0.0.1:5080'}\n"
        "  - {name: b, sources: ['10.2.0.0/24'], route: 'udp:127.0.0.1:5080', ranges: *nets}\n"
    )
    with pytest.raises(RuleFileErrors) as caught:
        parse_rules(text)
    assert lines_of(list(caught.value.errors)) == [
        "2:20: trunk 'a': source '10.1.0.5/24': host bits are set; did you mean '10.1.0.0/24'?",
        "2:20: trunk 'b': ranges entry '10.1.0.5/24': not in E.164 form: write '+', the country code and the number",
    ]


def test_x_keys_are_ignored_anywhere() -> None:
    rules = parse_rules("x-note: anything\n" + MINIMAL + "    x-owner: noc@example.net\n")
    assert rules.trunks[0].name == "sh-callcenter"


@pytest.mark.skipif(
    "Asia/Shanghai" not in zoneinfo.available_timezones(), reason="no time-zone database"
)
def test_unknown_time_zone_gets_a_suggestion() -> None:
    with pytest.raises(RuleFileErrors) as caught:
        parse_rules(MINIMAL + "    calling_hours: {tz: Asia/Shangai, allow: ['09:00-18:00']}\n")
    assert lines_of(list(caught.value.errors)) == [
        "7:25: trunk 'sh-callcenter': calling_hours.tz 'Asia/Shangai' is not a known time zone; did you mean 'Asia/Shanghai'?"
    ]


def test_sources_survive_the_round_trip_through_yaml() -> None:
    rules = parse_rules(MINIMAL.replace('"10.1.0.0/24"', '"[::1]:5071", "2001:db8::/48"'))
    assert [str(source) for source in rules.trunks[0].sources] == ["[::1]:5071", "2001:db8::/48"]
    assert rules.trunks[0].sources[0] == SourceMatch(
        network=rules.trunks[0].sources[0].network, port=5071
    )

"""The YAML loader: every broken rule file and its exact errors, plus the edges.

Each `tests/data/rules/bad_*.yaml` file is paired below with the exact
`line:col: message` lines `load_rules()` must report for it; an error inside
another file it refers to is written `FILE:line:col: message`, FILE relative
to tests/data/rules.
"""

# ruff: noqa: E501  (expected messages are quoted whole, as users see them)

from __future__ import annotations

import csv
import os
import re
import zoneinfo
from collections import Counter
from pathlib import Path

import pytest

from sipguard.errors import RuleFileError, RuleFileErrors
from sipguard.rules import loader
from sipguard.rules.allocations import covers, interval_of
from sipguard.rules.loader import compose_tree, load_rules, parse_rules, read_referenced_file
from sipguard.rules.schema import (
    Endpoint,
    Exemption,
    IdentitySettings,
    Limits,
    LocatedMapping,
    LocatedScalar,
    LocatedSequence,
    OneRing,
    RateTableSettings,
    ReferencedFile,
    ResponseSpec,
    RuleSet,
    SourceMatch,
    Window,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "rules"
EXAMPLE = ROOT / "rules" / "example.yaml"
CALLERS = ROOT / "sipp_scenarios" / "callers.csv"
DEMO = ROOT / "sipp_scenarios" / "demo.sh"

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
            "9:38: trunk 'sh-callcenter': limits.per_callee.window '1w': a duration is a number and a unit (ms, s, m, h, d), e.g. '30m' or '1h30m'",
            "10:28: trunk 'sh-callcenter': limits.one_ring.max_ring '0s': a duration must be longer than zero",
            "10:51: trunk 'sh-callcenter': limits.one_ring.window '1 h': a duration is a number and a unit (ms, s, m, h, d), e.g. '30m' or '1h30m'",
            "10:69: trunk 'sh-callcenter': limits.one_ring.block_for 'soon': a duration is a number and a unit (ms, s, m, h, d), e.g. '30m' or '1h30m'",
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
            "9:7: trunk 'sh-callcenter': unknown key 'colour' in identity; expected one of: require_pai, from_must_match_pai, display_name, trusted, stir_identity",
            "11:7: trunk 'sh-callcenter': unknown key 'cpss' in limits; did you mean 'cps'?",
        ],
    ),
    (
        "bad_identity_trust.yaml",
        [
            "9:20: trunk 'partner-transit': identity.require_pai: true contradicts identity.trusted: false (line 8): an untrusted trunk cannot assert identity, its P-Asserted-Identity is ignored",
            "13:25: trunk 'lab': identity.trusted must be true or false, got 'no'",
            "14:5: trunk 'lab': unknown key 'trusted'; put it under 'identity'",
        ],
    ),
    (
        "bad_home_cli.yaml",
        [
            "7:5: trunk 'sh-callcenter': home_cli applies to international trunks only; add 'kind: international' or remove it",
            "8:5: trunk 'sh-callcenter': home_cli_exempt applies to international trunks only; add 'kind: international' or remove it",
            "15:15: trunk 'intl-gateway': home_cli must be 'reject' or 'anonymize', got 'anonymise'; did you mean 'anonymize'?",
            "17:15: trunk 'intl-gateway': home_cli_exempt.type must be 'mobile_roaming' or 'bilateral', got 'mobile-roaming'; did you mean 'mobile_roaming'?",
            "18:28: trunk 'intl-gateway': home_cli_exempt.ranges entry '+852' is not a home-country number (country code 86); only home-country numbers need an exemption",
            "18:36: trunk 'intl-gateway': home_cli_exempt.ranges entry '*': '*' (any number) is not allowed here",
            "18:41: trunk 'intl-gateway': home_cli_exempt.ranges entry '013800138000': not in E.164 form: write '+', the country code and the number; did you mean '+8613800138000'?",
            "18:57: trunk 'intl-gateway': home_cli_exempt.ranges entry '+85-+86' is not a home-country number (country code 86); only home-country numbers need an exemption",
            "19:15: trunk 'intl-gateway': home_cli_exempt.note must be a string, got a list",
            "20:9: trunk 'intl-gateway': missing required key 'ranges' in home_cli_exempt (the home-country numbers it exempts)",
            "21:35: trunk 'intl-gateway': home_cli_exempt.ranges must not be empty",
            "21:39: trunk 'intl-gateway': unknown key 'notes' in home_cli_exempt; did you mean 'note'?",
            "22:9: trunk 'intl-gateway': home_cli_exempt entry must be a mapping of keys, got '+86138'",
            "24:11: trunk 'intl-backup': kind must be 'national' or 'international', got 'intl'",
        ],
    ),
    (
        "bad_responses.yaml",
        [
            "6:3: unknown rule id 'call_bomb' in responses; did you mean 'call_bombing'?",
            "7:3: unknown rule id 'spoofing' in responses; expected one of: unknown_source, missing_caller_id, invalid_caller_id, caller_not_allocated, caller_of_other_trunk, identity_mismatch, display_name_spoof, identity_changed, do_not_originate, home_cli_from_abroad, suspended_number, refused_callee, outside_calling_hours, cps_limit, concurrent_limit, high_frequency_caller, call_bombing, one_ring, ratetable_unavailable",
            "8:29: responses.identity_mismatch.code must be a SIP status from 400 to 699, got 200",
            "9:30: responses.display_name_spoof.code must be a SIP status from 400 to 699, got '403'",
            "10:46: responses.concurrent_limit.retry_after goes with a 5xx code only, got code 486",
            "11:51: responses.high_frequency_caller.retry_after '1.5s': Retry-After counts whole seconds (RFC 3261 §20.33)",
            "12:41: responses.suspended_number.reason '': a reason phrase needs some text",
            "13:19: responses.refused_callee must be a mapping such as {code: 603}, got 603",
            "14:26: missing required key 'code' in responses.outside_calling_hours (a SIP status from 400 to 699, e.g. code: 603)",
            "15:3: duplicate rule id 'one_ring' in responses (first at line 4)",
            "21:7: trunk 'sh-callcenter': responses.unknown_source cannot be set on a trunk: a call from no trunk's source has no trunk; set it in the top-level responses",
            "22:58: trunk 'sh-callcenter': unknown key 'retry' in responses.do_not_originate; did you mean 'retry_after'?",
            "26:16: trunk 'intl-gateway': responses must be a mapping of rule ids to responses, got a list",
        ],
    ),
    (
        "bad_refused_callees.yaml",
        [
            "bad_refused_callees.txt:3:3: refused callee '02131770001': not in E.164 form: write '+', the country code and the number; did you mean '+862131770001'?",
            "bad_refused_callees.txt:4:1: refused callee '+86 21 3177 0002': only digits may follow '+'",
            "bad_refused_callees.txt:7:1: refused callee '+8613800138000' is listed twice (first at line 6)",
            "bad_refused_callees.txt:8:1: refused callee '00441632960000': not in E.164 form: write '+', the country code and the number; did you mean '+441632960000'?",
            "bad_refused_callees.txt:9:1: refused callee '13800138000': not in E.164 form: write '+', the country code and the number",
            "15:5: trunk 'gz-callcenter': refused_callees 'no-such-refused-callees.txt': cannot read the file: no such file; looked for '{data}/no-such-refused-callees.txt' or 'no-such-refused-callees.txt' (the rule file's directory, then the working directory)",
            "19:22: trunk 'sz-callcenter': refused_callees must be a string, got a list",
        ],
    ),
    (
        "bad_duplicate_allocation.yaml",
        [
            "6:5: do_not_originate entry '+86400' is listed twice (first at line 4)",
            "14:9: trunk 'sh-callcenter': ranges entry '+862131771200 - +862131771299' is listed twice (first at line 12)",
            "16:9: trunk 'sh-callcenter': ranges entry '*' is listed twice (first at line 15)",
            "20:45: trunk 'bj-callcenter': ranges entry '+861058800000-+861058809999' is listed twice (first at line 20)",
        ],
    ),
    (
        "bad_never_passes.yaml",
        [
            "12:9: trunk 'sh-callcenter': ranges entry '+864008100000-+864008109999' can never pass: every number in it is do_not_originate ('+86400', line 4, column 5)",
            "13:9: trunk 'sh-callcenter': ranges entry '+86110' can never pass: every number in it is do_not_originate ('+86110', line 5, column 5)",
            "14:9: trunk 'sh-callcenter': ranges entry '+861101' can never pass: every number in it is do_not_originate ('+86110', line 5, column 5)",
            "15:9: trunk 'sh-callcenter': ranges entry '+869521000100-+869521000199' can never pass: every number in it is do_not_originate ('+869521000000-+869521009999', line 6, column 5)",
        ],
    ),
    (
        "bad_overlaps.yaml",
        [
            "12:9: trunk 'bj-callcenter': ranges entry '+862131771250-+862131771350' overlaps '+862131771200-+862131771299' of trunk 'sh-callcenter' (line 7, column 14); allocate each number to one trunk",
            "13:9: trunk 'bj-callcenter': ranges entry '+86952' overlaps '+869521' of trunk 'sh-callcenter' (line 7, column 45); allocate each number to one trunk",
            "14:9: trunk 'bj-callcenter': ranges entry '+861380013' overlaps '+8613800138000-+8613800138999' of trunk 'sh-callcenter' (line 7, column 68); allocate each number to one trunk",
            "21:19: trunk 'intl-gateway': ranges entry '+8610' overlaps '+8610' of trunk 'bj-callcenter' (line 16, column 9); allocate each number to one trunk",
        ],
    ),
    (
        "bad_answers.yaml",
        [
            "4:11: answers.detail must be 'rule' or 'full', got 'verbose'",
            "5:15: answers.warn_agent 'sipguard 2.0': expected a name of letters, digits and -.!%*_+`'~ (such as 'edge1'), or IP:PORT (such as '203.0.113.5:5060')",
            "6:18: answers.server_header 'edge\n2.1': control character '\\n' is not allowed in a header",
            "11:23: trunk 'sh-callcenter': answers.detail must be 'rule' or 'full', got 'ful'; did you mean 'full'?",
            "11:28: trunk 'sh-callcenter': answers.server_header cannot be set on a trunk: it names this gateway in every answer; set it in the top-level answers",
            "15:14: trunk 'bj-callcenter': answers must be a mapping of keys, got 'full'",
        ],
    ),
    (
        "bad_warn_levels.yaml",
        [
            "8:50: trunk 'sh-callcenter': limits.per_caller.warn must be less than limits.per_caller.calls (30), got 30; a warn level at or past the block level never warns",
            "9:48: trunk 'sh-callcenter': limits.per_callee.warn must be less than limits.per_callee.calls (5), got 8; a warn level at or past the block level never warns",
            "10:77: trunk 'sh-callcenter': limits.one_ring.warn must be less than limits.one_ring.calls (10), got 10; a warn level at or past the block level never warns",
            "15:50: trunk 'bj-callcenter': limits.per_caller.warn must be a whole number of at least 1, got 0",
            "16:48: trunk 'bj-callcenter': limits.per_callee.warn must be a whole number of at least 1, got '3'",
            "17:77: trunk 'bj-callcenter': limits.one_ring.warn must be a whole number of at least 1, got 2.5",
            "22:19: trunk 'gz-callcenter': missing required key 'calls' in limits.per_caller",
            "23:7: trunk 'gz-callcenter': unknown key 'warn' in limits; put it under 'per_caller' or 'per_callee'",
        ],
    ),
    (
        "bad_cool_down.yaml",
        [
            "8:55: trunk 'sh-callcenter': limits.per_caller.block_for must be a duration with a unit, such as '30m', got 60",
            "9:53: trunk 'sh-callcenter': limits.per_callee.block_for 'forever': a duration is a number and a unit (ms, s, m, h, d), e.g. '30m' or '1h30m'",
            "14:55: trunk 'bj-callcenter': limits.per_caller.block_for '0d': a duration must be longer than zero",
            "15:53: trunk 'bj-callcenter': limits.per_callee.block_for '60 d': a duration is a number and a unit (ms, s, m, h, d), e.g. '30m' or '1h30m'",
            "16:7: trunk 'bj-callcenter': unknown key 'block_for' in limits; put it under 'per_caller' or 'per_callee'",
        ],
    ),
    (
        "bad_ratetable.yaml",
        [
            "4:12: ratetable.backend must be 'memory' or 'redis', got 'valkey'; it speaks the Redis protocol, so write 'backend: redis'",
            "5:13: ratetable.max_keys must be a whole number of at least 1, got 0",
            "6:23: ratetable.on_backend_failure must be 'open' or 'closed', got 'fail-open'; did you mean 'open'?",
            "7:12: ratetable.timeout '1s' is too long: at most 500ms, since shared counters staler than a UDP caller's INVITE retransmission (T1 = 500ms, RFC 3261 §17.1.1.2) no longer describe the calls being decided",
            "8:3: unknown key 'ttl' in ratetable; expected one of: backend, url, max_keys, on_backend_failure, timeout, sync_interval",
        ],
    ),
    (
        "bad_ratetable_types.yaml",
        [
            "5:8: ratetable.url must be a string, got a list",
            "6:13: ratetable.max_keys must be a whole number of at least 1, got '1e6'",
            "7:23: ratetable.on_backend_failure must be 'open' or 'closed', got true",
            "8:12: ratetable.timeout must be a duration with a unit, such as '30m', got 5",
        ],
    ),
    (
        "bad_ratetable_redis_without_url.yaml",
        [
            "4:3: missing required key 'url' in ratetable (backend redis needs the server, e.g. url: \"redis://127.0.0.1:6379/0\")",
        ],
    ),
    (
        "bad_ratetable_url.yaml",
        [
            "3:34: ratetable.url 'http://127.0.0.1:6379/0': unsupported scheme 'http://'; use redis://, rediss:// (TLS) or unix://",
            "3:70: ratetable.timeout '0ms': a duration must be longer than zero",
        ],
    ),
    (
        "bad_ratetable_url_port.yaml",
        [
            "5:8: ratetable.url 'redis://:***@redis.example.net/0': add a port, e.g. 'redis://redis.example.net:6379'",
        ],
    ),
    (
        "bad_ratetable_memory_url.yaml",
        [
            "4:3: ratetable.url needs 'backend: redis'; the memory backend keeps its counters in this process, so add 'backend: redis' or remove url",
            "10:5: trunk 'sh-callcenter': unknown key 'ratetable'; it belongs at the top level of the file",
            "11:1: unknown key 'backend'; put it under 'ratetable'",
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


def lines_of(errors: list[RuleFileError], rule_file: Path | None = None) -> list[str]:
    """`line:col: message`; errors in another file than `rule_file` start with its name."""
    shown = []
    for error in errors:
        where = ""
        if rule_file is not None and error.path != str(rule_file):
            where = f"{os.path.relpath(error.path, rule_file.parent)}:"
        shown.append(f"{where}{error.line}:{error.column}: {error.message}")
    return shown


@pytest.mark.parametrize(("name", "expected"), BAD_FILES, ids=[name for name, _ in BAD_FILES])
def test_bad_file_reports_exact_errors(name: str, expected: list[str]) -> None:
    errors = errors_of(DATA / name)
    assert lines_of(errors, DATA / name) == [line.replace("{data}", str(DATA)) for line in expected]
    assert errors[0].path in {str(DATA / name), str(DATA / name.replace(".yaml", ".txt"))}
    assert {error.path for error in errors} <= {
        str(DATA / name),
        str(DATA / name.replace(".yaml", ".txt")),
    }


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
    assert callcenter.identity == IdentitySettings(
        trusted=True, require_pai=False, from_must_match_pai=True, display_name="reject"
    )
    assert [str(source) for source in callcenter.sources] == ["10.1.0.0/24", "127.0.0.1:5071"]
    assert callcenter.route == Endpoint(transport="udp", host="127.0.0.1", port=5080)
    assert callcenter.ranges == ("+862131771200-+862131771299", "+869521")
    assert callcenter.limits == Limits(
        cps=50.0,
        burst=100,
        concurrent=300,
        per_caller=Window(calls=30, window=1800.0, warn=20, block_for=7200.0),
        per_callee=Window(calls=5, window=3600.0, warn=3, block_for=60 * 86400.0),
        one_ring=OneRing(max_ring=3.0, calls=10, window=3600.0, block_for=86400.0, warn=5),
    )
    assert rules.ratetable == RateTableSettings(backend="memory", max_keys=1_000_000)
    assert callcenter.calling_hours is None  # the demo runs at any hour
    assert callcenter.refused_callees == "refused-sh.txt"
    assert callcenter.refused_callee_numbers == frozenset({"+862131770000", "+8613800138000"})
    assert gateway.kind == "international"
    assert gateway.ranges == ("*",)
    assert (gateway.home_cli, gateway.home_cli_exempt) == ("reject", ())
    assert rules.responses == () and callcenter.responses == ()


def in_allocation(number: str, allocation: str) -> bool:
    digits = number.removeprefix("+")
    return covers(interval_of(allocation), (len(digits), digits, digits))


def test_example_lets_the_demo_callers_through() -> None:
    rules = load_rules(EXAMPLE)
    callcenter = rules.trunk_named("sh-callcenter")
    assert callcenter is not None and callcenter.calling_hours is None
    with CALLERS.open(encoding="utf-8") as stream:
        lines = [line for line in stream if line.strip() and not line.startswith("#")]
    # SIPp injection file: the first line is the reading order, then one call a line.
    assert lines[0].strip() in {"SEQUENTIAL", "RANDOM", "USER"}
    rows = list(csv.reader(lines[1:], delimiter=";"))
    assert rows and all(len(row) == 3 for row in rows)
    suspended = {suspension.number for suspension in rules.suspended}
    for caller, asserted, callee in rows:
        assert caller == asserted
        assert any(in_allocation(caller, allocation) for allocation in callcenter.ranges), caller
        assert not any(in_allocation(caller, entry) for entry in rules.do_not_originate), caller
        assert caller not in suspended
        assert callee not in callcenter.refused_callee_numbers
        assert callee.removeprefix("+") not in rules.emergency_numbers


def demo_calls() -> list[tuple[float, str, str]]:
    """(seconds since the start, caller, callee) of each call the demo places on the trunk.

    The count and rate come from demo.sh; SIPp reads callers.csv in order and
    starts over from its top when the calls outnumber its lines.
    """
    settings = dict(re.findall(r"^(ALLOWED_CALLS|RATE)=(\d+)$", DEMO.read_text("utf-8"), re.M))
    calls, rate = int(settings["ALLOWED_CALLS"]), int(settings["RATE"])
    with CALLERS.open(encoding="utf-8") as stream:
        lines = [line for line in stream if line.strip() and not line.startswith("#")]
    rows = list(csv.reader(lines[1:], delimiter=";"))
    return [
        (index / rate, rows[index % len(rows)][0], rows[index % len(rows)][2])
        for index in range(calls)
    ]


def test_example_limits_let_the_demo_traffic_through_without_warnings() -> None:
    callcenter = load_rules(EXAMPLE).trunk_named("sh-callcenter")
    assert callcenter is not None
    limits = callcenter.limits
    calls = demo_calls()
    assert len(calls) == 20 and calls[-1][0] < 2.0
    # Token bucket: full at the start, refilled at cps, one token a call.
    assert limits.cps is not None and limits.burst is not None
    tokens, last = float(limits.burst), 0.0
    for at, _, _ in calls:
        tokens = min(float(limits.burst), tokens + (at - last) * limits.cps)
        last = at
        assert tokens >= 1.0, f"cps_limit at {at}s"
        tokens -= 1.0
    # Worst case: every call still up at the end, and every call a one-ring call.
    assert limits.concurrent is not None and limits.concurrent >= len(calls)
    span = calls[-1][0] - calls[0][0]
    for window, index in ((limits.per_caller, 1), (limits.per_callee, 2)):
        assert window is not None and window.warn is not None and window.window > span
        most = max(Counter(call[index] for call in calls).values())
        assert most <= window.warn < window.calls
    one_ring = limits.one_ring
    assert one_ring is not None and one_ring.warn is not None and one_ring.window > span
    assert max(Counter(caller for _, caller, _ in calls).values()) <= one_ring.warn


RULE_FILES = sorted((ROOT / "rules").glob("*.yaml"))


@pytest.mark.parametrize("path", RULE_FILES, ids=[path.name for path in RULE_FILES])
def test_shipped_rule_files_are_clean(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # their refused_callees files sit next to them
    rules = load_rules(path)
    assert rules.trunks
    for trunk in rules.trunks:
        assert (trunk.refused_callees is None) == (not trunk.refused_callee_numbers)


@pytest.mark.parametrize("path", RULE_FILES, ids=[path.name for path in RULE_FILES])
def test_shipped_behaviour_limits_have_warn_levels(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rules = load_rules(path)
    found = [
        level
        for trunk in rules.trunks
        for level in (trunk.limits.per_caller, trunk.limits.per_callee, trunk.limits.one_ring)
        if level is not None
    ]
    assert found
    assert all(level.warn is not None and level.warn < level.calls for level in found)


def test_shipped_rule_files_include_the_carriers() -> None:
    assert {path.name for path in RULE_FILES} >= {
        "example.yaml",
        "cn-carrier.yaml",
        "uk-carrier.yaml",
    }


def test_cn_carrier_file() -> None:
    rules = load_rules(ROOT / "rules" / "cn-carrier.yaml")
    assert rules.numbering.country_code == "86"
    assert {"+86400", "+86110", "+86119", "+86120"} <= set(rules.do_not_originate)
    assert {"110", "119", "120"} <= set(rules.emergency_numbers)
    assert rules.response_for("one_ring") == ResponseSpec(code=603, reason="Decline")
    kinds = {trunk.name: trunk.kind for trunk in rules.trunks}
    assert list(kinds.values()).count("national") >= 3
    untrusted = [trunk.name for trunk in rules.trunks if not trunk.identity.trusted]
    assert untrusted == ["partner-transit"]
    gateway = rules.trunk_named("intl-gateway")
    assert gateway is not None and gateway.kind == "international"
    assert gateway.home_cli == "reject"
    assert [exemption.type for exemption in gateway.home_cli_exempt] == ["mobile_roaming"]
    assert all(r.startswith("+86") for r in gateway.home_cli_exempt[0].ranges)
    callcenter = rules.trunk_named("sh-callcenter")
    assert callcenter is not None and "+8613800138000" in callcenter.refused_callee_numbers
    assert callcenter.limits.per_callee == Window(
        calls=3, window=86400.0, warn=2, block_for=60 * 86400.0
    )
    beijing = rules.trunk_named("bj-callcenter")
    assert beijing is not None and beijing.limits.cps == 20.0
    assert beijing.limits.per_caller == callcenter.limits.per_caller
    assert rules.ratetable == RateTableSettings(
        backend="redis",
        url="redis://10.0.0.40:6379/0",
        max_keys=2_000_000,
        on_backend_failure="open",
        timeout=0.005,
    )


def test_uk_carrier_file() -> None:
    rules = load_rules(ROOT / "rules" / "uk-carrier.yaml")
    assert (rules.numbering.country_code, rules.numbering.national_prefix) == ("44", "0")
    assert rules.numbering.international_prefix == "00"
    assert set(rules.emergency_numbers) == {"999", "112"}
    assert {"+44999", "+44112"} <= set(rules.do_not_originate)
    ranges = {allocation for trunk in rules.trunks for allocation in trunk.ranges}
    assert {"+442079460000-+442079460999", "+447700900000-+447700900999"} <= ranges
    gateway = rules.trunk_named("intl-gateway")
    assert gateway is not None and gateway.home_cli == "anonymize"
    assert gateway.limits.one_ring == OneRing(
        max_ring=3.0, calls=5, window=3600.0, block_for=30 * 86400.0, warn=3
    )
    assert rules.ratetable == RateTableSettings(backend="memory", max_keys=250_000)
    assert gateway.home_cli_exempt[1] == Exemption(
        type="bilateral",
        ranges=("+441481", "+441534", "+441624"),
        note="Guernsey, Jersey, Isle of Man: their operators reach us over international links",
    )


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


# -- refused_callees files ------------------------------------------------------


def refusing(path: str) -> str:
    return MINIMAL + f"    refused_callees: {path}\n"


def test_refused_callees_are_read_next_to_the_rule_file_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules_dir, work_dir = tmp_path / "rules", tmp_path / "work"
    rules_dir.mkdir()
    work_dir.mkdir()
    (rules_dir / "refused.txt").write_text("+862131770000\n", encoding="utf-8")
    (work_dir / "refused.txt").write_text("+862131770001\n", encoding="utf-8")
    (work_dir / "only-here.txt").write_text("+862131770002\n", encoding="utf-8")
    monkeypatch.chdir(work_dir)
    path = rules_dir / "r.yaml"
    path.write_text(refusing("refused.txt"), encoding="utf-8")
    assert load_rules(path).trunks[0].refused_callee_numbers == {"+862131770000"}
    path.write_text(refusing("only-here.txt"), encoding="utf-8")
    trunk = load_rules(path).trunks[0]
    assert trunk.refused_callee_numbers == {"+862131770002"}
    assert trunk.refused_callees == "only-here.txt"


def test_parse_rules_without_a_directory_looks_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "refused.txt").write_text("+862131770000\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    rules = parse_rules(refusing("refused.txt"))
    assert rules.trunks[0].refused_callee_numbers == {"+862131770000"}


def test_absolute_refused_callees_path(tmp_path: Path) -> None:
    refused = tmp_path / "elsewhere" / "refused.txt"
    refused.parent.mkdir()
    refused.write_text("+862131770000\n", encoding="utf-8")
    path = tmp_path / "r.yaml"
    path.write_text(refusing(f"'{refused}'"), encoding="utf-8")
    assert load_rules(path).trunks[0].refused_callee_numbers == {"+862131770000"}


def test_refused_callees_file_format(tmp_path: Path) -> None:
    (tmp_path / "refused.txt").write_bytes(
        b"\xef\xbb\xbf# opted out\r\n\r\n  +862131770000  # trailing comment\r\n\t+8613800138000\r\n"
    )
    path = tmp_path / "r.yaml"
    path.write_text(refusing("refused.txt"), encoding="utf-8")
    assert load_rules(path).trunks[0].refused_callee_numbers == {
        "+862131770000",
        "+8613800138000",
    }


def test_empty_refused_callees_file_refuses_nobody(tmp_path: Path) -> None:
    (tmp_path / "refused.txt").write_text("# nobody yet\n", encoding="utf-8")
    path = tmp_path / "r.yaml"
    path.write_text(refusing("refused.txt"), encoding="utf-8")
    trunk = load_rules(path).trunks[0]
    assert trunk.refused_callees == "refused.txt"
    assert trunk.refused_callee_numbers == frozenset()


def test_undecodable_refused_callees_file_reports_the_byte(tmp_path: Path) -> None:
    refused = tmp_path / "refused.txt"
    refused.write_bytes(b"+862131770000\n+86213177\xe90001\n")
    path = tmp_path / "r.yaml"
    path.write_text(refusing("refused.txt"), encoding="utf-8")
    errors = errors_of(path)
    assert [str(error) for error in errors] == [
        f"{refused}:2:10: cannot use this refused-callees file: not valid UTF-8 (byte 0xe9)"
    ]


def test_refused_callees_directory_is_an_error_at_the_key(tmp_path: Path) -> None:
    (tmp_path / "refused").mkdir()
    path = tmp_path / "r.yaml"
    path.write_text(refusing("refused"), encoding="utf-8")
    assert lines_of(errors_of(path)) == [
        "7:5: trunk 'sh-callcenter': refused_callees 'refused': cannot read the file: Is a directory"
    ]


def test_refused_callee_errors_sort_where_the_rule_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "refused.txt").write_text("02131770000\n", encoding="utf-8")
    path = tmp_path / "r.yaml"
    path.write_text(refusing("refused.txt") + "    mode: shadow\ncolour: blue\n", encoding="utf-8")
    assert lines_of(errors_of(path), path) == [
        "refused.txt:1:1: refused callee '02131770000': not in E.164 form: write '+', the country code and the number; did you mean '+862131770000'?",
        "8:11: trunk 'sh-callcenter': mode must be 'enforce' or 'monitor', got 'shadow'",
        "9:1: unknown key 'colour'; expected one of: version, mode, numbering, listen, audit_log, metrics, do_not_originate, suspended, emergency_numbers, trunks, responses, ratetable, protection, answers, monitor_rules",
    ]


def test_read_referenced_file_never_raises(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("+1\n", encoding="utf-8")
    assert read_referenced_file("a.txt", directory=str(tmp_path)) == ReferencedFile(
        path=str(tmp_path / "a.txt"), text="+1\n"
    )
    missing = read_referenced_file("b.txt", directory=None)
    assert missing.text is None and missing.path == "b.txt"
    assert missing.problem == "no such file; looked for 'b.txt'"
    absolute = read_referenced_file(str(tmp_path / "b.txt"), directory="elsewhere")
    assert absolute.problem == f"no such file; looked for '{tmp_path / 'b.txt'}'"


def test_shipped_rules_return_fresh_equal_values() -> None:
    first, second = load_rules(EXAMPLE), load_rules(EXAMPLE)
    assert first == second and first is not second
    assert isinstance(first, RuleSet)

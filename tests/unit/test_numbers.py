"""Number normalisation to E.164 and number extraction from URIs and display names."""

from __future__ import annotations

import pytest

from sipguard.policy.numbers import (
    DEFAULT_MAX_NATIONAL_LENGTH,
    NumberPlan,
    is_anonymous,
    number_of_uri,
    numbers_in_display_name,
)
from sipguard.rules.values import Numbering
from sipguard.sip.uri import parse_name_addr, parse_uri

pytestmark = pytest.mark.unit

CN = NumberPlan(country_code="86", national_prefix="0", international_prefix="00")
UK = NumberPlan(country_code="44", national_prefix="0", international_prefix="00")
NANP = NumberPlan(country_code="1", national_prefix="1", international_prefix="011")
# A plan without a national prefix, where national numbers keep their leading 0.
IT = NumberPlan(country_code="39", national_prefix="", international_prefix="00")


# --- China --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # already international
        ("+862131771200", "+862131771200"),
        ("+86 21 3177 1200", "+862131771200"),
        ("+86-21-3177-1200", "+862131771200"),
        ("+86.21.3177.1200", "+862131771200"),
        ("+86 (21) 3177-1200", "+862131771200"),
        ("(+86) 21 31771200", "+862131771200"),
        ("  +862131771200  ", "+862131771200"),
        ("+447700900123", "+447700900123"),
        # international prefix
        ("00862131771200", "+862131771200"),
        ("0044 20 7946 0018", "+442079460018"),
        ("001 212 555 0100", "+12125550100"),
        # national prefix
        ("02131771200", "+862131771200"),
        ("021-3177-1200", "+862131771200"),
        ("(021) 3177 1200", "+862131771200"),
        ("01012345678", "+861012345678"),
        # national without prefix: mobiles, service and 400 numbers
        ("13800138000", "+8613800138000"),
        ("138 0013 8000", "+8613800138000"),
        ("95555", "+8695555"),
        ("96123", "+8696123"),
        ("4008001234", "+864008001234"),
        ("110", "+86110"),
        # the country code without "+" or prefix, longer than any national number
        ("862131771200", "+862131771200"),
        ("8613800138000", "+8613800138000"),
        ("86 21 3177 1200", "+862131771200"),
    ],
)
def test_china(text: str, expected: str) -> None:
    assert CN.normalise(text) == expected


def test_china_country_code_within_national_length_reads_as_national() -> None:
    # 10 digits starting with 86: no longer than a national number, so national.
    assert CN.normalise("8613800138") == "+868613800138"
    # 11 digits (the longest national number) is still national.
    assert CN.normalise("86138001380") == "+8686138001380"
    # 12 digits cannot be national.
    assert CN.normalise("861380013800") == "+861380013800"


def test_long_digits_not_starting_with_the_country_code_are_refused() -> None:
    # Too long for a national number, and no prefix says it is international.
    assert CN.normalise("442079460018") is None
    assert CN.normalise("4420794600180") is None


# --- United Kingdom -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("020 7946 0018", "+442079460018"),
        ("02079460018", "+442079460018"),
        ("(020) 7946-0018", "+442079460018"),
        ("07700900123", "+447700900123"),
        ("07700 900 123", "+447700900123"),
        ("+44 7700 900123", "+447700900123"),
        ("00862131771200", "+862131771200"),
        ("00 86 138 0013 8000", "+8613800138000"),
        ("0033 1 23 45 67 89", "+33123456789"),
        ("442079460018", "+442079460018"),
        ("7700900123", "+447700900123"),
        ("999", "+44999"),
    ],
)
def test_united_kingdom(text: str, expected: str) -> None:
    assert UK.normalise(text) == expected


def test_uk_national_number_longer_than_ten_digits_is_refused() -> None:
    assert UK.normalise("020794600181") is None  # NSN of 11 digits
    assert UK.normalise("20794600181") is None


# --- other plans --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("011 44 20 7946 0018", "+442079460018"),
        ("1 (212) 555-0100", "+12125550100"),
        ("212-555-0100", "+12125550100"),
        ("+1 212 555 0100", "+12125550100"),
        ("911", "+1911"),
    ],
)
def test_north_american_plan(text: str, expected: str) -> None:
    assert NANP.normalise(text) == expected


def test_plan_without_national_prefix_keeps_the_leading_zero() -> None:
    assert IT.normalise("06 1234 5678") == "+390612345678"
    assert IT.normalise("00390612345678") == "+390612345678"
    assert IT.normalise("3123456789") == "+393123456789"


def test_national_prefix_longer_than_international_is_tried_first() -> None:
    plan = NumberPlan(country_code="99", national_prefix="80", international_prefix="8")
    assert plan.normalise("801234") == "+991234"
    assert plan.normalise("8441234567") == "+441234567"


# --- what is not a number -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "-",
        "+",
        "++862131771200",
        "+86+2131771200",
        "86+2131771200",
        "+0862131771200",  # no country code starts with 0
        "000862131771200",  # international prefix followed by 0
        "0",  # a national prefix alone
        "00",  # an international prefix alone
        "+12",  # 2 digits
        "0012",  # 2 digits after the international prefix
        "+8621317712001234",  # 16 digits
        "00 8621317712001234",
        "alice",
        "anonymous",
        "+86213177120O",  # letter O
        "021 3177 1200 ext 5",
        "021\t31771200",  # a tab is not a visual separator
        "021/31771200",
        "021_31771200",
        "+86213177120;",
        "tel:+862131771200",
        "\u0661\u0662\u0663\u0664\u0665",  # Arabic-Indic digits
        "\uff10\uff12\uff11\uff13\uff11\uff17\uff17\uff11\uff12\uff10\uff10",  # full-width
        "+86 21 3177 1200\u00a0",  # no-break space
    ],
)
def test_not_a_number(text: str) -> None:
    assert CN.normalise(text) is None
    assert UK.normalise(text) is None


def test_short_numbers_count_the_country_code() -> None:
    # 3 digits is the floor of an E.164 number, counting the country code.
    assert CN.normalise("+861") == "+861"
    # A dialled number needs 3 digits of its own (110, 119, 120 are real;
    # "1" is not the national number +861, docs/policy.md).
    assert CN.normalise("110") == "+86110"
    assert CN.normalise("1") is None and CN.normalise("12") is None
    assert NumberPlan(country_code="1").normalise("1") is None  # national prefix alone


def test_national_numbers_that_would_exceed_15_digits_are_refused() -> None:
    plan = NumberPlan(country_code="49")  # NSN up to 13 digits
    assert plan.normalise("01234567890123") == "+491234567890123"
    assert plan.normalise("012345678901234") is None


@pytest.mark.parametrize(
    "text",
    [
        "+86 21 3177 1200",
        "00862131771200",
        "02131771200",
        "13800138000",
        "95555",
        "862131771200",
        "8613800138",
        "1",
    ],
)
@pytest.mark.parametrize("plan", [CN, UK, NANP, IT], ids=["CN", "UK", "NANP", "IT"])
def test_idempotent(plan: NumberPlan, text: str) -> None:
    once = plan.normalise(text)
    if once is not None:
        assert plan.normalise(once) == once


def test_e164_input_comes_back_as_the_same_object() -> None:
    number = "+8613800138000"
    assert CN.normalise(number) is number


# --- building a plan ----------------------------------------------------------------------------


def test_constructor_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        NumberPlan("86")  # type: ignore[call-arg]


def test_defaults_and_national_length_table() -> None:
    plan = NumberPlan(country_code="86")
    assert (plan.national_prefix, plan.international_prefix) == ("0", "00")
    assert plan.max_national_length == 11
    assert NumberPlan(country_code="44").max_national_length == 10
    assert NumberPlan(country_code="1").max_national_length == 10
    assert NumberPlan(country_code="49").max_national_length == 13
    assert NumberPlan(country_code="353").max_national_length == DEFAULT_MAX_NATIONAL_LENGTH


def test_max_national_length_is_configurable() -> None:
    plan = NumberPlan(country_code="86", max_national_length=9)
    assert plan.normalise("8613800138") == "+8613800138"  # now longer than national
    assert plan.normalise("13800138000") is None  # too long to be national
    assert plan == NumberPlan(country_code="86", max_national_length=9)
    assert NumberPlan(country_code="86") == NumberPlan(country_code="86", max_national_length=11)


def test_from_numbering() -> None:
    numbering = Numbering(country_code="44", national_prefix="0", international_prefix="00")
    assert NumberPlan.from_numbering(numbering) == UK
    assert NumberPlan.from_numbering(numbering, max_national_length=9).max_national_length == 9


@pytest.mark.parametrize(
    "arguments",
    [
        {"country_code": ""},
        {"country_code": "086"},
        {"country_code": "8612"},
        {"country_code": "8a"},
        {"country_code": "\u0668\u0666"},
        {"country_code": "86", "national_prefix": "x"},
        {"country_code": "86", "international_prefix": ""},
        {"country_code": "86", "national_prefix": "00", "international_prefix": "00"},
        {"country_code": "86", "max_national_length": 0},
        {"country_code": "86", "max_national_length": 14},  # 2 + 14 > 15
        {"country_code": "353", "max_national_length": 13},
    ],
)
def test_bad_plans_are_refused(arguments: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        NumberPlan(**arguments)  # type: ignore[arg-type]


def test_plan_is_frozen() -> None:
    with pytest.raises(AttributeError):
        CN.country_code = "44"  # type: ignore[misc]


# --- numbers in URIs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:+862131771200@carrier.example;user=phone", "+862131771200"),
        ("sip:+862131771200;verstat=TN-Validation-Passed@carrier.example", "+862131771200"),
        ("sip:02131771200;isub=1234@10.0.0.1", "02131771200"),
        ("sips:13800138000@example.cn:5061", "13800138000"),
        ("sip:+86-21-3177-1200@example.cn", "+86-21-3177-1200"),
        ("sip:alice@example.com", "alice"),
        ("sip:%2B862131771200@example.cn", "+862131771200"),
        ("sip:alice:secret@example.com", "alice"),
        # RFC 3261 §19.1.6: a local tel number in a sip: URI keeps its context.
        ("sip:31771200;phone-context=+86-21@example.cn;user=phone", "+86-2131771200"),
        ("sip:31771200;Phone-Context=+8621;isub=1@example.cn", "+862131771200"),
        ("sip:31771200;phone-context=example.cn@example.cn", "31771200"),
        ("sip:+862131771200;phone-context=+44@example.cn", "+862131771200"),
        ("sip:example.cn", None),
        ("sip:;isub=1@example.cn", None),
        ("tel:+862131771200", "+862131771200"),
        ("tel:+86-21-3177-1200;verstat=TN-Validation-Passed", "+86-21-3177-1200"),
        ("tel:31771200;phone-context=+86-21", "+86-2131771200"),
        ("tel:31771200;phone-context=example.cn", "31771200"),
        ("tel:31771200;phone-context=+", "31771200"),
        ("tel:31771200;phone-context=+86x", "31771200"),
        ("tel:31771200;phone-context", "31771200"),
        ("tel:95555", "95555"),
        ("urn:service:sos", None),
        ("mailto:alice@example.com", None),
    ],
)
def test_number_of_uri(uri: str, expected: str | None) -> None:
    assert number_of_uri(parse_uri(uri)) == expected


def test_number_of_uri_then_normalise() -> None:
    address = parse_name_addr('"Shop" <tel:31771200;phone-context=+86-21>;tag=1')
    text = number_of_uri(address.uri)
    assert text is not None
    assert CN.normalise(text) == "+862131771200"
    assert UK.normalise(text) == "+862131771200"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:anonymous@anonymous.invalid", True),
        ("sip:Anonymous@anonymous.invalid", True),
        ("sip:ANONYMOUS@carrier.example", True),
        ("sip:anonymous;isub=1@carrier.example", True),
        ("sip:+862131771200@Anonymous.Invalid", True),
        ("sip:anonymous.invalid", True),
        ("sip:restricted@carrier.example", True),
        ("sip:unavailable@carrier.example", True),
        ("tel:anonymous", True),
        ("sip:+862131771200@carrier.example", False),
        ("sip:anonymously@carrier.example", False),
        ("sip:carrier.example", False),
        ("tel:+862131771200", False),
        ("urn:anonymous:x", False),
    ],
)
def test_is_anonymous(uri: str, expected: bool) -> None:
    assert is_anonymous(parse_uri(uri)) is expected


# --- display names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("+86 21 3177 1200", ("+86 21 3177 1200",)),
        ("  (021) 3177-1200 ", ("(021) 3177-1200",)),
        ("13800138000", ("13800138000",)),
        ("95555", ("95555",)),
        ("1.2.3.4.5", ("1.2.3.4.5",)),
        ("1234", ()),  # too few digits
        ("+86", ()),
        ("", ()),
        ("   ", ()),
        ("Alice", ()),
        # text around a number: the number still shows
        ("Shop 021 3177 1200", ("021 3177 1200",)),
        ("021 3177 1200 ext 5", ("021 3177 1200",)),
        ("Bank 95555", ("95555",)),
        ("95555 客服", ("95555",)),
        ("中国银行95566客服热线", ("95566",)),
        ("Call 95555 or 95566", ("95555", "95566")),
        ("021/3177/1200", ()),
        # full-width and other scripts' digits read as the digits they show
        ("１３８００１３８０００", ("13800138000",)),
        ("（０２１）３１７７－１２００", ("(021)3177-1200",)),
        ("\u0661\u0662\u0663\u0664\u0665\u0666", ("123456",)),
        ("Ⅻ 12", ()),
    ],
)
def test_numbers_in_display_name(name: str, expected: tuple[str, ...]) -> None:
    assert numbers_in_display_name(name) == expected


def test_display_name_digits_normalise() -> None:
    (digits,) = numbers_in_display_name("(021) 3177-1200")
    assert CN.normalise(digits) == "+862131771200"
    (wide,) = numbers_in_display_name("１３８００１３８０００")
    assert CN.normalise(wide) == "+8613800138000"

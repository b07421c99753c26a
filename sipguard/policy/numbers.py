"""Caller and callee numbers: from what a SIP message says to E.164.

This module owns:

- `NumberPlan`, which turns the forms a number is written in (`+86 21
  3177-1200`, `00862131771200`, `02131771200`, `13800138000`, `95555`) into
  E.164 text, `+` and digits, per the rule file's `numbering`;
- the small readers that take number text out of SIP values:
  `number_of_uri` (From, P-Asserted-Identity, Request-URI), `is_anonymous`
  (RFC 3323 / RFC 3325 withheld identities) and `numbers_in_display_name`
  (the display-name check).

Invariants:

- Rule 1: `NumberPlan.normalise` returns either None or `+` followed by 3 to
  15 ASCII digits, the first of them not 0 (ITU-T E.164). It never raises.
- Rule 2: it is idempotent: `normalise(normalise(x)) == normalise(x)`
  whenever the first call returns a number.

Contract with callers: every function is on the per-call path. They use no
regular expressions and keep to a handful of string operations; a number
already in E.164 form is returned as the very same string object.

Ring 1: pure; no I/O, no clock.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import unquote

from sipguard.rules.values import (
    DEFAULT_INTERNATIONAL_PREFIX,
    DEFAULT_NATIONAL_PREFIX,
    E164_MAX_DIGITS,
    Numbering,
)
from sipguard.sip.uri import SipUri, TelUri, Uri

__all__ = [
    "ANONYMOUS_USERS",
    "DEFAULT_MAX_NATIONAL_LENGTH",
    "DISPLAY_NAME_MIN_DIGITS",
    "E164_MIN_DIGITS",
    "MAX_NATIONAL_LENGTHS",
    "NumberPlan",
    "numbers_in_display_name",
    "is_anonymous",
    "number_of_uri",
]

# The shortest number normalise() accepts, counting the country code: short
# enough for service numbers such as "+86110" and "+8695555".
E164_MIN_DIGITS = 3
# The fewest digits a dialled number may have: "110", "119", "120" are the
# shortest real numbers; one or two digits are invalid whatever follows.
_MIN_DIALLED_DIGITS = 3

# The longest national significant number (the digits after the country
# code, ITU-T E.164 "N(S)N") of some well-known numbering plans, from the
# national plans as published to the ITU. A dialled number without prefix
# that is longer than this cannot be national.
MAX_NATIONAL_LENGTHS: Mapping[str, int] = MappingProxyType(
    {
        "1": 10,  # NANP: 3-digit area code + 7-digit number
        "7": 10,  # Russia, Kazakhstan
        "33": 9,  # France
        "44": 10,  # United Kingdom
        "49": 13,  # Germany: variable-length numbers
        "61": 9,  # Australia
        "81": 10,  # Japan
        "86": 11,  # China: 11-digit mobiles, area code + 7-8 digit fixed lines
        "91": 10,  # India
    }
)
# For country codes not in the table: 12 keeps a 3-digit country code within
# E.164's 15 digits.
DEFAULT_MAX_NATIONAL_LENGTH = 12

# User parts that withhold the caller's identity. RFC 3323 §4.1.1.3 asks for
# "sip:anonymous@anonymous.invalid"; equipment in the field also sends these
# words (in any case) for presentation-restricted or unavailable callers.
ANONYMOUS_USERS = frozenset(
    {"anonymous", "restricted", "unavailable", "unknown", "private", "withheld"}
)
_ANONYMOUS_HOST = "anonymous.invalid"

# A display name counts as a number when it holds at least this many digits
# (fewer than that is rarely a number anyone would take for a caller ID).
DISPLAY_NAME_MIN_DIGITS = 5
# RFC 3966 §3: visual-separator = "-" / "." / "(" / ")"; plus spaces, which
# people and some equipment put between digit groups.
_VISUAL_SEPARATORS = "-.() "
_DISPLAY_NAME_CHARS = frozenset("+-.() 0123456789")
_NOT_ASCII_DIGITS = bytes(code for code in range(256) if not 0x30 <= code <= 0x39)


def _without_separators(text: str) -> str:
    # Five replace() calls beat str.translate() on short strings, and each one
    # returns the string itself when there is nothing to remove.
    return text.replace(" ", "").replace("-", "").replace(".", "").replace("(", "").replace(")", "")


def _international(digits: str) -> str | None:
    """`+digits` when `digits` (ASCII digits) can be an E.164 number."""
    if E164_MIN_DIGITS <= len(digits) <= E164_MAX_DIGITS and digits[0] != "0":
        return "+" + digits
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class NumberPlan:
    """How dialled forms of numbers normalise to E.164 in one country.

    Attributes:
        country_code: the home country code, 1 to 3 digits ("86", "44").
        national_prefix: the trunk prefix that opens a national number ("0");
            may be empty for plans that have none.
        international_prefix: the prefix that opens an international number
            ("00", "011"); must differ from `national_prefix`.
        max_national_length: the longest national significant number (digits
            after the country code). None picks it from `MAX_NATIONAL_LENGTHS`,
            else `DEFAULT_MAX_NATIONAL_LENGTH`; it is stored resolved.

    `normalise(text)` reads `text` after removing visual separators
    (RFC 3966: `-`, `.`, `(`, `)`) and spaces, and tries these forms in order:

    1. `+` and digits: already international, kept.
    2. the international prefix and digits ("0044..."): `+` and the digits.
    3. the national prefix and a national significant number of at most
       `max_national_length` digits ("02131771200"): `+`, country code, NSN.
       (When one prefix begins with the other, the longer one is tried first,
       so "00" is international in a plan with "0" and "00".)
    4. digits without a prefix:
       - at most `max_national_length` digits: a national number dialled
         without its prefix (mobiles "13800138000", service numbers "95555",
         "4008001234"): `+`, country code, digits;
       - longer, and starting with the country code ("862131771200"): an
         international number without its "+" or prefix: `+` and the digits;
       - longer, and not starting with the country code: None. It cannot be
         a national number, and without a prefix there is no telling it is
         international.

    The ambiguity of rule 4: a number that starts with the country code but is
    no longer than the longest national number (with CN: "8613800138", 10
    digits) reads as national ("+868613800138"); only length can tell the two
    apart, and national numbers are the common case there.

    Anything else gives None: letters or other characters (a `+` anywhere but
    first included), no digits, a prefix with nothing after it, a result with
    fewer than 3 or more than 15 digits, or one whose first digit is 0 (no
    country code starts with 0).
    """

    country_code: str
    national_prefix: str = DEFAULT_NATIONAL_PREFIX
    international_prefix: str = DEFAULT_INTERNATIONAL_PREFIX
    max_national_length: int | None = None
    _national_max: int = field(init=False, repr=False, compare=False)
    _home: str = field(init=False, repr=False, compare=False)
    _international_first: bool = field(init=False, repr=False, compare=False)
    _prefix_heads: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        country = self.country_code
        if not (1 <= len(country) <= 3 and _is_digits(country)) or country[0] == "0":
            raise ValueError(f"country code {country!r} must be 1 to 3 digits, not starting with 0")
        if self.national_prefix and not _is_digits(self.national_prefix):
            raise ValueError(f"national prefix {self.national_prefix!r} must be digits")
        if not _is_digits(self.international_prefix):
            raise ValueError(f"international prefix {self.international_prefix!r} must be digits")
        if self.national_prefix == self.international_prefix:
            raise ValueError("the national and international prefixes must differ")
        limit = self.max_national_length
        if limit is None:
            limit = MAX_NATIONAL_LENGTHS.get(country, DEFAULT_MAX_NATIONAL_LENGTH)
        if not 1 <= limit <= E164_MAX_DIGITS - len(country):
            raise ValueError(
                f"max_national_length {limit} must be 1 to {E164_MAX_DIGITS - len(country)} "
                f"(E.164: country code and national number have at most {E164_MAX_DIGITS} digits)"
            )
        object.__setattr__(self, "max_national_length", limit)
        object.__setattr__(self, "_national_max", limit)
        object.__setattr__(self, "_home", "+" + country)
        # Try the longer prefix first when one begins with the other ("00", "0").
        object.__setattr__(
            self,
            "_international_first",
            len(self.international_prefix) >= len(self.national_prefix),
        )
        prefixes = (self.international_prefix, self.national_prefix)
        heads = frozenset(prefix[:1] for prefix in prefixes if prefix)
        object.__setattr__(self, "_prefix_heads", heads)

    @classmethod
    def from_numbering(
        cls, numbering: Numbering, *, max_national_length: int | None = None
    ) -> NumberPlan:
        """The plan of a rule file's `numbering` section.

        Raises:
            ValueError: the numbering is not a usable plan (see the class).
        """
        return cls(
            country_code=numbering.country_code,
            national_prefix=numbering.national_prefix,
            international_prefix=numbering.international_prefix,
            max_national_length=max_national_length,
        )

    def normalise(self, text: str) -> str | None:
        """The E.164 form (`+` and digits) of `text`, or None when it is not dialable.

        See the class docstring for the forms understood. Never raises; an
        input already in E.164 form comes back as the same object.
        """
        # The two forms that need no separator removal come first: E.164 (how
        # P-Asserted-Identity usually reads) and digits only.
        if text[:1] == "+":
            digits = text[1:]
            if digits.isdigit() and digits.isascii():
                if E164_MIN_DIGITS <= len(digits) <= E164_MAX_DIGITS and digits[0] != "0":
                    return text
                return None
        elif text.isdigit() and text.isascii():
            return self._dialled(text)
        if not text.isascii():
            return None
        text = _without_separators(text)
        if text[:1] == "+":
            digits = text[1:]
            return _international(digits) if digits.isdigit() else None
        return self._dialled(text) if text.isdigit() else None

    def _dialled(self, digits: str) -> str | None:
        """Rules 2 to 4 of the class docstring, for ASCII digits."""
        if len(digits) < _MIN_DIALLED_DIGITS:
            return None  # "1" is no caller ID, not the national number +861
        if digits[0] in self._prefix_heads:  # else neither prefix can match
            international = self.international_prefix
            national = self.national_prefix
            if self._international_first:
                if digits.startswith(international):
                    return _international(digits[len(international) :])
                if national and digits.startswith(national):
                    return self._national(digits[len(national) :])
            else:
                if national and digits.startswith(national):
                    return self._national(digits[len(national) :])
                if digits.startswith(international):
                    return _international(digits[len(international) :])
        if len(digits) <= self._national_max:
            return self._home + digits  # what _national() gives for these digits
        if digits.startswith(self.country_code):
            return _international(digits)
        return None

    def _national(self, significant: str) -> str | None:
        """`+`, country code and a national significant number, if it fits."""
        if not significant or len(significant) > self._national_max:
            return None
        number = self._home + significant
        return number if len(number) > E164_MIN_DIGITS else None


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def number_of_uri(uri: Uri) -> str | None:
    """The number text a URI carries, not yet normalised; None when it has none.

    - `sip:`/`sips:`: the user part without its parameters (everything from
      the first `;`, as in `+862131771200;verstat=TN-Validation-Passed` or
      `2131771200;isub=12`), with %-escapes decoded (RFC 3261 §19.1.2);
      None for a URI without a user part.
    - `tel:`: the number (RFC 3966).
    - any other scheme: None.

    A local number (one without `+`) whose `phone-context` is a global number
    prefix (`tel:31771200;phone-context=+86-21`, or the same as the user part
    of a `sip:` URI with `user=phone`, RFC 3261 §19.1.6) is returned with that
    prefix in front, per RFC 3966 §5.1.5: `+86-2131771200`. A domain-name
    context leaves the local number as it is.
    """
    if isinstance(uri, SipUri):
        user = uri.user
        if user is None:
            return None
        number, semicolon, params = user.partition(";")
        if "%" in number:
            number = unquote(number)
        if not number:
            return None
        if semicolon and number[:1] != "+":
            return _with_context(number, _user_param(params, "phone-context"))
        return number
    if isinstance(uri, TelUri):
        number = uri.number
        if number[:1] != "+" and uri.params:
            context = next((value for key, value in uri.params if key == "phone-context"), None)
            return _with_context(number, context)
        return number
    return None


def _user_param(params: str, name: str) -> str | None:
    """The value of parameter `name` in `a=1;b=2` (names compare ignoring case)."""
    for part in params.split(";"):
        key, equals, value = part.partition("=")
        if equals and key.strip().lower() == name:
            return value.strip()
    return None


def _with_context(number: str, context: str | None) -> str:
    """RFC 3966 §5.1.5: a global-number-digits context prefixes a local number."""
    if context is None or context[:1] != "+":
        return number
    digits = _without_separators(context[1:])
    return context + number if digits and _is_digits(digits) else number


def is_anonymous(uri: Uri) -> bool:
    """Whether `uri` withholds the caller's identity (RFC 3323, RFC 3325).

    True for a `sip:`/`sips:` URI whose host is `anonymous.invalid` or whose
    user part (without parameters) is one of `ANONYMOUS_USERS`, compared
    ignoring case; and for a `tel:` URI whose "number" is one of those words.
    """
    if isinstance(uri, SipUri):
        host = uri.host
        if len(host) == len(_ANONYMOUS_HOST) and host.lower() == _ANONYMOUS_HOST:
            return True
        user = uri.user
        # Each of ANONYMOUS_USERS starts with a letter; a number never does.
        return (
            user is not None
            and user[:1].isalpha()
            and user.partition(";")[0].lower() in ANONYMOUS_USERS
        )
    if isinstance(uri, TelUri):
        return uri.number.lower() in ANONYMOUS_USERS
    return False


def numbers_in_display_name(name: str) -> tuple[str, ...]:
    """The numbers a display name shows, as written, without surrounding spaces.

    The name is read as a phone shows it: Unicode NFKC first (full-width
    "１３８００１３８０００" is 13800138000), and every decimal digit of any
    script counts as its ASCII digit. A number is a run of digits, `+`,
    visual separators (`-`, `.`, `(`, `)`) and spaces holding at least
    `DISPLAY_NAME_MIN_DIGITS` digits, alone or with text around it: "+86 21
    3177 1200", "(021) 3177-1200", "Bank 95555", "95555 客服". The caller
    normalises each with its `NumberPlan` and compares it with the caller's
    number. Returns () when the name shows no number.
    """
    if not name.isascii():
        name = _ascii_digits(unicodedata.normalize("NFKC", name))
    if len(name.encode("utf-8", "replace").translate(None, _NOT_ASCII_DIGITS)) < (
        DISPLAY_NAME_MIN_DIGITS
    ):
        return ()  # the common case, a name: a few C-level passes, no loop
    numbers: list[str] = []
    run_start = -1
    digits = 0
    for index, char in enumerate(name + "\0"):
        if char in _DISPLAY_NAME_CHARS:
            if run_start < 0:
                run_start = index
            if "0" <= char <= "9":
                digits += 1
            continue
        if run_start >= 0 and digits >= DISPLAY_NAME_MIN_DIGITS:
            numbers.append(name[run_start:index].strip(" "))
        run_start, digits = -1, 0
    return tuple(numbers)


def _ascii_digits(text: str) -> str:
    """`text` with every decimal digit of any script written as its ASCII digit."""
    return "".join(
        str(unicodedata.decimal(char)) if char.isdecimal() and not char.isascii() else char
        for char in text
    )

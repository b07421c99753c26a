"""Header-name registry: canonical spellings, compact forms, list headers.

Header names are case-insensitive (RFC 3261 §7.3.1) and many have a compact
one-letter form (RFC 3261 §7.3.3, IANA "Header Fields" registry). Every header
is stored under a *key*, its lower-case full name, and written out with its
canonical spelling, so `f: x`, `FROM: x` and `From: x` are the same header.
"""

from __future__ import annotations

__all__ = [
    "CALLER_IDENTITY_HEADERS",
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "STIR_HEADERS",
    "canonical_name",
    "header_key",
    "key_and_name",
]

# Headers in which a caller asserts or asks for an identity (RFC 3325, and the
# Remote-Party-ID draft): sipguard validates them once, at call set-up, and
# asserts the identity itself; they are never copied to the other leg.
CALLER_IDENTITY_HEADERS = frozenset(
    {"p-asserted-identity", "p-preferred-identity", "remote-party-id"}
)
# STIR/SHAKEN signatures (RFC 8224, and RFC 4474's Identity-Info): sipguard
# does not verify them, so by default they are not relayed either.
STIR_HEADERS = frozenset({"identity", "identity-info"})

# RFC 3261 §7.3.3 plus later RFCs' compact forms (RFC 3265, 3515, 3892, 4028,
# 8224, 3841); the keys are the one-letter forms, lower-cased.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_WELL_KNOWN = (
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Expires",
    "From",
    "In-Reply-To",
    "Max-Forwards",
    "Min-Expires",
    "Min-SE",
    "MIME-Version",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Remote-Party-ID",
    "Reply-To",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Session-Expires",
    "Subject",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
    *COMPACT_FORMS.values(),
)

_CANONICAL: dict[str, str] = {name.lower(): name for name in _WELL_KNOWN}
_CANONICAL.update({letter: full for letter, full in COMPACT_FORMS.items()})

_KEYS: dict[str, str] = {lower: name.lower() for lower, name in _CANONICAL.items()}
# lower-case spelling -> (key, canonical spelling), one lookup per header line.
_NAMES: dict[str, tuple[str, str]] = {
    lower: (name.lower(), name) for lower, name in _CANONICAL.items()
}

# Headers whose value is a comma-separated list that may also be split over
# several header lines (RFC 3261 §7.3.1). Only these are split on commas.
LIST_HEADERS: frozenset[str] = frozenset(
    {
        "via",
        "route",
        "record-route",
        "contact",
        "p-asserted-identity",
        "remote-party-id",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "privacy",
        "accept",
        "reason",
        "warning",
    }
)


def header_key(name: str) -> str:
    """Return the lookup key of a header name: lower-case, compact form expanded."""
    lower = name.lower()
    return _KEYS.get(lower, lower)


def key_and_name(name: str) -> tuple[str, str]:
    """Both `header_key(name)` and `canonical_name(name)`, in one lookup."""
    lower = name.lower()
    found = _NAMES.get(lower)
    return found if found is not None else (lower, name)


def canonical_name(name: str) -> str:
    """Return the spelling used on the wire: `v` -> `Via`, `call-id` -> `Call-ID`.

    Unknown extension headers keep the spelling they arrived with.
    """
    return _CANONICAL.get(name.lower(), name)

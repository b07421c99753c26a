"""Exception hierarchy.

Normal outcomes (a refused call) are values, never exceptions. Exceptions are
for input that cannot be processed: a malformed SIP message or a bad rule file.
A `SipProtocolError` carries the SIP status the driver answers with, converted
once at the driver boundary.

`RuleFileWarning` lives here beside `RuleFileError` because the two share
their `path:line:col:` form; a warning is a value, never raised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "SipguardError",
    "SipProtocolError",
    "SipParseError",
    "MessageTooLarge",
    "LoopDetected",
    "StartupError",
    "RuleFileError",
    "RuleFileErrors",
    "RuleFileWarning",
]


class SipguardError(Exception):
    """Base class of every error sipguard raises on purpose."""


class SipProtocolError(SipguardError):
    """A SIP message that cannot be processed; `status_hint` is the answer."""

    status_hint: int = 400

    def __init__(self, message: str, *, status_hint: int | None = None) -> None:
        super().__init__(message)
        if status_hint is not None:
            self.status_hint = status_hint


class SipParseError(SipProtocolError):
    """Bytes that are not a well-formed SIP message (RFC 3261 §25)."""

    status_hint = 400


class MessageTooLarge(SipProtocolError):
    """A message over the configured size limit (RFC 3261 §21.5.14)."""

    status_hint = 513


class LoopDetected(SipProtocolError):
    """Max-Forwards exhausted (RFC 3261 §16.3 item 3)."""

    status_hint = 483


class StartupError(SipguardError):
    """sipguard cannot start serving: a listen or metrics address is taken,
    or not this machine's. The message names the address and the cause."""


class RuleFileError(SipguardError):
    """A rule-file problem at a known place: `str()` is `path:line:col: message`.

    `line` and `column` are 1-based, as editors count them.
    """

    def __init__(self, message: str, *, path: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.column = column

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleFileWarning:
    """A finding in a rule file that does not stop it: likely a mistake, yet
    a file that works as written. `str()` is `path:line:col: warning: message`.

    `line` and `column` are 1-based, as editors count them.
    """

    message: str
    path: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: warning: {self.message}"


class RuleFileErrors(SipguardError):
    """Every problem found in one rule file, in file order.

    A rule file is checked completely before it is refused, so an engineer sees
    all of its mistakes at once. `str()` is one `path:line:col: message` a line;
    `warnings` holds what the same check warns about, in file order.
    """

    def __init__(
        self, errors: Iterable[RuleFileError], *, warnings: Iterable[RuleFileWarning] = ()
    ) -> None:
        self.errors: tuple[RuleFileError, ...] = tuple(errors)
        self.warnings: tuple[RuleFileWarning, ...] = tuple(warnings)
        super().__init__("\n".join(str(error) for error in self.errors))

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)

"""Numbers of a config checked where they enter: one :class:`AlposeError` line per bad value.

A :class:`Rule` says what a key allows (a whole number or any finite number, its bounds, whether
null is allowed); :func:`check` raises ``<key>=<value> is not allowed: <what is>; <hint>`` for
a value that breaks it, and :func:`check_all` applies a table of rules to a config node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hourglass.errors import AlposeError


@dataclass(frozen=True)
class Rule:
    """What one numeric setting allows."""

    integer: bool = False  # a whole number (True, False and 3.0 are refused)
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is excluded
    high_open: bool = False  # high itself is excluded
    null: bool = False  # null (None) is allowed
    what: str = ""  # e.g. "a probability"; default: from the type and bounds

    def describe(self) -> str:
        kind = "a whole number" if self.integer else "a finite number"
        bounds = []
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            bounds.append(f"in {left}{_num(self.low)}, {_num(self.high)}{right}")
        elif self.low is not None:
            bounds.append(f"{'above' if self.low_open else 'at least'} {_num(self.low)}")
        elif self.high is not None:
            bounds.append(f"{'below' if self.high_open else 'at most'} {_num(self.high)}")
        text = f"{self.what} ({kind}" if self.what else kind
        text += (" " + " ".join(bounds)) if bounds else ""
        text += ")" if self.what else ""
        return text + (", or null" if self.null else "")

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.null
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        too_low = self.low is not None and (
            value < self.low or (self.low_open and value == self.low)
        )
        too_high = self.high is not None and (
            value > self.high or (self.high_open and value == self.high)
        )
        return not (too_low or too_high)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def count(low: int = 1, null: bool = False, what: str = "") -> Rule:
    """A whole number, at least ``low``."""
    return Rule(integer=True, low=low, null=null, what=what)


def positive(null: bool = False, what: str = "") -> Rule:
    """A finite number > 0."""
    return Rule(low=0, low_open=True, null=null, what=what)


def non_negative(null: bool = False, what: str = "") -> Rule:
    """A finite number >= 0."""
    return Rule(low=0, null=null, what=what)


def probability(null: bool = False) -> Rule:
    """A finite number in [0, 1]."""
    return Rule(low=0, high=1, null=null, what="a probability")


def fraction(null: bool = False, what: str = "a fraction") -> Rule:
    """A finite number strictly between 0 and 1."""
    return Rule(low=0, high=1, low_open=True, high_open=True, null=null, what=what)


def shown(value: Any) -> str:
    """A value as the user typed it (strings quoted, floats as Python prints them)."""
    return repr(value) if isinstance(value, str) else str(value)


def refuse(key: str, value: Any, allowed: str, hint: str = "") -> AlposeError:
    """The error for ``key=value``: what is allowed, then what to do."""
    tail = hint or f"set {key}= to such a value"
    return AlposeError(f"{key}={shown(value)} is not allowed: it must be {allowed}; {tail}")


def check(key: str, value: Any, rule: Rule, hint: str = "") -> None:
    """Raise one :class:`AlposeError` line when ``value`` breaks ``rule``."""
    if not rule.allows(value):
        raise refuse(key, value, rule.describe(), hint)


def check_all(
    node: Mapping[str, Any] | None, rules: Mapping[str, Rule], prefix: str = "", hint: str = ""
) -> None:
    """Check every key of ``rules`` that ``node`` holds (dotted keys reach into sub-nodes)."""
    if node is None:
        return
    for key, rule in rules.items():
        found, value = lookup(node, key)
        if found:
            check(f"{prefix}{key}", value, rule, hint)


def lookup(node: Any, dotted: str) -> tuple[bool, Any]:
    """(True, value) of a dotted key in nested mappings, else (False, None)."""
    value = node
    for part in dotted.split("."):
        if not isinstance(value, Mapping) and not hasattr(value, "keys"):
            return False, None
        if part not in value:
            return False, None
        value = value[part]
    return True, value


def ordered(key_low: str, low: Any, key_high: str, high: Any, hint: str = "") -> None:
    """Raise when a range's lower end lies above its upper end (both already checked numbers)."""
    if low is not None and high is not None and low > high:
        tail = hint or f"set {key_low}= at most {key_high}="
        raise AlposeError(
            f"{key_low}={shown(low)} is above {key_high}={shown(high)}: the range is empty; {tail}"
        )

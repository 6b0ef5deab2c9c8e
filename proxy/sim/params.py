"""Parameter checks of the simulated endpoints, worded as OpenAI words its 400s.

OpenAI's messages follow a few fixed patterns ("Missing required parameter: 'x'.", "Invalid type
for 'x': expected ..., but got ... instead.", "Invalid 'x': integer below minimum value. ...",
"Invalid value: 'v'. Supported values are: ...") with codes `missing_required_parameter`,
`invalid_type`, `integer_below_min_value`/`integer_above_max_value` and `invalid_value`; SDKs
raise `BadRequestError` for all of them.
"""

from __future__ import annotations

from collections.abc import Mapping

from proxy.sim.http import InvalidRequest

SHOWN_CHARS = 64  # a client's value is echoed in a message at most this long


def type_name(value: object) -> str:
    """The JSON type of a parsed value, as OpenAI names it in 'Invalid type' errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def missing(name: str) -> InvalidRequest:
    """A required parameter is absent."""
    return InvalidRequest(
        f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
    )


def invalid_type(name: str, expected: str, value: object) -> InvalidRequest:
    """A parameter has the wrong JSON type."""
    return InvalidRequest(
        f"Invalid type for '{name}': expected {expected}, but got {type_name(value)} instead.",
        param=name,
        code="invalid_type",
    )


def typed(values: Mapping[str, object], name: str, kind: type, expected: str) -> None:
    """Refuse `name` unless absent, null or of `kind` (a bool is never an int here)."""
    value = values.get(name)
    if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
        raise invalid_type(name, expected, value)


def choice(values: Mapping[str, object], name: str, allowed: tuple[str, ...], default: str) -> str:
    """One of `allowed` (`default` when absent or null)."""
    value = values.get(name)
    if value is None:
        return default
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(f"'{option}'" for option in allowed)
        raise InvalidRequest(
            f"Invalid value: '{str(value)[:SHOWN_CHARS]}'. Supported values are: {options}.",
            param=name,
            code="invalid_value",
        )
    return value


def bounded_int(values: Mapping[str, object], name: str, low: int, high: int, default: int) -> int:
    """An integer in [low, high] (`default` when absent or null)."""
    value = values.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_type(name, "an integer", value)
    if value < low:
        raise InvalidRequest(
            f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    if value > high:
        raise InvalidRequest(
            f"Invalid '{name}': integer above maximum value. Expected a value <= {high}, "
            f"but got {value} instead.",
            param=name,
            code="integer_above_max_value",
        )
    return value

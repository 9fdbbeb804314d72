"""Stripe's form encoding: ``items[0][price]=price_x&expand[]=customer&metadata[k]=v``.

Values arrive as strings; handlers coerce them with the helpers below, which raise
Stripe-shaped 400s naming the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from stripesync.sim.errors import invalid

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


def parse(body: str) -> dict[str, Any]:
    """Decode a form-encoded body or query string into nested dicts and lists."""
    root: dict[str, Any] = {}
    for raw_key, value in parse_qsl(body, keep_blank_values=True):
        match = _KEY.match(raw_key)
        if match is None:
            raise invalid(f"Invalid parameter name: {raw_key}", param=raw_key)
        parts = [match.group(1), *_PART.findall(match.group(2))]
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            key: Any = part
            if part == "":
                # `expand[]=a&expand[]=b` appends
                key = str(len(node))
            if last:
                node[key] = value
            else:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = {}
                    node[key] = child
                node = child
    return _listify(root)  # type: ignore[no-any-return]


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        converted = {k: _listify(v) for k, v in node.items()}
        if converted and all(isinstance(k, str) and k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        return converted
    return node


# -- coercion -------------------------------------------------------------------------


def as_int(
    params: Mapping[str, Any],
    name: str,
    default: int | None = None,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid(f"Invalid integer: {value}", param=name) from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise invalid(f"Invalid {name}: must be between {minimum} and {maximum}", param=name)
    return number


def as_bool(params: Mapping[str, Any], name: str, default: bool | None = None) -> bool | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    if value in ("true", True):
        return True
    if value in ("false", False):
        return False
    raise invalid(f"Invalid boolean: {value}", param=name)


def as_str(params: Mapping[str, Any], name: str, default: str | None = None) -> str | None:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise invalid(f"Invalid string: {name} must be a string", param=name)
    return value


def as_list(params: Mapping[str, Any], name: str) -> list[Any]:
    value = params.get(name)
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        raise invalid(f"Invalid array: {name} must be an array", param=name)
    return [value]


def as_dict(params: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = params.get(name)
    if value is None:
        return None
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid(f"Invalid object: {name} must be a hash", param=name)
    return value


def as_metadata(
    params: Mapping[str, Any], current: dict[str, str] | None = None, name: str = "metadata"
) -> dict[str, str]:
    """Stripe merges metadata keys; an empty value unsets one; ``metadata=`` clears all."""
    result = dict(current or {})
    if name not in params:
        return result
    value = params[name]
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid(f"Invalid hash: {name} must be a hash", param=name)
    for key, item in value.items():
        if not isinstance(item, str):
            raise invalid(
                f"Invalid value for {name}[{key}]: must be a string", param=f"{name}[{key}]"
            )
        if len(key) > 40:
            raise invalid(
                f"Metadata keys can have up to 40 characters; {key!r} has {len(key)}",
                param=f"{name}[{key}]",
            )
        if len(item) > 500:
            raise invalid("Metadata values can have up to 500 characters", param=f"{name}[{key}]")
        if item == "":
            result.pop(key, None)
        else:
            result[key] = item
    if len(result) > 50:
        raise invalid("Metadata can have up to 50 keys", param=name)
    return result


def as_enum(
    params: Mapping[str, Any], name: str, allowed: tuple[str, ...], default: str | None = None
) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    if value not in allowed:
        raise invalid(f"Invalid {name}: must be one of {', '.join(allowed)}", param=name)
    return str(value)


def created_filter(params: Mapping[str, Any], name: str = "created") -> dict[str, int] | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        result = {}
        for op, raw in value.items():
            if op not in ("gt", "gte", "lt", "lte"):
                raise invalid(
                    f"Invalid {name}[{op}]: use gt, gte, lt or lte", param=f"{name}[{op}]"
                )
            try:
                result[op] = int(raw)
            except (TypeError, ValueError):
                raise invalid(f"Invalid integer: {raw}", param=f"{name}[{op}]") from None
        return result
    try:
        return {"eq": int(value)}
    except (TypeError, ValueError):
        raise invalid(f"Invalid integer: {value}", param=name) from None

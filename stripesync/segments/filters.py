"""A small filter language over a profile's traits, for segments and automations.

Filters are JSON, because users write them in the web app and the REST API and the store
keeps them as they were written::

    {"all": [
        {"trait": "subscription_statuses", "op": "contains", "value": "trialing"},
        {"trait": "last_activity_at", "op": "more_than_days_ago", "value": 2}
    ]}

A node is a combinator (``{"all": [...]}``, ``{"any": [...]}``, ``{"not": node}``,
``{"some": {"trait": "subscriptions", "filter": node}}``) or a condition (``{"trait": ...,
"op": ..., "value": ...}``). ``some`` tests the elements of a list-of-objects trait, so
"a subscription that is trialing *and* whose trial has ended" means one subscription,
not any trialing one next to any ended trial. The language has no expressions,
no code and no references, so a filter from an untrusted client can be stored and run
safely; `validate_filter` bounds its size and depth and checks every value's type, and its
errors (:class:`~stripesync.errors.InvalidInput`) name the node and the fix.

Evaluation is pure: the traits and ``now`` are the only inputs. The rules, which a later
SQL translation must match, are in docs/segments.md; in short:

- a missing trait is one that is absent, None, ``""``, ``[]`` or ``{}``;
- a positive test (eq, gt, in, contains, within_last_days, ...) on a missing trait is
  false, and ne / not_in / not_contains / not_exists are exact negations of eq / in /
  contains / exists (so they are true for a missing trait);
- a list trait matches a scalar test when any of its elements does;
- numbers compare with numbers, dates with dates; booleans are never numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from stripesync.errors import InvalidInput

__all__ = [
    "COMBINATORS",
    "MAX_DEPTH",
    "MAX_NODES",
    "OPS",
    "Filter",
    "Now",
    "evaluate",
    "parse_time",
    "validate_filter",
]

#: A filter as JSON-decoded.
Filter = Mapping[str, Any]

COMBINATORS: Final = ("all", "any", "not", "some")
#: Every operator, grouped by the value it takes.
OPS: Final[Mapping[str, str]] = {
    "eq": "a string, number or boolean",
    "ne": "a string, number or boolean",
    "gt": "a number or an ISO 8601 date",
    "gte": "a number or an ISO 8601 date",
    "lt": "a number or an ISO 8601 date",
    "lte": "a number or an ISO 8601 date",
    "in": "a non-empty list of strings, numbers or booleans",
    "not_in": "a non-empty list of strings, numbers or booleans",
    "contains": "a string, number or boolean",
    "not_contains": "a string, number or boolean",
    "exists": "no value",
    "not_exists": "no value",
    "within_last_days": "a number of days, 0 or more",
    "more_than_days_ago": "a number of days, 0 or more",
    "before_days_ago": "a number of days, 0 or more",
}
MAX_DEPTH: Final = 16
MAX_NODES: Final = 500
MAX_LIST: Final = 1000
MAX_DAYS: Final = 36_600  # a century: beyond it a day count is a typo, not a segment
_MAX_TRAIT_LENGTH: Final = 200

_SCALAR_OPS: Final = frozenset({"eq", "ne", "contains", "not_contains"})
_ORDER_OPS: Final = frozenset({"gt", "gte", "lt", "lte"})
_LIST_OPS: Final = frozenset({"in", "not_in"})
_PRESENCE_OPS: Final = frozenset({"exists", "not_exists"})
_DAY_OPS: Final = frozenset({"within_last_days", "more_than_days_ago", "before_days_ago"})

Now = datetime | int | float


# -- times ------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """A trait's value as an aware UTC datetime, or None when it is not a time.

    Accepts what traits hold: ISO 8601 strings (``2024-07-05T22:10:00Z``, with an
    offset, or a bare date meaning its midnight UTC), unix timestamps (Stripe's own
    format) and datetimes (naive ones read as UTC, as Stripe's times are).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            return None
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _now(now: Now) -> datetime:
    parsed = parse_time(now)
    if parsed is None:
        raise InvalidInput(
            f"now is {now!r}; pass an aware datetime or a unix timestamp (the evaluation "
            "never reads the clock itself)"
        )
    return parsed


# -- validation -------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool) or _is_number(value)


def _fail(path: str, problem: str, fix: str) -> InvalidInput:
    return InvalidInput(f"{path}: {problem}; {fix}")


class _Counter:
    def __init__(self) -> None:
        self.nodes = 0


def validate_filter(node: Any) -> None:
    """Check a filter, raising :class:`~stripesync.errors.InvalidInput` on the first
    problem, with the path of the offending node (``filter.all[1].op``) and the fix.

    Returns None on success: the filter is used as given, there is no compiled form.
    """
    _validate(node, "filter", 1, _Counter())


def _validate(node: Any, path: str, depth: int, counter: _Counter) -> None:
    counter.nodes += 1
    if counter.nodes > MAX_NODES:
        raise _fail(path, f"the filter has more than {MAX_NODES} nodes", "split the segment")
    if depth > MAX_DEPTH:
        raise _fail(path, f"nesting deeper than {MAX_DEPTH}", "flatten the all/any groups")
    if not isinstance(node, Mapping):
        raise _fail(
            path,
            f"expected an object, got {type(node).__name__}",
            'write {"all": [...]}, {"any": [...]}, {"not": {...}}, {"some": {...}} or '
            '{"trait": "...", "op": "...", "value": ...}',
        )
    keys = set(node)
    combinators = keys & set(COMBINATORS)
    if combinators:
        if len(keys) != 1:
            raise _fail(
                path,
                f"a combinator node has exactly one key, found {sorted(keys)}",
                "wrap each condition in the combinator's list instead of beside it",
            )
        (kind,) = combinators
        children = node[kind]
        if kind == "not":
            _validate(children, f"{path}.not", depth + 1, counter)
            return
        if kind == "some":
            _validate_some(children, f"{path}.some", depth, counter)
            return
        if not isinstance(children, list):
            raise _fail(
                f"{path}.{kind}",
                f"expected a list of filters, got {type(children).__name__}",
                f'write {{"{kind}": [{{...}}, {{...}}]}}',
            )
        for index, child in enumerate(children):
            _validate(child, f"{path}.{kind}[{index}]", depth + 1, counter)
        return
    if "trait" not in keys or "op" not in keys:
        raise _fail(
            path,
            f"not a combinator and not a condition (keys {sorted(keys)})",
            'use all/any/not/some, or give "trait" and "op" (and "value" for most ops)',
        )
    extra = keys - {"trait", "op", "value"}
    if extra:
        raise _fail(
            path, f"unknown keys {sorted(extra)}", 'a condition has only "trait", "op", "value"'
        )
    _validate_condition(node, path)


def _validate_some(node: Any, path: str, depth: int, counter: _Counter) -> None:
    example = '{"some": {"trait": "subscriptions", "filter": {...}}}'
    if not isinstance(node, Mapping) or set(node) != {"trait", "filter"}:
        raise _fail(path, "expected an object with exactly trait and filter", f"write {example}")
    _validate_trait(node["trait"], f"{path}.trait")
    _validate(node["filter"], f"{path}.filter", depth + 1, counter)


def _validate_trait(trait: Any, path: str) -> None:
    if not isinstance(trait, str) or not trait.strip() or len(trait) > _MAX_TRAIT_LENGTH:
        raise _fail(
            path,
            f"{trait!r} is not a trait name",
            f"give a trait key such as 'mrr' (a non-empty string of at most "
            f"{_MAX_TRAIT_LENGTH} characters)",
        )


def _validate_condition(node: Mapping[str, Any], path: str) -> None:
    op = node["op"]
    _validate_trait(node["trait"], f"{path}.trait")
    if not isinstance(op, str) or op not in OPS:
        raise _fail(f"{path}.op", f"unknown op {op!r}", f"use one of {', '.join(OPS)}")
    has_value = "value" in node
    value: Any = node.get("value")
    expected = f"{op} takes {OPS[op]}"
    if op in _PRESENCE_OPS:
        if has_value:
            raise _fail(f"{path}.value", f"{op} takes no value", "remove the value")
        return
    if not has_value:
        raise _fail(path, f"{op} needs a value", expected)
    where = f"{path}.value"
    if op in _SCALAR_OPS:
        if value is None:
            raise _fail(where, "null is not a value to compare", "use exists / not_exists")
        if not _is_scalar(value):
            raise _fail(where, f"{value!r} is not a string, number or boolean", expected)
    elif op in _ORDER_OPS:
        if not (_is_number(value) or (isinstance(value, str) and parse_time(value))):
            raise _fail(
                where,
                f"{value!r} is neither a number nor an ISO 8601 date",
                f"{expected}, e.g. 1000 or '2024-07-05'",
            )
    elif op in _LIST_OPS:
        if not isinstance(value, list) or not value:
            raise _fail(where, f"{value!r} is not a non-empty list", f"{expected}, e.g. ['a', 'b']")
        if len(value) > MAX_LIST:
            raise _fail(where, f"the list has more than {MAX_LIST} entries", "use fewer")
        for index, entry in enumerate(value):
            if not _is_scalar(entry):
                raise _fail(
                    f"{where}[{index}]", f"{entry!r} is not a string, number or boolean", expected
                )
    elif op in _DAY_OPS and (not _is_number(value) or not 0 <= value <= MAX_DAYS):
        raise _fail(where, f"{value!r} is not a number of days", f"{expected} (at most {MAX_DAYS})")


# -- evaluation -------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | tuple | dict) and len(value) == 0)


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; in a filter a flag is not a count.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    return type(a) is type(b) and a == b


def _order(op: str, trait: Any, value: Any) -> bool:
    left: Any
    right: Any
    if _is_number(value):
        if not _is_number(trait):
            return False
        left, right = trait, value
    else:
        left, right = parse_time(trait), parse_time(value)
        if left is None or right is None:
            return False
    if op == "gt":
        return bool(left > right)
    if op == "gte":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    return bool(left <= right)


def _elements(trait: Any) -> Sequence[Any]:
    return list(trait) if isinstance(trait, list | tuple) else [trait]


def _any_element(trait: Any, test: Callable[[Any], bool]) -> bool:
    return any(test(element) for element in _elements(trait) if not _missing(element))


def _contains(trait: Any, value: Any) -> bool:
    if isinstance(trait, str):
        return isinstance(value, str) and value in trait
    if isinstance(trait, list | tuple):
        return any(_same(element, value) for element in trait)
    return False


def _condition(node: Mapping[str, Any], traits: Mapping[str, Any], now: datetime) -> bool:
    op = node["op"]
    trait = traits.get(node["trait"])
    value: Any = node.get("value")
    if op == "exists":
        return not _missing(trait)
    if op == "not_exists":
        return _missing(trait)
    if op.startswith("not_") or op == "ne":
        positive = {"ne": "eq", "not_in": "in", "not_contains": "contains"}[op]
        return not _condition({**node, "op": positive}, traits, now)
    if _missing(trait):
        return False
    if op == "eq":
        return _any_element(trait, lambda element: _same(element, value))
    if op in _ORDER_OPS:
        return _any_element(trait, lambda element: _order(op, element, value))
    if op == "in":
        return _any_element(trait, lambda element: any(_same(element, v) for v in value))
    if op == "contains":
        return _contains(trait, value)
    days = timedelta(days=value)
    if op == "within_last_days":
        return _any_element(trait, lambda element: _within(parse_time(element), now - days, now))
    # more_than_days_ago / before_days_ago: strictly earlier than N days before now.
    return _any_element(trait, lambda element: _before(parse_time(element), now - days))


def _within(moment: datetime | None, start: datetime, end: datetime) -> bool:
    return moment is not None and start <= moment <= end


def _before(moment: datetime | None, limit: datetime) -> bool:
    return moment is not None and moment < limit


def _evaluate(node: Mapping[str, Any], traits: Mapping[str, Any], now: datetime) -> bool:
    if "all" in node:
        return all(_evaluate(child, traits, now) for child in node["all"])
    if "any" in node:
        return any(_evaluate(child, traits, now) for child in node["any"])
    if "not" in node:
        return not _evaluate(node["not"], traits, now)
    if "some" in node:
        elements = traits.get(node["some"]["trait"])
        inner = node["some"]["filter"]
        if not isinstance(elements, list | tuple):
            return False
        return any(
            _evaluate(inner, element, now) for element in elements if isinstance(element, Mapping)
        )
    return _condition(node, traits, now)


def evaluate(filter: Filter, traits: Mapping[str, Any], *, now: Now) -> bool:
    """Whether a profile with these traits matches the filter at ``now``.

    Validates first (so a stored filter that went bad fails loudly rather than matching
    nobody); ``now`` is an aware datetime or a unix timestamp, never read from the clock,
    so membership can be recomputed for any moment.
    """
    validate_filter(filter)
    if not isinstance(traits, Mapping):
        raise InvalidInput(
            f"traits must be a mapping of trait key to value, got {type(traits).__name__}"
        )
    return _evaluate(filter, traits, _now(now))

"""The filter language: every op, its edge cases, and validation errors that say the fix."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stripesync.errors import InvalidInput
from stripesync.segments import OPS, evaluate, parse_time, validate_filter

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

TRAITS: dict[str, Any] = {
    "customer_id": "cus_RdQm4x8kTzLp2A",
    "email": "ada@lovelace.example",
    "mrr": 4900,
    "arr": 58800,
    "delinquent": False,
    "subscription_statuses": ["canceled", "active"],
    "current_subscription_status": "active",
    "plan_names": ["Starter", "Seats"],
    "created": "2025-02-20T08:30:00Z",
    "last_activity_at": "2025-02-26T12:00:00Z",
    "renewal_date": "2025-03-20T00:00:00Z",
    "phone": None,
    "description": "",
    "metadata": {},
    "subscriptions": [
        {"id": "sub_old", "status": "canceled", "trial_ends_at": None, "mrr": 0},
        {"id": "sub_new", "status": "active", "trial_ends_at": "2025-02-10T00:00:00Z", "mrr": 4900},
    ],
}


def c(trait: str, op: str, *value: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"trait": trait, "op": op}
    if value:
        node["value"] = value[0]
    return node


def match(node: dict[str, Any], traits: dict[str, Any] | None = None) -> bool:
    return evaluate(node, TRAITS if traits is None else traits, now=NOW)


# -- ops --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (c("mrr", "eq", 4900), True),
        (c("mrr", "eq", 4900.0), True),
        (c("mrr", "eq", "4900"), False),  # no coercion between strings and numbers
        (c("delinquent", "eq", False), True),
        (c("delinquent", "eq", 0), False),  # a flag is not a count
        (c("mrr", "ne", 100), True),
        (c("mrr", "gt", 4899), True),
        (c("mrr", "gt", 4900), False),
        (c("mrr", "gte", 4900), True),
        (c("mrr", "lt", 5000.5), True),
        (c("mrr", "lte", 4899), False),
        (c("email", "gt", 3), False),  # a string is not a number
        (c("created", "gt", "2025-02-01"), True),
        (c("created", "lt", "2025-02-20T08:30:01Z"), True),
        (c("created", "lte", "2025-02-20T09:30:00+01:00"), True),  # offsets compare as times
        (c("current_subscription_status", "in", ["active", "past_due"]), True),
        (c("current_subscription_status", "not_in", ["active", "past_due"]), False),
        (c("email", "contains", "@lovelace"), True),
        (c("email", "not_contains", "@lovelace"), False),
        (c("plan_names", "contains", "Seats"), True),
        (c("plan_names", "contains", "Seat"), False),  # list membership, not substring
        (c("email", "exists"), True),
        (c("phone", "exists"), False),
        (c("description", "exists"), False),  # "" is missing
        (c("metadata", "not_exists"), True),  # {} is missing
        (c("nonexistent", "not_exists"), True),
        (c("last_activity_at", "within_last_days", 3), True),
        (c("last_activity_at", "within_last_days", 2.9), False),
        (c("last_activity_at", "within_last_days", 2), False),
        (c("last_activity_at", "more_than_days_ago", 2), True),
        (c("last_activity_at", "before_days_ago", 3), False),
        (c("renewal_date", "within_last_days", 30), False),  # the future is not the past
        (c("renewal_date", "more_than_days_ago", 0), False),
        (c("created", "within_last_days", 30), True),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else str(value),
)
def test_ops(node: dict[str, Any], expected: bool) -> None:
    assert match(node) is expected


def test_list_traits_match_when_any_element_does_and_negations_are_exact() -> None:
    assert match(c("subscription_statuses", "eq", "active"))
    assert match(c("subscription_statuses", "in", ["past_due", "active"]))
    assert not match(c("subscription_statuses", "not_in", ["past_due", "active"]))
    assert not match(c("subscription_statuses", "ne", "canceled"))
    assert match(c("subscription_statuses", "not_contains", "trialing"))


def test_a_missing_trait_fails_positive_tests_and_passes_their_negations() -> None:
    for op, value in [
        ("eq", 1),
        ("gt", 1),
        ("in", [1]),
        ("contains", "x"),
        ("within_last_days", 9),
    ]:
        assert not match(c("nonexistent", op, value)), op
    for op, value in [("ne", 1), ("not_in", [1]), ("not_contains", "x")]:
        assert match(c("nonexistent", op, value)), op


def test_day_boundaries_are_exact() -> None:
    at = {"seen": (NOW - timedelta(days=2)).isoformat()}
    assert evaluate(c("seen", "within_last_days", 2), at, now=NOW)
    assert not evaluate(c("seen", "more_than_days_ago", 2), at, now=NOW)
    earlier = {"seen": (NOW - timedelta(days=2, seconds=1)).isoformat()}
    assert evaluate(c("seen", "more_than_days_ago", 2), earlier, now=NOW)


def test_times_may_be_iso_strings_dates_unix_or_datetimes() -> None:
    for value in (
        "2025-02-27T12:00:00Z",
        "2025-02-27",
        int((NOW - timedelta(days=2)).timestamp()),
        NOW - timedelta(days=2),
        datetime(2025, 2, 27, 12, 0),  # naive: read as UTC
    ):
        assert evaluate(c("t", "within_last_days", 3), {"t": value}, now=NOW), value
    assert evaluate(c("t", "within_last_days", 3), {"t": "2025-02-27"}, now=NOW.timestamp())
    assert not evaluate(c("t", "within_last_days", 3), {"t": "not a date"}, now=NOW)
    assert not evaluate(c("t", "within_last_days", 3), {"t": True}, now=NOW)


def test_parse_time() -> None:
    assert parse_time("2024-07-05T22:10:00Z") == datetime(2024, 7, 5, 22, 10, tzinfo=UTC)
    plus_two = timezone(timedelta(hours=2))
    assert parse_time("2024-07-06T00:10:00+02:00") == datetime(2024, 7, 6, 0, 10, tzinfo=plus_two)
    assert parse_time(1720217400) == datetime(2024, 7, 5, 22, 10, tzinfo=UTC)
    assert parse_time(float("nan")) is None
    assert parse_time("") is None
    assert parse_time(False) is None


def test_combinators() -> None:
    yes, no = c("mrr", "gt", 0), c("mrr", "lt", 0)
    assert match({"all": [yes, yes]})
    assert not match({"all": [yes, no]})
    assert match({"any": [no, yes]})
    assert not match({"any": [no, no]})
    assert match({"all": []})  # nothing to fail
    assert not match({"any": []})  # nothing to pass
    assert match({"not": no})
    assert match({"all": [{"any": [no, {"not": no}]}, yes]})


def test_some_tests_one_element_of_a_list_of_objects() -> None:
    trialing_ended = {
        "some": {
            "trait": "subscriptions",
            "filter": {
                "all": [c("status", "eq", "active"), c("trial_ends_at", "more_than_days_ago", 0)]
            },
        }
    }
    assert match(trialing_ended)
    # Both conditions must hold on the same subscription.
    mixed = {
        "some": {
            "trait": "subscriptions",
            "filter": {"all": [c("status", "eq", "canceled"), c("mrr", "gt", 0)]},
        }
    }
    assert not match(mixed)
    assert not match({"some": {"trait": "plan_names", "filter": c("x", "exists")}})
    assert not match({"some": {"trait": "nonexistent", "filter": c("x", "exists")}})


def test_now_is_required_and_never_read_from_the_clock() -> None:
    with pytest.raises(InvalidInput, match="now is 'soon'"):
        evaluate(c("mrr", "gt", 1), TRAITS, now="soon")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="traits must be a mapping"):
        evaluate(c("mrr", "gt", 1), ["mrr"], now=NOW)  # type: ignore[arg-type]


def test_filters_are_json() -> None:
    node = {"all": [c("mrr", "gte", 1000), {"not": c("email", "contains", "@example.org")}]}
    assert match(json.loads(json.dumps(node))) == match(node)


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (c("mrr", "greater", 1), r"filter\.op: unknown op 'greater'; use one of eq, ne, gt"),
        ({"trait": "mrr", "op": "gt"}, r"filter: gt needs a value; gt takes a number or an ISO"),
        (c("mrr", "gt", "lots"), r"filter\.value: 'lots' is neither a number nor an ISO 8601 date"),
        (c("mrr", "gt", True), r"neither a number"),
        (c("mrr", "eq", [1]), r"is not a string, number or boolean"),
        (
            {"trait": "mrr", "op": "eq", "value": None},
            r"null is not a value to compare; use exists",
        ),
        (c("mrr", "in", "active"), r"'active' is not a non-empty list"),
        (c("mrr", "in", []), r"is not a non-empty list"),
        (c("mrr", "in", ["a", {"b": 1}]), r"filter\.value\[1\]: \{'b': 1\} is not a string"),
        (
            {"trait": "mrr", "op": "exists", "value": True},
            r"exists takes no value; remove the value",
        ),
        (c("seen", "within_last_days", -1), r"-1 is not a number of days"),
        (c("seen", "more_than_days_ago", "2"), r"'2' is not a number of days"),
        (c("seen", "more_than_days_ago", 10**6), r"at most 36600"),
        (c("mrr", "gt", float("inf")), r"neither a number"),
        (c("", "exists"), r"filter\.trait: '' is not a trait name"),
        (c(7, "exists"), r"7 is not a trait name"),  # type: ignore[arg-type]
        ({"trait": "mrr", "op": "gt", "value": 1, "unit": "usd"}, r"unknown keys \['unit'\]"),
        ({"field": "mrr"}, r"not a combinator and not a condition"),
        ([c("mrr", "gt", 1)], r"filter: expected an object, got list"),
        ({"all": c("mrr", "gt", 1)}, r"filter\.all: expected a list of filters, got dict"),
        ({"all": [c("mrr", "gt", 1)], "any": []}, r"exactly one key"),
        ({"all": [{"any": [c("mrr", "gte", "x")]}]}, r"filter\.all\[0\]\.any\[0\]\.value"),
        ({"not": "mrr"}, r"filter\.not: expected an object, got str"),
        ({"some": {"trait": "subscriptions"}}, r"filter\.some: expected an object with exactly"),
        (
            {"some": {"trait": "subscriptions", "filter": c("status", "is", 1)}},
            r"filter\.some\.filter\.op",
        ),
    ],
)
def test_validation_names_the_problem_and_the_fix(node: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_filter(node)
    with pytest.raises(InvalidInput):
        evaluate(node, TRAITS, now=NOW)


def test_size_and_depth_are_bounded() -> None:
    deep: dict[str, Any] = c("mrr", "gt", 0)
    for _ in range(20):
        deep = {"not": deep}
    with pytest.raises(InvalidInput, match="nesting deeper than 16"):
        validate_filter(deep)
    wide = {"any": [c("mrr", "eq", n) for n in range(600)]}
    with pytest.raises(InvalidInput, match="more than 500 nodes"):
        validate_filter(wide)


def test_the_error_is_a_terminal_invalid_input() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_filter(c("mrr", "nope", 1))
    assert caught.value.status == 400
    assert caught.value.code == "invalid_input"


def test_every_op_is_documented() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "segments.md").read_text()
    for op in OPS:
        assert f"`{op}`" in text, op


# -- properties ---------------------------------------------------------------------------------

scalars = st.one_of(st.integers(-(10**6), 10**6), st.text(max_size=8), st.booleans())


@given(trait=st.one_of(st.none(), scalars, st.lists(scalars, max_size=4)), value=scalars)
def test_negations_are_exact(trait: Any, value: Any) -> None:
    traits = {"t": trait}
    for positive, negative in (("eq", "ne"), ("contains", "not_contains")):
        assert evaluate(c("t", positive, value), traits, now=NOW) is not evaluate(
            c("t", negative, value), traits, now=NOW
        )
    assert evaluate(c("t", "in", [value]), traits, now=NOW) is not evaluate(
        c("t", "not_in", [value]), traits, now=NOW
    )
    assert evaluate({"not": c("t", "eq", value)}, traits, now=NOW) is evaluate(
        c("t", "ne", value), traits, now=NOW
    )

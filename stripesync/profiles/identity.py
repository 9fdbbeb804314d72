"""Which profile a Stripe customer belongs to: link ids, and a planner for linking changes.

Identity must survive an email change and never duplicate a person (FIELD-NOTES), so a
customer is linked by an id, never by email:

1. `link_id` finds the id: the configured metadata key on the customer, else on its
   subscriptions, invoices or charges (some teams only tag those), else the Stripe
   customer id.
2. `plan_links` turns freshly resolved link ids into actions against the current mapping
   of customers to profiles: create, attach, re-link, detach, retire. Two customers with
   the same link id (from one Stripe account or two) land on one profile; the plan records
   that as a `MergeRecord`, and `plan_unmerge` reverses it.

A profile is a `ProfileRef`: its kind (``users`` or ``accounts``, a source setting) and its
id, which is the link id: the app's own id when it comes from metadata, so profiles created
through the API and those created from Stripe meet on the same key. Everything here is
pure; the store applies the actions in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from stripesync.errors import InvalidInput
from stripesync.stripe_api.shapes import normalize, object_id

__all__ = [
    "Action",
    "Attach",
    "CreateProfile",
    "CustomerRef",
    "Detach",
    "LinkId",
    "LinkPlan",
    "LinkSource",
    "MergeRecord",
    "ProfileKind",
    "ProfileOrigin",
    "ProfileRef",
    "Relink",
    "Resolution",
    "RetireProfile",
    "Skip",
    "link_id",
    "plan_links",
    "plan_unmerge",
]

LinkSource = Literal[
    "customer.metadata",
    "subscription.metadata",
    "invoice.metadata",
    "charge.metadata",
    "customer.id",
]
ProfileKind = Literal["users", "accounts"]
#: Who made a profile: the app through the API, or stripesync from a Stripe customer.
ProfileOrigin = Literal["api", "sync"]
StripeObject = Mapping[str, Any]


class LinkId(NamedTuple):
    """A link id and where it was found (shown next to a profile, so a wrong link is traceable)."""

    value: str
    source: LinkSource


class CustomerRef(NamedTuple):
    """A Stripe customer in one connected source (Stripe account, test or live)."""

    source: str
    customer_id: str


class ProfileRef(NamedTuple):
    kind: ProfileKind
    id: str


# -- link ids ---------------------------------------------------------------------------


def _value(metadata: Any, key: str) -> str | None:
    if not isinstance(metadata, Mapping):
        return None
    raw = metadata.get(key)
    if not isinstance(raw, str):
        return None
    # Stripe keeps metadata values verbatim; a pasted id often carries a stray space.
    return raw.strip() or None


def _newest_first(objects: Iterable[StripeObject], customer_id: str) -> list[StripeObject]:
    """The customer's own objects, newest first: the latest tag wins when they disagree,
    because a link id is re-tagged by writing it on new objects."""
    own = []
    for obj in objects:
        owner = object_id(obj.get("customer"))
        if obj.get("deleted") is True or (owner is not None and owner != customer_id):
            continue
        own.append(normalize(obj))
    return sorted(
        own,
        key=lambda o: (
            o.get("created") if isinstance(o.get("created"), int) else 0,
            str(o.get("id")),
        ),
        reverse=True,
    )


def link_id(
    customer: StripeObject,
    subscriptions: Iterable[StripeObject],
    invoices: Iterable[StripeObject],
    charges: Iterable[StripeObject],
    *,
    key: str | None,
) -> LinkId:
    """The id linking this customer to a profile, and where it came from.

    ``key`` is the source's metadata key (None: link by Stripe customer id). It is read on
    the customer, then on its subscriptions, then in the subscription metadata an invoice
    carries (``parent.subscription_details.metadata``, a copy taken when it was issued, so
    a subscription no longer synced still counts), then on invoices, then on charges; among
    several objects of one kind the newest wins. Blank values are skipped. Without any, the
    customer id is the link id, as it is for a deleted customer whose metadata Stripe
    dropped.
    """
    customer_id = object_id(customer.get("id"))
    if customer_id is None:
        raise InvalidInput("the customer has no id; pass the Stripe customer object as stored")
    if key is None:
        return LinkId(customer_id, "customer.id")
    if not key:
        raise InvalidInput("the metadata key is empty; name the key holding your own id")
    found = _value(customer.get("metadata"), key)
    if found is not None:
        return LinkId(found, "customer.metadata")
    for sub in _newest_first(subscriptions, customer_id):
        found = _value(sub.get("metadata"), key)
        if found is not None:
            return LinkId(found, "subscription.metadata")
    invoice_list = _newest_first(invoices, customer_id)
    for inv in invoice_list:
        parent = inv.get("parent")
        details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
        found = _value(details.get("metadata") if isinstance(details, Mapping) else None, key)
        if found is not None:
            return LinkId(found, "subscription.metadata")
    for inv in invoice_list:
        found = _value(inv.get("metadata"), key)
        if found is not None:
            return LinkId(found, "invoice.metadata")
    for charge in _newest_first(charges, customer_id):
        found = _value(charge.get("metadata"), key)
        if found is not None:
            return LinkId(found, "charge.metadata")
    return LinkId(customer_id, "customer.id")


# -- the planner ------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """A customer's freshly resolved link id, with its source's profile settings.

    ``link_id`` None means the customer must no longer be linked (it was purged, or its
    source removed): it is detached.
    """

    link_id: str | None
    kind: ProfileKind
    create_missing: bool = True
    link_source: LinkSource | None = None


@dataclass(frozen=True)
class CreateProfile:
    profile: ProfileRef


@dataclass(frozen=True)
class Attach:
    customer: CustomerRef
    profile: ProfileRef
    link_source: str | None


@dataclass(frozen=True)
class Relink:
    """Move a customer between profiles; it is never on both (no duplicates)."""

    customer: CustomerRef
    from_profile: ProfileRef
    to_profile: ProfileRef
    link_source: str | None


@dataclass(frozen=True)
class Detach:
    customer: CustomerRef
    profile: ProfileRef
    reason: str


@dataclass(frozen=True)
class Skip:
    """A customer left unlinked: its profile does not exist and may not be created."""

    customer: CustomerRef
    profile: ProfileRef
    reason: str


@dataclass(frozen=True)
class RetireProfile:
    """A profile stripesync created that no Stripe customer backs any more.

    It only existed for the customers that left it, so keeping it would be the duplicate
    the re-link avoided; its history belongs to ``merged_into`` when set. The store
    decides between deleting and archiving.
    """

    profile: ProfileRef
    merged_into: ProfileRef | None


Action = CreateProfile | Attach | Relink | Detach | Skip | RetireProfile


@dataclass(frozen=True)
class MergeRecord:
    """Customers a plan brought together on one profile: what the merge UI shows and what
    `plan_unmerge` reverses.

    ``customers`` is every customer on the profile afterwards; ``added`` those that joined
    in this plan, each with the profile it was on before (None: it was unlinked).
    """

    profile: ProfileRef
    customers: tuple[CustomerRef, ...]
    added: tuple[tuple[CustomerRef, ProfileRef | None], ...]


@dataclass(frozen=True)
class LinkPlan:
    """The actions to apply, in order, and the state they lead to.

    ``overrides`` pins customers to profiles whatever their link id says (an unmerge
    writes them, so the next sync does not merge again); persist it with ``mapping``.
    """

    actions: tuple[Action, ...]
    mapping: Mapping[CustomerRef, ProfileRef]
    overrides: Mapping[CustomerRef, ProfileRef]
    merges: tuple[MergeRecord, ...] = field(default=())


def _members(mapping: Mapping[CustomerRef, ProfileRef]) -> dict[ProfileRef, set[CustomerRef]]:
    members: dict[ProfileRef, set[CustomerRef]] = {}
    for customer, profile in mapping.items():
        members.setdefault(profile, set()).add(customer)
    return members


def _finish(
    actions: list[Action],
    current: Mapping[CustomerRef, ProfileRef],
    mapping: dict[CustomerRef, ProfileRef],
    overrides: dict[CustomerRef, ProfileRef],
    origins: Mapping[ProfileRef, ProfileOrigin],
    moved: dict[CustomerRef, ProfileRef | None],
) -> LinkPlan:
    before = _members(current)
    after = _members(mapping)
    for profile in sorted(before):
        if after.get(profile) or origins.get(profile, "api") != "sync":
            continue
        destinations = {mapping[c] for c in before[profile] if c in mapping}
        merged_into = next(iter(destinations)) if len(destinations) == 1 else None
        actions.append(RetireProfile(profile, merged_into))
    merges: list[MergeRecord] = []
    gained: dict[ProfileRef, list[CustomerRef]] = {}
    for customer in moved:
        gained.setdefault(mapping[customer], []).append(customer)
    for profile in sorted(gained):
        if len(after[profile]) >= 2:
            merges.append(
                MergeRecord(
                    profile=profile,
                    customers=tuple(sorted(after[profile])),
                    added=tuple((c, moved[c]) for c in sorted(gained[profile])),
                )
            )
    return LinkPlan(tuple(actions), dict(mapping), dict(overrides), tuple(merges))


def _origins(
    current: Mapping[CustomerRef, ProfileRef],
    existing: Mapping[ProfileRef, ProfileOrigin] | Iterable[ProfileRef],
) -> dict[ProfileRef, ProfileOrigin]:
    origins: dict[ProfileRef, ProfileOrigin]
    if isinstance(existing, Mapping):
        origins = dict(existing)
    else:
        origins = {ProfileRef(*profile): "api" for profile in existing}
    for profile in current.values():
        # A profile in use whose origin is unknown is treated as the app's: never retired.
        origins.setdefault(profile, "api")
    return origins


def plan_links(
    current: Mapping[CustomerRef, ProfileRef],
    resolved: Mapping[CustomerRef, Resolution],
    *,
    existing: Mapping[ProfileRef, ProfileOrigin] | Iterable[ProfileRef] = (),
    overrides: Mapping[CustomerRef, ProfileRef] | None = None,
) -> LinkPlan:
    """Plan the linking changes that ``resolved`` link ids call for.

    ``current`` maps linked customers to their profiles; ``resolved`` holds the customers
    whose link id was just (re)computed (the others are left as they are); ``existing`` the
    profiles that exist, with their origin when known (a bare collection means "made by
    the app"). For each resolved customer, in sorted order:

    - its target is its override when pinned, else ``ProfileRef(kind, link_id)``;
    - already there: nothing; target missing and ``create_missing`` on (or pinned):
      `CreateProfile`; missing and off: `Skip`, and a `Detach` from a profile it no
      longer belongs to;
    - then `Attach` (was unlinked) or `Relink` (was elsewhere);
    - ``link_id`` None: `Detach`, and its override is dropped.

    Profiles stripesync created that end up with no customer get a `RetireProfile`. Every
    profile that gained a customer and now holds two or more gets a `MergeRecord`.
    """
    origins = _origins(current, existing)
    pins = dict(overrides or {})
    mapping = dict(current)
    actions: list[Action] = []
    created: set[ProfileRef] = set()
    moved: dict[CustomerRef, ProfileRef | None] = {}
    for customer in sorted(resolved):
        resolution = resolved[customer]
        old = current.get(customer)
        if resolution.link_id is None:
            pins.pop(customer, None)
            if old is not None:
                actions.append(Detach(customer, old, "the customer is no longer linked"))
                del mapping[customer]
            continue
        if resolution.kind not in ("users", "accounts"):
            raise InvalidInput(f"profile kind is {resolution.kind!r}; use 'users' or 'accounts'")
        pinned = customer in pins
        target = pins[customer] if pinned else ProfileRef(resolution.kind, resolution.link_id)
        if target == old:
            continue
        if target not in origins and target not in created:
            if not (resolution.create_missing or pinned):
                reason = (
                    f"no {target.kind} profile {target.id!r} exists and creating missing "
                    "profiles is off for this source"
                )
                actions.append(Skip(customer, target, reason))
                if old is not None:
                    actions.append(Detach(customer, old, f"its link id is now {target.id!r}"))
                    del mapping[customer]
                continue
            actions.append(CreateProfile(target))
            created.add(target)
        link_source = "override" if pinned else resolution.link_source
        if old is None:
            actions.append(Attach(customer, target, link_source))
        else:
            actions.append(Relink(customer, old, target, link_source))
        mapping[customer] = target
        moved[customer] = old
    all_origins: dict[ProfileRef, ProfileOrigin] = {**origins, **{p: "sync" for p in created}}
    return _finish(actions, current, mapping, pins, all_origins, moved)


def plan_unmerge(
    record: MergeRecord,
    current: Mapping[CustomerRef, ProfileRef],
    *,
    existing: Mapping[ProfileRef, ProfileOrigin] | Iterable[ProfileRef] = (),
    overrides: Mapping[CustomerRef, ProfileRef] | None = None,
) -> LinkPlan:
    """Undo a merge: each customer it added goes back to the profile it came from.

    A customer that was unlinked before gets a profile of its own, keyed by its Stripe
    customer id (the link id it would have without metadata), except that when the merge
    created the profile for its customers, the first of them that had no profile keeps it.
    A customer that has moved on since the merge is left alone. Each returned customer is pinned in ``overrides``
    so the next sync does not merge it again; dropping the pin lets the link id decide.
    """
    origins = _origins(current, existing)
    pins = dict(overrides or {})
    mapping = dict(current)
    actions: list[Action] = []
    created: set[ProfileRef] = set()
    moved: dict[CustomerRef, ProfileRef | None] = {}
    leaving = [(c, before) for c, before in record.added if current.get(c) == record.profile]
    staying = {c for c, p in current.items() if p == record.profile} - {c for c, _ in leaving}
    if not staying:
        # Everyone on the profile joined in the merge (it was created for them): the first
        # customer that had no profile before keeps it, rather than emptying it.
        keeper = next((c for c, before in leaving if before is None), None)
        leaving = [(c, before) for c, before in leaving if c != keeper]
    for customer, before in leaving:
        target = (
            before if before is not None else ProfileRef(record.profile.kind, customer.customer_id)
        )
        if target == record.profile:
            # Its own customer id is the merged profile's id: give it a name of its own.
            target = ProfileRef(target.kind, f"{customer.customer_id}@{customer.source}")
        if target not in origins and target not in created:
            actions.append(CreateProfile(target))
            created.add(target)
        actions.append(Relink(customer, record.profile, target, "unmerge"))
        mapping[customer] = target
        pins[customer] = target
        moved[customer] = record.profile
    all_origins: dict[ProfileRef, ProfileOrigin] = {**origins, **{p: "sync" for p in created}}
    plan = _finish(actions, current, mapping, pins, all_origins, moved)
    # Returning customers to their old profiles is not a new merge to report.
    return LinkPlan(plan.actions, plan.mapping, plan.overrides, ())

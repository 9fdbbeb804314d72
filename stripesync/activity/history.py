"""The activity a customer had before stripesync was listening, rebuilt from objects.

Stripe's Events API keeps 30 days; a feed that starts at connect time is empty for every
customer who has been around longer. The objects themselves keep their milestones
(``created``, ``trial_start``/``trial_end``, ``canceled_at``/``ended_at``,
``status_transitions``), so the import can write the feed back to the sync start date.
Entries are marked ``reconstructed`` and carry no event id.

Reconstruction sees each object as it is now, not as it was: attributes describe the
stored object (an old "Subscription created" shows today's plan), and a few facts cannot
be dated at all (an update, a pause, a deletion) so they are not invented. What can and
cannot be rebuilt is listed in docs/activity.md.

Each entry's ``fact_key`` is built exactly as `activity_from_event` builds it for the same
fact, so the persistence layer recognises a reconstructed entry and a live one as one fact
(docs/activity.md, "Dedupe rule").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stripesync.activity.derive import (
    ACTIVITY_NAMES,
    ENDED_STATUSES,
    TRIAL_END_GRACE,
    ActivityEvent,
    Lookup,
    change_kinds,
    charge_attributes,
    customer_attributes,
    ended_trial_outcome,
    fact_key,
    invoice_attributes,
    payment_intent_attributes,
    refund_attributes,
    sorted_activity,
    subscription_attributes,
)
from stripesync.errors import InvalidInput
from stripesync.revenue import RevenueRules, subscription_mrr
from stripesync.stripe_api.shapes import invoice_subscription_id, normalize, object_id

__all__ = ["reconstruct_activity", "trial_outcome"]

StripeObject = Mapping[str, Any]

# Invoices that bill the subscription's plan: the first one after a trial is the
# conversion (or not).
_PLAN_INVOICES = frozenset({"subscription_cycle", "subscription_create", "subscription_update"})


def _ts(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def trial_outcome(
    subscription: StripeObject, invoices: Iterable[StripeObject] = ()
) -> tuple[str, int] | None:
    """How a subscription's trial ended, read from objects: ``(fact, when)`` with fact one
    of ``trial_converted``, ``trial_expired``, ``trial_cancelled``; None while the trial
    runs or when there was none.

    The status at the moment the trial ended is gone, so the evidence is, in order: a
    subscription that ended during its trial or with it (`ended_trial_outcome`); the first
    plan invoice billed at or after ``trial_end`` (paid, or nothing to pay: converted;
    otherwise expired); the current status (still billing: converted; paused, which Stripe
    only does to a trial that ended without a payment method: expired).
    """
    sub = normalize(subscription)
    trial_start, trial_end = _ts(sub.get("trial_start")), _ts(sub.get("trial_end"))
    if trial_start is None or trial_end is None or trial_end <= trial_start:
        return None
    status = sub.get("status")
    if status == "trialing":
        return None
    ended = _ts(sub.get("ended_at")) or _ts(sub.get("canceled_at"))
    if status in ENDED_STATUSES and ended is not None:
        outcome = ended_trial_outcome(sub, was_trialing=None)
        if outcome == "trial_cancelled":
            return outcome, ended
        if outcome == "trial_expired":
            return outcome, trial_end
    sub_id = object_id(sub.get("id"))
    after_trial = [
        invoice
        for invoice in invoices
        if invoice_subscription_id(invoice) == sub_id
        and invoice.get("billing_reason") in _PLAN_INVOICES
        and (_ts(invoice.get("created")) or 0) >= trial_end - TRIAL_END_GRACE
        and invoice.get("status") != "draft"
    ]
    if after_trial:
        first = min(after_trial, key=lambda inv: (_ts(inv.get("created")) or 0, str(inv.get("id"))))
        settled = first.get("status") == "paid" or first.get("amount_due") == 0
        return ("trial_converted" if settled else "trial_expired"), trial_end
    if status == "paused" or status == "incomplete_expired":
        return "trial_expired", trial_end
    return "trial_converted", trial_end


class _Builder:
    def __init__(
        self,
        customer_id: str | None,
        livemode: bool | None,
        rules: RevenueRules,
        customer: StripeObject | None,
        lookup: Lookup | None,
    ) -> None:
        self.customer_id = customer_id
        self.livemode = livemode
        self.rules = rules
        self.customer = customer
        self.lookup = lookup
        self.entries: dict[str, ActivityEvent] = {}

    def add(
        self,
        key: str,
        *,
        at: int | None,
        obj: StripeObject,
        object_type: str,
        attributes: Mapping[str, Any],
        instance: int | None,
        fact: str | None = None,
    ) -> None:
        if at is None:
            return
        oid = object_id(obj.get("id"))
        fkey = fact_key(oid, fact or key, instance)
        livemode = obj.get("livemode")
        self.entries.setdefault(
            fkey,
            ActivityEvent(
                name=ACTIVITY_NAMES[key],
                key=key,
                occurred_at=at,
                customer_id=object_id(obj.get("customer")) or self.customer_id,
                object_type=object_type,
                object_id=oid,
                event_id=None,
                event_type=None,
                reconstructed=True,
                dedupe_key=f"history/{fkey}",
                fact_key=fkey,
                attributes=attributes,
                livemode=livemode if isinstance(livemode, bool) else self.livemode,
            ),
        )

    def sub_attributes(self, sub: StripeObject, at: int) -> dict[str, Any]:
        return subscription_attributes(
            sub, at=at, rules=self.rules, customer=self.customer, lookup=self.lookup
        )

    def mrr(self, sub: StripeObject, at: int) -> int | None:
        try:
            return subscription_mrr(sub, customer=self.customer, at=at, rules=self.rules)
        except InvalidInput:  # unreadable pricing: leave the figure out, keep the entry
            return None


def _as_running(sub: StripeObject) -> dict[str, Any]:
    """The subscription as it billed while it ran: reconstruction has only the final
    object, and an ended one's MRR is 0 by rule 1 whatever it used to bill."""
    running = dict(sub)
    if running.get("status") in ENDED_STATUSES or running.get("status") == "trialing":
        running["status"] = "active"
    return running


def _subscription(b: _Builder, sub: StripeObject, invoices: Sequence[StripeObject]) -> None:
    created = _ts(sub.get("created"))
    status = sub.get("status")
    b.add(
        "subscription_created",
        at=created,
        obj=sub,
        object_type="subscription",
        attributes=b.sub_attributes(sub, created or 0),
        instance=None,
    )
    trial_start, trial_end = _ts(sub.get("trial_start")), _ts(sub.get("trial_end"))
    has_trial = trial_start is not None and trial_end is not None and trial_end > trial_start
    if has_trial and trial_start is not None:
        b.add(
            "new_trial",
            at=trial_start,
            obj=sub,
            object_type="subscription",
            attributes=b.sub_attributes(sub, trial_start),
            instance=trial_start,
        )
    outcome = trial_outcome(sub, invoices) if has_trial else None
    if outcome is not None:
        fact, when = outcome
        extra: dict[str, Any] = {}
        if fact == "trial_converted":
            extra = {"mrr_before": 0, "mrr_after": b.mrr(_as_running(sub), when)}
        b.add(
            fact,
            at=when,
            obj=sub,
            object_type="subscription",
            attributes={**b.sub_attributes(sub, when), **extra},
            instance=trial_start,
        )

    canceled_at = _ts(sub.get("canceled_at"))
    ended_at = _ts(sub.get("ended_at"))
    requested = bool(sub.get("cancel_at_period_end")) or _ts(sub.get("cancel_at")) is not None
    if requested and canceled_at is not None and (ended_at is None or canceled_at < ended_at):
        running = _as_running(sub)
        before = {**running, "cancel_at_period_end": False, "cancel_at": None}
        mrr_before, mrr_after = b.mrr(before, canceled_at), b.mrr(running, canceled_at)
        kinds = change_kinds(before, running, mrr_before=mrr_before, mrr_after=mrr_after)
        b.add(
            "subscription_change",
            at=canceled_at,
            obj=sub,
            object_type="subscription",
            attributes={
                **b.sub_attributes(sub, canceled_at),
                "change_kind": kinds[0] if kinds else "scheduled_cancellation",
                "change_kinds": kinds or ["scheduled_cancellation"],
                "mrr_before": mrr_before,
                "mrr_after": mrr_after,
            },
            instance=canceled_at,
            fact="subscription_change.scheduled_cancellation",
        )

    ended_with_trial = (
        has_trial
        and status in ENDED_STATUSES
        and ended_trial_outcome(sub, was_trialing=None) is not None
    )
    ended_when = ended_at or canceled_at
    if status in ENDED_STATUSES and not ended_with_trial and ended_when is not None:
        reason = _map(sub.get("cancellation_details")).get("reason")
        b.add(
            "subscription_cancelled",
            at=ended_when,
            obj=sub,
            object_type="subscription",
            attributes={
                **b.sub_attributes(sub, ended_when),
                "mrr_before": b.mrr(_as_running(sub), ended_when),
                "mrr_after": 0,
                "cancellation_reason": reason if isinstance(reason, str) else None,
            },
            instance=None,
        )


def _invoice(b: _Builder, invoice: StripeObject) -> None:
    attributes = invoice_attributes(invoice)
    transitions = _map(invoice.get("status_transitions"))
    created = _ts(invoice.get("created"))
    b.add(
        "invoice_created",
        at=created,
        obj=invoice,
        object_type="invoice",
        attributes=attributes,
        instance=None,
    )
    status = invoice.get("status")
    if status == "paid":
        paid_at = _ts(transitions.get("paid_at")) or _ts(transitions.get("finalized_at")) or created
        b.add(
            "invoice_paid",
            at=paid_at,
            obj=invoice,
            object_type="invoice",
            attributes=attributes,
            instance=None,
        )
    if status == "void":
        voided_at = _ts(transitions.get("voided_at")) or created
        b.add(
            "invoice_voided",
            at=voided_at,
            obj=invoice,
            object_type="invoice",
            attributes=attributes,
            instance=None,
        )
    uncollectible_at = _ts(transitions.get("marked_uncollectible_at"))
    if uncollectible_at is None and status == "uncollectible":
        uncollectible_at = created
    b.add(
        "invoice_marked_uncollectible",
        at=uncollectible_at,
        obj=invoice,
        object_type="invoice",
        attributes=attributes,
        instance=None,
    )


def _charge(b: _Builder, charge: StripeObject) -> None:
    key = {"succeeded": "charge_succeeded", "failed": "charge_failed"}.get(
        str(charge.get("status"))
    )
    if key is not None:
        b.add(
            key,
            at=_ts(charge.get("created")),
            obj=charge,
            object_type="charge",
            attributes=charge_attributes(charge),
            instance=None,
        )


def _refund(b: _Builder, refund: StripeObject, customer_id: str | None) -> None:
    attributes = refund_attributes(refund)
    created = _ts(refund.get("created"))
    obj: StripeObject = refund
    if object_id(refund.get("customer")) is None and customer_id is not None:
        obj = {**refund, "customer": customer_id}
    # A live refund.created is "Refund issued" whatever happens next; a failure that
    # follows is a fact of its own, undatable here, shown at the refund's creation.
    b.add(
        "refund_issued",
        at=created,
        obj=obj,
        object_type="refund",
        attributes=attributes,
        instance=None,
    )
    if refund.get("status") in ("failed", "canceled"):
        b.add(
            "refund_failed",
            at=created,
            obj=obj,
            object_type="refund",
            attributes=attributes,
            instance=None,
        )


def _payment_intent(
    b: _Builder, intent: StripeObject, charges_by_intent: Mapping[str, StripeObject]
) -> None:
    attributes = payment_intent_attributes(intent)
    created = _ts(intent.get("created"))
    b.add(
        "payment_intent_created",
        at=created,
        obj=intent,
        object_type="payment_intent",
        attributes=attributes,
        instance=None,
    )
    if intent.get("status") == "succeeded":
        latest = intent.get("latest_charge")
        charge = latest if isinstance(latest, Mapping) else None
        if charge is None:
            charge = charges_by_intent.get(object_id(intent.get("id")) or "")
        at = _ts(charge.get("created")) if charge is not None else None
        b.add(
            "payment_intent_succeeded",
            at=at or created,
            obj=intent,
            object_type="payment_intent",
            attributes=attributes,
            instance=None,
        )


def reconstruct_activity(
    customer: StripeObject,
    subscriptions: Iterable[StripeObject],
    invoices: Iterable[StripeObject],
    charges: Iterable[StripeObject],
    refunds: Iterable[StripeObject],
    payment_intents: Iterable[StripeObject],
    *,
    since: int | None,
    rules: RevenueRules | None = None,
    lookup: Lookup | None = None,
) -> list[ActivityEvent]:
    """The customer's past activity, in feed order, every entry ``reconstructed``.

    Objects may come in any API version's shape and in any order; the same object given
    twice yields its entries once. Refunds embedded in a charge's ``refunds`` list count
    as given. ``since`` (unix time, inclusive) drops what happened before the sync start
    date; None keeps everything. ``rules`` are the revenue rules for the ``mrr``
    attributes, ``lookup`` finds stored objects by id (product names).
    """
    cust = normalize(customer)
    customer_id = object_id(cust.get("id"))
    livemode = cust.get("livemode")
    builder = _Builder(
        customer_id,
        livemode if isinstance(livemode, bool) else None,
        rules or RevenueRules(),
        cust,
        lookup,
    )
    invoice_list = [normalize(inv) for inv in invoices]
    charge_list = [normalize(charge) for charge in charges]

    if not cust.get("deleted"):
        builder.add(
            "customer_created",
            at=_ts(cust.get("created")),
            obj=cust,
            object_type="customer",
            attributes=customer_attributes(cust),
            instance=None,
        )
    for sub in subscriptions:
        _subscription(builder, normalize(sub), invoice_list)
    for invoice in invoice_list:
        _invoice(builder, invoice)
    for charge in charge_list:
        _charge(builder, charge)

    seen_refunds: dict[str, StripeObject] = {}
    charge_customer: dict[str, str | None] = {}
    for charge in charge_list:
        cid = object_id(charge.get("id"))
        if cid is not None:
            charge_customer[cid] = object_id(charge.get("customer"))
        embedded = _map(charge.get("refunds")).get("data")
        for refund in embedded if isinstance(embedded, list) else []:
            if isinstance(refund, Mapping) and object_id(refund) is not None:
                seen_refunds.setdefault(str(object_id(refund)), normalize(refund))
    for refund in refunds:
        rid = object_id(refund)
        if rid is not None:
            seen_refunds[rid] = normalize(refund)
    for refund in seen_refunds.values():
        owner = charge_customer.get(object_id(refund.get("charge")) or "") or customer_id
        _refund(builder, refund, owner)

    charges_by_intent = {
        pid: charge
        for charge in charge_list
        if charge.get("status") == "succeeded"
        and (pid := object_id(charge.get("payment_intent"))) is not None
    }
    for intent in payment_intents:
        _payment_intent(builder, normalize(intent), charges_by_intent)

    return sorted_activity(
        entry for entry in builder.entries.values() if since is None or entry.occurred_at >= since
    )

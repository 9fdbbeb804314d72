"""Live activity: with the clock running, the generated business keeps living.

``enable_live_activity(sim, seed=S)`` registers a hook in ``clock.ACTIVITY_HOOKS``. After
each advance of the clock it makes what a SaaS business sees in that stretch of time, at
daily rates: new customers signing up (some with trials, some with coupons), upgrades,
cancellations and declined payments (a card that starts failing, charged at once by an
upgrade, fixed a couple of days later). Everything goes through in-process API calls, so
it arrives as events and webhooks exactly like the generated window did. New customers
also live out their planned futures (churn, seat changes, refunds...) as the clock
reaches them.

``stripesync sim serve --speed X`` (X > 0) and ``stripesync demo`` turn it on.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

from stripesync.sim import clock
from stripesync.sim.core import Simulator
from stripesync.sim.generator import (
    DAY,
    FAILING_CARD,
    GOOD_CARDS,
    Action,
    ApiActions,
    Catalogue,
    Handle,
    Planner,
    _account,
    create_catalogue,
    load_catalogue,
    plan_change,
)

#: Per new signup, how many of each other kind of activity happen (a day's mix).
MIX = {"upgrade": 0.35, "cancel": 0.25, "failed_payment": 0.15}
#: A declined card is fixed (and the invoice paid) this long after it failed.
FIX_AFTER = 2 * DAY


class LiveActivity:
    """The hook: ``activity(sim, start, end)`` acts out ``[start, end)`` at ``end``."""

    def __init__(
        self,
        sim: Simulator,
        *,
        seed: int,
        rate_per_day: float | None = None,
        acct: str | None = None,
    ) -> None:
        key, ctx = _account(sim, acct)
        self.sim = sim
        self.acct = ctx.acct
        catalogue = load_catalogue(sim, ctx.acct)
        if catalogue is None:
            catalogue = create_catalogue(sim, key, ctx.acct)
        self.catalogue: Catalogue = catalogue
        self.api = ApiActions(sim, key, ctx.acct, catalogue)
        self.rng = random.Random(seed * 31 + 7)
        customers = sim.db.count(ctx.acct, "customer")
        self.rate = rate_per_day if rate_per_day is not None else max(24.0, customers / 100)
        self.seed = seed
        self.next_index = 10_000_000 + customers
        self.handles: dict[int, Handle] = {}
        self.planned: list[Action] = []
        self.fixes: list[tuple[int, str, str]] = []  # (due, customer, invoice)
        self.carry: dict[str, float] = {}
        self.actions = 0

    def __call__(self, sim: Simulator, start: int, end: int) -> None:
        if sim is not self.sim or end <= start:
            return
        days = (end - start) / DAY
        for _ in range(self._count("signup", self.rate * days)):
            self._signup(end)
        for kind, share in MIX.items():
            for _ in range(self._count(kind, self.rate * share * days)):
                self._random_change(kind)
        self._due(end)

    def _count(self, kind: str, expected: float) -> int:
        """How many happen in this stretch: the expectation, its fraction carried over."""
        total = self.carry.get(kind, 0.0) + expected
        whole = int(total)
        self.carry[kind] = total - whole
        return whole

    # -- new customers and their planned futures --

    def _signup(self, now: int) -> None:
        planner = Planner(self.seed, self.catalogue, start=now - 365 * DAY, end=now + 365 * DAY)
        index = self.next_index
        self.next_index += 1
        plan = planner.plan(index, now)
        handle = Handle(plan)
        self.handles[index] = handle
        for action in plan.actions:
            if action.kind == "signup":
                self.api.run(handle, action)
                self.actions += 1
            else:
                heapq.heappush(self.planned, action)

    def _due(self, now: int) -> None:
        while self.planned and self.planned[0].at <= now:
            action = heapq.heappop(self.planned)
            if self.api.run(self.handles[action.customer], action):
                self.actions += 1
        while self.fixes and self.fixes[0][0] <= now:
            _, customer, invoice_id = heapq.heappop(self.fixes)
            self._fix(customer, invoice_id)

    # -- changes to customers already there --

    def _pick_subscription(self) -> dict[str, Any] | None:
        """A random active subscription (an index seek at a random creation time)."""
        db = self.sim.db
        bounds = db.execute(
            "SELECT min(created), max(created) FROM objects WHERE acct=? AND object='subscription'",
            (self.acct,),
        )
        low, high = bounds[0]
        if low is None:
            return None
        for _ in range(5):
            at = self.rng.randint(int(low), int(high))
            rows = db.execute(
                "SELECT id FROM objects WHERE acct=? AND object='subscription' AND deleted=0"
                " AND created >= ? AND status='active' ORDER BY created, seq LIMIT 1",
                (self.acct, at),
            )
            if rows:
                return db.get(self.acct, str(rows[0][0]))
        return None

    def _random_change(self, kind: str) -> None:
        sub = self._pick_subscription()
        if sub is None or self.sim.db.is_deleted(self.acct, sub["customer"]):
            return
        path = f"/v1/subscriptions/{sub['id']}"
        if kind == "cancel":
            if sub.get("cancel_at"):
                return
            if self.rng.random() < 0.6:
                self.api.call("POST", path, {"cancel_at_period_end": "true"})
            else:
                self.api.call("DELETE", path)
            self.actions += 1
            return
        change = plan_change(
            self.catalogue, sub, "quantity" if self._seats(sub) else "upgrade", {"factor": 1.5}
        )
        if change is None:
            return
        price, quantity = change
        entry: dict[str, Any] = {"id": sub["items"]["data"][0]["id"]}
        if price is not None:
            entry["price"] = price["id"]
        if quantity is not None:
            entry["quantity"] = str(quantity)
        params: dict[str, Any] = {"items": [entry]}
        if kind == "failed_payment":
            # the card on file starts declining; the upgrade is charged at once and fails
            self.api.attach_card(sub["customer"], FAILING_CARD)
            params["proration_behavior"] = "always_invoice"
        self.api.call("POST", path, params)
        self.actions += 1
        if kind == "failed_payment":
            updated = self.sim.db.get(self.acct, sub["id"]) or {}
            invoice = self.sim.db.get(self.acct, str(updated.get("latest_invoice")))
            if invoice is not None and invoice["status"] == "open":
                due = self.sim.now() + FIX_AFTER + self.rng.randint(0, DAY)
                heapq.heappush(self.fixes, (due, sub["customer"], invoice["id"]))

    def _fix(self, customer: str, invoice_id: str) -> None:
        """The customer updates the card and pays the declined invoice."""
        if self.sim.db.is_deleted(self.acct, customer):
            return
        self.api.attach_card(customer, self.rng.choice(GOOD_CARDS))
        invoice = self.sim.db.get(self.acct, invoice_id)
        if invoice is not None and invoice["status"] == "open":
            self.api.call("POST", f"/v1/invoices/{invoice_id}/pay", allow=(200, 402))
        self.actions += 1

    def _seats(self, sub: dict[str, Any]) -> bool:
        return sub["items"]["data"][0].get("quantity") not in (None, 1)


def enable_live_activity(
    sim: Simulator,
    *,
    seed: int,
    rate_per_day: float | None = None,
    acct: str | None = None,
) -> LiveActivity:
    """Register live activity for this simulator (once; returns the hook)."""
    for hook in clock.ACTIVITY_HOOKS:
        if isinstance(hook, LiveActivity) and hook.sim is sim:
            return hook
    activity = LiveActivity(sim, seed=seed, rate_per_day=rate_per_day, acct=acct)
    clock.ACTIVITY_HOOKS.append(activity)
    return activity


def disable_live_activity(sim: Simulator) -> None:
    keep: list[Callable[[Simulator, int, int], None]] = [
        hook
        for hook in clock.ACTIVITY_HOOKS
        if not (isinstance(hook, LiveActivity) and hook.sim is sim)
    ]
    clock.ACTIVITY_HOOKS[:] = keep

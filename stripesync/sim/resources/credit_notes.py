"""Credit notes: adjust a finalized invoice, before or after it was paid.

Stripe's rules, as documented for the pinned version: a credit note first reduces the
invoice's ``amount_remaining`` (and ``amount_due``), never below zero: that part is its
``pre_payment_amount``. The rest is its ``post_payment_amount``, which must be allocated
exactly by ``refund_amount`` (a Refund on the invoice's charge), linked ``refunds``,
``credit_amount`` (the customer's balance) and ``out_of_band_amount``. An open invoice
brought to zero is paid. ``type`` is ``pre_payment``, ``post_payment`` or ``mixed``.
Only a credit note whose invoice is still open can be voided; voiding gives the invoice
its amount back.

Numbers are the invoice's number plus ``-CN-01``, ``-CN-02``, ... Lines are stored in
``lines.data`` (rendered ten at a time, like invoice lines) and paged by
``GET /v1/credit_notes/{id}/lines``. A credit note with only ``amount`` gets one
``custom_line_item`` line for it.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from types import ModuleType
from typing import Any

from stripesync.sim import forms
from stripesync.sim.core import Ctx, Simulator, route
from stripesync.sim.db import Page
from stripesync.sim.errors import invalid, missing, required
from stripesync.sim.resources import customers
from stripesync.sim.resources.common import check_params, emit_updated
from stripesync.sim.resources.payments import create_refund, load_refund, money

REASONS = ("duplicate", "fraudulent", "order_change", "product_unsatisfactory")
CREATE_PARAMS = {
    "amount",
    "credit_amount",
    "effective_at",
    "email_type",
    "invoice",
    "lines",
    "memo",
    "metadata",
    "out_of_band_amount",
    "reason",
    "refund_amount",
    "refunds",
    "shipping_cost",
}
LINE_PARAMS = {
    "amount",
    "description",
    "invoice_line_item",
    "metadata",
    "quantity",
    "tax_amounts",
    "tax_rates",
    "type",
    "unit_amount",
    "unit_amount_decimal",
}


def _invoices() -> ModuleType:
    return importlib.import_module("stripesync.sim.resources.invoices")


def _load_invoice(sim: Simulator, ctx: Ctx, invoice_id: str) -> dict[str, Any]:
    invoice = sim.db.get(ctx.acct, invoice_id)
    if invoice is None or invoice.get("object") != "invoice":
        raise missing(invoice_id, param="invoice", kind="invoice")
    return invoice


def load(sim: Simulator, ctx: Ctx, credit_note_id: str, param: str = "id") -> dict[str, Any]:
    return sim.get(ctx, credit_note_id, kind="credit note", param=param, object_type="credit_note")


def credit_notes_of(sim: Simulator, ctx: Ctx, invoice_id: str) -> list[dict[str, Any]]:
    """Every credit note of an invoice, void ones included, oldest first."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = sim.db.list(
            ctx.acct, "credit_note", limit=100, starting_after=cursor, links={"invoice": invoice_id}
        )
        found.extend(page.data)
        if not page.has_more:
            break
        cursor = page.data[-1]["id"]
    found.reverse()
    return found


def _int(value: Any, param: str, *, minimum: int = 0) -> int:
    result = forms.as_int({param: value}, param)
    if result is None:
        raise required(param)
    if result < minimum:
        raise invalid(f"Invalid {param}: must be at least {minimum}", param=param)
    return result


def _unit_decimal(line: Mapping[str, Any]) -> Decimal:
    pricing = line.get("pricing") or {}
    raw = pricing.get("unit_amount_decimal") if isinstance(pricing, Mapping) else None
    if raw not in (None, ""):
        try:
            return Decimal(str(raw))
        except InvalidOperation:
            pass
    quantity = int(line.get("quantity") or 1)
    return Decimal(int(line["amount"])) / max(quantity, 1)


def _round(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding="ROUND_HALF_UP"))


def _line_discounts(
    invoice_line: Mapping[str, Any], amount: int
) -> tuple[list[dict[str, Any]], int]:
    """The share of an invoice line's discounts that crediting ``amount`` of it returns."""
    line_amount = int(invoice_line.get("amount") or 0)
    shares: list[dict[str, Any]] = []
    for entry in invoice_line.get("discount_amounts") or []:
        part = _round(Decimal(int(entry["amount"])) * amount / line_amount) if line_amount else 0
        shares.append({"amount": part, "discount": entry.get("discount")})
    return shares, sum(s["amount"] for s in shares)


def _new_line(
    sim: Simulator,
    ctx: Ctx,
    *,
    kind: str,
    amount: int,
    description: str | None,
    quantity: int | None,
    unit_amount: int | None,
    unit_amount_decimal: str | None,
    invoice_line_item: str | None = None,
    discount_amounts: list[dict[str, Any]] | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    discounts = discount_amounts or []
    return {
        "id": sim.new_id("cnli"),
        "object": "credit_note_line_item",
        "amount": amount,
        "description": description,
        "discount_amount": sum(d["amount"] for d in discounts),
        "discount_amounts": discounts,
        "invoice_line_item": invoice_line_item,
        "livemode": ctx.livemode,
        "metadata": metadata or {},
        "pretax_credit_amounts": [
            {
                "amount": d["amount"],
                "credit_balance_transaction": None,
                "discount": d["discount"],
                "type": "discount",
            }
            for d in discounts
        ],
        "quantity": quantity,
        "tax_rates": [],
        "taxes": [],
        "type": kind,
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount_decimal,
    }


def _credited_by_line(sim: Simulator, ctx: Ctx, invoice_id: str) -> dict[str, int]:
    credited: dict[str, int] = {}
    for note in credit_notes_of(sim, ctx, invoice_id):
        if note.get("status") == "void":
            continue
        for line in note["lines"]["data"]:
            ref = line.get("invoice_line_item")
            if ref:
                credited[ref] = credited.get(ref, 0) + int(line["amount"])
    return credited


def _build_lines(
    sim: Simulator, ctx: Ctx, invoice: dict[str, Any], raw_lines: list[Any]
) -> list[dict[str, Any]]:
    by_id = {line["id"]: line for line in invoice["lines"]["data"]}
    credited = _credited_by_line(sim, ctx, invoice["id"])
    built: list[dict[str, Any]] = []
    for i, raw in enumerate(raw_lines):
        prefix = f"lines[{i}]"
        if not isinstance(raw, dict):
            raise invalid(f"Invalid hash: {prefix}", param=prefix)
        for key in raw:
            if key not in LINE_PARAMS:
                raise invalid(
                    f"Received unknown parameter: {prefix}[{key}]", param=f"{prefix}[{key}]"
                )
        kind = raw.get("type")
        if not kind:
            raise required(f"{prefix}[type]")
        metadata = forms.as_metadata(raw, name="metadata") if "metadata" in raw else {}
        if raw.get("tax_rates") or raw.get("tax_amounts"):
            raise invalid(
                "Tax rates on credit note lines are not simulated.", param=f"{prefix}[tax_rates]"
            )
        if kind == "invoice_line_item":
            ref = raw.get("invoice_line_item")
            if not ref:
                raise required(f"{prefix}[invoice_line_item]")
            invoice_line = by_id.get(str(ref))
            if invoice_line is None:
                raise invalid(
                    f"Invoice line item {ref} does not belong to invoice {invoice['id']}.",
                    param=f"{prefix}[invoice_line_item]",
                )
            has_amount = raw.get("amount") not in (None, "")
            has_quantity = raw.get("quantity") not in (None, "")
            if has_amount == has_quantity:
                raise invalid(
                    "You must pass exactly one of amount or quantity for a credit note line of "
                    "type invoice_line_item.",
                    param=f"{prefix}[amount]",
                )
            quantity: int | None
            if has_quantity:
                quantity = _int(raw["quantity"], f"{prefix}[quantity]", minimum=1)
                if quantity > int(invoice_line.get("quantity") or 0):
                    raise invalid(
                        f"The quantity to credit ({quantity}) exceeds the quantity of invoice "
                        f"line item {ref} ({invoice_line.get('quantity')}).",
                        param=f"{prefix}[quantity]",
                    )
                unit = _unit_decimal(invoice_line)
                amount = _round(unit * quantity)
                unit_amount: int | None = _round(unit)
                unit_decimal: str | None = format(unit.normalize(), "f")
            else:
                amount = _int(raw["amount"], f"{prefix}[amount]", minimum=1)
                quantity, unit_amount, unit_decimal = 1, None, None
            left = int(invoice_line["amount"]) - credited.get(str(ref), 0)
            if amount > left:
                raise invalid(
                    f"The amount to credit for invoice line item {ref} "
                    f"({money(amount, invoice['currency'])}) exceeds what remains creditable "
                    f"on it ({money(max(left, 0), invoice['currency'])}).",
                    param=f"{prefix}[amount]",
                )
            credited[str(ref)] = credited.get(str(ref), 0) + amount
            shares, _ = _line_discounts(invoice_line, amount)
            built.append(
                _new_line(
                    sim,
                    ctx,
                    kind="invoice_line_item",
                    amount=amount,
                    description=invoice_line.get("description"),
                    quantity=quantity,
                    unit_amount=unit_amount,
                    unit_amount_decimal=unit_decimal,
                    invoice_line_item=str(ref),
                    discount_amounts=shares,
                    metadata=metadata,
                )
            )
        elif kind == "custom_line_item":
            description = raw.get("description")
            if not description:
                raise required(f"{prefix}[description]")
            quantity = _int(raw.get("quantity", "1"), f"{prefix}[quantity]", minimum=1)
            if raw.get("unit_amount") not in (None, ""):
                unit = Decimal(_int(raw["unit_amount"], f"{prefix}[unit_amount]"))
            elif raw.get("unit_amount_decimal") not in (None, ""):
                try:
                    unit = Decimal(str(raw["unit_amount_decimal"]))
                except InvalidOperation:
                    raise invalid(
                        f"Invalid decimal: {raw['unit_amount_decimal']}",
                        param=f"{prefix}[unit_amount_decimal]",
                    ) from None
            else:
                raise required(f"{prefix}[unit_amount]")
            built.append(
                _new_line(
                    sim,
                    ctx,
                    kind="custom_line_item",
                    amount=_round(unit * quantity),
                    description=str(description),
                    quantity=quantity,
                    unit_amount=_round(unit),
                    unit_amount_decimal=format(unit.normalize(), "f"),
                    metadata=metadata,
                )
            )
        else:
            raise invalid(
                f"Invalid {prefix}[type]: must be one of custom_line_item, invoice_line_item",
                param=f"{prefix}[type]",
            )
    return built


def _charge_of(sim: Simulator, ctx: Ctx, invoice: Mapping[str, Any]) -> dict[str, Any] | None:
    """The charge that paid the invoice (its last succeeded payment)."""
    for payment in reversed(invoice.get("_payments") or []):
        if payment.get("status") == "succeeded" and payment.get("charge"):
            charge = sim.db.get(ctx.acct, str(payment["charge"]))
            if charge is not None:
                return charge
    return None


def _draft(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The credit note ``params`` describe (nothing saved) and what it does to the invoice.

    Returns (credit_note, plan) where plan holds the allocation the caller applies.
    """
    check_params(params, CREATE_PARAMS)
    invoice_id = params.get("invoice")
    if not invoice_id:
        raise required("invoice")
    invoice = _load_invoice(sim, ctx, str(invoice_id))
    if invoice["status"] == "draft":
        raise invalid(
            "You can't create a credit note for a draft invoice. Finalize the invoice first.",
            param="invoice",
        )
    if invoice["status"] == "void":
        raise invalid("You can't create a credit note for a void invoice.", param="invoice")
    if params.get("shipping_cost"):
        raise invalid("This invoice has no shipping cost to credit.", param="shipping_cost")
    currency = invoice["currency"]
    raw_lines = forms.as_list(params, "lines")
    amount_param = forms.as_int(params, "amount")
    if not raw_lines and amount_param is None:
        raise invalid(
            "One of `amount`, `lines`, or `shipping_cost` must be provided.", param="amount"
        )
    if raw_lines:
        lines = _build_lines(sim, ctx, invoice, raw_lines)
    else:
        assert amount_param is not None
        if amount_param <= 0:
            raise invalid("Invalid positive integer", param="amount")
        lines = [
            _new_line(
                sim,
                ctx,
                kind="custom_line_item",
                amount=amount_param,
                description=None,
                quantity=1,
                unit_amount=amount_param,
                unit_amount_decimal=str(amount_param),
            )
        ]
    subtotal = sum(int(line["amount"]) for line in lines)
    discounts: dict[str, int] = {}
    for line in lines:
        for share in line["discount_amounts"]:
            key = str(share["discount"])
            discounts[key] = discounts.get(key, 0) + int(share["amount"])
    discount_total = sum(discounts.values())
    total = subtotal - discount_total
    if amount_param is not None and raw_lines and amount_param != total:
        raise invalid(
            f"The amount ({money(amount_param, currency)}) must equal the total of the credit "
            f"note lines ({money(total, currency)}).",
            param="amount",
        )
    notes = [n for n in credit_notes_of(sim, ctx, invoice["id"]) if n.get("status") != "void"]
    creditable = int(invoice["total"]) - sum(int(n["amount"]) for n in notes)
    if total > creditable:
        raise invalid(
            f"The credit note amount ({money(total, currency)}) exceeds the amount that remains "
            f"creditable on invoice {invoice['id']} ({money(max(creditable, 0), currency)}).",
            param="amount",
        )
    remaining = int(invoice.get("amount_remaining") or 0)
    pre = min(total, remaining) if invoice["status"] in ("open", "uncollectible") else 0
    post = total - pre
    refund_amount = _int(params.get("refund_amount", "0") or "0", "refund_amount")
    credit_amount = _int(params.get("credit_amount", "0") or "0", "credit_amount")
    out_of_band = (
        _int(params["out_of_band_amount"], "out_of_band_amount")
        if params.get("out_of_band_amount") not in (None, "")
        else None
    )
    linked: list[tuple[dict[str, Any], int]] = []
    for i, entry in enumerate(forms.as_list(params, "refunds")):
        if not isinstance(entry, dict) or not entry.get("refund"):
            raise required(f"refunds[{i}][refund]")
        refund = load_refund(sim, ctx, str(entry["refund"]), param=f"refunds[{i}][refund]")
        charge = _charge_of(sim, ctx, invoice)
        if charge is None or refund.get("charge") != charge["id"]:
            raise invalid(
                f"Refund {refund['id']} is not a refund of the payment of invoice {invoice['id']}.",
                param=f"refunds[{i}][refund]",
            )
        share = (
            _int(entry["amount_refunded"], f"refunds[{i}][amount_refunded]", minimum=1)
            if entry.get("amount_refunded") not in (None, "")
            else int(refund["amount"])
        )
        linked.append((refund, share))
    allocated = refund_amount + credit_amount + (out_of_band or 0) + sum(s for _, s in linked)
    if allocated != post:
        raise invalid(
            "The sum of credit_amount, refund_amount, refunds and out_of_band_amount "
            f"({money(allocated, currency)}) must equal the credit note's post_payment_amount "
            f"({money(post, currency)}): the part of the credit note that the invoice's "
            f"amount_remaining ({money(remaining, currency)}) does not absorb.",
            param="refund_amount" if post else "credit_amount",
        )
    charge = _charge_of(sim, ctx, invoice) if refund_amount else None
    if refund_amount and charge is None:
        raise invalid(
            f"Invoice {invoice['id']} has no payment to refund; use credit_amount or "
            "out_of_band_amount instead.",
            param="refund_amount",
        )
    reason = forms.as_enum(params, "reason", REASONS)
    now = sim.now()
    sequence = len(credit_notes_of(sim, ctx, invoice["id"])) + 1
    number = f"{invoice.get('number') or invoice['id']}-CN-{sequence:02d}"
    note_id = sim.new_id("cn")
    mode = "live" if ctx.livemode else "test"
    note: dict[str, Any] = {
        "id": note_id,
        "object": "credit_note",
        "amount": total,
        "amount_shipping": 0,
        "created": now,
        "currency": currency,
        "customer": invoice["customer"],
        "customer_account": None,
        "customer_balance_transaction": None,
        "discount_amount": discount_total,
        "discount_amounts": [{"amount": a, "discount": d} for d, a in discounts.items()],
        "effective_at": forms.as_int(params, "effective_at") or now,
        "invoice": invoice["id"],
        "lines": {
            "object": "list",
            "data": lines,
            "has_more": False,
            "url": f"/v1/credit_notes/{note_id}/lines",
        },
        "livemode": ctx.livemode,
        "memo": forms.as_str(params, "memo") or None,
        "metadata": forms.as_metadata(params),
        "number": number,
        "out_of_band_amount": out_of_band,
        "pdf": f"https://pay.stripe.com/credit_notes/{ctx.account}/{mode}_"
        f"{sim.random_chars(64)}/pdf?s=ap",
        "post_payment_amount": post,
        "pre_payment_amount": pre,
        "pretax_credit_amounts": [
            {
                "amount": a,
                "credit_balance_transaction": None,
                "discount": d,
                "type": "discount",
            }
            for d, a in discounts.items()
        ],
        "reason": reason,
        "refunds": [
            {
                "amount_refunded": share,
                "payment_record_refund": None,
                "refund": refund["id"],
                "type": "refund",
            }
            for refund, share in linked
        ],
        "shipping_cost": None,
        "status": "issued",
        "subtotal": subtotal,
        "subtotal_excluding_tax": subtotal,
        "total": total,
        "total_excluding_tax": total,
        "total_taxes": [],
        "type": "mixed" if pre and post else ("pre_payment" if pre or not post else "post_payment"),
        "voided_at": None,
    }
    plan = {
        "invoice": invoice,
        "charge": charge,
        "refund_amount": refund_amount,
        "credit_amount": credit_amount,
    }
    return note, plan


def _balance_transaction(
    sim: Simulator, ctx: Ctx, customer: dict[str, Any], amount: int, note: Mapping[str, Any]
) -> dict[str, Any]:
    """Move the customer's balance (negative: credit) and record it as Stripe does."""
    old = copy.deepcopy(customer)
    customer["balance"] = int(customer.get("balance") or 0) + amount
    txn = {
        "id": sim.new_id("cbtxn"),
        "object": "customer_balance_transaction",
        "amount": amount,
        "checkout_session": None,
        "created": sim.now(),
        "credit_note": note["id"],
        "currency": note["currency"],
        "customer": customer["id"],
        "customer_account": None,
        "description": None,
        "ending_balance": customer["balance"],
        "invoice": None,
        "livemode": ctx.livemode,
        "metadata": {},
        "type": "credit_note",
    }
    sim.save(ctx, txn)
    customers.save_customer(sim, ctx, customer)
    emit_updated(sim, ctx, "customer.updated", old, customer)
    return txn


def _invoice_payment_intent(
    sim: Simulator, ctx: Ctx, invoice: Mapping[str, Any]
) -> dict[str, Any] | None:
    payments = invoice.get("_payments") or []
    if not payments or not payments[-1].get("payment_intent"):
        return None
    pi = sim.db.get(ctx.acct, str(payments[-1]["payment_intent"]))
    return pi if pi is not None and pi.get("status") == "requires_payment_method" else None


def _save_note(sim: Simulator, ctx: Ctx, note: dict[str, Any]) -> None:
    sim.save(ctx, note, links={"invoice": note["invoice"]})


def _adjust_invoice(sim: Simulator, ctx: Ctx, invoice: dict[str, Any], pre: int, post: int) -> None:
    """Apply (or, negative, give back) a credit note's amounts to its invoice."""
    old = copy.deepcopy(invoice)
    invoice["amount_due"] = int(invoice["amount_due"]) - pre
    invoice["amount_remaining"] = int(invoice["amount_remaining"]) - pre
    invoice["pre_payment_credit_notes_amount"] = (
        int(invoice["pre_payment_credit_notes_amount"]) + pre
    )
    invoice["post_payment_credit_notes_amount"] = (
        int(invoice["post_payment_credit_notes_amount"]) + post
    )
    invoices = _invoices()
    pi = _invoice_payment_intent(sim, ctx, invoice)
    if (
        pre > 0
        and invoice["amount_remaining"] <= 0
        and invoice["status"] in ("open", "uncollectible")
    ):
        # Stripe: a credit note that brings an open invoice to zero marks it paid.
        if pi is not None:
            payments = importlib.import_module("stripesync.sim.resources.payments")
            payments.cancel_for_invoice(sim, ctx, pi["id"])
        invoices._settle(sim, ctx, invoice, old, False, True)
        return
    if pi is not None and pre != 0 and invoice["amount_remaining"] > 0:
        pi["amount"] = invoice["amount_remaining"]  # the open intent follows the invoice
        sim.save(ctx, pi)
    invoices.save_invoice(sim, ctx, invoice)
    emit_updated(sim, ctx, "invoice.updated", old, invoice)


@route("GET", "/v1/credit_notes/preview", resource="credit_notes")
def preview(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    note, _ = _draft(sim, ctx, params)
    return note


@route("GET", "/v1/credit_notes/preview/lines", resource="credit_notes")
def preview_lines(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    paging: dict[str, Any] = {
        k: params.pop(k) for k in ("limit", "starting_after", "ending_before") if k in params
    }
    note, _ = _draft(sim, ctx, params)
    return _page_lines(sim, ctx, note["lines"]["data"], paging, "/v1/credit_notes/preview/lines")


@route("POST", "/v1/credit_notes", resource="credit_notes")
def create(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    note, plan = _draft(sim, ctx, params)
    invoice: dict[str, Any] = plan["invoice"]
    _save_note(sim, ctx, note)  # so the refund and balance transaction can name it
    if plan["refund_amount"]:
        refund = create_refund(
            sim,
            ctx,
            plan["charge"],
            amount=plan["refund_amount"],
            reason=None,
            metadata={},
        )
        note["refunds"].append(
            {
                "amount_refunded": refund["amount"],
                "payment_record_refund": None,
                "refund": refund["id"],
                "type": "refund",
            }
        )
    if plan["credit_amount"]:
        customer = customers.load(sim, ctx, invoice["customer"], param="customer")
        txn = _balance_transaction(sim, ctx, customer, -int(plan["credit_amount"]), note)
        note["customer_balance_transaction"] = txn["id"]
    _save_note(sim, ctx, note)
    sim.emit(ctx, "credit_note.created", note)
    _adjust_invoice(sim, ctx, invoice, note["pre_payment_amount"], note["post_payment_amount"])
    return note


@route("GET", "/v1/credit_notes/{credit_note_id}", resource="credit_notes")
def retrieve(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], credit_note_id: str
) -> dict[str, Any]:
    return load(sim, ctx, credit_note_id)


@route("POST", "/v1/credit_notes/{credit_note_id}", resource="credit_notes")
def update(sim: Simulator, ctx: Ctx, params: dict[str, Any], credit_note_id: str) -> dict[str, Any]:
    check_params(params, {"memo", "metadata"})
    note = load(sim, ctx, credit_note_id)
    old = copy.deepcopy(note)
    if "memo" in params:
        note["memo"] = forms.as_str(params, "memo") or None
    if "metadata" in params:
        note["metadata"] = forms.as_metadata(params, note.get("metadata"))
    _save_note(sim, ctx, note)
    emit_updated(sim, ctx, "credit_note.updated", old, note)
    return note


@route("POST", "/v1/credit_notes/{credit_note_id}/void", resource="credit_notes")
def void(sim: Simulator, ctx: Ctx, params: dict[str, Any], credit_note_id: str) -> dict[str, Any]:
    check_params(params, set())
    note = load(sim, ctx, credit_note_id)
    if note["status"] == "void":
        raise invalid(f"Credit note {note['id']} is already void.", param="id")
    invoice = _load_invoice(sim, ctx, note["invoice"])
    if invoice["status"] != "open":
        raise invalid(
            f"You can only void a credit note if the associated invoice is open; invoice "
            f"{invoice['id']} is {invoice['status']}.",
            param="id",
        )
    if note.get("refunds"):
        raise invalid(
            "You can't void a credit note that refunded a payment: the refund stays.", param="id"
        )
    note["status"] = "void"
    note["voided_at"] = sim.now()
    if note.get("customer_balance_transaction"):
        txn = sim.db.get(ctx.acct, str(note["customer_balance_transaction"]))
        credited = -int(txn["amount"]) if txn else 0
        if credited:
            customer = customers.load(sim, ctx, invoice["customer"], param="customer")
            _balance_transaction(sim, ctx, customer, credited, note)
    _save_note(sim, ctx, note)
    sim.emit(ctx, "credit_note.voided", note)
    _adjust_invoice(sim, ctx, invoice, -note["pre_payment_amount"], -note["post_payment_amount"])
    return note


def _page_lines(
    sim: Simulator, ctx: Ctx, lines: list[dict[str, Any]], params: dict[str, Any], url: str
) -> dict[str, Any]:
    limit = forms.as_int(params, "limit", 10, minimum=1, maximum=100) or 10
    after = params.get("starting_after") or None
    before = params.get("ending_before") or None
    ids = [line["id"] for line in lines]
    if after is not None:
        if after not in ids:
            raise missing(str(after), param="starting_after", kind="credit note line item")
        start = ids.index(after) + 1
        window = lines[start : start + limit]
        has_more = start + limit < len(lines)
    elif before is not None:
        if before not in ids:
            raise missing(str(before), param="ending_before", kind="credit note line item")
        end = ids.index(before)
        window = lines[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        window = lines[:limit]
        has_more = limit < len(lines)
    return sim.list_response(ctx, url, Page(copy.deepcopy(window), has_more))


@route("GET", "/v1/credit_notes/{credit_note_id}/lines", resource="credit_notes")
def list_lines(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], credit_note_id: str
) -> dict[str, Any]:
    check_params(params, {"ending_before", "limit", "starting_after"})
    note = load(sim, ctx, credit_note_id)
    return _page_lines(
        sim, ctx, note["lines"]["data"], params, f"/v1/credit_notes/{credit_note_id}/lines"
    )


@route("GET", "/v1/credit_notes", resource="credit_notes")
def list_(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(
        params,
        {
            "created",
            "customer",
            "customer_account",
            "ending_before",
            "invoice",
            "limit",
            "starting_after",
        },
    )
    links = {"invoice": str(params["invoice"])} if params.get("invoice") else None
    return sim.paginate(
        ctx,
        params,
        "credit_note",
        "/v1/credit_notes",
        created=forms.created_filter(params),
        customer=params.get("customer") or None,
        links=links,
    )

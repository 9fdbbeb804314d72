"""Credit notes on open and paid invoices, driven through the official SDK."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import stripe

# -- helpers -------------------------------------------------------------------------------


def _customer(client: Any, payment_method: str | None = "pm_card_visa", **params: Any) -> Any:
    params.setdefault("email", f"{uuid.uuid4().hex[:8]}@example.com")
    if payment_method is not None:
        params["payment_method"] = payment_method
        params["invoice_settings"] = {"default_payment_method": payment_method}
    return client.v1.customers.create(params=params)


def _open_invoice(client: Any, customer: Any, *, coupon: str | None = None) -> Any:
    """An open invoice: 3 seats at $10.00 and a $20.00 support fee ($50.00)."""
    client.v1.invoice_items.create(
        params={
            "customer": customer.id,
            "currency": "usd",
            "quantity": 3,
            "unit_amount_decimal": "1000",
            "description": "Seats",
        }
    )
    client.v1.invoice_items.create(
        params={
            "customer": customer.id,
            "currency": "usd",
            "amount": 2000,
            "description": "Support",
        }
    )
    params: dict[str, Any] = {
        "customer": customer.id,
        "pending_invoice_items_behavior": "include",
        "auto_advance": False,
    }
    if coupon is not None:
        params["discounts"] = [{"coupon": coupon}]
    draft = client.v1.invoices.create(params=params)
    return client.v1.invoices.finalize_invoice(draft.id)


def _line(invoice: Any, description: str) -> Any:
    return next(line for line in invoice.lines.data if line.description == description)


def _events(client: Any, event_type: str, object_id: str) -> list[Any]:
    page = client.v1.events.list(params={"type": event_type, "limit": 100})
    return [e for e in page.data if e.data.object.id == object_id]


def _keys(obj: Any) -> set[str]:
    return set(obj.to_dict())


# -- pre-payment -----------------------------------------------------------------------------


def test_credit_note_on_an_open_invoice_reduces_amount_due(
    client: Any, stripe_fixtures: dict[str, dict[str, Any]]
) -> None:
    customer = _customer(client)
    invoice = _open_invoice(client, customer)
    assert (invoice.status, invoice.amount_due) == ("open", 5000)
    seats, support = _line(invoice, "Seats"), _line(invoice, "Support")
    note = client.v1.credit_notes.create(
        params={
            "invoice": invoice.id,
            "lines": [
                {"type": "invoice_line_item", "invoice_line_item": seats.id, "quantity": 1},
                {"type": "invoice_line_item", "invoice_line_item": support.id, "amount": 500},
                {
                    "type": "custom_line_item",
                    "description": "Goodwill",
                    "quantity": 2,
                    "unit_amount": 100,
                },
            ],
            "reason": "order_change",
            "memo": "Sorry about the outage",
            "metadata": {"ticket": "Z-12"},
        }
    )
    assert note.number == f"{invoice.number}-CN-01"
    assert (note.status, note.type, note.reason) == ("issued", "pre_payment", "order_change")
    assert (note.amount, note.subtotal, note.total) == (1700, 1700, 1700)
    assert (note.pre_payment_amount, note.post_payment_amount) == (1700, 0)
    assert note.customer == customer.id and note.invoice == invoice.id
    assert note.pdf.startswith("https://pay.stripe.com/credit_notes/")
    assert _keys(note) == set(stripe_fixtures["credit_note"])
    by_seat, by_amount, custom = note.lines.data
    assert (by_seat.amount, by_seat.quantity, by_seat.unit_amount) == (1000, 1, 1000)
    assert (by_seat.invoice_line_item, by_seat.description) == (seats.id, "Seats")
    assert (by_amount.amount, by_amount.unit_amount) == (500, None)
    assert (custom.type, custom.amount, custom.invoice_line_item) == ("custom_line_item", 200, None)
    assert _keys(by_seat) == set(stripe_fixtures["credit_note_line_item"])
    invoice = client.v1.invoices.retrieve(invoice.id)
    assert (invoice.amount_due, invoice.amount_remaining) == (3300, 3300)
    assert invoice.pre_payment_credit_notes_amount == 1700
    assert invoice.status == "open"
    assert len(_events(client, "credit_note.created", note.id)) == 1
    updated = _events(client, "invoice.updated", invoice.id)
    assert updated[0].data.previous_attributes.amount_due == 5000
    # The invoice's payment is now for what remains.
    paid = client.v1.invoices.pay(invoice.id)
    assert (paid.status, paid.amount_paid) == ("paid", 3300)


def test_credit_note_bringing_an_open_invoice_to_zero_pays_it(client: Any) -> None:
    customer = _customer(client)
    invoice = _open_invoice(client, customer)
    note = client.v1.credit_notes.create(params={"invoice": invoice.id, "amount": 5000})
    assert note.type == "pre_payment"
    assert note.lines.data[0].type == "custom_line_item"
    invoice = client.v1.invoices.retrieve(invoice.id)
    assert (invoice.status, invoice.amount_remaining, invoice.amount_paid) == ("paid", 0, 0)
    assert len(_events(client, "invoice.paid", invoice.id)) == 1
    assert client.v1.charges.list(params={"customer": customer.id}).data == []


def test_line_credits_share_the_invoice_discount(client: Any) -> None:
    coupon = client.v1.coupons.create(params={"percent_off": 10, "duration": "once"})
    customer = _customer(client)
    invoice = _open_invoice(client, customer, coupon=coupon.id)
    assert invoice.total == 4500
    seats = _line(invoice, "Seats")
    note = client.v1.credit_notes.create(
        params={
            "invoice": invoice.id,
            "lines": [{"type": "invoice_line_item", "invoice_line_item": seats.id, "quantity": 3}],
        }
    )
    (line,) = note.lines.data
    assert (line.amount, line.discount_amount) == (3000, 300)
    assert (note.subtotal, note.discount_amount, note.total, note.amount) == (3000, 300, 2700, 2700)
    assert line.discount_amounts[0].amount == 300
    assert note.discount_amounts[0].amount == 300
    assert note.pretax_credit_amounts[0].type == "discount"


# -- post-payment ----------------------------------------------------------------------------


def test_credit_note_on_a_paid_invoice_refunds_and_credits(client: Any) -> None:
    customer = _customer(client)
    invoice = client.v1.invoices.pay(_open_invoice(client, customer).id)
    assert invoice.status == "paid"
    # A paid invoice has nothing left to reduce: the amount must be allocated.
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.credit_notes.create(params={"invoice": invoice.id, "amount": 1000})
    assert "post_payment_amount ($10.00)" in str(info.value.user_message)
    note = client.v1.credit_notes.create(
        params={
            "invoice": invoice.id,
            "amount": 1000,
            "refund_amount": 600,
            "credit_amount": 300,
            "out_of_band_amount": 100,
        }
    )
    assert (note.type, note.pre_payment_amount, note.post_payment_amount) == (
        "post_payment",
        0,
        1000,
    )
    assert note.out_of_band_amount == 100
    (link,) = note.refunds
    assert (link.type, link.amount_refunded) == ("refund", 600)
    refund = client.v1.refunds.retrieve(link.refund)
    assert (refund.amount, refund.status) == (600, "succeeded")
    charge = client.v1.charges.retrieve(refund.charge)
    assert (charge.amount_refunded, charge.refunded, charge.customer) == (600, False, customer.id)
    assert note.customer_balance_transaction.startswith("cbtxn_")
    assert client.v1.customers.retrieve(customer.id).balance == -300
    invoice = client.v1.invoices.retrieve(invoice.id)
    assert (invoice.status, invoice.amount_paid) == ("paid", 5000)
    assert invoice.post_payment_credit_notes_amount == 1000
    assert len(_events(client, "refund.created", refund.id)) == 1
    assert len(_events(client, "charge.refunded", charge.id)) == 1
    # A later credit note links an existing refund instead of making one.
    extra = client.v1.refunds.create(params={"charge": charge.id, "amount": 250})
    linked = client.v1.credit_notes.create(
        params={"invoice": invoice.id, "amount": 250, "refunds": [{"refund": extra.id}]}
    )
    assert linked.number == f"{invoice.number}-CN-02"
    assert [r.refund for r in linked.refunds] == [extra.id]
    assert client.v1.charges.retrieve(charge.id).amount_refunded == 850


def test_mixed_credit_note_after_the_customer_balance_paid_part(client: Any) -> None:
    customer = _customer(client, balance=-1000)  # a $10.00 credit applied at finalization
    invoice = _open_invoice(client, customer)
    assert (invoice.total, invoice.amount_due) == (5000, 4000)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.credit_notes.create(params={"invoice": invoice.id, "amount": 5000})
    note = client.v1.credit_notes.create(
        params={"invoice": invoice.id, "amount": 5000, "credit_amount": 1000}
    )
    assert (note.type, note.pre_payment_amount, note.post_payment_amount) == ("mixed", 4000, 1000)
    assert client.v1.invoices.retrieve(invoice.id).status == "paid"
    assert client.v1.customers.retrieve(customer.id).balance == -1000


# -- void, update, list, lines, preview -----------------------------------------------------------


def test_void_gives_the_invoice_its_amount_back(client: Any) -> None:
    customer = _customer(client)
    invoice = _open_invoice(client, customer)
    note = client.v1.credit_notes.create(params={"invoice": invoice.id, "amount": 1200})
    voided = client.v1.credit_notes.void_credit_note(note.id)
    assert voided.status == "void" and voided.voided_at is not None
    assert len(_events(client, "credit_note.voided", note.id)) == 1
    invoice = client.v1.invoices.retrieve(invoice.id)
    assert (invoice.amount_due, invoice.pre_payment_credit_notes_amount) == (5000, 0)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.credit_notes.void_credit_note(note.id)
    # The numbering counts void credit notes too.
    again = client.v1.credit_notes.create(params={"invoice": invoice.id, "amount": 100})
    assert again.number.endswith("-CN-02")
    client.v1.invoices.pay(invoice.id)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.credit_notes.void_credit_note(again.id)
    assert "invoice is open" in str(info.value.user_message)


def test_update_emits_credit_note_updated(client: Any) -> None:
    invoice = _open_invoice(client, _customer(client))
    note = client.v1.credit_notes.create(params={"invoice": invoice.id, "amount": 300})
    updated = client.v1.credit_notes.update(
        note.id, params={"memo": "Corrected", "metadata": {"case": "C-7"}}
    )
    assert (updated.memo, updated.metadata.case) == ("Corrected", "C-7")
    (event,) = _events(client, "credit_note.updated", note.id)
    assert event.data.previous_attributes.to_dict() == {"memo": None, "metadata": {"case": None}}
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.credit_notes.update(note.id, params={"amount": 1})
    assert info.value.param == "amount"


def test_list_by_invoice_and_customer_and_page_lines(client: Any) -> None:
    customer = _customer(client)
    invoice = _open_invoice(client, customer)
    lines = [
        {"type": "custom_line_item", "description": f"Credit {i}", "unit_amount": 10 + i}
        for i in range(12)
    ]
    big = client.v1.credit_notes.create(params={"invoice": invoice.id, "lines": lines})
    assert len(big.lines.data) == 10 and big.lines.has_more
    assert big.lines.url == f"/v1/credit_notes/{big.id}/lines"
    small = client.v1.credit_notes.create(params={"invoice": invoice.id, "amount": 100})
    by_invoice = client.v1.credit_notes.list(params={"invoice": invoice.id})
    assert [n.id for n in by_invoice.data] == [small.id, big.id]
    by_customer = client.v1.credit_notes.list(params={"customer": customer.id})
    assert {n.id for n in by_customer.data} == {small.id, big.id}
    all_lines = list(
        client.v1.credit_notes.line_items.list(big.id, params={"limit": 5}).auto_paging_iter()
    )
    assert [line.description for line in all_lines] == [f"Credit {i}" for i in range(12)]


def test_preview_changes_nothing(client: Any) -> None:
    customer = _customer(client)
    invoice = _open_invoice(client, customer)
    seats = _line(invoice, "Seats")
    params = {
        "invoice": invoice.id,
        "lines": [{"type": "invoice_line_item", "invoice_line_item": seats.id, "quantity": 2}],
    }
    preview = client.v1.credit_notes.preview(params=params)
    assert (preview.amount, preview.type, preview.number) == (
        2000,
        "pre_payment",
        f"{invoice.number}-CN-01",
    )
    lines = client.v1.credit_notes.preview_lines.list(params=params)
    assert [line.amount for line in lines.data] == [2000]
    assert client.v1.credit_notes.list(params={"invoice": invoice.id}).data == []
    assert client.v1.invoices.retrieve(invoice.id).amount_due == 5000


def test_credit_note_errors(client: Any) -> None:
    customer = _customer(client)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.credit_notes.create(params={"invoice": "in_missing", "amount": 100})
    assert (info.value.http_status, info.value.code, info.value.param) == (
        404,
        "resource_missing",
        "invoice",
    )
    client.v1.invoice_items.create(
        params={"customer": customer.id, "currency": "usd", "amount": 900}
    )
    draft = client.v1.invoices.create(
        params={"customer": customer.id, "pending_invoice_items_behavior": "include"}
    )
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.credit_notes.create(params={"invoice": draft.id, "amount": 100})
    assert "draft" in str(info.value.user_message)
    invoice = _open_invoice(client, customer)
    seats = _line(invoice, "Seats")
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.credit_notes.create(
            params={
                "invoice": invoice.id,
                "lines": [
                    {"type": "invoice_line_item", "invoice_line_item": seats.id, "amount": 3100}
                ],
            }
        )
    assert info.value.param == "lines[0][amount]"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.credit_notes.create(params={"invoice": invoice.id, "amount": 6000})
    assert info.value.param == "amount"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.credit_notes.create(params={"invoice": invoice.id})
    assert info.value.param == "amount"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.credit_notes.retrieve("cn_missing")
    assert info.value.http_status == 404

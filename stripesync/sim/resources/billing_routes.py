"""Registers the billing resources that exist (subscriptions, invoices, payments, ...)."""

import contextlib
import importlib

for _name in (
    "payment_methods",
    "subscriptions",
    "invoices",
    "payments",
    "credit_notes",
):
    with contextlib.suppress(ModuleNotFoundError):
        importlib.import_module(f"stripesync.sim.resources.{_name}")

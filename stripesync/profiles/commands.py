"""``stripesync profiles | explain | rebuild | revenue | source set``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stripesync.errors import ConfigError, InvalidInput
from stripesync.revenue.rules import minor_unit_exponent

console = Console()

profiles_app = typer.Typer(help="Customer profiles: list, show, unmerge.", no_args_is_help=True)
source_app = typer.Typer(help="Per-source settings of profiles and revenue.", no_args_is_help=True)


@contextmanager
def _store() -> Iterator[Any]:
    from stripesync.settings import load_settings
    from stripesync.store import Store

    settings = load_settings()
    store = Store.open(settings.resolved_database_url)
    try:
        yield store
    finally:
        store.close()


def _money(amount: int | None, currency: str | None) -> str:
    if amount is None:
        return ""
    if currency is None:
        return str(amount)
    exponent = minor_unit_exponent(currency)
    value = Decimal(amount).scaleb(-exponent)
    return f"{value:,.{exponent}f} {currency.upper()}"


def _exact(value: Fraction, currency: str) -> str:
    """An exact amount in minor units, shown in major units with two extra digits."""
    exponent = minor_unit_exponent(currency)
    shown = Decimal(value.numerator) / Decimal(value.denominator)
    return f"{shown.scaleb(-exponent):,.{exponent + 2}f}"


def _amounts(amounts: dict[str, int]) -> str:
    return ", ".join(_money(v, k) for k, v in sorted(amounts.items())) or "0"


# -- profiles ---------------------------------------------------------------------------


@profiles_app.command("list")
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    stage: Annotated[str | None, typer.Option(help="Only profiles in this stage.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only `users` or `accounts`.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many.")] = None,
    offset: Annotated[int, typer.Option(help="Skip this many first.")] = 0,
) -> None:
    """List profiles with their stage, MRR and renewal date (--json: with every trait)."""
    from stripesync.profiles.store import list_profiles

    if kind is not None and kind not in ("users", "accounts"):
        raise InvalidInput(f"--kind {kind!r}; use users or accounts")
    with _store() as store, store.read() as conn:
        found = list_profiles(conn, stage=stage, kind=kind, limit=limit, offset=offset)
    if as_json:
        typer.echo(json.dumps({"profiles": [p.as_json() for p in found]}, indent=2))
        return
    if not found:
        console.print("No profiles yet: `stripesync sync` imports a source, then they appear.")
        return
    table = Table(title=f"Profiles ({len(found)})")
    for column in ("id", "kind", "link id", "name / email", "stage", "MRR", "renewal", "cust."):
        table.add_column(column, overflow="fold")
    for p in found:
        who = p.traits.get("name") or p.traits.get("email") or ""
        table.add_row(
            str(p.id),
            p.kind,
            escape(p.link_id),
            escape(str(who)),
            p.stage or "",
            _amounts(p.mrr),
            p.renewal_at.strftime("%Y-%m-%d") if p.renewal_at else "",
            str(p.customers),
        )
    console.print(table)


@profiles_app.command("show")
def show_cmd(
    profile: Annotated[str, typer.Argument(help="Id, kind:link_id, link id or cus_… id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """A profile's traits, customers, stage history, merges and paid invoices."""
    from stripesync.profiles.store import (
        customers_of,
        find_profile,
        merges_of,
        paid_invoices,
        profile_movements,
        stage_history_of,
    )

    with _store() as store, store.read() as conn:
        found = find_profile(conn, profile)
        customers = customers_of(conn, found.id)
        history = stage_history_of(conn, found.id)
        merges = merges_of(conn, found.id)
        invoices = paid_invoices(conn, found.id)
        movements = profile_movements(conn, found.id)
    if as_json:
        body = found.as_json()
        body.update(
            stripe_customers=customers,
            stage_history=history,
            merges=merges,
            paid_invoices=invoices,
            movements=movements,
        )
        typer.echo(json.dumps(body, indent=2))
        return
    console.print(
        f"[bold]Profile {found.id}[/] {found.kind}:{escape(found.link_id)} "
        f"({found.status}, created via {found.created_via}); stage [bold]{found.stage}[/] "
        f"since {found.stage_since:%Y-%m-%d}"
        if found.stage_since
        else f"[bold]Profile {found.id}[/] {found.kind}:{escape(found.link_id)} ({found.status})"
    )
    console.print(
        f"MRR {_amounts(found.mrr)}; ARR {_amounts(found.arr)}"
        + (
            f"; in {found.reporting_currency.upper()}: "
            f"{_money(found.reporting_mrr, found.reporting_currency)}"
            if found.reporting_currency
            else ""
        )
        + (f"; renews {found.renewal_at:%Y-%m-%d}" if found.renewal_at else "")
    )
    traits = Table(title="Traits (stripe)", show_header=True)
    traits.add_column("trait")
    traits.add_column("value", overflow="fold")
    for key, value in found.traits.items():
        if key == "subscriptions":
            continue
        traits.add_row(key, escape(json.dumps(value) if not isinstance(value, str) else value))
    for key, value in found.app_traits.items():
        traits.add_row(f"app.{key}", escape(json.dumps(value)))
    console.print(traits)
    linked = Table(title="Stripe customers")
    for column in ("source", "customer", "link id", "found in", "stage", "MRR", "merge"):
        linked.add_column(column)
    for c in customers:
        linked.add_row(
            c["source"],
            c["customer_id"],
            escape(c["link_id"] or ""),
            c["link_source"] or "",
            c["stage"] or "",
            _amounts(c["mrr"]),
            str(c["merge_id"] or ""),
        )
    console.print(linked)
    if merges:
        table = Table(title="Merges (undo: stripesync profiles unmerge MERGE_ID)")
        for column in ("merge", "when", "customers added", "undone"):
            table.add_column(column)
        for m in merges:
            added = ", ".join(f"{a['customer_id']}" for a in m["added"])
            table.add_row(str(m["id"]), m["merged_at"], added, m["undone_at"] or "")
        console.print(table)
    if history:
        table = Table(title="Stage history")
        for column in ("at", "from", "to"):
            table.add_column(column)
        for h in history:
            table.add_row(h["at"], h["from"] or "", h["to"] or "")
        console.print(table)
    if invoices:
        table = Table(title=f"Paid invoices ({len(invoices)})")
        for column in ("paid", "invoice", "number", "reason", "amount paid"):
            table.add_column(column)
        for inv in invoices[:50]:
            paid = datetime.fromtimestamp(inv["paid_at"], UTC).strftime("%Y-%m-%d")
            table.add_row(
                paid,
                inv["id"],
                inv["number"] or "",
                inv["billing_reason"] or "",
                _money(inv["amount_paid"], inv["currency"]),
            )
        console.print(table)


@profiles_app.command("unmerge")
def unmerge_cmd(
    merge_id: Annotated[int, typer.Argument(help="The merge to undo (see `profiles show`).")],
) -> None:
    """Undo a merge: its customers go back to their own profiles, pinned there."""
    from stripesync.profiles.recompute import unmerge

    with _store() as store:
        result = unmerge(store, merge_id)
    console.print(
        f"Merge {merge_id} undone: {result.customers} customer(s) recomputed, "
        f"{len(result.profiles)} profile(s) updated. The customers are pinned to their "
        "profiles; `stripesync profiles unpin SOURCE CUSTOMER` lets the link id decide again."
    )


@profiles_app.command("unpin")
def unpin_cmd(
    source: Annotated[str, typer.Argument(help="The source's name.")],
    customer: Annotated[str, typer.Argument(help="The Stripe customer id (cus_…).")],
) -> None:
    """Drop a customer's pin (left by an unmerge) and recompute it from its link id."""
    from stripesync.profiles.recompute import recompute_customers
    from stripesync.profiles.store import drop_override
    from stripesync.sync.sources import get_source

    with _store() as store:
        found = get_source(store, source, active=False)
        dropped = drop_override(store, found.id, customer)
        recompute_customers(store, found.id, [customer])
    console.print(
        f"{customer}: pin {'dropped' if dropped else 'was not set'}; recomputed from its link id."
    )


# -- explain ----------------------------------------------------------------------------


def explain_cmd(
    profile: Annotated[str, typer.Argument(help="Id, kind:link_id, link id or cus_… id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show how a profile's MRR is computed: subscription by subscription, item by item."""
    from stripesync.profiles.recompute import explain_profile
    from stripesync.profiles.store import find_profile

    with _store() as store, store.read() as conn:
        found = find_profile(conn, profile)
        parts = explain_profile(conn, found.id)
    if as_json:
        typer.echo(json.dumps(_explain_json(found.id, parts), indent=2))
        return
    console.print(
        f"[bold]Profile {found.id}[/] {found.kind}:{escape(found.link_id)}: MRR "
        f"{_amounts(found.mrr)} (ARR {_amounts(found.arr)})"
    )
    if not parts:
        console.print("No Stripe customer is linked to this profile.")
    for part in parts:
        rules = part.rules
        console.print(
            f"\n[bold]{part.customer_id}[/] in {escape(part.source)}: MRR {_amounts(part.all_mrr)}"
            f", ARR {_amounts(part.arr)}; rules: churn at cancellation request "
            f"{'on' if rules.churn_at_cancellation_request else 'off'}, repeating discounts "
            f"{'subtracted' if rules.subtract_repeating_discounts else 'ignored'}, once "
            f"discounts {'subtracted' if rules.subtract_once_discounts else 'ignored'}"
        )
        if not part.subscriptions:
            console.print("  no subscriptions")
        for _sub, explanation in part.subscriptions:
            currency = explanation.currency
            title = (
                f"{explanation.subscription_id} ({explanation.status}): "
                f"MRR {_money(explanation.mrr, currency)}, exact "
                f"{_exact(explanation.exact, currency)}, ARR {_money(explanation.arr, currency)}"
            )
            if not explanation.counts:
                console.print(f"  {escape(title)}: 0 because {escape(explanation.reason or '')}")
                continue
            table = Table(title=title, title_justify="left")
            for column in (
                "item",
                "price",
                "product",
                "qty",
                "billed",
                "per period",
                "months",
                "monthly",
                "discounts",
                "tax out",
                "adds",
            ):
                table.add_column(column, overflow="fold")
            for line in explanation.lines:
                discounts = "; ".join(
                    f"{d.coupon_id or d.discount_id} ({d.level}"
                    + (f", {d.percent_off}%" if d.percent_off is not None else "")
                    + (f", {_money(d.amount_off, currency)}/invoice" if d.amount_off else "")
                    + f"): -{_exact(d.monthly_amount, currency)}"
                    for d in line.discounts
                )
                table.add_row(
                    line.item_id or "",
                    line.price_id or "",
                    line.product_id or "",
                    str(line.quantity),
                    str(line.billed_quantity),
                    _exact(line.amount_per_period, currency),
                    str(line.months_per_period),
                    _exact(line.monthly_before_discounts, currency),
                    discounts or "",
                    _exact(line.tax_divided_out, currency) if line.tax_divided_out else "",
                    (_exact(line.monthly, currency) if line.counted else f"0 ({line.note})"),
                )
            console.print(table)
            for ignored in explanation.ignored_discounts:
                console.print(
                    f"  ignored discount {ignored.coupon_id or ignored.discount_id} "
                    f"({ignored.level}): {escape(ignored.reason)}"
                )
            console.print(
                f"  sum {_exact(explanation.exact, currency)} → rounded half up once: "
                f"{_money(explanation.mrr, currency)}"
                + (f" ({escape(explanation.reason)})" if explanation.reason else "")
            )
        if part.mrr_trait is not None and part.mrr_currency:
            console.print(
                f"  `mrr` trait (rule 13: max of the primary subscription's MRR and its last "
                f"paid plan invoice per month): {_money(part.mrr_trait, part.mrr_currency)}"
            )


def _explain_json(profile_id: int, parts: list[Any]) -> dict[str, Any]:
    def fraction(value: Fraction) -> str:
        return str(value)

    return {
        "profile": profile_id,
        "customers": [
            {
                "source": part.source,
                "customer_id": part.customer_id,
                "all_mrr": part.all_mrr,
                "arr": part.arr,
                "mrr_trait": part.mrr_trait,
                "subscriptions": [
                    {
                        "id": e.subscription_id,
                        "status": e.status,
                        "currency": e.currency,
                        "counts": e.counts,
                        "mrr": e.mrr,
                        "exact": fraction(e.exact),
                        "arr": e.arr,
                        "reason": e.reason,
                        "items": [
                            {
                                "item": line.item_id,
                                "price": line.price_id,
                                "product": line.product_id,
                                "quantity": line.quantity,
                                "billed_quantity": line.billed_quantity,
                                "counted": line.counted,
                                "amount_per_period": fraction(line.amount_per_period),
                                "months_per_period": fraction(line.months_per_period),
                                "monthly_before_discounts": fraction(line.monthly_before_discounts),
                                "discounts": [
                                    {
                                        "coupon": d.coupon_id,
                                        "level": d.level,
                                        "monthly_amount": fraction(d.monthly_amount),
                                    }
                                    for d in line.discounts
                                ],
                                "tax_divided_out": fraction(line.tax_divided_out),
                                "monthly": fraction(line.monthly),
                                "note": line.note,
                            }
                            for line in e.lines
                        ],
                        "ignored_discounts": [
                            {"coupon": i.coupon_id, "level": i.level, "reason": i.reason}
                            for i in e.ignored_discounts
                        ],
                    }
                    for _, e in part.subscriptions
                ],
            }
            for part in parts
        ],
    }


# -- rebuild ----------------------------------------------------------------------------


def rebuild_cmd(
    source: Annotated[
        str | None, typer.Argument(help="Only this source (default: every source).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Customers per batch.")] = 2000,
) -> None:
    """Recompute every profile from the raw store (traits, MRR, stages, history)."""
    from stripesync.profiles.recompute import rebuild
    from stripesync.sync.sources import get_source

    with _store() as store:
        source_id = get_source(store, source, active=False).id if source else None
        with Progress(
            TextColumn("Rebuilding profiles"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("rebuild", total=None)

            def update(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            result = rebuild(store, source_id, progress=update, batch_size=batch_size)
    console.print(
        f"Rebuilt {result.customers:,} customers in {result.seconds:.1f}s "
        f"({result.rate:,.0f}/s): {len(result.profiles):,} profiles, {result.created:,} created, "
        f"{result.merges} merges, {result.stage_changes:,} stage changes, "
        f"{result.movements_written:,} movements written."
    )
    if result.skipped:
        console.print(
            f"{len(result.skipped)} customer(s) left unlinked (create-missing is off), e.g. "
            f"{escape(result.skipped[0][0])}: {escape(result.skipped[0][1])}"
        )
    for customer_id, error in result.errors[:10]:
        console.print(f"[yellow]could not compute {customer_id}[/]: {escape(error)}")


# -- source settings --------------------------------------------------------------------


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values or []:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip() or not rest.strip():
            raise InvalidInput(f"{what} {value!r}: write KEY=VALUE, e.g. {what} usd=0.92")
        out[key.strip().lower()] = rest.strip()
    return out


@source_app.command("set")
def source_set(
    name: Annotated[str, typer.Argument(help="The source's name.")],
    profile_kind: Annotated[
        str | None, typer.Option(help="Stripe customers are `users` or `accounts`.")
    ] = None,
    link_key: Annotated[
        str | None,
        typer.Option(help="Metadata key holding your own id ('' links by Stripe customer id)."),
    ] = None,
    create_missing: Annotated[
        bool | None,
        typer.Option(
            "--create-missing/--no-create-missing",
            help="Create profiles that do not exist (off: only enrich API-created ones).",
        ),
    ] = None,
    subscriptions: Annotated[
        str | None, typer.Option(help="`single` or `multiple` subscription mode.")
    ] = None,
    churn_at_cancellation_request: Annotated[
        bool | None,
        typer.Option(
            "--churn-at-cancellation-request/--churn-at-period-end",
            help="MRR rule 3: a scheduled cancellation churns now, or when it takes effect.",
        ),
    ] = None,
    subtract_repeating_discounts: Annotated[
        bool | None,
        typer.Option(
            "--subtract-repeating-discounts/--keep-repeating-discounts",
            help="MRR rule 6: also subtract `repeating` coupons.",
        ),
    ] = None,
    subtract_once_discounts: Annotated[
        bool | None,
        typer.Option(
            "--subtract-once-discounts/--keep-once-discounts",
            help="MRR rule 6: also subtract `once` coupons.",
        ),
    ] = None,
    reporting_currency: Annotated[
        str | None, typer.Option(help="Report MRR in this currency too ('' to unset).")
    ] = None,
    rate: Annotated[
        list[str] | None,
        typer.Option(help="Exchange rate into the reporting currency: CUR=RATE (repeat)."),
    ] = None,
    stage: Annotated[
        list[str] | None,
        typer.Option(help="Stage of a subscription status: STATUS=STAGE (repeat)."),
    ] = None,
    stage_precedence: Annotated[
        str | None, typer.Option(help="Stages strongest first, comma-separated.")
    ] = None,
    recompute: Annotated[
        bool, typer.Option("--rebuild/--no-rebuild", help="Recompute the source's profiles.")
    ] = True,
) -> None:
    """Change a source's profile settings (kind, link key, modes, MRR rules, stages)."""
    from stripesync.profiles.recompute import rebuild
    from stripesync.profiles.settings import (
        ProfileSettings,
        load_profile_settings,
        save_profile_settings,
    )
    from stripesync.sync.sources import get_source

    with _store() as store:
        source = get_source(store, name, active=False)
        with store.read() as conn:
            current = load_profile_settings(conn, source.id)
        changes: dict[str, Any] = {
            "kind": profile_kind,
            "link_key": link_key,
            "create_missing": create_missing,
            "subscription_mode": subscriptions,
            "churn_at_cancellation_request": churn_at_cancellation_request,
            "subtract_repeating_discounts": subtract_repeating_discounts,
            "subtract_once_discounts": subtract_once_discounts,
            "reporting_currency": reporting_currency,
        }
        if rate:
            changes["exchange_rates"] = {**current.revenue.exchange_rates, **_pairs(rate, "--rate")}
        updated = current.with_changes(**changes)
        if stage or stage_precedence:
            raw = updated.to_json()
            stages = raw["stages"]
            if stage:
                stages["status_stages"] = {**stages["status_stages"], **_pairs(stage, "--stage")}
                if not stage_precedence:
                    known = set(stages["precedence"])
                    stages["precedence"] += [
                        s for s in dict.fromkeys(stages["status_stages"].values()) if s not in known
                    ]
            if stage_precedence:
                stages["precedence"] = [s.strip() for s in stage_precedence.split(",") if s.strip()]
            updated = ProfileSettings.from_json(raw, where="the new settings")
        if updated.revenue.reporting_currency:
            # Fail now, not at the next recompute, when a rate is missing.
            missing = sorted(
                c
                for c in _source_currencies(store, source.id)
                if c != updated.revenue.reporting_currency
                and c not in updated.revenue.exchange_rates
            )
            if missing:
                raise ConfigError(
                    f"source {name!r} has MRR in {', '.join(m.upper() for m in missing)} but no "
                    f"rate into {updated.revenue.reporting_currency.upper()}; add "
                    + " ".join(f"--rate {m}=<rate>" for m in missing)
                )
        with store.write() as conn:
            save_profile_settings(conn, source.id, updated)
        console.print(f"Profile settings of {escape(name)}:")
        console.print_json(json.dumps(updated.to_json()))
        if recompute:
            result = rebuild(store, source.id)
            console.print(
                f"Recomputed {result.customers:,} customers ({len(result.profiles):,} profiles)."
            )


@source_app.command("show")
def source_show(name: Annotated[str, typer.Argument(help="The source's name.")]) -> None:
    """Print a source's profile settings as JSON."""
    from stripesync.profiles.settings import load_profile_settings
    from stripesync.sync.sources import get_source

    with _store() as store:
        source = get_source(store, name, active=False)
        with store.read() as conn:
            settings = load_profile_settings(conn, source.id)
    typer.echo(json.dumps(settings.to_json(), indent=2))


def _source_currencies(store: Any, source_id: int) -> set[str]:
    import sqlalchemy as sa

    from stripesync.store.schema import raw_table

    subs = raw_table("subscription")
    with store.read() as conn:
        return {
            str(r[0]).lower()
            for r in conn.execute(
                sa.select(sa.func.distinct(subs.c.data["currency"].as_string())).where(
                    subs.c.source_id == source_id
                )
            )
            if r[0]
        }


# -- revenue ----------------------------------------------------------------------------


def _day(text: str, what: str) -> int:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{what} {text!r} is not a date; use YYYY-MM-DD") from None
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def revenue_cmd(
    source: Annotated[str | None, typer.Argument(help="Only this source (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    by: Annotated[str, typer.Option(help="`month` or `day`.")] = "month",
    since: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD.")] = None,
    until: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD (default today).")] = None,
    currency: Annotated[
        str | None, typer.Option(help="Reporting currency (default: the sources' setting).")
    ] = None,
    rates: Annotated[
        Path | None,
        typer.Option(help='JSON rate table: {"usd": "0.92"} or {"2026-01-01": {"usd": "0.92"}}.'),
    ] = None,
) -> None:
    """MRR and ARR series, movements per period, paying customers, ARPU and churn rates."""
    from stripesync.profiles.store import revenue_series

    if by not in ("day", "month"):
        raise InvalidInput(f"--by {by!r}; use month or day")
    end = _day(until, "--until") + 86400 if until else None
    start = _day(since, "--since") if since else None
    table_data: dict[str, Any] | None = None
    if rates is not None:
        try:
            table_data = json.loads(rates.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--rates {rates}: {exc}") from exc
    with _store() as store:
        report = revenue_series(
            store,
            source=source,
            granularity=by,  # type: ignore[arg-type]
            start=start,
            end=end,
            currency=currency,
            rates=table_data,
        )
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    reporting = report["reporting_currency"]
    title = f"Revenue by {by}" + (f" in {reporting.upper()}" if reporting else "")
    table = Table(title=title)
    columns = ["period", "MRR", "ARR", "paying", "ARPU", "new", "expansion", "contraction"]
    columns += ["churn", "reactivation"] + (["fx"] if reporting else [])
    columns += ["subscriber churn", "gross MRR churn", "net MRR churn"]
    for column in columns:
        table.add_column(column, overflow="fold")

    def pct(value: float | None) -> str:
        return "" if value is None else f"{value * 100:.1f}%"

    for p in report["periods"]:
        if reporting:
            mrr = _money(p["reporting_mrr"], reporting)
            arr = _money(p["reporting_arr"], reporting)
            moves = p["reporting_movements"]
            move = {k: _money(moves.get(k, 0), reporting) for k in _KINDS}
            arpu = _money(round(p["arpu"]) if p["arpu"] is not None else None, reporting)
        else:
            mrr = _amounts(p["mrr"])
            arr = _amounts(p["arr"])
            move = {
                k: _amounts(p["movements"].get(k, {})) if p["movements"].get(k) else ""
                for k in _KINDS
            }
            arpu = ", ".join(_money(round(v), c) for c, v in sorted(p["arpu_by_currency"].items()))
        row = [p["period"], mrr, arr, str(p["paying_customers"]), arpu]
        row += [move[k] for k in _KINDS]
        if reporting:
            row.append(_money(p["fx"], reporting))
        row += [
            pct(p["subscriber_churn_rate"]),
            pct(p["gross_mrr_churn_rate"]),
            pct(p["net_mrr_churn_rate"]),
        ]
        table.add_row(*row)
    console.print(table)
    console.print(
        f"Subscriber churn over the last 30 days: {pct(report['churn_rate_30d']) or 'n/a'}"
    )


_KINDS = ("new", "expansion", "contraction", "churn", "reactivation")


def register(app: typer.Typer) -> None:
    app.add_typer(profiles_app, name="profiles")
    app.add_typer(source_app, name="source")
    app.command("explain")(explain_cmd)
    app.command("rebuild")(rebuild_cmd)
    app.command("revenue")(revenue_cmd)

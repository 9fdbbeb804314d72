"""Getting Stripe data into the raw store: sources, the backfill, and the one apply path.

Backfill, webhooks and event polling all write through `apply.apply`; the backfill
(`backfill.run_backfill`) runs as jobs (`stripesync.jobs`) over slices of each stream's
``created`` range (`slices`, `streams`).
"""

"""The Stripe side of the product: the API client, errors, and the object shapes it accepts.

Every call to Stripe goes through `client.StripeAPI` on the official SDK's
``StripeClient``, paced by `budget.RequestBudget`; `permissions` probes a key;
`errors` maps the SDK's exceptions; `shapes` normalizes older API versions.
"""

"""The Stripe side of the product: the API client, errors, and the object shapes it accepts."""

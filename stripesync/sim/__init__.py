"""A Stripe API simulator: a stateful local server the official SDK cannot tell from Stripe.

The demo, the tests and the benchmarks run against it. It is a stand-in, not the
reference: where it and Stripe's documented behaviour differ, Stripe is right and the
simulator is the bug.
"""

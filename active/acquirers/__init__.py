"""Acquirers: small objects with one method, ``select(ctx, k) -> indices``."""

"""The domain: wire types, the fold, services over the store."""

"""Persistence only: append-only streams, versioned documents, records. Imports nothing of ours."""

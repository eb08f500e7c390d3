"""sessiond: a self-hosted, event-sourced runtime for AI agent sessions."""

__version__ = "0.1.0"

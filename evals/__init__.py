"""Evals: replay, re-run, fork, scorers (see issue 4)."""

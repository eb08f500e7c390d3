"""Python-callable scorers the `python` scorer tests import by path."""

from __future__ import annotations

from sessiond.evals.transcript import Transcript


def mentions_five(transcript: Transcript) -> tuple[bool, str]:
    return ("5" in transcript.final_text, f"final text {transcript.final_text!r}")


def half(transcript: Transcript) -> float:
    return 0.5 if transcript.final_text else 0.0


def broken(transcript: Transcript) -> bool:
    raise RuntimeError("scorer bug")


def exits(transcript: Transcript) -> bool:
    raise SystemExit("a scorer that tries to stop the server")

"""Retries, the circuit breaker, fallback models and routing, over the scripted provider."""

from __future__ import annotations

import pytest

from sessiond.runtime.providers import base as pb
from sessiond.runtime.providers.resilience import CircuitBreaker, ModelClient, RetryPolicy
from sessiond.runtime.providers.routing import ProviderConfig, Router
from sessiond.runtime.providers.scripted import ScriptedError, ScriptStep
from sessiond.store.errors import AppError, InvalidInputError, UnavailableError

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(attempts=3, initial_s=0.001, max_s=0.002, jitter_s=0.0)


def _request(model: str) -> pb.ModelRequest:
    return pb.ModelRequest(
        model=model, system=None, messages=[pb.Message(role="user", content=[pb.TextBlock("hi")])]
    )


def _scripted(
    name: str, pattern: str, *steps: ScriptStep, fallbacks: list[str] | None = None
) -> ProviderConfig:
    return ProviderConfig(
        name=name,
        kind="scripted",
        models=[pattern],
        script=list(steps),
        fallback_models=fallbacks or [],
    )


def test_breaker_opens_fails_fast_and_half_opens() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown_s=10, clock=lambda: now[0])
    breaker.failed()
    assert breaker.allow()
    breaker.failed()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.0
    assert breaker.state == "half_open" and breaker.allow()
    breaker.failed()  # the trial call failed: open again
    assert breaker.state == "open"
    now[0] = 25.0
    breaker.succeeded()
    assert breaker.state == "closed"


async def test_retries_report_each_failed_attempt_then_succeed() -> None:
    overloaded = ScriptStep(error=ScriptedError(status=529))
    router = Router([_scripted("s", "m-*", overloaded, overloaded, ScriptStep(text="ok"))])
    client = ModelClient(router, FAST)
    failures: list[tuple[str, int, bool]] = []

    async def failed(error: AppError, attempt: int, retrying: bool, delay: float) -> None:
        failures.append((error.code, attempt, retrying))

    response = await client.complete(_request("m-1"), on_attempt_failed=failed)
    assert response.content == [pb.TextBlock("ok")]
    assert failures == [("model_overloaded", 1, True), ("model_overloaded", 2, True)]


async def test_non_retryable_errors_are_raised_at_once() -> None:
    router = Router([_scripted("s", "m-*", ScriptStep(error=ScriptedError(status=400)))])
    with pytest.raises(InvalidInputError):
        await ModelClient(router, FAST).complete(_request("m-1"))


async def test_fallback_after_exhaustion_is_reported() -> None:
    down = ScriptStep(error=ScriptedError(status=500))
    router = Router(
        [
            _scripted("primary", "big-*", down, fallbacks=["small-1"]),
            _scripted("backup", "small-*", ScriptStep(text="from the backup")),
        ]
    )
    switches: list[tuple[str, str, str]] = []

    async def fell_back(from_model: str, to_model: str, reason: str) -> None:
        switches.append((from_model, to_model, reason))

    response = await ModelClient(router, FAST).complete(_request("big-1"), on_fallback=fell_back)
    assert response.content == [pb.TextBlock("from the backup")] and response.model == "small-1"
    assert switches == [("big-1", "small-1", "model_request_failed")]


async def test_an_open_breaker_skips_straight_to_the_fallback() -> None:
    down = ScriptStep(error=ScriptedError(status=503))
    router = Router(
        [
            _scripted("primary", "big-*", down, fallbacks=["small-1"]),
            _scripted("backup", "small-*", ScriptStep(text="ok")),
        ]
    )
    client = ModelClient(router, FAST, breaker_threshold=2, breaker_cooldown_s=60)
    await client.complete(_request("big-1"))  # two failures open the breaker, then fallback
    assert client.breaker("primary").state == "open"
    reasons: list[str] = []

    async def fell_back(from_model: str, to_model: str, reason: str) -> None:
        reasons.append(reason)

    await client.complete(_request("big-1"), on_fallback=fell_back)
    assert reasons == ["circuit_open"]


async def test_exhausted_without_fallback_raises_the_last_error() -> None:
    router = Router([_scripted("s", "m-*", ScriptStep(error=ScriptedError(status=503)))])
    with pytest.raises(UnavailableError) as caught:
        await ModelClient(router, FAST).complete(_request("m-1"))
    assert caught.value.code == "model_overloaded"


def test_default_routes() -> None:
    router = Router()
    assert router.config_for("claude-opus-5").kind == "anthropic"
    assert router.config_for("gpt-5").kind == "openai"
    assert router.config_for("o3-mini").kind == "openai"
    assert router.config_for("scripted").kind == "scripted"
    with pytest.raises(InvalidInputError):
        router.config_for("llama3")
    custom = Router([ProviderConfig(name="ollama", kind="openai_compatible", models=["llama*"])])
    assert custom.config_for("llama3").name == "ollama"


async def test_scripted_default_echoes_the_last_user_text() -> None:
    response = await Router().provider_for("scripted").complete(_request("scripted"))
    assert response.content == [pb.TextBlock("You said: hi")] and response.stop_reason == "end_turn"

"""Retries, a circuit breaker per provider, and fallback models: the one owner of retrying.

tenacity retries a call only when its error says `retryable`, with exponential backoff
and jitter, or exactly the provider's `retry-after` when it gave one. Every failed
attempt that will be retried is reported (the engine logs it as `session.error` with
`retry_status: retrying`); the last error of an exhausted call is raised.

The breaker is small and written here on purpose: the maintained async-native options
(`purgatory`, `aiobreaker`) bring their own storage and clock abstractions for what is
three counters, and none lets tests inject a clock as simply as `clock=`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import msgspec
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from sessiond.runtime.providers import base as pb
from sessiond.runtime.providers.routing import Router
from sessiond.store.errors import AppError, RateLimitedError, UnavailableError

FailureCallback = Callable[[AppError, int, bool, float], Awaitable[None]]
FallbackCallback = Callable[[str, str, str], Awaitable[None]]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How hard to try one model before giving up on it."""

    attempts: int = 4
    initial_s: float = 0.5
    max_s: float = 8.0
    jitter_s: float = 0.5
    max_retry_after_s: float = 60.0


class CircuitBreaker:
    """Closed → open after `threshold` consecutive failures → half-open after `cooldown_s`."""

    def __init__(
        self,
        threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> str:
        """`closed`, `open` or `half_open`."""
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """Whether a call may go out now."""
        return self.state != "open"

    def succeeded(self) -> None:
        """A call worked: close."""
        self._failures = 0
        self._opened_at = None

    def failed(self) -> None:
        """A call failed retryably: count, and open (again) at the threshold."""
        self._failures += 1
        if self._failures >= self.threshold or self.state == "half_open":
            self._opened_at = self._clock()


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, AppError) and exc.retryable


class ModelClient:
    """Completes requests through the router with retries, breakers and fallbacks."""

    def __init__(
        self,
        router: Router,
        policy: RetryPolicy | None = None,
        *,
        breaker_threshold: int = 5,
        breaker_cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.router = router
        self.policy = policy or RetryPolicy()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._threshold = breaker_threshold
        self._cooldown_s = breaker_cooldown_s
        self._clock = clock
        self._backoff = wait_exponential_jitter(
            multiplier=self.policy.initial_s, max=self.policy.max_s, jitter=self.policy.jitter_s
        )

    def breaker(self, provider_name: str) -> CircuitBreaker:
        """The breaker of one provider."""
        found = self._breakers.get(provider_name)
        if found is None:
            found = self._breakers[provider_name] = CircuitBreaker(
                self._threshold, self._cooldown_s, self._clock
            )
        return found

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RateLimitedError) and error.retry_after_s is not None:
            return min(error.retry_after_s, self.policy.max_retry_after_s)
        return float(self._backoff(state))

    async def _one_model(
        self,
        request: pb.ModelRequest,
        on_delta: pb.DeltaCallback | None,
        on_attempt_failed: FailureCallback | None,
    ) -> pb.ModelResponse:
        provider = self.router.provider_for(request.model)
        breaker = self.breaker(provider.name)

        async def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            if on_attempt_failed is not None and isinstance(error, AppError):
                delay = state.upcoming_sleep
                await on_attempt_failed(error, state.attempt_number, True, delay)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.attempts),
            wait=self._wait,
            retry=retry_if_exception(_is_retryable),
            before_sleep=before_sleep,
            sleep=anyio.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if not breaker.allow():
                    raise UnavailableError(
                        f"{provider.name}: circuit open after repeated failures",
                        code="circuit_open",
                        retryable=False,
                    )
                try:
                    response = await provider.complete(request, on_delta=on_delta)
                except AppError as error:
                    if error.retryable:
                        breaker.failed()
                    raise
                breaker.succeeded()
                return response
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def complete(
        self,
        request: pb.ModelRequest,
        *,
        on_delta: pb.DeltaCallback | None = None,
        on_attempt_failed: FailureCallback | None = None,
        on_fallback: FallbackCallback | None = None,
    ) -> pb.ModelResponse:
        """The request's model, then its fallbacks when a model is down or exhausted."""
        candidates = [request.model, *self.router.config_for(request.model).fallback_models]
        last: AppError | None = None
        for index, model in enumerate(candidates):
            try:
                return await self._one_model(
                    msgspec.structs.replace(request, model=model), on_delta, on_attempt_failed
                )
            except AppError as error:
                if not (error.retryable or error.code == "circuit_open"):
                    raise
                last = error
                if index + 1 < len(candidates) and on_fallback is not None:
                    await on_fallback(model, candidates[index + 1], error.code)
        assert last is not None
        raise last

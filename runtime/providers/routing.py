"""Which provider serves an agent's `model`, by configuration, with sensible defaults.

Defaults: `claude-*` → Anthropic, `gpt-*` / `o1*` / `o3*` / `o4*` / `chatgpt-*` → OpenAI,
`scripted*` → the scripted test double. Configured providers are matched first, in order,
by glob patterns on the model id. API keys are read from the environment variable a
config names, never stored in the config itself, and never logged.
"""

from __future__ import annotations

import fnmatch
import os
from typing import Literal

import msgspec

from sessiond.runtime.providers.anthropic import AnthropicProvider
from sessiond.runtime.providers.base import Provider
from sessiond.runtime.providers.openai import OpenAIProvider
from sessiond.runtime.providers.scripted import ScriptedProvider, ScriptStep
from sessiond.store.errors import InvalidInputError, UnavailableError

Kind = Literal["anthropic", "openai", "openai_compatible", "scripted"]


class ProviderConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One configured provider."""

    name: str
    kind: Kind
    models: list[str] = msgspec.field(default_factory=lambda: ["*"])
    """Glob patterns of the model ids this provider serves."""
    base_url: str | None = None
    api_key_env: str | None = None
    """The environment variable holding the API key (the key itself is never configured)."""
    fallback_models: list[str] = []
    """Tried in order when this provider's breaker is open or its retries are exhausted."""
    timeout_s: float = 300.0
    script: list[ScriptStep] = []
    """Only for `scripted`: the answers to play back."""


DEFAULTS = [
    ProviderConfig(name="anthropic", kind="anthropic", models=["claude-*"]),
    ProviderConfig(
        name="openai", kind="openai", models=["gpt-*", "o1*", "o3*", "o4*", "chatgpt-*"]
    ),
    ProviderConfig(name="scripted", kind="scripted", models=["scripted*"]),
]

_decode_configs = msgspec.json.Decoder(list[ProviderConfig]).decode


def configs_from_env() -> list[ProviderConfig]:
    """`SESSIOND_PROVIDERS`: a JSON list of provider configs, or a path to a JSON file."""
    raw = os.environ.get("SESSIOND_PROVIDERS", "").strip()
    if not raw:
        return []
    if not raw.startswith("["):
        with open(raw, "rb") as handle:
            return _decode_configs(handle.read())
    return _decode_configs(raw.encode())


def build(config: ProviderConfig) -> Provider:
    """The provider object for a config."""
    api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
    if config.kind == "anthropic":
        return AnthropicProvider(
            config.name, base_url=config.base_url, api_key=api_key, timeout_s=config.timeout_s
        )
    if config.kind in ("openai", "openai_compatible"):
        return OpenAIProvider(
            config.name, base_url=config.base_url, api_key=api_key, timeout_s=config.timeout_s
        )
    return ScriptedProvider(config.name, config.script)


_DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"),
    "openai": ("OPENAI_API_KEY",),
}
_DEFAULT_BASE_URLS = {"anthropic": "ANTHROPIC_BASE_URL", "openai": "OPENAI_BASE_URL"}


def missing_credential(config: ProviderConfig) -> str | None:
    """What a provider lacks to authenticate, said so an operator can fix it; None when it
    has a key, or needs none (a configured `base_url`: a local server or a proxy)."""
    if config.api_key_env:
        if os.environ.get(config.api_key_env):
            return None
        return f"set {config.api_key_env} in the server's environment"
    defaults = _DEFAULT_KEYS.get(config.kind)
    if defaults is None or config.base_url or os.environ.get(_DEFAULT_BASE_URLS[config.kind]):
        return None
    if any(os.environ.get(name) for name in defaults):
        return None
    return (
        f"set {defaults[0]} in the server's environment (or name the variable with "
        "`api_key_env` in SESSIOND_PROVIDERS)"
    )


class Router:
    """Maps model ids to providers (built lazily, one per config)."""

    def __init__(self, configs: list[ProviderConfig] | None = None) -> None:
        self.configs = [*(configs or []), *DEFAULTS]
        self._providers: dict[str, Provider] = {}

    def config_for(self, model: str) -> ProviderConfig:
        """The first config whose patterns match `model`."""
        for config in self.configs:
            if any(fnmatch.fnmatchcase(model, pattern) for pattern in config.models):
                return config
        raise InvalidInputError(
            f"no provider serves model {model!r}; configure one in SESSIOND_PROVIDERS",
            code="model_not_routed",
        )

    def provider_for(self, model: str) -> Provider:
        """The provider serving `model`. Raises a non-retryable UnavailableError when the
        provider has no credentials: retrying a request that cannot authenticate only
        delays the answer (it used to retry "Connection error" four times)."""
        config = self.config_for(model)
        missing = missing_credential(config)
        if missing is not None:
            raise UnavailableError(
                f"model {model!r}: provider {config.name!r} has no API key: {missing}",
                code="provider_credentials_missing",
                retryable=False,
            )
        provider = self._providers.get(config.name)
        if provider is None:
            provider = self._providers[config.name] = build(config)
        return provider

    async def close(self) -> None:
        """Close every provider built so far."""
        for provider in self._providers.values():
            await provider.close()
        self._providers.clear()

"""Which provider answers a model name.

- `builtin/echo`, `builtin/script`, `builtin/script:<path>`: the offline models in builtin.py.
- a name in the models table (JSON file named by THREADLINE_MODELS):

      {"models": {"gpt-4o": {"base_url": "https://example.openai.azure.com", "api_key_env": "AZURE_KEY",
                             "azure_deployment": "gpt4o-prod", "api_version": "2024-10-21",
                             "context_window": 128000, "encoding": "o200k_base"},
                  "qwen": {"base_url": "http://127.0.0.1:8000/v1", "model": "Qwen/Qwen3-8B",
                           "encoding": "qwen3", "context_window": 32768}}}

  `model` is the name the server knows (default: the table's name). Without `api_key_env` the
  server gets a placeholder key (local servers need none). Optional: `reasoning` (whether it is a
  reasoning model; default from the name: OpenAI's o-series and gpt-5 family are), `max_tokens_param`
  ("max_tokens" | "max_completion_tokens"; default: max_completion_tokens for reasoning models, which
  refuse max_tokens, and max_tokens otherwise, which vLLM, Ollama and llama.cpp read), `connect_timeout`, `read_timeout` (seconds), `max_attempts`,
  `retry_base_delay`, `retry_max_delay` (seconds).
- any other name: the OpenAI-compatible server of OPENAI_BASE_URL (default OpenAI's) with
  OPENAI_API_KEY, the name passed as it is.

Providers (and their HTTP clients) are made on first use and reused. Keys are read from the
environment when a provider is made and never logged.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TypeVar

import msgspec
import quicktok

from service.config import Config, env_name, secret_from_env
from service.models.base import ModelError, ModelInfo, Provider
from service.models.builtin import EchoModel, ScriptModel
from service.models.openai_compat import MaxTokensParam, OpenAICompatProvider, RetryPolicy, Timeouts
from service.models.tokens import encoding as load_encoding

MODELS_ENV = env_name("models_file")
BUILTIN_PREFIX = "builtin/"
T = TypeVar("T")

NO_KEY = "no-key"  # what a server that checks no key is sent; the openai client insists on one


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    base_url: str | None = None
    api_key_env: str | None = None
    azure_deployment: str | None = None
    api_version: str | None = None
    context_window: int = 128_000
    encoding: str = "o200k_base"
    model: str | None = None
    reasoning: bool | None = None               # None: by the model's name (is_reasoning_model)
    max_tokens_param: MaxTokensParam | None = None  # None: by `reasoning`
    # Unset: the router's defaults.
    connect_timeout: float | None = None
    read_timeout: float | None = None
    max_attempts: int | None = None
    retry_base_delay: float | None = None
    retry_max_delay: float | None = None


class ModelsFile(msgspec.Struct, forbid_unknown_fields=True):
    models: dict[str, ModelConfig] = {}


def load_models_file(path: str | os.PathLike[str]) -> dict[str, ModelConfig]:
    """The models table in the file; ValueError naming the file when it is unreadable or wrong."""
    try:
        table = msgspec.json.decode(Path(path).read_bytes(), type=ModelsFile).models
    except (OSError, msgspec.DecodeError) as error:
        raise ValueError(f"{MODELS_ENV} file {str(path)!r}: {error}") from None
    for name, config in table.items():
        try:
            load_encoding(config.encoding)
        except ValueError as error:
            raise ValueError(f"{MODELS_ENV} file {str(path)!r}, model {name!r}: {error}") from None
    return table


_REASONING_NAMES = re.compile(r"^(?:o\d+|gpt-5)(?:$|[-.])")


def is_reasoning_model(model: str) -> bool:
    """Whether a model name is one of OpenAI's reasoning models (o1, o3-mini, o4-mini, gpt-5, gpt-5.1, ...)."""
    return bool(_REASONING_NAMES.match(model.rsplit("/", 1)[-1].lower()))


def max_tokens_param(model: str, reasoning: bool | None = None, given: MaxTokensParam | None = None) -> MaxTokensParam:
    """Which field limits the completion: reasoning models take max_completion_tokens only."""
    if given is not None:
        return given
    return "max_completion_tokens" if (is_reasoning_model(model) if reasoning is None else reasoning) else "max_tokens"


def default_encoding(model: str) -> str:
    """The encoding of a well-known model name (gpt-4o, llama-3.1-..., qwen3-...), else o200k_base."""
    try:
        return quicktok.encoding_for_model(model).name
    except KeyError:
        return "o200k_base"


class ModelRouter:
    def __init__(self, table: dict[str, ModelConfig] | None = None, *,
                 default_base_url: str | None = None, default_api_key: str | None = None,
                 script_file: str | None = None,
                 timeouts: Timeouts = Timeouts(), retry: RetryPolicy = RetryPolicy()):
        self.table = dict(table or {})
        self.default_base_url = default_base_url
        self.default_api_key = default_api_key
        self.script_file = script_file
        self.timeouts = timeouts
        self.retry = retry
        self._resolved: dict[str, tuple[Provider, ModelInfo]] = {}

    @classmethod
    def from_config(cls, config: Config) -> "ModelRouter":
        return cls(load_models_file(config.models_file) if config.models_file else {},
                   default_base_url=config.openai_base_url, default_api_key=config.openai_api_key,
                   script_file=config.script_file)

    def resolve(self, name: str) -> tuple[Provider, ModelInfo]:
        """The provider for name and what is known of the model; ModelError when there is none."""
        resolved = self._resolved.get(name)
        if resolved is None:
            try:
                resolved = self._make(name)
            except ValueError as error:  # e.g. Azure without an endpoint
                raise ModelError("server_error", f"Model {name!r} is misconfigured: {error}") from None
            self._resolved[name] = resolved
        return resolved

    async def aclose(self) -> None:
        providers = [provider for provider, _ in self._resolved.values()]
        self._resolved.clear()
        for provider in providers:
            if isinstance(provider, OpenAICompatProvider):
                await provider.aclose()

    def _make(self, name: str) -> tuple[Provider, ModelInfo]:
        if name.startswith(BUILTIN_PREFIX):
            return _builtin(name, self.script_file), ModelInfo()
        config = self.table.get(name)
        if config is not None:
            return self._configured(name, config)
        if self.default_api_key is None and self.default_base_url is None:
            raise ModelError("server_error", f"No provider is configured for model {name!r}: list it in "
                                             f"${MODELS_ENV} or set OPENAI_API_KEY / OPENAI_BASE_URL.")
        encoding = default_encoding(name)
        provider = OpenAICompatProvider.create(
            model=name, api_key=self.default_api_key or NO_KEY, base_url=self.default_base_url,
            encoding=encoding, timeouts=self.timeouts, retry=self.retry, max_tokens_param=max_tokens_param(name))
        return provider, ModelInfo(encoding=encoding)

    def _configured(self, name: str, config: ModelConfig) -> tuple[Provider, ModelInfo]:
        api_key = NO_KEY
        if config.api_key_env is not None:
            api_key = secret_from_env(config.api_key_env)
            if not api_key:
                raise ModelError("server_error", f"Model {name!r} reads its API key from "
                                                 f"${config.api_key_env}, which is not set.")
        provider = OpenAICompatProvider.create(
            model=config.model or name, api_key=api_key, base_url=config.base_url,
            azure_deployment=config.azure_deployment, api_version=config.api_version,
            encoding=config.encoding,
            max_tokens_param=max_tokens_param(config.model or name, config.reasoning, config.max_tokens_param),
            timeouts=Timeouts(connect=_given(config.connect_timeout, self.timeouts.connect),
                              read=_given(config.read_timeout, self.timeouts.read)),
            retry=RetryPolicy(attempts=_given(config.max_attempts, self.retry.attempts),
                              base_delay=_given(config.retry_base_delay, self.retry.base_delay),
                              max_delay=_given(config.retry_max_delay, self.retry.max_delay)))
        return provider, ModelInfo(context_window=config.context_window, encoding=config.encoding)


def _given(value: T | None, default: T) -> T:
    return default if value is None else value


def _builtin(name: str, script_file: str | None) -> Provider:
    if name == "builtin/echo":
        return EchoModel()
    if name == "builtin/script":
        return ScriptModel(script_file)
    if name.startswith("builtin/script:") and len(name) > len("builtin/script:"):
        return ScriptModel(name.removeprefix("builtin/script:"))
    raise ModelError("invalid_prompt", f"Unknown builtin model {name!r}: use builtin/echo, builtin/script "
                                       f"or builtin/script:<path>.")

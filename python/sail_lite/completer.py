"""Drop-in tinker-cookbook ``TokenCompleter``s backed by the Rust engine.

``SailTokenCompleter`` samples through Sail's raw-token Responses API (background create +
adaptive polling); ``OpenAICompatibleTokenCompleter`` through any OpenAI-compatible
``/completions`` server (Tinker's endpoint, vLLM, SGLang). Both validate every argument at
construction, pickle as their configuration, and never show secrets in their repr.

Importing this module imports tinker-cookbook (which imports torch); ``import sail_lite``
does not import this module until ``sail_lite.SailTokenCompleter`` is first touched.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from sail_lite import _bridge, _core, _exit, scope
from sail_lite import _validation as v
from sail_lite._redact import Redactor, redact_url
from sail_lite.errors import MissingDependencyError, SailArgumentError

__all__ = ["SailTokenCompleter", "OpenAICompatibleTokenCompleter", "DEFAULT_SAIL_API_URL"]

DEFAULT_SAIL_API_URL = "https://api.sailresearch.com"
DEFAULT_TIMEOUT_SECONDS = 60.0
_ASAP_SCOPE_EXPECTED = "a scheduled completion window: 'asap' cannot carry idempotency keys, so it cannot be scoped"
INSTALL_HINT = "pip install 'sail-lite[tinker]'  (or: pip install tinker tinker-cookbook)"


def _load_cookbook() -> tuple[type, type] | ImportError:
    try:
        from tinker_cookbook.completers import TokenCompleter, TokensWithLogprobs
    except ImportError as exc:
        return exc
    return TokenCompleter, TokensWithLogprobs


_cookbook = _load_cookbook()


class _CookbookMissing:
    """Stands in for tinker_cookbook's TokenCompleter when it is not installed, so the class
    exists (and can be imported) but constructing it explains what to install."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise MissingDependencyError(
            f"{type(self).__name__} needs tinker-cookbook, which could not be imported ({_cookbook}). Install it with: {INSTALL_HINT}"
        )


if isinstance(_cookbook, ImportError):
    _TokenCompleterBase: type = _CookbookMissing
    _TokensWithLogprobs: Any = None
else:
    _TokenCompleterBase, _TokensWithLogprobs = _cookbook


def _require_cookbook(cls: type) -> None:
    if isinstance(_cookbook, ImportError):
        _CookbookMissing.__init__(object.__new__(cls))


class _EngineCompleter(_TokenCompleterBase):
    """What both completers share: the engine client, the call path, pickling."""

    _config: dict[str, Any]

    def __init__(self, **config: Any) -> None:
        self._config = config
        # What must never be shown, whatever a server echoes back (see sail_lite._redact).
        self._redactor = Redactor((config.get("api_key"), config.get("tinker_lora_signed_url")))
        self._client = _core.SamplerClient(**self._engine_arguments())
        _exit.install()

    def _engine_arguments(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _scoped_request(
        self, tokens: list[int], max_tokens: int, stop_strings: Any, stop_ids: Any
    ) -> tuple[str | None, _core.ResponseJournal | None]:
        """A sampling scope's derived key for this request (None: a random one), and the
        scope's response journal."""
        return None, None

    async def __call__(self, model_input: Any, stop: Any = None, *, max_tokens: int | None = None) -> Any:
        tokens = v.prompt_tokens(model_input)
        budget = self.max_tokens
        if max_tokens is not None:
            budget = min(budget, v.positive_int("max_tokens", max_tokens, maximum=v.MAX_TOKENS))
        context_window = self.context_window
        if context_window is not None:
            room = context_window - len(tokens)
            if room < 1:
                raise SailArgumentError("model_input", f"a prompt shorter than context_window={context_window}", f"{len(tokens)} tokens")
            budget = min(budget, room)
        stop_strings, stop_ids = v.normalise_stop(stop)
        key, journal = self._scoped_request(tokens, budget, stop_strings, stop_ids)
        loop = asyncio.get_running_loop()
        bridge = _bridge.bridge_for(loop)
        request_id, future = bridge.submit(loop, self._client, self._redactor, tokens, budget, stop_strings, stop_ids, key, journal=journal)
        # The engine has copied the prompt: don't keep the list alive while the sample runs.
        del tokens
        try:
            completion = await future
        except asyncio.CancelledError:
            bridge.cancel(request_id)
            raise
        # The server's response id doubles as the sequence id: distinct per sample, and the
        # handle to look the sample up on Sail.
        return _TokensWithLogprobs(
            tokens=completion.tokens,
            maybe_logprobs=completion.logprobs,
            stop_reason=completion.stop_reason,
            sequence_id=completion.response_id,
            prompt_cache_hit_tokens=completion.prompt_cache_hit_tokens,
        )

    # --- configuration ---------------------------------------------------------------
    @property
    def model(self) -> str:
        model: str = self._config["model"]
        return model

    @property
    def max_tokens(self) -> int:
        max_tokens: int = self._config["max_tokens"]
        return max_tokens

    @property
    def context_window(self) -> int | None:
        return self._config.get("context_window")

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles as its configuration; the receiving process builds its own engine client.
        return (_rebuild, (type(self), self._config))

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={val!r}" for k, val in self._public_config().items())
        return f"{type(self).__name__}({shown})"

    def _public_config(self) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": self.max_tokens}


def _rebuild(cls: type[_EngineCompleter], config: dict[str, Any]) -> _EngineCompleter:
    return cls(**config)


def _resolve_api_key(api_key: Any, env_var: str, *, required: bool) -> str | None:
    if api_key is None:
        api_key = os.environ.get(env_var) or None
    if api_key is None:
        if required:
            raise SailArgumentError("api_key", f"an API key: pass api_key=... or set {env_var}")
        return None
    # It travels in an HTTP header: printable ASCII only. Never echo the value.
    if not isinstance(api_key, str) or not api_key.strip() or not api_key.isascii() or not api_key.isprintable():
        raise SailArgumentError("api_key", "a non-empty string of printable ASCII characters")
    return api_key


def _resolve_base_url(base_url: Any, env_var: str | None, default: str | None) -> str:
    if base_url is None and env_var:
        base_url = os.environ.get(env_var) or None
    if base_url is None:
        base_url = default
    return v.http_url("base_url", base_url)


def _validated_sampling_options(
    *,
    max_tokens: Any,
    temperature: Any,
    top_p: Any,
    timeout: Any,
    request_logprobs: Any,
    max_retries: Any,
    context_window: Any,
    max_connections: Any,
    ca_bundle: Any,
) -> dict[str, Any]:
    """The arguments both completers share, validated the same way."""
    return {
        "max_tokens": v.positive_int("max_tokens", max_tokens, maximum=v.MAX_TOKENS),
        "temperature": v.number_in("temperature", temperature, 0.0, 2.0),
        "top_p": v.number_in("top_p", top_p, 0.0, 1.0),
        "timeout": v.optional_seconds("timeout", timeout),
        "request_logprobs": _bool("request_logprobs", request_logprobs),
        "max_retries": v.non_negative_int("max_retries", max_retries, maximum=v.MAX_RETRIES),
        "context_window": None if context_window is None else v.positive_int("context_window", context_window),
        "max_connections": v.positive_int("max_connections", max_connections, maximum=65536),
        "ca_bundle": v.readable_file("ca_bundle", ca_bundle),
    }


def _common_engine_arguments(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": c["model"],
        "temperature": c["temperature"],
        "top_p": c["top_p"],
        "request_logprobs": c["request_logprobs"],
        "timeout": c["timeout"] if c["timeout"] is not None else DEFAULT_TIMEOUT_SECONDS,
        "poll_timeout": c.get("poll_timeout"),
        "max_retries": c["max_retries"],
        "max_connections": c["max_connections"],
        "ca_bundle": c["ca_bundle"],
    }


class SailTokenCompleter(_EngineCompleter):
    """A tinker-cookbook ``TokenCompleter`` that samples on Sail.

    Each call creates a background response on ``completion_window`` from the prompt's token
    ids and polls it to completion, planning each poll from the service times learned so far
    (``poll_overhead``: the lateness allowed, as a fraction of the service time), retrying transient failures with backoff; a retried create carries the same
    ``Idempotency-Key``, so it never starts a second sample. Cancelling the awaiting task, or
    ``poll_timeout`` expiring, cancels the response server-side.

    Arguments are those of Sail's own completer plus ``base_url``/``api_key`` (defaults
    ``SAIL_API_URL``/``SAIL_API_KEY``), ``poll_timeout`` (whole sample, seconds), ``timeout``
    (each HTTP attempt, default 60 s), ``max_retries``, ``context_window``,
    ``max_connections`` (concurrent HTTP requests), ``ca_bundle`` (extra trusted CAs, PEM) and
    ``poll_overhead`` (default 0.05: a completed sample is seen ~5% of its service time late at
    the median, at most ~9%; smaller means more polls per sample).

    ``prompt_cache_key`` routes creates for prefix-cache locality: ``True`` (default) derives
    the key from the model and the prompt's first 256 tokens, so a GRPO group's samples, and
    the turns of a conversation, share one; a string sends that key on every create;
    ``False``/``None`` sends none. Results carry ``prompt_cache_hit_tokens`` from Sail's usage.
    """

    def __init__(
        self,
        *,
        model: str,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        completion_window: str = "priority",
        lora: str | None = None,
        tinker_lora_signed_url: str | None = None,
        adapter_config: dict[str, Any] | str | None = None,
        tinker_lora_name: str | None = None,
        metadata: dict[str, str] | None = None,
        timeout: float | None = None,
        request_logprobs: bool = True,
        base_url: str | None = None,
        api_key: str | None = None,
        poll_timeout: float | None = None,
        max_retries: int = 8,
        context_window: int | None = None,
        max_connections: int = 256,
        ca_bundle: str | None = None,
        poll_overhead: float = 0.05,
        sampling_scope: scope.SamplingScope | str | None = None,
        prompt_cache_key: bool | str | None = True,
    ) -> None:
        _require_cookbook(type(self))
        window = v.require_str("completion_window", completion_window)
        default_scope = scope.as_scope(sampling_scope)
        if default_scope is not None and window == "asap":
            raise SailArgumentError("sampling_scope", _ASAP_SCOPE_EXPECTED, window)
        lora = v.optional_str("lora", lora)
        signed_url = v.optional_str("tinker_lora_signed_url", tinker_lora_signed_url)
        if lora is not None and signed_url is not None:
            raise SailArgumentError("lora", "either lora (a Sail LoRA) or tinker_lora_signed_url, not both")
        if signed_url is not None:
            if not signed_url.startswith(("http://", "https://")):
                raise SailArgumentError("tinker_lora_signed_url", "an http(s) signed archive URL", redact_url(signed_url))
            if adapter_config is None:
                raise SailArgumentError("adapter_config", "the checkpoint's PEFT adapter config when tinker_lora_signed_url is set")
        config_json = v.adapter_config_object_json(adapter_config) if adapter_config is not None else None
        if window == "asap" and (lora is not None or signed_url is not None):
            raise SailArgumentError("completion_window", "a scheduled window (not 'asap') when sampling a LoRA", window)
        config = {
            "model": v.require_str("model", model),
            **_validated_sampling_options(
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                timeout=timeout,
                request_logprobs=request_logprobs,
                max_retries=max_retries,
                context_window=context_window,
                max_connections=max_connections,
                ca_bundle=ca_bundle,
            ),
            "completion_window": window,
            "lora": lora,
            "tinker_lora_signed_url": signed_url,
            "adapter_config": config_json,
            "tinker_lora_name": v.optional_str("tinker_lora_name", tinker_lora_name),
            "metadata": v.string_metadata("metadata", metadata),
            "base_url": _resolve_base_url(base_url, "SAIL_API_URL", DEFAULT_SAIL_API_URL),
            "api_key": _resolve_api_key(api_key, "SAIL_API_KEY", required=True),
            "poll_timeout": v.optional_seconds("poll_timeout", poll_timeout),
            "poll_overhead": v.number_in("poll_overhead", poll_overhead, 0.001, 10.0),
            "sampling_scope": default_scope,
            "prompt_cache_key": v.prompt_cache_key("prompt_cache_key", prompt_cache_key),
        }
        self._default_scope = default_scope
        super().__init__(**config)

    def _scoped_request(
        self, tokens: list[int], max_tokens: int, stop_strings: Any, stop_ids: Any
    ) -> tuple[str | None, _core.ResponseJournal | None]:
        active = scope.active_scope(self._default_scope)
        if active is None:
            return None, None
        c = self._config
        if c["completion_window"] == "asap":
            raise SailArgumentError("sampling_scope", _ASAP_SCOPE_EXPECTED, "asap")
        fingerprint = scope.request_fingerprint(
            model=c["model"],
            completion_window=c["completion_window"],
            prompt_tokens=tokens,
            max_tokens=max_tokens,
            temperature=c["temperature"],
            top_p=c["top_p"],
            stop=stop_strings if stop_strings else stop_ids,
            metadata=self._request_metadata(),
            request_logprobs=c["request_logprobs"],
            lora_in_key=active.lora_in_key,
        )
        return active.idempotency_key(fingerprint), active.journal

    def _request_metadata(self) -> dict[str, str]:
        c = self._config
        # Caller metadata first; the completer's own keys win.
        metadata = dict(c["metadata"])
        metadata["completion_window"] = c["completion_window"]
        if c["lora"] is not None:
            metadata["lora"] = c["lora"]
        if c["tinker_lora_signed_url"] is not None:
            metadata["lora"] = c["tinker_lora_signed_url"]
            metadata["tinker_adapter_config"] = c["adapter_config"]
        if c["tinker_lora_name"] is not None:
            metadata["tinker_lora_name"] = c["tinker_lora_name"]
        return metadata

    def _engine_arguments(self) -> dict[str, Any]:
        c = self._config
        return {
            **_common_engine_arguments(c),
            "protocol": "responses",
            "base_url": c["base_url"],
            "api_key": c["api_key"],
            "metadata": self._request_metadata(),
            "completion_window": c["completion_window"],
            "poll_overhead": c["poll_overhead"],
            "prompt_cache_key": c["prompt_cache_key"],
        }

    @property
    def completion_window(self) -> str:
        window: str = self._config["completion_window"]
        return window

    @property
    def sampling_scope(self) -> scope.SamplingScope | None:
        """The default scope (a ``with sampling_scope(...)`` block overrides it)."""
        return self._default_scope

    def _public_config(self) -> dict[str, Any]:
        c = self._config
        shown: dict[str, Any] = {
            "model": c["model"],
            "max_tokens": c["max_tokens"],
            "completion_window": c["completion_window"],
            "base_url": c["base_url"],
        }
        if c["lora"] is not None:
            shown["lora"] = c["lora"]
        if c["tinker_lora_signed_url"] is not None:
            shown["tinker_lora_signed_url"] = "<signed url>"
        if c["tinker_lora_name"] is not None:
            shown["tinker_lora_name"] = c["tinker_lora_name"]
        if c["sampling_scope"] is not None:
            shown["sampling_scope"] = c["sampling_scope"].name
        if c["prompt_cache_key"] is not True:
            shown["prompt_cache_key"] = c["prompt_cache_key"]
        return shown


class OpenAICompatibleTokenCompleter(_EngineCompleter):
    """The same drop-in ``TokenCompleter`` for OpenAI-compatible ``/completions`` servers:
    Tinker's endpoint (``model`` a ``tinker://.../sampler_weights/...`` path, ``base_url`` from
    :func:`sail_lite.tinker.openai_base_url`), vLLM or SGLang.

    Sends the prompt as token ids and asks for sampled token ids and logprobs back
    (vLLM's ``return_token_ids`` / ``return_tokens_as_token_ids``). ``base_url`` is the
    versioned root (``.../v1``); ``api_key`` defaults to ``api_key_env`` (``TINKER_API_KEY``)
    and may be omitted for servers without auth. A retried request may be computed twice by
    the server (``/completions`` has no idempotency keys); nothing is billed twice by Sail.
    """

    def __init__(
        self,
        *,
        model: str,
        max_tokens: int,
        base_url: str,
        temperature: float = 1.0,
        top_p: float = 1.0,
        api_key: str | None = None,
        api_key_env: str = "TINKER_API_KEY",
        timeout: float | None = None,
        request_logprobs: bool = True,
        max_retries: int = 8,
        context_window: int | None = None,
        max_connections: int = 256,
        ca_bundle: str | None = None,
    ) -> None:
        _require_cookbook(type(self))
        model = v.require_str("model", model)
        if model.startswith("tinker://"):
            from sail_lite.tinker import validate_openai_model

            validate_openai_model(model)
        config = {
            "model": model,
            **_validated_sampling_options(
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                timeout=timeout,
                request_logprobs=request_logprobs,
                max_retries=max_retries,
                context_window=context_window,
                max_connections=max_connections,
                ca_bundle=ca_bundle,
            ),
            "base_url": _resolve_base_url(base_url, None, None),
            "api_key": _resolve_api_key(api_key, v.require_str("api_key_env", api_key_env), required=False),
            "api_key_env": api_key_env,
        }
        super().__init__(**config)

    def _engine_arguments(self) -> dict[str, Any]:
        c = self._config
        return {
            **_common_engine_arguments(c),
            "protocol": "completions",
            "base_url": c["base_url"],
            "api_key": c["api_key"],
            "metadata": {},
            "completion_window": "",
            "prompt_cache_key": False,  # /completions has no such field
        }

    def _public_config(self) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": self.max_tokens, "base_url": self._config["base_url"]}


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SailArgumentError(name, "True or False", value)
    return value

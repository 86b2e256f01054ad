"""``SailSamplingClient``: Sail behind the part of tinker's ``SamplingClient`` the cookbook uses.

The cookbook's RL loop, its rollout executors and its evaluators all take a
``tinker.SamplingClient`` and build ``TinkerTokenCompleter(sampling_client, ...)`` from it. This
class offers the same surface (``sample``, ``sample_async``, ``compute_logprobs``,
``get_base_model``, ``get_tokenizer``) and samples on Sail through the engine, so
``TinkerTokenCompleter(SailSamplingClient(...))`` works unchanged.

Importing this module imports tinker (for its result types); ``import sail_lite`` does not.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from sail_lite import _validation as v
from sail_lite._background import submit
from sail_lite.errors import MissingDependencyError, SailArgumentError, SailError, SailUnsupportedError

try:
    import tinker
    from tinker import types as tinker_types
except ImportError as _exc:  # pragma: no cover - exercised only without tinker installed
    tinker = None
    _TINKER_IMPORT_ERROR: ImportError | None = _exc
else:
    _TINKER_IMPORT_ERROR = None

__all__ = ["SailSamplingClient"]

# Arguments of SailTokenCompleter that the sampling client fixes per call from SamplingParams.
_PER_CALL = frozenset({"max_tokens", "temperature", "top_p"})
# Arguments never carried by a pickle: each process takes them from its own environment.
_SECRET_ARGUMENTS = frozenset({"api_key", "tinker_lora_signed_url"})


class SailSamplingClient:
    """A drop-in for ``tinker.SamplingClient`` that samples on Sail.

    Configuration is ``SailTokenCompleter``'s (``model``, ``completion_window``, ``lora`` /
    ``tinker_lora_signed_url`` + ``adapter_config``, ``tinker_lora_name``, ``metadata``,
    ``timeout``, ``poll_timeout``, ``max_retries``, ``base_url``, ``api_key``, ...) without the
    per-call ``max_tokens`` / ``temperature`` / ``top_p``, which come from each call's
    ``SamplingParams``. Further:

    - ``tinker_path``: a Tinker ``external_weights`` checkpoint (``tinker://run/external_weights/
      name``) instead of a signed URL: its signed URL is resolved (through ``rest_client``, or
      ``tinker.RestClient()`` from ``TINKER_BASE_URL`` / ``TINKER_API_KEY``) and re-resolved
      before it expires; needs ``adapter_config``. ``checkpoint`` passes one already resolved.
    - ``base_model``: the name ``get_base_model()`` reports and ``get_tokenizer()`` loads
      (through the cookbook's ``get_tokenizer``, so its custom registry applies); defaults to
      ``model``.
    - ``fallback_sampling_client``: a ``tinker.SamplingClient`` for what Sail cannot do (prompt
      logprobs, ``compute_logprobs``, top-k logprobs); without one those calls raise
      :class:`~sail_lite.SailUnsupportedError` naming the argument.

    ``sample(prompt, num_samples=N, ...)`` makes N Sail samples of that prompt (one create each),
    which share one ``prompt_cache_key``. The result is a real ``tinker.types.SampleResponse``.

    Pickles as its configuration without secrets: the receiving process (a rollout worker) reads
    ``SAIL_API_KEY`` from its environment and re-resolves a ``tinker_path``'s signed URL itself;
    a client built from a bare ``tinker_lora_signed_url`` refuses to pickle.
    """

    def __init__(
        self,
        *,
        model: str,
        base_model: str | None = None,
        tinker_path: str | None = None,
        rest_client: Any = None,
        checkpoint: Any = None,
        fallback_sampling_client: Any = None,
        **completer_kwargs: Any,
    ) -> None:
        if _TINKER_IMPORT_ERROR is not None:
            raise MissingDependencyError(f"SailSamplingClient needs tinker ({_TINKER_IMPORT_ERROR}): pip install 'sail-lite[tinker]'")
        per_call = sorted(_PER_CALL.intersection(completer_kwargs))
        if per_call:
            raise SailArgumentError(per_call[0], "to be left out: it comes from each call's SamplingParams")
        self._model = v.require_str("model", model)
        self._base_model = v.require_str("base_model", base_model) if base_model is not None else self._model
        self._tinker_path = v.optional_str("tinker_path", tinker_path)
        self._completer_kwargs = dict(completer_kwargs)
        self._fallback = fallback_sampling_client
        self._rest_client = rest_client
        self._checkpoint = checkpoint
        if self._tinker_path is not None:
            if "lora" in completer_kwargs or "tinker_lora_signed_url" in completer_kwargs:
                raise SailArgumentError("tinker_path", "either tinker_path or lora / tinker_lora_signed_url, not both")
            if completer_kwargs.get("adapter_config") is None:
                raise SailArgumentError("adapter_config", "the checkpoint's PEFT adapter config when tinker_path is set")
        self._completers: dict[tuple[float, float], Any] = {}
        self._completers_lock = threading.Lock()
        # Build the first completer now, so bad configuration fails at construction.
        self._completer_for(1.0, 1.0)

    # -- tinker.SamplingClient's surface ------------------------------------------------------

    def sample(
        self,
        prompt: Any,
        num_samples: int,
        sampling_params: Any,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
        topk_sample_logprobs: int = 0,
        target_prompt_logprobs: Any = None,
        prompt_alt_tokens_k: int = 0,
        prompt_logprobs_last_n: int | None = None,
    ) -> Any:  # a SailFuture, or the fallback's own future
        """Sample ``num_samples`` sequences of ``prompt`` on Sail; await the result or call
        ``.result()``. Arguments Sail cannot serve go to ``fallback_sampling_client`` when there
        is one, else raise :class:`~sail_lite.SailUnsupportedError`."""
        unsupported = _unsupported_sample_arguments(
            include_prompt_logprobs=include_prompt_logprobs,
            topk_prompt_logprobs=topk_prompt_logprobs,
            topk_sample_logprobs=topk_sample_logprobs,
            target_prompt_logprobs=target_prompt_logprobs,
            prompt_alt_tokens_k=prompt_alt_tokens_k,
            prompt_logprobs_last_n=prompt_logprobs_last_n,
        )
        if unsupported is not None:
            fallback = self._require_fallback(unsupported)
            return fallback.sample(
                prompt,
                num_samples,
                sampling_params,
                include_prompt_logprobs=include_prompt_logprobs,
                topk_prompt_logprobs=topk_prompt_logprobs,
                topk_sample_logprobs=topk_sample_logprobs,
                target_prompt_logprobs=target_prompt_logprobs,
                prompt_alt_tokens_k=prompt_alt_tokens_k,
                prompt_logprobs_last_n=prompt_logprobs_last_n,
            )
        n = v.positive_int("num_samples", num_samples, maximum=10_000)
        params = _SailParams.from_tinker(sampling_params)
        completer = self._completer_for(params.temperature, params.top_p)
        return submit(self._sample(completer, prompt, n, params))

    async def sample_async(self, prompt: Any, num_samples: int, sampling_params: Any, **kwargs: Any) -> Any:
        """Deprecated in tinker; kept for recipes that still call it: ``await sample(...)``."""
        return await self.sample(prompt, num_samples, sampling_params, **kwargs)

    def compute_logprobs(self, prompt: Any, prompt_logprobs_last_n: int | None = None) -> Any:
        """Prompt logprobs: Sail's Responses API has none, so this needs ``fallback_sampling_client``."""
        fallback = self._require_fallback("compute_logprobs")
        return fallback.compute_logprobs(prompt, prompt_logprobs_last_n=prompt_logprobs_last_n)

    async def compute_logprobs_async(self, prompt: Any, prompt_logprobs_last_n: int | None = None) -> Any:
        return await self.compute_logprobs(prompt, prompt_logprobs_last_n=prompt_logprobs_last_n)

    def get_base_model(self) -> str:
        return self._base_model

    async def get_base_model_async(self) -> str:
        return self._base_model

    def get_tokenizer(self) -> Any:
        from tinker_cookbook.tokenizer_utils import get_tokenizer

        return get_tokenizer(self._base_model)

    # -- configuration ------------------------------------------------------------------------

    @property
    def model(self) -> str:
        return self._model

    @property
    def tinker_path(self) -> str | None:
        return self._tinker_path

    @property
    def completion_window(self) -> str:
        return str(self._completer_kwargs.get("completion_window", "priority"))

    @property
    def adapter_config(self) -> Any:
        return self._completer_kwargs.get("adapter_config")

    def __repr__(self) -> str:
        shown = [f"model={self._model!r}", f"completion_window={self.completion_window!r}"]
        if self._base_model != self._model:
            shown.append(f"base_model={self._base_model!r}")
        if self._tinker_path is not None:
            shown.append(f"tinker_path={self._tinker_path!r}")
        if self._completer_kwargs.get("lora") is not None:
            shown.append(f"lora={self._completer_kwargs['lora']!r}")
        if self._completer_kwargs.get("tinker_lora_signed_url") is not None:
            shown.append("tinker_lora_signed_url=<signed url>")
        return f"SailSamplingClient({', '.join(shown)})"

    def __reduce__(self) -> tuple[Any, ...]:
        if self._completer_kwargs.get("tinker_lora_signed_url") is not None:
            raise SailError(
                "a SailSamplingClient built from tinker_lora_signed_url does not pickle: a signed URL is "
                "a credential and never travels in a pickle. Build it with tinker_path=... (and "
                "TINKER_API_KEY in the workers' environment) so each process resolves its own URL."
            )
        kwargs = {k: val for k, val in self._completer_kwargs.items() if k not in _SECRET_ARGUMENTS}
        config = {
            "model": self._model,
            "base_model": self._base_model,
            "tinker_path": self._tinker_path,
            "fallback_sampling_client": self._fallback,
            **kwargs,
        }
        return (_rebuild, (config,))

    # -- internals ----------------------------------------------------------------------------

    def _require_fallback(self, argument: str) -> Any:
        if self._fallback is None:
            raise SailUnsupportedError(
                argument,
                "Sail's Responses API returns sampled-token logprobs only (no prompt logprobs, "
                "compute_logprobs or top-k logprobs). Pass fallback_sampling_client=<a "
                "tinker.SamplingClient> to serve these calls on Tinker",
            )
        return self._fallback

    def _completer_for(self, temperature: float, top_p: float) -> Any:
        key = (temperature, top_p)
        completer = self._completers.get(key)
        if completer is None:
            with self._completers_lock:
                completer = self._completers.get(key)
                if completer is None:
                    completer = self._build_completer(temperature, top_p)
                    self._completers[key] = completer
        return completer

    def _build_completer(self, temperature: float, top_p: float) -> Any:
        kwargs = {
            **self._completer_kwargs,
            "model": self._model,
            "max_tokens": v.MAX_TOKENS,  # each call passes its own budget
            "temperature": temperature,
            "top_p": top_p,
        }
        if self._tinker_path is None:
            from sail_lite.completer import SailTokenCompleter

            return SailTokenCompleter(**kwargs)
        from sail_lite.tinker._refreshing import RefreshingSailCompleter
        from sail_lite.tinker.checkpoint_cache import cached_checkpoint

        adapter_config = kwargs.pop("adapter_config")
        return RefreshingSailCompleter(
            tinker_path=self._tinker_path,
            adapter_config=_adapter_config_dict(adapter_config),
            completer_kwargs=kwargs,
            rest_client=self._rest_client,
            checkpoint=self._checkpoint or cached_checkpoint(self._tinker_path),
        )

    async def _sample(self, completer: Any, prompt: Any, n: int, params: _SailParams) -> Any:
        calls = [completer(prompt, params.stop, max_tokens=params.max_tokens) for _ in range(n)]
        results = await asyncio.gather(*calls) if n > 1 else [await calls[0]]
        if self._tinker_path is not None:
            from sail_lite.tinker.checkpoint_cache import remember_checkpoint

            remember_checkpoint(completer.checkpoint)
        sequences = [
            tinker_types.SampledSequence(
                stop_reason=r.stop_reason,
                sequence_id=r.sequence_id or f"sail-{id(r):x}",
                _tokens_list=r.tokens,
                _logprobs_list=r.maybe_logprobs,
            )
            for r in results
        ]
        # tinker counts cache hits on the shared prompt once, not per sample.
        hits = max((getattr(r, "prompt_cache_hit_tokens", 0) or 0 for r in results), default=0)
        return tinker_types.SampleResponse(sequences=sequences, prompt_cache_hit_tokens=hits)


def _rebuild(config: dict[str, Any]) -> SailSamplingClient:
    try:
        return SailSamplingClient(**config)
    except SailArgumentError as exc:
        if getattr(exc, "argument", None) != "api_key":
            raise
        raise SailArgumentError(
            "api_key",
            "SAIL_API_KEY in this process's environment: a SailSamplingClient pickles without its "
            "key (keys never travel in pickles), so rollout workers read their own",
        ) from None


def _adapter_config_dict(adapter_config: Any) -> dict[str, Any]:
    if isinstance(adapter_config, Mapping):
        return dict(adapter_config)
    import json

    return dict(json.loads(v.adapter_config_object_json(adapter_config)))


def _unsupported_sample_arguments(**arguments: Any) -> str | None:
    """The first argument asking for something Sail's Responses API cannot return."""
    defaults = {
        "include_prompt_logprobs": False,
        "topk_prompt_logprobs": 0,
        "topk_sample_logprobs": 0,
        "target_prompt_logprobs": None,
        "prompt_alt_tokens_k": 0,
        "prompt_logprobs_last_n": None,
    }
    for name, default in defaults.items():
        if arguments[name] != default and arguments[name] is not None:
            return name
    return None


class _SailParams:
    """tinker ``SamplingParams`` checked against what a Sail create can carry."""

    __slots__ = ("max_tokens", "temperature", "top_p", "stop")

    def __init__(self, max_tokens: int | None, temperature: float, top_p: float, stop: Any) -> None:
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.stop = stop

    @classmethod
    def from_tinker(cls, params: Any) -> _SailParams:
        if params is None:
            raise SailArgumentError("sampling_params", "a tinker.SamplingParams")
        top_k = getattr(params, "top_k", -1)
        if top_k not in (-1, None):
            raise SailUnsupportedError("sampling_params.top_k", "Sail has no top-k sampling: leave top_k=-1", top_k)
        seed = getattr(params, "seed", None)
        if seed is not None:
            raise SailUnsupportedError("sampling_params.seed", "Sail's protocol has no seed: leave seed=None", seed)
        max_tokens = getattr(params, "max_tokens", None)
        if max_tokens is None:
            raise SailArgumentError("sampling_params.max_tokens", "a token budget (Sail needs max_output_tokens)")
        stop = getattr(params, "stop", None)
        if isinstance(stop, str):
            stop = [stop]
        return cls(
            max_tokens=v.positive_int("sampling_params.max_tokens", max_tokens, maximum=v.MAX_TOKENS),
            temperature=v.number_in("sampling_params.temperature", params.temperature, 0.0, 2.0),
            top_p=v.number_in("sampling_params.top_p", params.top_p, 0.0, 1.0),
            stop=list(stop) if stop is not None else None,
        )

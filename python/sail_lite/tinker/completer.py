"""``sail_completer_for_checkpoint``: a Sail TokenCompleter for a Tinker checkpoint that keeps its
signed URL fresh through a long RL loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sail_lite.errors import MissingDependencyError, SailArgumentError
from sail_lite.tinker.adapter_config import DEFAULT_MAX_LORA_RANK, AdapterConfigSource, load_adapter_config
from sail_lite.tinker.paths import TinkerPath, parse_tinker_path
from sail_lite.tinker.signed_urls import (
    DEFAULT_REFRESH_MARGIN_SECONDS,
    DEFAULT_REFRESH_RETRY_SECONDS,
    DEFAULT_UNKNOWN_EXPIRY_SECONDS,
    validate_ttl_seconds,
)
from sail_lite.tinker.tinker_compat import rest_client_async

if TYPE_CHECKING:
    from sail_lite.tinker._refreshing import RefreshingSailCompleter

__all__ = ["sail_completer_for_checkpoint"]


def _refreshing_cls() -> type[RefreshingSailCompleter]:
    try:
        from sail_lite.tinker._refreshing import RefreshingSailCompleter
    except ImportError as exc:
        raise MissingDependencyError(
            "sail_completer_for_checkpoint needs tinker-cookbook (its TokenCompleter base class): pip install 'sail-lite[tinker]'"
        ) from exc
    return RefreshingSailCompleter


async def sail_completer_for_checkpoint(
    service_client_or_rest_client: Any,
    tinker_path: str | TinkerPath,
    *,
    adapter_config: AdapterConfigSource,
    ttl_seconds: int | None = None,
    refresh_margin_seconds: float = DEFAULT_REFRESH_MARGIN_SECONDS,
    unknown_expiry_seconds: float = DEFAULT_UNKNOWN_EXPIRY_SECONDS,
    refresh_retry_seconds: float = DEFAULT_REFRESH_RETRY_SECONDS,
    base_model: str | None = None,
    max_rank: int = DEFAULT_MAX_LORA_RANK,
    completer_cls: type[Any] | Callable[..., Any] | None = None,
    clock: Callable[[], float] | None = None,
    **completer_kwargs: Any,
) -> RefreshingSailCompleter:
    """A ``TokenCompleter`` sampling on Sail from the Tinker LoRA checkpoint ``tinker_path``.

    Resolves the checkpoint's signed URL now (setting its TTL first when ``ttl_seconds`` is given,
    so per-step checkpoints get cleaned up), builds ``sail_lite.SailTokenCompleter(
    tinker_lora_signed_url=<url>, adapter_config=<validated config>, tinker_lora_name=tinker_path,
    **completer_kwargs)`` and returns a wrapper that re-resolves the URL and rebuilds that
    completer when the URL is within ``refresh_margin_seconds`` of expiring.

    - ``service_client_or_rest_client``: ``tinker.ServiceClient``, ``tinker.RestClient`` or
      ``None`` (``tinker.RestClient()`` from ``TINKER_BASE_URL`` / ``TINKER_API_KEY``)
    - ``adapter_config``: dict, JSON string or path to ``adapter_config.json`` (validated with
      :func:`load_adapter_config` against ``base_model`` and ``max_rank``)
    - ``completer_kwargs``: the rest of ``SailTokenCompleter``'s arguments (``model``,
      ``max_tokens``, ``temperature``, ``completion_window`` ...); ``lora`` and
      ``tinker_lora_signed_url`` are the wrapper's to set
    - ``refresh_margin_seconds``: how long before expiry a URL is replaced (capped at half the
      URL's lifetime). Sail downloads the adapter when it schedules the request, so for slow
      completion windows (``standard``, ``flex``) use a margin longer than the expected wait; a
      URL the server reports as expired anyway is re-resolved and the sample retried once
    - ``completer_cls``: what to build instead of ``sail_lite.SailTokenCompleter`` (tests)
    - ``clock``: epoch-seconds clock (defaults to ``time.time``), for tests
    """
    reserved = {"lora", "tinker_lora_signed_url"}.intersection(completer_kwargs)
    if reserved:
        raise SailArgumentError(
            sorted(reserved)[0],
            "to be left out: sail_completer_for_checkpoint passes the checkpoint's signed URL itself",
            None,
        )
    tp = parse_tinker_path(tinker_path)
    ttl = validate_ttl_seconds(ttl_seconds)
    cfg = load_adapter_config(adapter_config, base_model=base_model, max_rank=max_rank)
    cls = _refreshing_cls()
    rest = await rest_client_async(service_client_or_rest_client)
    # Validates the timing arguments before anything is sent to Tinker.
    completer = cls(
        tinker_path=tp,
        adapter_config=cfg,
        completer_kwargs=completer_kwargs,
        rest_client=rest,
        ttl_seconds=ttl,
        refresh_margin_seconds=refresh_margin_seconds,
        unknown_expiry_seconds=unknown_expiry_seconds,
        refresh_retry_seconds=refresh_retry_seconds,
        completer_cls=completer_cls,
        clock=clock,
    )
    await completer.refresh()
    return completer

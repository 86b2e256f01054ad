"""The tinker-version compatibility layer: talking to whichever tinker is installed.

tinker's RestClient has changed shape across releases (sync methods returning
``concurrent.futures.Future``, ``_async`` twins, deprecated names, external-weights exports
replacing archive URLs). Everything that knows about those differences lives here;
:mod:`sail_lite.tinker.signed_urls` asks it which method to call and calls it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import warnings
from typing import Any, Final, NoReturn

from sail_lite._redact import redact_secrets
from sail_lite.errors import SailArgumentError, SailError
from sail_lite.tinker.errors import SignedUrlUnavailableError, TinkerCheckpointError, TinkerNotInstalledError
from sail_lite.tinker.paths import TinkerPath

__all__ = [
    "ARCHIVE_METHOD",
    "EXTERNAL_METHOD",
    "TTL_METHOD",
    "REST_METHODS",
    "import_tinker",
    "tinker_version",
    "has_method",
    "call_rest",
    "rest_client_async",
    "raise_wrapped",
    "unavailable_error",
    "plan_url_method",
]

ARCHIVE_METHOD: Final = "get_checkpoint_archive_url_from_tinker_path"
EXTERNAL_METHOD: Final = "get_external_weights_urls"
TTL_METHOD: Final = "set_checkpoint_ttl_from_tinker_path"
REST_METHODS: Final = (TTL_METHOD, EXTERNAL_METHOD, ARCHIVE_METHOD)


def import_tinker() -> Any:
    try:
        import tinker
    except ImportError as exc:
        raise TinkerNotInstalledError(
            "the tinker package is needed to resolve Tinker checkpoints: pip install 'sail-lite[tinker]' "
            "(or pass a tinker ServiceClient/RestClient you already have)"
        ) from exc
    return tinker


def tinker_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("tinker")
    except Exception:
        return None


def _is_deprecated(fn: object) -> bool:
    return getattr(fn, "__deprecated__", None) is not None


def has_method(obj: object, name: str) -> bool:
    return callable(getattr(obj, name, None)) or callable(getattr(obj, f"{name}_async", None))


def _looks_like_rest_client(obj: object) -> bool:
    return any(has_method(obj, name) for name in REST_METHODS)


async def _settle(result: Any) -> Any:
    """Await whatever a tinker method returned: a coroutine, an ``APIFuture`` (awaitable), a
    ``concurrent.futures.Future`` (older sync-only methods), or a plain value."""
    for _ in range(4):
        if inspect.isawaitable(result):
            result = await result
        elif isinstance(result, concurrent.futures.Future):
            result = await asyncio.wrap_future(result)
        else:
            break
    return result


async def call_rest(rest: Any, name: str, *args: Any) -> Any:
    """Call ``name`` on a RestClient of any tinker release, without blocking the event loop.

    Preference: a non-deprecated ``<name>_async`` coroutine (older releases, whose plain method is
    sync-only), else the plain method (0.38: returns an awaitable ``APIFuture``), else a deprecated
    ``_async`` twin with its deprecation warning silenced.
    """
    plain = getattr(rest, name, None)
    twin = getattr(rest, f"{name}_async", None)
    if callable(twin) and not _is_deprecated(twin):
        result = twin(*args)
    elif callable(plain):
        result = plain(*args)
    elif callable(twin):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            result = twin(*args)
    else:  # pragma: no cover - callers check has_method first
        raise AttributeError(name)
    return await _settle(result)


async def rest_client_async(service_client_or_rest_client: Any) -> Any:
    """A RestClient from a RestClient (returned as is), a ServiceClient (``create_rest_client()``,
    deprecated in 0.38 but the only way to keep its base URL and key), or ``None`` (construct
    ``tinker.RestClient()`` from ``TINKER_BASE_URL`` / ``TINKER_API_KEY``).

    Construction talks to the server (tinker fetches its client config), so it runs in a thread.
    """
    obj = service_client_or_rest_client
    if obj is None:
        tinker = import_tinker()
        rest_cls = getattr(tinker, "RestClient", None)
        if rest_cls is None:  # pragma: no cover - every tinker release has it
            raise TinkerNotInstalledError("the installed tinker has no RestClient")
        try:
            return await asyncio.to_thread(rest_cls)
        except TypeError as exc:
            raise SailArgumentError(
                "service_client_or_rest_client",
                "a tinker.ServiceClient or RestClient (this tinker release cannot construct RestClient() directly)",
                None,
            ) from exc
        except SailError:
            raise
        except Exception as exc:
            raise TinkerCheckpointError(f"could not construct tinker.RestClient(): {type(exc).__name__}: {redact_secrets(str(exc))}") from (
                exc if redact_secrets(str(exc)) == str(exc) else None
            )
    if _looks_like_rest_client(obj):
        return obj
    create = getattr(obj, "create_rest_client", None)
    if callable(create):

        def _create() -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                return create()

        return await asyncio.to_thread(_create)
    raise SailArgumentError(
        "service_client_or_rest_client",
        "a tinker.ServiceClient, a tinker.RestClient, or None (construct tinker.RestClient() from the environment)",
        type(obj).__name__,
    )


def raise_wrapped(what: str, tp: TinkerPath, exc: BaseException) -> NoReturn:
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        status = None
    hint = ""
    if status == 404:
        hint = " (no such checkpoint, or it belongs to another account, or its TTL already expired)"
    elif status in (401, 403):
        hint = " (check TINKER_API_KEY)"
    text = redact_secrets(str(exc))
    shown_status = f" with HTTP {status}" if status is not None else ""
    err = TinkerCheckpointError(
        f"{what} for {tp.path} failed{shown_status}{hint}: {type(exc).__name__}: {text}",
        tinker_path=tp.path,
        status=status,
    )
    if text == str(exc):  # chain the original only when it carries no secret
        raise err from exc
    raise err from None


def unavailable_error(rest: Any, tp: TinkerPath) -> SignedUrlUnavailableError:
    module = type(rest).__module__ or ""
    if module.split(".", 1)[0] == "tinker":
        version = tinker_version()
        who = f"the installed tinker{f' {version}' if version else ''}"
    else:
        who = f"this RestClient ({type(rest).__name__})"
    if tp.kind == "external":
        return SignedUrlUnavailableError(
            f"{who} offers no way to get a signed URL for {tp.path}: its RestClient has neither "
            f"{EXTERNAL_METHOD} nor {ARCHIVE_METHOD}; upgrade tinker (pip install -U tinker)",
            tinker_path=tp.path,
        )
    kind = "sampler" if tp.kind == "sampler" else "training-state"
    return SignedUrlUnavailableError(
        f"{who} offers no way to get a signed URL for a {kind} checkpoint ({tp.path}): only older tinker "
        f"releases had {ARCHIVE_METHOD}, and current ones sign external_weights exports only. "
        "Export the LoRA with `await training_client.save_weights_external(name)` and pass the "
        "tinker://<run>/external_weights/<name> path it returns instead "
        "(or upload the adapter to Sail and pass lora=<its name>)",
        tinker_path=tp.path,
    )


def plan_url_method(rest: Any, tp: TinkerPath) -> str:
    """Which RestClient method will produce the URL (decided before any request is made)."""
    if tp.kind == "external" and has_method(rest, EXTERNAL_METHOD):
        return EXTERNAL_METHOD
    if has_method(rest, ARCHIVE_METHOD):
        return ARCHIVE_METHOD
    raise unavailable_error(rest, tp)

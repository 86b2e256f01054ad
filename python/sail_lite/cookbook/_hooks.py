"""The points where sail-lite hooks into tinker / tinker-cookbook, and nothing else.

``tinker_cookbook.rl.train`` (every mode: synchronous, stream-minibatch, async/off-policy) gets each
step's sampling client from one of two ``tinker.TrainingClient`` methods:

- ``create_sampling_client(sampler_path)`` after a periodic checkpoint, and at the start of the
  async mode;
- ``save_weights_and_get_sampling_client()`` on every other step.

Both are replaced, on the class, by versions that export the current weights in the form Sail
loads (``save_weights_external`` with a TTL), resolve the signed URL, and hand back a
:class:`~sail_lite.SailSamplingClient` for them. Rollouts, evaluators and executor workers then
sample on Sail without knowing it. A third hook drops token provenance from the datums sent to
``forward_backward``: provenance names sampler sequences, and Sail's sequence ids mean nothing
to Tinker.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sail_lite._background import SailFuture, submit_in_background
from sail_lite.cookbook._resume import RunScopes, run_scopes_for
from sail_lite.errors import MissingDependencyError, SailArgumentError, SailError, SailUnsupportedError
from sail_lite.scope import SamplingScope

logger = logging.getLogger("sail_lite.cookbook")

# Tested pairs; the tinker extra in pyproject.toml declares the same ranges.
SUPPORTED_TINKER = ((0, 38), (0, 39))  # >= 0.38, < 0.39
SUPPORTED_COOKBOOK = ((0, 6), (0, 7))  # >= 0.6, < 0.7
DEFAULT_TTL_SECONDS = 3 * 3600
DEFAULT_LORA_ALPHA = 32


@dataclass(frozen=True)
class SailSettings:
    """What ``sample_on_sail`` needs to know about Sail (see its docstring)."""

    model: str
    completion_window: str = "priority"
    adapter_config: Any = None
    adapter_base_model: str | None = None
    ttl_seconds: int | None = DEFAULT_TTL_SECONDS
    prompt_logprobs_on_tinker: bool = False
    reattach: bool = True
    client_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepExport:
    """One step's weights as exported for Sail (kept for tests and summaries)."""

    label: str
    tinker_path: str
    adapter_config: dict[str, Any]


class SailInstallation:
    """The hooks of one ``sample_on_sail`` block: its settings and the step exports so far."""

    def __init__(self, settings: SailSettings) -> None:
        self.settings = settings
        self.exports: list[StepExport] = []
        self.originals: dict[tuple[Any, str], Any] = {}
        self.labels = itertools.count()
        self.lock = threading.Lock()
        # The sampling scopes of the rl.train.main call in progress (see _resume.py), if any.
        self.run: RunScopes | None = None

    def next_scope(self) -> SamplingScope | None:
        """The scope of the next weights version the loop asks for (None outside rl.train.main)."""
        run = self.run
        return run.next_scope() if run is not None else None


_current: SailInstallation | None = None
_install_lock = threading.Lock()


def _version(dist: str, module: Any) -> tuple[int, int]:
    from importlib import metadata

    try:
        text = metadata.version(dist)
    except metadata.PackageNotFoundError:
        text = getattr(module, "__version__", "0.0")
    parts = [int(p) for p in text.split(".")[:2] if p.isdigit()]
    major, minor = [*parts, 0, 0][:2]
    return major, minor


def _check_supported() -> tuple[Any, Any]:
    try:
        import tinker
        import tinker_cookbook
        import tinker_cookbook.rl.train  # the loop being hooked must import
    except ImportError as exc:
        raise MissingDependencyError(
            f"sample_on_sail needs tinker and tinker-cookbook's RL loop ({exc}): pip install 'sail-lite[tinker]'"
        ) from exc
    for dist, module, (low, high) in (
        ("tinker", tinker, SUPPORTED_TINKER),
        ("tinker-cookbook", tinker_cookbook, SUPPORTED_COOKBOOK),
    ):
        version = _version(dist, module)
        if not low <= version < high:
            raise MissingDependencyError(
                f"sample_on_sail supports {dist} >= {low[0]}.{low[1]}, < {high[0]}.{high[1]}; {version[0]}.{version[1]} is installed"
            )
    training_client = tinker.TrainingClient
    for name in ("create_sampling_client", "save_weights_and_get_sampling_client", "save_weights_external", "forward_backward"):
        if not callable(getattr(training_client, name, None)):
            raise MissingDependencyError(f"this tinker's TrainingClient has no {name}(): sample_on_sail cannot hook it")
    return tinker, tinker_cookbook


def install(settings: SailSettings) -> SailInstallation:
    """Put the hooks in place. One installation per process at a time."""
    global _current
    tinker, _ = _check_supported()
    with _install_lock:
        if _current is not None:
            raise SailError("sample_on_sail is already active in this process; leave it before entering again")
        inst = SailInstallation(settings)
        cls = tinker.TrainingClient
        for name, make in (
            ("create_sampling_client", _make_create_sampling_client),
            ("save_weights_and_get_sampling_client", _make_save_weights_and_get_sampling_client),
            ("forward_backward", _make_forward_backward),
        ):
            original = cls.__dict__[name]
            inst.originals[(cls, name)] = original
            setattr(cls, name, make(inst, original))
        import tinker_cookbook.rl.train as rl_train

        inst.originals[(rl_train, "main")] = rl_train.main
        rl_train.main = _make_checked_main(inst, rl_train.main)
        _current = inst
    logger.info("sampling on Sail (%s, window %s)", settings.model, settings.completion_window)
    return inst


def uninstall() -> None:
    """Restore what :func:`install` replaced (a no-op when nothing is installed)."""
    global _current
    with _install_lock:
        inst, _current = _current, None
        if inst is None:
            return
        for (owner, name), original in inst.originals.items():
            setattr(owner, name, original)


def current() -> SailInstallation | None:
    return _current


# -- the hooks --------------------------------------------------------------------------------


def _make_checked_main(inst: SailInstallation, original_main: Callable[..., Any]) -> Callable[..., Any]:
    async def main(config: Any, *args: Any, **kwargs: Any) -> Any:
        check_config(config, inst.settings)
        # Scopes per weights version, so a resumed run re-attaches to its predecessor's samples.
        scoped = inst.settings.reattach and inst.settings.completion_window != "asap"
        inst.run = run_scopes_for(config) if scoped else None
        try:
            return await original_main(config, *args, **kwargs)
        finally:
            inst.run = None

    main.__doc__ = original_main.__doc__
    main.__wrapped__ = original_main  # type: ignore[attr-defined]
    return main


def check_config(config: Any, settings: SailSettings) -> None:
    """Reject, before the first step, RL options that cannot work with sampling on Sail."""
    records = getattr(config, "records_stability_info", None)
    if callable(records) and records():
        where = "async_config.loss_fn" if getattr(config, "async_config", None) is not None else "loss_fn"
        raise SailUnsupportedError(
            where,
            "'stable_reinforce' trains on stability information Tinker's sampler records per sequence, "
            "which Sail cannot provide: use another loss_fn",
        )
    if getattr(config, "compute_post_kl", False) and not settings.prompt_logprobs_on_tinker:
        raise SailUnsupportedError(
            "compute_post_kl",
            "it needs prompt logprobs, which Sail does not return: pass prompt_logprobs_on_tinker=True "
            "to sample_on_sail (a Tinker sampling client per step serves those calls) or turn it off",
        )


def _make_create_sampling_client(inst: SailInstallation, original: Callable[..., Any]) -> Callable[..., Any]:
    def create_sampling_client(
        self: Any, model_path: str, retry_config: Any = None, record_stability_info: bool = False
    ) -> SailFuture[Any]:
        _refuse_stability_info(record_stability_info)
        label = _label_from_path(model_path)
        scope = inst.next_scope()  # here, in the order the loop asks, not in the background

        def fallback() -> Any:
            return original(self, model_path, retry_config=retry_config).result()

        return submit_in_background(_sail_client_for_current_weights(inst, self, label, fallback, scope))

    create_sampling_client.__wrapped__ = original  # type: ignore[attr-defined]
    return create_sampling_client


def _make_save_weights_and_get_sampling_client(inst: SailInstallation, original: Callable[..., Any]) -> Callable[..., Any]:
    def save_weights_and_get_sampling_client(
        self: Any,
        name: str | None = None,
        retry_config: Any = None,
        record_stability_info: bool = False,
        kind: str = "snapshot",
    ) -> SailFuture[Any]:
        _refuse_stability_info(record_stability_info)
        if kind != "snapshot":
            raise SailUnsupportedError("kind", "Sail samples fixed weights: use kind='snapshot'", kind)
        label = f"snapshot-{next(inst.labels):06d}"
        scope = inst.next_scope()

        def fallback() -> Any:
            return original(self, retry_config=retry_config).result()

        return submit_in_background(_sail_client_for_current_weights(inst, self, label, fallback, scope))

    save_weights_and_get_sampling_client.__wrapped__ = original  # type: ignore[attr-defined]
    return save_weights_and_get_sampling_client


def _make_forward_backward(inst: SailInstallation, original: Callable[..., Any]) -> Callable[..., Any]:
    def forward_backward(self: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        return original(self, [_without_provenance(d) for d in data], *args, **kwargs)

    forward_backward.__wrapped__ = original  # type: ignore[attr-defined]
    return forward_backward


def _without_provenance(datum: Any) -> Any:
    if getattr(datum, "model_input_spans", None) is None and getattr(datum, "loss_fn_input_spans", None) is None:
        return datum
    return dataclasses.replace(datum, model_input_spans=None, loss_fn_input_spans=None)


def _refuse_stability_info(record_stability_info: bool) -> None:
    if record_stability_info:
        raise SailUnsupportedError(
            "record_stability_info",
            "Sail cannot record Tinker's per-sequence stability information (loss_fn='stable_reinforce')",
        )


def _label_from_path(model_path: str) -> str:
    from sail_lite.tinker.paths import parse_tinker_path

    return parse_tinker_path(model_path, argument="model_path").checkpoint_id


async def _sail_client_for_current_weights(
    inst: SailInstallation,
    training_client: Any,
    label: str,
    tinker_fallback: Callable[[], Any],
    scope: SamplingScope | None,
) -> Any:
    """Export the training client's current weights for Sail and return a sampling client for them."""
    import tinker

    from sail_lite.sampling_client import SailSamplingClient
    from sail_lite.tinker.signed_urls import resolve_tinker_checkpoint

    settings = inst.settings
    info = training_client.get_info()  # blocking is fine: this runs on the background loop
    adapter_config = _adapter_config(settings, info)
    name = f"sail-{label}"
    saved = await training_client.save_weights_external(name, ttl_seconds=settings.ttl_seconds)
    rest = tinker.RestClient(training_client.holder)
    checkpoint = await resolve_tinker_checkpoint(rest, saved.path)
    with inst.lock:
        inst.exports.append(StepExport(label=label, tinker_path=saved.path, adapter_config=adapter_config))
    fallback = tinker_fallback() if settings.prompt_logprobs_on_tinker else None
    logger.info("step weights %s exported for Sail as %s", label, saved.path)
    return SailSamplingClient(
        model=settings.model,
        base_model=info.model_data.model_name or settings.model,
        tinker_path=saved.path,
        adapter_config=adapter_config,
        rest_client=rest,
        checkpoint=checkpoint,
        completion_window=settings.completion_window,
        fallback_sampling_client=fallback,
        sampling_scope=scope,
        **settings.client_kwargs,
    )


def _adapter_config(settings: SailSettings, info: Any) -> dict[str, Any]:
    """The checkpoint's PEFT adapter config: the one given, or one derived from the run's LoRA."""
    from sail_lite.tinker.adapter_config import load_adapter_config

    if settings.adapter_config is not None:
        return load_adapter_config(settings.adapter_config)
    rank = getattr(info, "lora_rank", None)
    if not rank:
        raise SailArgumentError(
            "adapter_config",
            "an adapter config: the training run reports no LoRA rank to derive one from",
        )
    derived = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": DEFAULT_LORA_ALPHA,
        "target_modules": "all-linear",
        "base_model_name_or_path": settings.adapter_base_model or settings.model,
    }
    return load_adapter_config(json.dumps(derived))

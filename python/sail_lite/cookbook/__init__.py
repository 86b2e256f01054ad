"""Run tinker-cookbook's own RL loop (``tinker_cookbook.rl.train.main``) with sampling on Sail.

::

    from sail_lite.cookbook import sample_on_sail

    with sample_on_sail(model="moonshotai/Kimi-K2.6", completion_window="priority"):
        await tinker_cookbook.rl.train.main(config)

Training, checkpoints, logging and metrics stay the cookbook's and Tinker's; every rollout of
every step samples on Sail from that step's weights (see :mod:`sail_lite.cookbook._hooks` for
the exact hook points). From the command line::

    python -m sail_lite.cookbook tinker_cookbook.recipes.math_rl.train --sail-model ... [recipe args]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sail_lite.cookbook._hooks import (
    DEFAULT_TTL_SECONDS,
    SailInstallation,
    SailSettings,
    StepExport,
    check_config,
    current,
    install,
    uninstall,
)

__all__ = ["sample_on_sail", "install", "uninstall", "SailSettings", "SailInstallation", "StepExport", "check_config", "exports"]


@contextmanager
def sample_on_sail(
    *,
    model: str,
    completion_window: str = "priority",
    adapter_config: Any = None,
    adapter_base_model: str | None = None,
    ttl_seconds: int | None = DEFAULT_TTL_SECONDS,
    prompt_logprobs_on_tinker: bool = False,
    reattach: bool = True,
    **client_kwargs: Any,
) -> Iterator[SailInstallation]:
    """Inside this block, the cookbook's RL loop samples on Sail. Yields the installation, whose
    ``exports`` lists each step's weights exported for Sail.

    - ``model``: the base model's name on Sail; the training run's LoRA is applied to it.
    - ``completion_window``: Sail's scheduling tier for every rollout sample.
    - ``adapter_config``: the PEFT adapter config Sail gets with each step's weights (dict, JSON
      or path); by default derived from the training run (its LoRA rank, ``lora_alpha`` 32,
      ``target_modules`` "all-linear", ``base_model_name_or_path`` = ``adapter_base_model`` or
      ``model``).
    - ``ttl_seconds``: TTL of each step's exported weights on Tinker (3600 s .. 10 years, or
      None to keep them), so per-step exports do not pile up.
    - ``prompt_logprobs_on_tinker``: also make a Tinker sampling client per step to serve what
      Sail cannot (``compute_logprobs`` for ``compute_post_kl``); off by default, and then such
      calls raise :class:`~sail_lite.SailUnsupportedError`.
    - ``reattach``: sample each weights version of an ``rl.train.main`` run in a sampling scope
      with a response journal in ``<log_path>/sail_responses/`` (see
      :mod:`sail_lite.cookbook._resume`), so a run resumed from its checkpoint after a crash
      re-attaches to the samples already started instead of paying for them again (default on;
      not on ``asap``, which cannot carry idempotency keys). With a rollout executor, each worker
      process counts identical requests on its own: two groups of one batch with identical
      prompts sampled in different workers then share their samples.
    - ``client_kwargs``: the rest of :class:`~sail_lite.SailSamplingClient`'s arguments
      (``base_url``, ``api_key``, ``poll_timeout``, ``metadata``, ...).

    Rollout executors (spawn process pools, :class:`~sail_lite.ray_executor.RayExecutor`) need
    ``SAIL_API_KEY``, ``TINKER_API_KEY`` (and any ``SAIL_API_URL`` / ``TINKER_BASE_URL``) in the
    workers' environment: sampling clients travel to workers without secrets.
    """
    from sail_lite.tinker.signed_urls import validate_ttl_seconds

    settings = SailSettings(
        model=model,
        completion_window=completion_window,
        adapter_config=adapter_config,
        adapter_base_model=adapter_base_model,
        ttl_seconds=validate_ttl_seconds(ttl_seconds),
        prompt_logprobs_on_tinker=bool(prompt_logprobs_on_tinker),
        reattach=bool(reattach),
        client_kwargs=dict(client_kwargs),
    )
    _check_client_kwargs(settings)
    installation = install(settings)
    try:
        yield installation
    finally:
        uninstall()


def _check_client_kwargs(settings: SailSettings) -> None:
    """Build one client from the settings, so a bad argument fails before training starts."""
    from sail_lite.errors import SailArgumentError
    from sail_lite.sampling_client import SailSamplingClient

    for reserved in ("lora", "tinker_lora_signed_url", "tinker_path", "adapter_config", "completion_window", "sampling_scope"):
        if reserved in settings.client_kwargs:
            raise SailArgumentError(reserved, "to be left out: sample_on_sail sets it for each step")
    SailSamplingClient(model=settings.model, completion_window=settings.completion_window, **settings.client_kwargs)


def exports() -> list[StepExport]:
    """The step weights exported for Sail since ``sample_on_sail`` was entered (oldest first)."""
    inst = current()
    return list(inst.exports) if inst is not None else []

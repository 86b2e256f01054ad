"""``RayExecutor``: a ``concurrent.futures.Executor`` that runs each call as a Ray task.

Ray ships no ``concurrent.futures.Executor`` of its own (2.60), and tinker-cookbook's rollout hook
(``rl.train.main(config, rollout_executor=...)``) takes one, so this is the thin adapter the
cookbook's docs ask for: ``submit`` is ``ray.remote(...).remote(...)`` and the returned future is
Ray's own ``ObjectRef.future()``. Each Ray worker process that runs rollouts builds its own
sail-lite engine on first use. Install with ``pip install 'sail-lite[ray]'``.

::

    from sail_lite.ray_executor import RayExecutor

    with sample_on_sail(model=...), RayExecutor(address="auto") as executor:
        await tinker_cookbook.rl.train.main(config, rollout_executor=executor)

Workers need ``SAIL_API_KEY`` and ``TINKER_API_KEY`` in their environment (secrets never travel
with the tasks); on a cluster, pass them with ``runtime_env={"env_vars": {...}}`` or set them on
every node.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from sail_lite.errors import MissingDependencyError, SailError

__all__ = ["RayExecutor"]


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


class RayExecutor(concurrent.futures.Executor):
    """Runs ``fn(*args, **kwargs)`` as Ray tasks.

    - ``address``: the cluster to join (``"auto"``, ``"ray://host:10001"``, ...). ``None`` joins the
      cluster Ray is already connected to, or starts a local one (``ray.init()``).
    - ``init_kwargs``: more arguments for ``ray.init`` when this executor calls it (e.g.
      ``runtime_env``, ``num_cpus``); the executor calls ``ray.shutdown()`` on ``shutdown()`` only
      if it called ``ray.init`` itself.
    - ``task_options``: options for each task (``num_cpus``, ``max_retries``, ``runtime_env`` ...);
      ``num_cpus`` defaults to 1. A rollout task is idempotent only within a sampling scope, so
      Ray's own task retries default to 0.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        init_kwargs: dict[str, Any] | None = None,
        task_options: dict[str, Any] | None = None,
    ) -> None:
        try:
            import ray
        except ImportError as exc:
            raise MissingDependencyError(f"RayExecutor needs Ray ({exc}): pip install 'sail-lite[ray]'") from exc
        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            ray.init(address=address, **(init_kwargs or {}))
            self._owns_ray = True
        options = {"num_cpus": 1, "max_retries": 0, **(task_options or {})}
        self._remote = ray.remote(_call).options(**options)
        self._lock = threading.Lock()
        self._pending: dict[concurrent.futures.Future[Any], Any] = {}
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new tasks after shutdown")
            ref = self._remote.remote(fn, args, kwargs)
            future: concurrent.futures.Future[Any] = ref.future()
            self._pending[future] = ref
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.pop(future, None)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            pending = dict(self._pending)
        if cancel_futures:
            for future, ref in pending.items():
                if not future.done():
                    try:
                        self._ray.cancel(ref)
                    except Exception as exc:  # a task that just finished cannot be cancelled
                        if not future.done():
                            raise SailError(f"could not cancel a Ray task: {exc}") from exc
        if wait:
            concurrent.futures.wait(list(pending))
        if self._owns_ray and wait:
            self._ray.shutdown()
            self._owns_ray = False

    def __repr__(self) -> str:
        return f"RayExecutor(pending={len(self._pending)}, owns_ray={self._owns_ray})"

"""Errors raised by the Tinker helpers, all rooted at :class:`sail_lite.errors.SailError`.

Messages never contain a signed URL or an API key: whatever text comes from elsewhere (tinker's
own exceptions, a server's error message) goes through :func:`sail_lite.tinker.redact_secrets`
before it is put into a message.
"""

from __future__ import annotations

from typing import Any

from sail_lite.errors import MissingDependencyError, SailArgumentError, SailError

__all__ = [
    "TinkerPathError",
    "AdapterConfigError",
    "TinkerCheckpointError",
    "SignedUrlUnavailableError",
    "SignedUrlExpiredError",
    "TinkerNotInstalledError",
]


class TinkerPathError(SailArgumentError):
    """A string that is not a ``tinker://<run>/<weights|sampler_weights|external_weights>/<id>`` path,
    or a checkpoint of the wrong kind for the operation.

    ``argument`` names the offending argument (``tinker_path``, ``model`` ...).
    """


class AdapterConfigError(SailArgumentError):
    """An adapter config (PEFT ``adapter_config.json``) that Sail would not accept.

    ``argument`` is ``adapter_config`` or ``adapter_config.<field>``; ``field`` is the field name
    (``None`` when the problem is the config as a whole).
    """


class TinkerCheckpointError(SailError):
    """A Tinker checkpoint operation (set its TTL, get a signed URL) failed.

    Attributes: ``tinker_path``; ``status`` (HTTP status) when tinker reported one.
    """

    def __init__(self, message: str, **fields: Any) -> None:
        fields.setdefault("tinker_path", None)
        fields.setdefault("status", None)
        super().__init__(message, **fields)


class SignedUrlUnavailableError(TinkerCheckpointError):
    """The installed tinker offers no way to get a signed URL for this kind of checkpoint.

    The message says what to do instead (typically: export the weights with
    ``training_client.save_weights_external(name)`` and pass that ``external_weights`` path).
    """


class SignedUrlExpiredError(TinkerCheckpointError):
    """A signed checkpoint URL expired (locally known expiry passed, or the server said so) and
    could not be replaced by a fresh one."""


class TinkerNotInstalledError(MissingDependencyError):
    """The ``tinker`` package is needed for this call (``pip install 'sail-lite[tinker]'``)."""

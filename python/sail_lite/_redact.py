"""The one place that keeps bearer credentials (API keys, signed URLs and their signatures,
credentials in URLs) out of reprs, messages, exception attributes and log records.

Text that crosses from the engine (error messages, log events) may quote what a server sent
back, and a hostile or careless server may echo the request: its ``Authorization`` header,
the signed adapter URL from the metadata, a value a JSON decoder rejected. So every such
text passes through :class:`Redactor` on its way into Python: a completer's own secrets are
masked by value, anything that merely looks like a credential by pattern.

Redaction lives here, in Python, rather than in the Rust engine: the secrets are known
here per completer, the URL rules are shared with the Tinker helpers, and it runs only on
the rare paths (an error, a log record), never on a successful sample.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["Redactor", "redact_url", "redact_secrets", "REDACTED"]

REDACTED = "<redacted>"

_URL_RE = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>]+""")
_TML_KEY_RE = re.compile(r"tml-[A-Za-z0-9_\-]+")
# OpenAI-style keys (sk-..., sk-proj-..., sk-sail-...).
_SK_KEY_RE = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]*)?")
# An Authorization header (or its value) echoed back: whatever follows the scheme is a secret.
_AUTH_RE = re.compile(r"(?i)\b(bearer|basic)(\s+|%20|\+)[^\s'\",;}\]]+")
# Signature-looking query parameters that survive outside a full URL (e.g. a quoted fragment).
_SIG_PARAM_RE = re.compile(
    r"(?i)\b(x-goog-signature|x-amz-signature|x-goog-credential|x-amz-credential|"
    r"x-amz-security-token|signature|sig|token|se|sp|sv|st)=[^\s&'\"]+"
)


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` with any user info, query and fragment replaced.

    A signed URL's credential lives in its query string (GCS, S3, Azure SAS), so
    ``https://storage.example/b/adapter.safetensors?<redacted>`` is safe to show.
    ``tinker://`` paths carry no credential and are returned unchanged.
    """
    if url.startswith("tinker://"):
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<redacted url>"
    if not parts.scheme or not host:
        return "<redacted url>"
    netloc = f"{host}:{port}" if port is not None else host
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    if parts.query or parts.fragment or parts.username or parts.password:
        shown += "?" + REDACTED
    return shown


def redact_secrets(text: str) -> str:
    """``text`` with every URL passed through :func:`redact_url` and anything shaped like a
    credential (bearer tokens, API keys, JWTs, signature parameters) masked."""
    text = _URL_RE.sub(lambda m: redact_url(m.group(0)), text)
    text = _AUTH_RE.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _TML_KEY_RE.sub("tml-" + REDACTED, text)
    text = _SK_KEY_RE.sub("sk-" + REDACTED, text)
    text = _JWT_RE.sub("<redacted token>", text)
    text = _SIG_PARAM_RE.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    return text


class Redactor:
    """Masks one completer's own secrets by value, then everything credential-shaped.

    ``secrets`` are the exact strings never to show (the API key, a signed URL); each URL
    among them also contributes its query string, so a server quoting only the signature
    is caught too. Built once per completer; :meth:`redact` runs only on error/log paths.
    """

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            values.add(secret)
            if "://" in secret:
                _, _, query = secret.partition("?")
                query = query.partition("#")[0]
                if len(query) >= 8:
                    values.add(query)
                    values.update(p.partition("=")[2] for p in query.split("&") if len(p.partition("=")[2]) >= 8)
        # Longest first: a signed URL is masked whole before its query alone would be.
        self._secrets = tuple(sorted(values, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return redact_secrets(text)

    def redact_optional(self, text: str | None) -> str | None:
        return None if text is None else self.redact(text)

    def __repr__(self) -> str:
        return f"Redactor(<{len(self._secrets)} secrets>)"


GENERIC = Redactor()

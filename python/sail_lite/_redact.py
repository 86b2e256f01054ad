"""Keep bearer credentials (signed URLs, API keys) out of reprs, messages and logs."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["redact_url", "redact_secrets"]

_URL_RE = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>]+""")
_TML_KEY_RE = re.compile(r"tml-[A-Za-z0-9_\-]+")
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]*)?")
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
        shown += "?<redacted>"
    return shown


def redact_secrets(text: str) -> str:
    """``text`` with every URL passed through :func:`redact_url` and API keys / JWTs masked."""
    text = _URL_RE.sub(lambda m: redact_url(m.group(0)), text)
    text = _TML_KEY_RE.sub("tml-<redacted>", text)
    text = _JWT_RE.sub("<redacted token>", text)
    text = _SIG_PARAM_RE.sub(lambda m: f"{m.group(1)}=<redacted>", text)
    return text

"""Type stubs for the Rust extension ``sail_lite._core``."""

from typing import Sequence

__version__: str

class SamplerClient:
    def __init__(
        self,
        *,
        protocol: str,
        base_url: str,
        api_key: str | None,
        model: str,
        temperature: float,
        top_p: float,
        request_logprobs: bool,
        metadata: dict[str, str],
        completion_window: str,
        timeout: float | None = None,
        poll_timeout: float | None = None,
        max_retries: int = 8,
        max_connections: int = 256,
        ca_bundle: str | None = None,
        poll_first: float | None = None,
        poll_growth: float | None = None,
        poll_cap: float | None = None,
        retry_base: float | None = None,
        retry_cap: float | None = None,
        prompt_cache_key: bool | str | None = True,
    ) -> None: ...
    def submit(
        self,
        hub: CompletionHub,
        request_id: int,
        prompt: Sequence[int],
        max_tokens: int,
        stop_strings: list[str] | None = None,
        stop_token_ids: Sequence[int] | None = None,
        prompt_cache_key: str | None = None,
    ) -> None: ...

class CompletionHub:
    def __init__(self) -> None: ...
    @property
    def fd(self) -> int: ...
    def drain(
        self,
    ) -> list[
        tuple[
            int,
            list[int] | None,
            list[float] | None,
            str | None,
            str | None,
            tuple[str, str, int | None, str | None, str | None, int] | None,
            int,
            int,  # prompt_cache_hit_tokens
        ]
    ]: ...
    def cancel(self, request_id: int) -> None: ...
    def in_flight(self) -> int: ...
    def close(self) -> None: ...

def engine_metrics() -> dict[str, int]: ...

class EmulatorServer:
    def __init__(self, config_json: str) -> None: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def base_url(self) -> str: ...
    def stats_json(self) -> str: ...
    def reset_stats(self) -> None: ...
    def is_running(self) -> bool: ...
    def update(self, patch_json: str) -> None: ...
    def add_archive(self, name: str, data: bytes, ttl_seconds: float) -> str: ...
    def shutdown(self) -> None: ...


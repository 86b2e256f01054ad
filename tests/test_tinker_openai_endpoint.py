"""Tinker's OpenAI-compatible endpoint helpers: base URL, openai client kwargs, model check."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sail_lite.errors import SailArgumentError
from sail_lite.tinker import (
    DEFAULT_TINKER_BASE_URL,
    TinkerPathError,
    openai_base_url,
    openai_client_kwargs,
    tinker_base_url,
    validate_openai_model,
)

KEY = "tml-openai-test-key-0123456789"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINKER_BASE_URL", raising=False)
    monkeypatch.delenv("TINKER_API_KEY", raising=False)


def test_default_base_url_matches_tinker() -> None:
    from tinker.lib.base_url import DEFAULT_BASE_URL, resolve_base_url

    assert DEFAULT_TINKER_BASE_URL == DEFAULT_BASE_URL
    assert tinker_base_url() == resolve_base_url()
    assert openai_base_url() == DEFAULT_BASE_URL + "/oai/api/v1"


def test_env_and_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKER_BASE_URL", "http://127.0.0.1:8123/")
    assert openai_base_url() == "http://127.0.0.1:8123/oai/api/v1"
    # The argument wins over the environment; trailing slashes are dropped.
    assert openai_base_url("https://tinker.example.test/svc//") == "https://tinker.example.test/svc/oai/api/v1"
    # An empty environment value counts as unset (as in tinker).
    monkeypatch.setenv("TINKER_BASE_URL", "")
    assert openai_base_url() == DEFAULT_TINKER_BASE_URL + "/oai/api/v1"


def test_already_openai_url_is_not_doubled() -> None:
    assert openai_base_url("http://h:1/x/oai/api/v1/") == "http://h:1/x/oai/api/v1"


@pytest.mark.parametrize("bad", ["ftp://h/x", "localhost:8000", "http://", "http://h/x?a=1"])
def test_bad_base_urls(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SailArgumentError, match=r"^base_url: expected an http:// or https:// URL"):
        openai_base_url(bad)
    monkeypatch.setenv("TINKER_BASE_URL", bad)
    with pytest.raises(SailArgumentError, match=r"^TINKER_BASE_URL: expected"):
        openai_base_url()


def test_kwargs_from_env_and_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKER_API_KEY", KEY)
    monkeypatch.setenv("TINKER_BASE_URL", "http://127.0.0.1:9/base")
    kw = openai_client_kwargs()
    assert kw == {"base_url": "http://127.0.0.1:9/base/oai/api/v1", "api_key": KEY}
    assert isinstance(kw, dict)
    kw2 = openai_client_kwargs(api_key="tml-other", base_url="http://h:2", timeout=12.5, max_retries=1)
    assert kw2 == {"base_url": "http://h:2/oai/api/v1", "api_key": "tml-other", "timeout": 12.5, "max_retries": 1}


def test_missing_key_is_a_clear_error() -> None:
    with pytest.raises(SailArgumentError, match=r"^api_key: expected a Tinker API key \(pass api_key=\.\.\. or set TINKER_API_KEY\)$"):
        openai_client_kwargs()


def test_kwargs_repr_hides_the_key() -> None:
    kw = openai_client_kwargs(api_key=KEY, base_url="http://h:3")
    for text in (repr(kw), str(kw), f"{kw}", repr([kw])):
        assert KEY not in text
        assert "<redacted>" in text
    assert "http://h:3/oai/api/v1" in repr(kw)
    assert kw["api_key"] == KEY


def test_openai_sdk_accepts_the_kwargs() -> None:
    import openai

    kw = openai_client_kwargs(api_key=KEY, base_url="http://127.0.0.1:8765", max_retries=0)
    client = openai.OpenAI(**kw)
    assert str(client.base_url) == "http://127.0.0.1:8765/oai/api/v1/"
    assert client.api_key == KEY
    assert client.max_retries == 0
    aclient = openai.AsyncOpenAI(**kw)
    assert str(aclient.base_url) == "http://127.0.0.1:8765/oai/api/v1/"


def test_no_openai_import() -> None:
    code = (
        "import sys, sail_lite.tinker as t; t.openai_client_kwargs(api_key='tml-x'); "
        "t.validate_openai_model('tinker://r/sampler_weights/1'); print('openai' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "model",
    [
        "tinker://run-1/sampler_weights/000010",
        "tinker://0034d8c9-aaaa:train:0/sampler_weights/final",
        "Qwen/Qwen3-8B",
        "moonshotai/Kimi-K2.6",
        "gpt-oss-120b",
    ],
)
def test_valid_models_pass_through(model: str) -> None:
    assert validate_openai_model(model) == model


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ("tinker://run/weights/0001", "kind is weights:"),
        ("tinker://run/external_weights/final", "kind is external_weights:"),
        ("tinker://run/sampler/1", "did you mean 'sampler_weights'"),
        ("tinker://run/sampler_weights", "exactly three segments"),
        ("Tinker://run/sampler_weights/1", "lower-case tinker://"),
    ],
)
def test_bad_tinker_models(model: str, fragment: str) -> None:
    with pytest.raises(TinkerPathError) as info:
        validate_openai_model(model)
    assert str(info.value).startswith("model: expected")
    assert fragment in str(info.value)


def test_non_sampler_error_says_what_to_do() -> None:
    with pytest.raises(TinkerPathError, match=r"sampler_weights/<id>.*save_weights_for_sampler"):
        validate_openai_model("tinker://run/weights/0001")


@pytest.mark.parametrize("bad", ["", "   ", None, 5, " Qwen/Qwen3-8B"])
def test_bad_model_values(bad: object) -> None:
    with pytest.raises(SailArgumentError, match=r"^model: expected"):
        validate_openai_model(bad)  # type: ignore[arg-type]

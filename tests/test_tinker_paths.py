"""sail_lite.tinker.parse_tinker_path: good paths, bad paths, and agreement with tinker's parser."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sail_lite.errors import SailArgumentError
from sail_lite.tinker import TinkerPath, TinkerPathError, parse_tinker_path


@pytest.mark.parametrize(
    ("path", "run_id", "kind", "checkpoint_id", "segment"),
    [
        ("tinker://run-1/weights/0001", "run-1", "training", "0001", "weights"),
        ("tinker://run-1/sampler_weights/000010", "run-1", "sampler", "000010", "sampler_weights"),
        ("tinker://run-1/external_weights/final", "run-1", "external", "final", "external_weights"),
        (
            "tinker://0034d8c9-19a5-4e1e-9b2a-2c0d5c1e0f00:train:0/sampler_weights/step_000120",
            "0034d8c9-19a5-4e1e-9b2a-2c0d5c1e0f00:train:0",
            "sampler",
            "step_000120",
            "sampler_weights",
        ),
        ("tinker://a/weights/b.c-d_e", "a", "training", "b.c-d_e", "weights"),
    ],
)
def test_parses_good_paths(path: str, run_id: str, kind: str, checkpoint_id: str, segment: str) -> None:
    tp = parse_tinker_path(path)
    assert tp == TinkerPath(run_id=run_id, kind=kind, checkpoint_id=checkpoint_id, path=path)  # type: ignore[arg-type]
    assert tp.segment == segment
    assert tp.tinker_checkpoint_id == f"{segment}/{checkpoint_id}"
    assert str(tp) == path


def test_value_is_frozen_hashable_picklable() -> None:
    tp = parse_tinker_path("tinker://r:train:0/sampler_weights/7")
    with pytest.raises(dataclasses.FrozenInstanceError):
        tp.run_id = "other"  # type: ignore[misc]
    assert {tp: 1}[parse_tinker_path("tinker://r:train:0/sampler_weights/7")] == 1
    assert pickle.loads(pickle.dumps(tp)) == tp
    assert parse_tinker_path(tp) is tp


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("", "starting with tinker://"),
        ("run/sampler_weights/1", "starting with tinker://"),
        ("https://run/sampler_weights/1", "not https://"),
        ("TINKER://run/sampler_weights/1", "not TINKER://"),
        ("tinker://", "exactly three segments"),
        ("tinker://run", "exactly three segments"),
        ("tinker://run/sampler_weights", "exactly three segments"),
        ("tinker://run/sampler_weights/1/extra", "exactly three segments"),
        ("tinker://run/sampler_weights/1/", "trailing slash"),
        ("tinker:///sampler_weights/1", "non-empty training run id"),
        ("tinker://run/sampler_weights/", "non-empty checkpoint id"),
        ("tinker://run/sampler/1", "did you mean 'sampler_weights'"),
        ("tinker://run/weight/1", "did you mean 'weights'"),
        ("tinker://run/external/1", "did you mean 'external_weights'"),
        ("tinker://run/checkpoints/1", "'weights', 'sampler_weights' or 'external_weights'"),
        ("tinker://run/sampler_weights/1?x=1", "query string"),
        ("tinker://run/sampler_weights/1#frag", "query string or fragment"),
        (" tinker://run/sampler_weights/1", "whitespace"),
        ("tinker://run/sampler_weights/1 ", "whitespace"),
        ("tinker://ru n/sampler_weights/1", "whitespace"),
        ("tinker://run/sampler_weights/1\n", "whitespace"),
    ],
)
def test_rejects_bad_paths_with_clear_errors(bad: str, fragment: str) -> None:
    with pytest.raises(TinkerPathError) as info:
        parse_tinker_path(bad)
    err = info.value
    assert isinstance(err, SailArgumentError) and isinstance(err, ValueError)
    message = str(err)
    assert message.startswith("tinker_path: expected ")
    assert fragment in message
    assert err.argument == "tinker_path"  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", [None, 3, b"tinker://r/weights/1", ["tinker://r/weights/1"]])
def test_rejects_non_strings(bad: object) -> None:
    with pytest.raises(TinkerPathError, match="tinker_path: expected a tinker://"):
        parse_tinker_path(bad)  # type: ignore[arg-type]


def test_argument_name_is_used_in_message() -> None:
    with pytest.raises(TinkerPathError, match=r"^model: expected"):
        parse_tinker_path("tinker://x/nope/1", argument="model")


def test_error_pickles_with_its_message() -> None:
    with pytest.raises(TinkerPathError) as info:
        parse_tinker_path("tinker://x/nope/1")
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is TinkerPathError
    assert str(again) == str(info.value)


_segment_chars = st.characters(
    min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="/?#"
)
_run_ids = st.text(_segment_chars, min_size=1, max_size=40)
_ids = st.text(_segment_chars, min_size=1, max_size=20)
_segments = st.sampled_from(["weights", "sampler_weights", "external_weights"])


@settings(max_examples=200, deadline=None)
@given(run=_run_ids, extra=st.lists(_run_ids, max_size=3), segment=_segments, cid=_ids)
def test_round_trip_and_agreement_with_tinker(run: str, extra: list[str], segment: str, cid: str) -> None:
    from tinker.types import ParsedCheckpointTinkerPath

    run_id = ":".join([run, *extra])  # run ids may contain ':'
    path = f"tinker://{run_id}/{segment}/{cid}"
    tp = parse_tinker_path(path)
    assert (tp.run_id, tp.segment, tp.checkpoint_id, tp.path) == (run_id, segment, cid, path)
    theirs = ParsedCheckpointTinkerPath.from_tinker_path(path)
    assert theirs.training_run_id == tp.run_id
    assert theirs.checkpoint_type == tp.kind
    assert theirs.checkpoint_id == tp.tinker_checkpoint_id


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_never_raises_anything_but_tinker_path_error(text: str) -> None:
    try:
        tp = parse_tinker_path(text)
    except TinkerPathError:
        return
    # Whatever was accepted is well-formed.
    assert text == f"tinker://{tp.run_id}/{tp.segment}/{tp.checkpoint_id}"
    assert tp.run_id and tp.checkpoint_id and "/" not in tp.checkpoint_id

"""A toy multi-turn tinker-cookbook environment with a checkable answer: small sums.

The policy sees ``"Q: What is 7 + 5?\\nA:"`` and answers up to a newline. A right answer ends the
episode with reward 1.0; a wrong one gets ``"Wrong. Try again.\\nA:"`` and another turn, up to
``max_turns``. If the last answer is still wrong it earns 0.1 for containing a number at all,
else 0. A group is ``group_size`` copies of one question, so rewards can be centred per group
(GRPO).

Token ids are bytes by default (the emulator's byte model: ids 0-255 are bytes, 256 ends the
text); pass ``encode``/``decode`` for a real tokenizer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import tinker
from tinker_cookbook.completers import StopCondition
from tinker_cookbook.rl.types import (
    STOP_METRIC_PREFIX,
    Action,
    ActionExtra,
    Env,
    EnvGroupBuilder,
    Observation,
    StepResult,
    StopReason,
)

__all__ = [
    "Problem",
    "make_problems",
    "score_answer",
    "encode_bytes",
    "decode_bytes",
    "ArithmeticEnv",
    "ArithmeticGroupBuilder",
]

STOP: StopCondition = ["\n"]
RETRY_PROMPT = "Wrong. Try again.\nA:"
CORRECT_REWARD = 1.0
NUMBER_REWARD = 0.1  # partial credit: the last answer was wrong but was a number

Encode = Callable[[str], list[int]]
Decode = Callable[[list[int]], str]

_NUMBER = re.compile(r"-?\d+")


def encode_bytes(text: str) -> list[int]:
    """Text to the byte model's token ids (one per UTF-8 byte)."""
    return list(text.encode())


def decode_bytes(tokens: list[int]) -> str:
    """The byte model's token ids to text; ids above 255 (end of text) are dropped."""
    return bytes(t for t in tokens if t < 256).decode(errors="replace")


@dataclass(frozen=True)
class Problem:
    a: int
    b: int

    @property
    def question(self) -> str:
        return f"What is {self.a} + {self.b}?"

    @property
    def answer(self) -> int:
        return self.a + self.b

    @property
    def prompt(self) -> str:
        return f"Q: {self.question}\nA:"


def make_problems(count: int, seed: int = 0) -> list[Problem]:
    """``count`` single-digit sums, the same for the same seed."""
    rng = random.Random(seed)
    return [Problem(rng.randint(1, 9), rng.randint(1, 9)) for _ in range(count)]


def score_answer(text: str, expected: int) -> tuple[bool, bool]:
    """(the first number in ``text`` is ``expected``, ``text`` contains a number)."""
    match = _NUMBER.search(text)
    if match is None:
        return False, False
    return int(match.group()) == expected, True


class ArithmeticEnv(Env):
    """One episode: answer one sum in at most ``max_turns`` tries."""

    def __init__(
        self,
        problem: Problem,
        *,
        max_turns: int = 3,
        encode: Encode = encode_bytes,
        decode: Decode = decode_bytes,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.problem = problem
        self.max_turns = max_turns
        self.encode = encode
        self.decode = decode
        self.on_done = on_done
        self.turns = 0
        # The whole transcript so far: each observation extends the previous observation plus
        # the action, which is what tinker-cookbook needs to merge turns into one datum.
        self.transcript: list[int] = []

    async def initial_observation(self) -> tuple[Observation, StopCondition]:
        self.transcript = self.encode(self.problem.prompt)
        return tinker.ModelInput.from_ints(self.transcript), STOP

    async def step(self, action: Action, *, extra: ActionExtra | None = None) -> StepResult:
        self.turns += 1
        answer = self.decode(action)
        correct, has_number = score_answer(answer, self.problem.answer)
        if correct or self.turns >= self.max_turns:
            reward = CORRECT_REWARD if correct else NUMBER_REWARD if has_number else 0.0
            reason = StopReason.COMPLETED if correct else StopReason.MAX_TURNS
            if self.on_done is not None:
                self.on_done()
            return StepResult(
                reward=reward,
                episode_done=True,
                next_observation=tinker.ModelInput.empty(),
                next_stop_condition=STOP,
                metrics={"correct": float(correct), "turns": self.turns, f"{STOP_METRIC_PREFIX}{reason}": 1.0},
                logs={"answer": answer.strip()},
            )
        # The stop string may or may not be part of the sampled tokens; end the line either way.
        reply = ("" if answer.endswith("\n") else "\n") + RETRY_PROMPT
        self.transcript = self.transcript + list(action) + self.encode(reply)
        return StepResult(
            reward=0.0,
            episode_done=False,
            next_observation=tinker.ModelInput.from_ints(self.transcript),
            next_stop_condition=STOP,
            logs={"answer": answer.strip()},
        )


@dataclass(frozen=True)
class ArithmeticGroupBuilder(EnvGroupBuilder):
    """``group_size`` episodes of the same problem.

    ``on_episode_done`` is an in-process progress hook, called as each episode ends. Leave it
    unset (and keep ``encode``/``decode`` module-level functions) when the builder must pickle,
    e.g. for tinker-cookbook's process-pool rollout executor."""

    problem: Problem
    group_size: int
    max_turns: int = 3
    encode: Encode = encode_bytes
    decode: Decode = decode_bytes
    on_episode_done: Callable[[], None] | None = None

    async def make_envs(self) -> Sequence[Env]:
        return [
            ArithmeticEnv(
                self.problem,
                max_turns=self.max_turns,
                encode=self.encode,
                decode=self.decode,
                on_done=self.on_episode_done,
            )
            for _ in range(self.group_size)
        ]

    def logging_tags(self) -> list[str]:
        return ["arithmetic"]


BYTE_TOKENIZER_NAME = "sail-lite/byte-ngram"


class ByteTokenizer:
    """The byte model's tokenizer (one token per UTF-8 byte, 256 = end of text) in the shape
    tinker-cookbook's ``get_tokenizer`` returns, so the cookbook runs offline on the emulator."""

    name_or_path = BYTE_TOKENIZER_NAME
    eos_token_id = 256
    bos_token_id = None
    eos_token = "<|endoftext|>"
    bos_token = ""
    vocab_size = 257

    pad_token_id = 256

    def encode(self, text: str, add_special_tokens: bool = False, **_: Any) -> list[int]:
        return encode_bytes(text)

    def encode_ordinary(self, text: str) -> list[int]:
        return encode_bytes(text)

    def decode(self, token_ids: Any, skip_special_tokens: bool = False, **_: Any) -> str:
        return decode_bytes(list(token_ids))

    def __len__(self) -> int:
        return self.vocab_size


def register_byte_tokenizer(name: str = BYTE_TOKENIZER_NAME) -> None:
    """Register :class:`ByteTokenizer` with the cookbook's tokenizer registry under ``name``."""
    from tinker_cookbook.tokenizer_utils import register_tokenizer

    register_tokenizer(name, ByteTokenizer)

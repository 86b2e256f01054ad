"""The child process of the cookbook resume test: runs the real ``tinker_cookbook.rl.train.main``
inside ``sample_on_sail`` against the emulator and the Tinker training double of the parent
test, then writes sail-lite's engine counters as JSON. The parent kills one such run and starts
another on the same ``log_path``. Run as ``python tests/cookbook_resume_child.py CONFIG_JSON``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sail_lite  # noqa: E402
from sail_lite.cookbook import sample_on_sail  # noqa: E402
from tinker_training_double import arithmetic_train_config, register_byte_tokenizer  # noqa: E402


def main(config: dict) -> None:
    from tinker_cookbook.rl import train

    train_config = arithmetic_train_config(base_url=config["tinker_url"], log_path=config["log_path"],
                                           steps=config["steps"], groups_per_batch=config["groups"],
                                           group_size=config["group_size"], save_every=1)
    register_byte_tokenizer(train_config.model_name)
    os.environ["TINKER_API_KEY"] = config["tinker_api_key"]
    with (
        mock.patch.object(train, "fetch_model_pricing", lambda *a, **k: None),
        sample_on_sail(model="sail-lite/byte-ngram", completion_window="priority",
                       base_url=config["sail_url"], api_key=config["sail_api_key"]),
    ):
        asyncio.run(train.main(train_config))
    with open(config["out"], "w") as f:
        json.dump(sail_lite.engine_metrics(), f)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))

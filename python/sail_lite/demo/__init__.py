"""The ``sail-lite demo``: GRPO-style rollout groups of a toy tinker-cookbook environment, sampled
with ``SailTokenCompleter`` from an in-process Sail emulator, with a live progress bar and a
summary table.

Modules, one job each:

- :mod:`~sail_lite.demo.toy_env`: the arithmetic ``Env`` / ``EnvGroupBuilder`` (tinker-cookbook)
- :mod:`~sail_lite.demo.lora_archive`: a tiny, deterministic PEFT LoRA archive, in pure Python
- :mod:`~sail_lite.demo.timing`: a ``TokenCompleter`` wrapper that measures every call
- :mod:`~sail_lite.demo.runner`: runs the groups against an emulator and collects the results
- :mod:`~sail_lite.demo.progress`: the stdlib progress bar
- :mod:`~sail_lite.demo.summary`: the summary table

Importing this package is cheap: ``toy_env``, ``timing`` and ``runner`` import tinker-cookbook
(and so torch), and are only imported when the demo runs.
"""

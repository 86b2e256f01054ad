"""The ``sail-lite`` command line: ``demo``, ``sample`` and ``serve``.

Every failure ends in one line on stderr, ``sail-lite: error: ...``, with exit status 2 for a
usage error (bad arguments, missing API key) and 1 for a runtime error (server unreachable, port
in use, a sample that failed). Set ``SAIL_LITE_DEBUG=1`` to get the traceback instead.

This module imports nothing heavy at import time: tinker-cookbook (and torch) load only inside
the commands that need them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from sail_lite import __version__
from sail_lite.errors import SailArgumentError, SailError

__all__ = ["main", "build_parser"]

_N = TypeVar("_N", int, float)

PROG = "sail-lite"
DEFAULT_MODEL = "moonshotai/Kimi-K2.6"
INSTALL_COOKBOOK = "pip install 'sail-lite[tinker]'"
EXIT_RUNTIME_ERROR = 1
EXIT_USAGE_ERROR = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure to report as one line, with the exit status to use."""

    def __init__(self, message: str, exit_code: int = EXIT_RUNTIME_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``sail-lite: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog if self.prog != PROG else None
        hint = f" (see '{command or PROG} --help')"
        raise CliError(message + hint, EXIT_USAGE_ERROR)


# --------------------------------------------------------------------------------------------
# Argument types: each turns a string into a value or explains, in one line, what was expected
# --------------------------------------------------------------------------------------------


def _number(text: str, kind: Callable[[str], _N], what: str, ok: Callable[[_N], bool]) -> _N:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, "a positive integer", lambda v: v >= 1)


def port_number(text: str) -> int:
    return _number(text, int, "a port number in 0..65535 (0 picks a free port)", lambda v: 0 <= v <= 65535)


def non_negative_float(text: str) -> float:
    return _number(text, float, "a number >= 0", lambda v: v >= 0 and v != float("inf"))


def positive_float(text: str) -> float:
    return _number(text, float, "a number > 0", lambda v: v > 0 and v != float("inf"))


def probability(text: str) -> float:
    return _number(text, float, "a probability between 0 and 1", lambda v: 0 <= v <= 1)


def token_list(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected comma-separated token ids, e.g. 1,2,3")
    try:
        tokens = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integer token ids, got {text!r}") from None
    if any(t < 0 or t >= 2**31 for t in tokens):
        raise argparse.ArgumentTypeError("token ids must be in 0..2147483647")
    return tokens


def name_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return names


# --------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------


def _add_demo(commands: Any) -> None:
    p = commands.add_parser(
        "demo",
        help="run GRPO-style rollout groups of a toy task against an in-process emulator",
        description="Start a local Sail emulator, run groups of multi-turn tinker-cookbook rollouts "
        "of a toy arithmetic task with SailTokenCompleter as the policy (every second group through a "
        "LoRA served from a Tinker-style signed archive URL), and print measured throughput, latency, "
        "retries and rewards. Needs tinker-cookbook.",
    )
    p.add_argument("--groups", type=positive_int, default=8, help="number of rollout groups (default 8)")
    p.add_argument("--group-size", type=positive_int, default=8, help="rollouts per group (default 8)")
    p.add_argument("--window", default="priority", help="completion window (default priority)")
    p.add_argument("--concurrency", type=positive_int, default=4, help="groups sampled at once (default 4)")
    p.add_argument("--no-lora", dest="lora", action="store_false", help="sample every group from the base model")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL})")
    p.add_argument("--max-tokens", type=positive_int, default=8, help="tokens per turn (default 8)")
    p.add_argument("--temperature", type=non_negative_float, default=1.0, help="sampling temperature (default 1.0)")
    p.add_argument(
        "--latency-scale",
        type=non_negative_float,
        default=0.5,
        help="scale on the emulator's window latencies; priority is 1 s at scale 1 (default 0.5)",
    )
    p.add_argument(
        "--fault-rate",
        type=probability,
        default=0.02,
        help="fraction of requests answered 429 or 503, to exercise retries (default 0.02)",
    )
    p.add_argument("--seed", type=int, default=0, help="problems, LoRA weights and emulator seed (default 0)")
    p.set_defaults(run=cmd_demo)


def _add_sample(commands: Any) -> None:
    p = commands.add_parser(
        "sample",
        help="sample one completion and print its tokens, logprobs and stop reason",
        description="Sample once from Sail (key from SAIL_API_KEY, API root from --base-url, SAIL_API_URL "
        "or Sail's public API) or, with --emulator, from an in-process emulator. Needs tinker-cookbook.",
    )
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt-tokens", type=token_list, metavar="IDS", help="prompt token ids, e.g. 1,2,3")
    prompt.add_argument("--text", help="prompt text as byte tokens (the emulator's byte model)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL})")
    p.add_argument("--max-tokens", type=positive_int, default=32, help="most tokens to sample (default 32)")
    p.add_argument("--window", default="priority", help="completion window (default priority)")
    p.add_argument("--temperature", type=non_negative_float, default=1.0, help="default 1.0")
    p.add_argument("--top-p", type=probability, default=1.0, help="default 1.0")
    p.add_argument("--stop", action="append", metavar="STRING", help="stop string (repeatable)")
    p.add_argument("--timeout", type=positive_float, metavar="SECONDS", help="give up on the sample after this long")
    server = p.add_mutually_exclusive_group()
    server.add_argument("--base-url", help="API root without /v1 (default: $SAIL_API_URL or the Sail API)")
    server.add_argument("--emulator", action="store_true", help="sample from an in-process emulator instead")
    p.add_argument("--api-key", help="API key (default: $SAIL_API_KEY; prefer the environment variable)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(run=cmd_sample)


def _add_serve(commands: Any) -> None:
    p = commands.add_parser(
        "serve",
        help="run a local Sail emulator in the foreground",
        description="Serve Sail's raw-token Responses API (and OpenAI-compatible /v1/completions) "
        "from a local emulator until Ctrl-C or SIGTERM. The first line printed is "
        "'sail-lite emulator listening on <base URL>'.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8080, help="port; 0 picks a free one (default 8080)")
    p.add_argument("--api-key", default="sk-sail-lite-local", help="the key clients must send (default sk-sail-lite-local)")
    p.add_argument("--models", type=name_list, help="comma-separated model names to serve")
    p.add_argument("--latency-scale", type=non_negative_float, help="scale on per-window latencies (0 = instant)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling, latency jitter and faults")
    p.add_argument("--retention-seconds", type=non_negative_float, help="forget finished responses after this long")
    p.add_argument("--request-log", metavar="PATH", help="append every request to this JSON-lines file")
    faults = p.add_argument_group("fault injection (probabilities per request)")
    faults.add_argument("--fault-429", type=probability, metavar="RATE", help="answer 429 Too Many Requests")
    faults.add_argument("--fault-500", type=probability, metavar="RATE", help="answer 500")
    faults.add_argument("--fault-502", type=probability, metavar="RATE", help="answer 502")
    faults.add_argument("--fault-503", type=probability, metavar="RATE", help="answer 503")
    faults.add_argument("--fault-drop", type=probability, metavar="RATE", help="drop the connection")
    faults.add_argument("--fault-slow", type=probability, metavar="RATE", help="answer after --slow-seconds")
    faults.add_argument("--fault-fail", type=probability, metavar="RATE", help="responses end 'failed'")
    faults.add_argument("--slow-seconds", type=non_negative_float, help="delay of a slow answer")
    faults.add_argument("--retry-after", type=non_negative_float, metavar="SECONDS", help="Retry-After of a 429")
    faults.add_argument(
        "--fault-apply-to",
        type=name_list,
        metavar="CLASSES",
        help="request classes faults hit: create,poll,cancel,completions,models,archives (default create,poll)",
    )
    p.set_defaults(run=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="sail-lite: sample tinker-cookbook RL rollouts on Sail, with a Rust core.",
        epilog="Run 'sail-lite COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_demo(commands)
    _add_sample(commands)
    _add_serve(commands)
    return parser


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------


def _require_cookbook(what: str) -> None:
    try:
        importlib.import_module("tinker_cookbook.rl.rollouts")
    except ImportError as exc:
        raise CliError(f"{what} needs tinker-cookbook, which could not be imported ({exc}); install it with: {INSTALL_COOKBOOK}") from None


def cmd_demo(args: argparse.Namespace) -> int:
    if args.lora and args.window == "asap":  # Sail serves LoRAs on scheduled windows only
        raise CliError("LoRA groups need a scheduled window: pick another --window or add --no-lora", EXIT_USAGE_ERROR)
    print("loading tinker-cookbook...", flush=True)
    _require_cookbook("the demo")
    from sail_lite.demo.progress import ProgressBar
    from sail_lite.demo.runner import DemoConfig, demo_emulator, run_demo
    from sail_lite.demo.summary import format_summary

    config = DemoConfig(
        groups=args.groups,
        group_size=args.group_size,
        window=args.window,
        concurrency=args.concurrency,
        lora=args.lora,
        model=args.model,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        latency_scale=args.latency_scale,
        fault_rate=args.fault_rate,
        seed=args.seed,
    )
    bar = ProgressBar(config.groups * config.group_size)
    with demo_emulator(config) as emulator:
        lora = ", every second group through a LoRA" if config.lora else ""
        print(
            f"emulator on {emulator.base_url}: {config.groups} groups x {config.group_size} rollouts, "
            f"window {config.window!r}, {config.concurrency} groups at a time{lora}",
            flush=True,
        )
        try:
            result = asyncio.run(
                run_demo(
                    config,
                    emulator,
                    on_progress=lambda p: bar.update(p.rollouts_done, p.elapsed, f"{p.samples} samples, {p.tokens} tokens"),
                )
            )
        except BaseException:
            bar.abandon()
            raise
    bar.finish(result.rollouts, result.wall_seconds, f"{result.samples} samples, {result.tokens} tokens")
    print()
    print(format_summary(result), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# sample
# --------------------------------------------------------------------------------------------


def _sail_credentials(args: argparse.Namespace) -> tuple[str | None, str]:
    """(base URL or None for the completer's default, API key) for a real Sail (or `sail-lite
    serve`), or a usage error saying what is missing."""
    base_url = args.base_url or os.environ.get("SAIL_API_URL") or None
    api_key = args.api_key or os.environ.get("SAIL_API_KEY") or None
    if api_key is None:
        if base_url is None:
            raise CliError(
                "SAIL_API_KEY is not set: export SAIL_API_KEY=<your Sail API key> to sample on Sail, "
                "or add --emulator to sample from an in-process emulator",
                EXIT_USAGE_ERROR,
            )
        raise CliError(
            f"no API key for {base_url}: set SAIL_API_KEY or pass --api-key ('sail-lite serve' prints the key its emulator accepts)",
            EXIT_USAGE_ERROR,
        )
    return base_url, api_key


async def _sample_once(args: argparse.Namespace, base_url: str | None, api_key: str, prompt: list[int]) -> tuple[Any, float]:
    import sail_lite

    completer = sail_lite.SailTokenCompleter(
        model=args.model,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        completion_window=args.window,
        base_url=base_url,
        api_key=api_key,
        poll_timeout=args.timeout,
    )
    started = time.perf_counter()
    result = await completer(prompt, args.stop or None)
    return result, time.perf_counter() - started


def _print_sample(args: argparse.Namespace, result: Any, seconds: float) -> None:
    report: dict[str, Any] = {"model": args.model, "window": args.window}
    if args.text is not None:
        report["text"] = bytes(t for t in result.tokens if t < 256).decode(errors="replace")
    report["tokens"] = list(result.tokens)
    report["logprobs"] = result.maybe_logprobs
    report["stop_reason"] = result.stop_reason
    report["latency_seconds"] = round(seconds, 4)
    if args.json:
        print(json.dumps(report))
        return
    shown = {
        "model": report["model"],
        "window": report["window"],
        **({"text": repr(report["text"])} if "text" in report else {}),
        "tokens": " ".join(map(str, report["tokens"])) or "(none)",
        "logprobs": " ".join(f"{lp:.3f}" for lp in report["logprobs"] or []) or "(none)",
        "stop reason": report["stop_reason"],
        "latency": f"{seconds:.3f} s",
    }
    width = max(map(len, shown))
    for label, value in shown.items():
        print(f"{label:<{width}}  {value}")


def cmd_sample(args: argparse.Namespace) -> int:
    prompt = args.prompt_tokens if args.text is None else list(args.text.encode())
    if not prompt:
        raise CliError("the prompt is empty: give --text with some text or --prompt-tokens", EXIT_USAGE_ERROR)
    # Check the credentials before the slow import, so a missing key is reported at once.
    credentials = None if args.emulator else _sail_credentials(args)
    if sys.stderr.isatty():
        print("loading tinker-cookbook...", file=sys.stderr, flush=True)
    _require_cookbook("sampling")
    if credentials is None:
        from sail_lite.emulator import Emulator

        with Emulator(latency=0) as emulator:
            result, seconds = asyncio.run(_sample_once(args, emulator.base_url, emulator.api_key, prompt))
    else:
        result, seconds = asyncio.run(_sample_once(args, *credentials, prompt))
    _print_sample(args, result, seconds)
    return 0


# --------------------------------------------------------------------------------------------
# serve
# --------------------------------------------------------------------------------------------


_FAULT_OPTIONS = {
    "fault_429": "rate_429",
    "fault_500": "rate_500",
    "fault_502": "rate_502",
    "fault_503": "rate_503",
    "fault_drop": "rate_drop",
    "fault_slow": "rate_slow",
    "fault_fail": "rate_fail",
    "slow_seconds": "slow_seconds",
    "retry_after": "retry_after_seconds",
    "fault_apply_to": "apply_to",
}


def emulator_options(args: argparse.Namespace) -> dict[str, Any]:
    """``Emulator(...)`` keyword arguments from ``serve``'s flags (unset flags keep the defaults)."""
    options: dict[str, Any] = {"api_key": args.api_key, "host": args.host, "port": args.port, "seed": args.seed}
    faults = {key: getattr(args, flag) for flag, key in _FAULT_OPTIONS.items() if getattr(args, flag) is not None}
    if faults:
        options["faults"] = faults
    if args.latency_scale is not None:
        options["latency"] = args.latency_scale
    if args.models is not None:
        options["models"] = args.models
    if args.retention_seconds is not None:
        options["retention_seconds"] = args.retention_seconds
    if args.request_log is not None:
        options["request_log"] = args.request_log
    return options


def _wait_for_stop_signal() -> str:
    """Block until SIGINT or SIGTERM; returns the signal's name."""
    received: list[str] = []
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):  # a timed wait lets the handler run promptly
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return received[0]


def cmd_serve(args: argparse.Namespace) -> int:
    from sail_lite.emulator import Emulator

    try:
        emulator = Emulator(**emulator_options(args))
    except ValueError as exc:  # the configuration was rejected
        raise CliError(str(exc), EXIT_USAGE_ERROR) from None
    with emulator:
        base_url = emulator.base_url
        print(f"sail-lite emulator listening on {base_url}")
        print(f"  export SAIL_API_URL={base_url}")
        print(f"  export SAIL_API_KEY={emulator.api_key}")
        print(f"  OpenAI-compatible API: {emulator.openai_base_url}")
        print("Press Ctrl-C to stop.", flush=True)
        name = _wait_for_stop_signal()
        served = emulator.stats().get("requests_total", 0)
    print(f"{name}: emulator stopped after {served} requests", flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def _fail(message: str, exit_code: int) -> int:
    # One line, whatever the message contains.
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE_ERROR
        code: int = args.run(args)
        return code
    except CliError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return _fail("interrupted", EXIT_INTERRUPTED)
    except SailArgumentError as exc:
        return _fail(str(exc), EXIT_USAGE_ERROR)
    except Exception as exc:
        if os.environ.get("SAIL_LITE_DEBUG"):
            raise
        detail = str(exc) or type(exc).__name__
        if not isinstance(exc, (SailError, OSError)):
            detail = f"{type(exc).__name__}: {detail}"
        return _fail(detail, EXIT_RUNTIME_ERROR)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m cutbook_simulator``: the same options as ``cutbook simulator``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cutbook_simulator.errors import SimulatorUsageError
from cutbook_simulator.server import DEFAULT_PORT, DEFAULT_STATE, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cutbook_simulator", description="Run the simulated customs estate."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--faults", default=None, help="calm, flaky, hostile or a YAML file")
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE)
    parser.add_argument("--seed", type=Path, default=None, help="office list CSV")
    parser.add_argument("--seed-random", type=int, default=None, help="fault randomness seed")
    parser.add_argument("--speed", type=float, default=None, help="run the estate's clock faster")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.speed is not None:
            os.environ["CUTBOOK_SIMULATOR_SPEED"] = str(args.speed)
        serve(
            host=args.host,
            port=args.port,
            faults=args.faults,
            state=args.state,
            seed=args.seed,
            seed_random=args.seed_random,
            exit_on_stdin_eof=args.exit_on_stdin_eof,
        )
    except SimulatorUsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run every example in turn, each in its own Python process (this is `make examples`).

Prints a banner before each example and a summary at the end; exits with
status 1 if any example failed.

Run it with: python examples/run_all.py
"""

import subprocess
import sys
import time
from pathlib import Path

EXAMPLES_DIRECTORY = Path(__file__).resolve().parent
EXAMPLES = [
    "showcase.py",  # the demo
    "weather.py",
    "parallel_squares.py",
    "mixed_flow.py",
    "concurrency.py",
    "research.py",
    "review.py",
    "invoices.py",
    "crawler.py",
    "image_filters.py",
    "llm_translate.py",  # without OPENAI_API_KEY it says how to set one
    "llm_spend.py",  # against a local server with a token quota
]
BANNER_WIDTH = 72


def run_example(name: str) -> bool:
    """Run one example script; return whether it exited with status 0."""
    print(f"\n{f'=== {name} ':=<{BANNER_WIDTH}}", flush=True)
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, str(EXAMPLES_DIRECTORY / name)], check=False)
    elapsed = time.perf_counter() - started
    if completed.returncode:
        print(f"--- {name} FAILED (exit status {completed.returncode}) after {elapsed:.1f} s")
        return False
    print(f"--- {name} ok, {elapsed:.1f} s")
    return True


def main() -> int:
    failed = [name for name in EXAMPLES if not run_example(name)]
    print()
    if failed:
        print(f"{len(failed)} of {len(EXAMPLES)} examples failed: {', '.join(failed)}")
        return 1
    print(f"all {len(EXAMPLES)} examples ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())

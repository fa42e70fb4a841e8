"""Run every example in turn (this is what `make demo` does)."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = ["weather.py", "parallel_squares.py", "mixed_flow.py", "concurrency.py"]


def main() -> int:
    here = Path(__file__).parent
    failed = []
    for name in EXAMPLES:
        print(f"\n=== {name} " + "=" * (60 - len(name)))
        if subprocess.run([sys.executable, str(here / name)], check=False).returncode:
            failed.append(name)
    print()
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    print(f"all {len(EXAMPLES)} examples ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A human in the loop: a durable run waits for a reviewer, and goes on when answered.

A support reply is drafted, then a person reviews it: `interrupt()` stops the
run, which is stored as `waiting` with the draft as its prompt. The person
answers later (minutes or days; any process, the command line here) and the
run resumes where it stopped: "yes" sends the reply to the outbox, anything
else is a note the next draft takes into account, and the reviewer is asked
again.

From the command line, as a reviewer would:

    braidflow run examples/review.py:flow --store review.db --run-id t-1042 \\
        --shared '{"ticket": "My order #1042 arrived broken. I want a refund."}'
    # exit code 3: waiting for input, with the draft and the command to answer it
    braidflow runs --store review.db --status waiting
    braidflow resume t-1042 --store review.db --input '"mention the refund date"'
    braidflow resume t-1042 --store review.db --input '"yes"'

`python examples/review.py` plays that conversation itself, running the
same commands in a temporary directory and printing what they print.
"""

import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from braidflow import Flow, Node, interrupt

TICKET = "My order #1042 arrived broken. I want a refund, please."


class Draft(Node):
    """Draft a reply from the ticket and the reviewer's notes so far."""

    def prep(self, shared):
        return shared["ticket"], shared.get("notes", [])

    def exec(self, inputs):
        ticket, notes = inputs
        order = re.search(r"#(\d+)", ticket)
        lines = ["Hello,", ""]
        if "broken" in ticket or "damaged" in ticket:
            lines.append("We are sorry your order arrived damaged.")
        if "refund" in ticket:
            lines.append(f"We have started a refund for order #{order.group(1) if order else '?'}.")
        for note in notes:  # each note asks for something more
            if "date" in note:
                lines.append("The money will be back on your card within 5 working days.")
            elif "apolog" in note:
                lines.append("Please accept our apologies for the trouble.")
            else:
                lines.append(f"({note})")
        lines += ["", "Kind regards,", "The support team"]
        return "\n".join(lines)

    def post(self, shared, prep_result, exec_result):
        shared["draft"] = exec_result


class Review(Node):
    """Ask a person: "yes" sends the draft; anything else is a note for the next one."""

    def prep(self, shared):
        return shared["draft"]

    def exec(self, draft):
        return interrupt({"question": "Send this reply? (yes, or a note)", "draft": draft})

    def post(self, shared, prep_result, answer):
        if str(answer).strip().lower() == "yes":
            return "approved"
        shared.setdefault("notes", []).append(str(answer))
        return "revise"


class Send(Node):
    """Put the approved reply in the outbox (a directory beside the store)."""

    def prep(self, shared):
        return shared["draft"], shared.get("outbox", "outbox")

    def exec(self, inputs):
        reply, outbox = inputs
        Path(outbox).mkdir(parents=True, exist_ok=True)
        path = Path(outbox) / "reply.txt"
        path.write_text(reply + "\n", encoding="utf-8")
        return str(path)

    def post(self, shared, prep_result, exec_result):
        shared["sent"] = exec_result


draft, review, send = Draft(name="draft"), Review(name="review"), Send(name="send")
draft >> review
review - "approved" >> send
review - "revise" >> draft
flow = Flow(start=draft, name="support reply")


def braidflow(directory: Path, *args: str) -> int:
    """Run the braidflow command as a reviewer would, and show what it prints."""
    print(f"$ braidflow {shlex.join(args)}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "braidflow", *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in (done.stderr + done.stdout).strip().splitlines():
        print(f"  {line}")
    print(f"  (exit code {done.returncode})\n")
    return done.returncode


def main() -> int:
    directory = Path(tempfile.mkdtemp(prefix="braidflow-review-"))
    example = str(Path(__file__).resolve())
    codes = [
        braidflow(
            directory,
            "run",
            f"{example}:flow",
            "--store",
            "review.db",
            "--run-id",
            "t-1042",
            "--shared",
            f'{{"ticket": "{TICKET}"}}',
        ),
        braidflow(directory, "runs", "--store", "review.db"),
        braidflow(
            directory, "resume", "t-1042", "--store", "review.db", "--input", '"add the date"'
        ),
        braidflow(directory, "resume", "t-1042", "--store", "review.db", "--input", '"yes"'),
    ]
    sent = directory / "outbox" / "reply.txt"
    print(f"the reply that was sent ({sent}):\n")
    print(sent.read_text(encoding="utf-8"))
    return 0 if codes == [3, 0, 3, 0] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Print the README's quick-start commands of one kind, exactly as printed there, one per line.

CI runs these instead of its own copy, so the README cannot drift from what is tested.
Kinds: setup (the pip installs and npm ci), test (the pytest command), demo (`toolkit demo run`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_start_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    if block is None:
        raise SystemExit("README.md: no ```bash block under '## Quick start'")
    commands = []
    for line in block.group(1).splitlines():
        command = line.split("  #", 1)[0].strip()  # comments sit two spaces or more after the command
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def main() -> None:
    kind = sys.argv[1]
    matches = {
        "setup": lambda c: " pip install " in f" {c} " or " npm ci" in c,
        "test": lambda c: " pytest" in c,
        "demo": lambda c: c.startswith("toolkit demo run"),
    }[kind]
    selected = [c for c in quick_start_commands() if matches(c)]
    if not selected:
        raise SystemExit(f"README.md quick start has no {kind} command")
    print("\n".join(selected))


if __name__ == "__main__":
    main()

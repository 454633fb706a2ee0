"""The README's two set-up commands, read out of README.md so that CI runs them as written.

Usage: ``python3 .ci/readme_commands.py [README.md] N`` prints command N (1: install and run the
demo, 2: install and run the tests). Standard library only: it runs before any install.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SECTION = "## Set-up: the two commands"


def setup_commands(readme: str) -> list[str]:
    """The one-line ``bash`` blocks of the README's set-up section, in order; exactly two."""
    if SECTION not in readme:
        raise ValueError(f"README has no {SECTION!r} section")
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```bash\n(.*?)^```", section, flags=re.M | re.S)
    commands = [b.strip() for b in blocks]
    if len(commands) != 2 or any("\n" in c or not c for c in commands):
        raise ValueError(f"the set-up section must hold exactly two one-line bash blocks, found {commands!r}")
    return commands


def main(argv: list[str]) -> int:
    readme, n = (Path(argv[0]), argv[1]) if len(argv) == 2 else (Path("README.md"), argv[0])
    print(setup_commands(readme.read_text())[int(n) - 1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

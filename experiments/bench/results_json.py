"""Writing a benchmark's JSON: the rows, the arguments and the commit they were measured at."""
from __future__ import annotations

import json
import os
import subprocess


def git_commit() -> str:
    """The short hash of HEAD ('' outside a git checkout)."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


def write_results(path: str, args, rows: list) -> None:
    """{commit, args, rows} to `path` (folders created), and says where."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(dict(commit=git_commit(), args=vars(args), rows=rows), f, indent=1)
    print(f"wrote {path}")

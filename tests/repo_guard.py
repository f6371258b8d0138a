"""A pytest plugin: a test session leaves the repository's working tree as it found it.

At the session's start it records ``git status --porcelain --ignored --untracked-files=all`` of the
repository that holds the rootdir (every untracked, ignored or modified path, one by one); at its end
it records it again, and a path that is new or changed fails the session, listed by name. A test that
writes ``bundle/runs/x`` (or overwrites a committed config) is caught however it did it: in-process, a
subprocess or a server it started.

Left out, because a test run makes them whatever the tests do:

- ``__pycache__`` folders (the interpreter's bytecode of every module imported, subprocesses' too);
- ``.pytest_cache`` (pytest's own cache provider);
- the virtual environments ``.venv*`` at the root (the Makefile builds them; a tool run from one may
  write its caches into it), which are also the bulk of the ignored files and would make the check slow.

Outside a git checkout (a source archive) the check is off. The conftest registers this module
(``pytest_plugins``); tests/test_repo_guard.py runs it on a session that writes a file.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

#: Path components a test run makes outside the tests' control (see the module docstring).
LEFT_OUT_PARTS = frozenset({"__pycache__", ".pytest_cache"})
#: Pathspecs of what git status does not look into.
LEFT_OUT_PATHSPECS = (":(exclude,glob).venv*/**",)

_BEFORE = pytest.StashKey[frozenset[str]]()


def git_root(start: Path) -> Path | None:
    """The top of the git working tree that holds ``start``, or None (no git, or not a checkout)."""
    git = shutil.which("git")
    if git is None:
        return None
    result = subprocess.run(
        [git, "-C", str(start), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        check=False,
    )
    return Path(result.stdout.strip()) if result.returncode == 0 else None


def tree_state(root: Path) -> frozenset[str]:
    """Every ``git status`` entry of ``root`` (status code and path), the left-out paths aside.

    A modified tracked file is listed with its blob hash, so that a second change to a file that was
    already modified when the session started is seen too.
    """
    result = subprocess.run(
        [
            "git",
            "-C",
            str(root),
            "status",
            "--porcelain=v1",
            "-z",
            "--ignored",
            "--untracked-files=all",
            "--",
            ".",
            *LEFT_OUT_PATHSPECS,
        ],
        capture_output=True,
        check=True,
    )
    entries = set()
    modified = []
    for record in result.stdout.decode("utf-8", "surrogateescape").split("\0"):
        if len(record) < 4:
            continue
        code, path = record[:2], record[3:]
        if LEFT_OUT_PARTS.intersection(Path(path).parts):
            continue
        if code not in ("??", "!!") and (root / path).is_file():
            modified.append(path)
        else:
            entries.add(f"{code} {path}")
    if modified:
        hashes = (
            subprocess.run(
                ["git", "-C", str(root), "hash-object", "--stdin-paths"],
                input="\n".join(modified).encode("utf-8", "surrogateescape"),
                capture_output=True,
                check=True,
            )
            .stdout.decode()
            .split()
        )
        entries.update(f"M {path} {digest}" for path, digest in zip(modified, hashes, strict=True))
    return frozenset(entries)


def pytest_sessionstart(session: pytest.Session) -> None:
    root = git_root(session.config.rootpath)
    if root is not None:
        session.stash[_BEFORE] = tree_state(root)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    before = session.stash.get(_BEFORE, None)
    root = git_root(session.config.rootpath)
    if before is None or root is None:
        return
    new = sorted(tree_state(root) - before)
    if not new:
        return
    lines = [f"the test session wrote into the repository tree {root} (use tmp_path):"]
    lines += [f"  {entry}" for entry in new]
    lines.append("(an edit made by hand during the session shows here too; -p no:repo_guard turns this off)")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "repository tree changed", red=True)
        for line in lines:
            reporter.write_line(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED

"""tests/repo_guard.py: a test session that writes into the repository tree fails, naming the paths."""

from __future__ import annotations

import subprocess

import pytest

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main"]


@pytest.fixture
def checkout(pytester: pytest.Pytester) -> pytest.Pytester:
    """A git checkout with one committed file and the guard as its conftest's plugin."""
    pytester.makeconftest("pytest_plugins = ['repo_guard']")
    (pytester.path / "config.json").write_text("{}\n")
    (pytester.path / ".gitignore").write_text("runs/\n")
    subprocess.run([*GIT, "init", "-q"], cwd=pytester.path, check=True)
    subprocess.run([*GIT, "add", "."], cwd=pytester.path, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "start"], cwd=pytester.path, check=True)
    return pytester


def test_a_session_writing_an_ignored_file_fails_and_names_it(checkout: pytest.Pytester) -> None:
    checkout.makepyfile(
        test_writes="""
        from pathlib import Path

        def test_writes_a_run():
            Path("runs/x").parent.mkdir()
            Path("runs/x").write_text("x")
        """
    )
    result = checkout.runpytest()
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*wrote into the repository tree*", "  !! runs/x"])


def test_a_session_changing_a_committed_file_fails(checkout: pytest.Pytester) -> None:
    (checkout.path / "config.json").write_text('{"edited": "before the session"}\n')
    checkout.makepyfile(
        test_edits="""
        from pathlib import Path

        def test_edits():
            Path("config.json").write_text('{"edited": "by the test"}')
        """
    )
    result = checkout.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["  M config.json *"])


def test_a_session_writing_under_tmp_path_passes(checkout: pytest.Pytester) -> None:
    checkout.makepyfile(
        test_clean="""
        import importlib
        import sys

        def test_writes_under_tmp_path(tmp_path, cache, monkeypatch):
            (tmp_path / "x").write_text("x")
            cache.set("guard/seen", 1)
            # A module imported from the checkout: Python writes its bytecode beside it.
            monkeypatch.setattr(sys, "dont_write_bytecode", False)
            monkeypatch.syspath_prepend("pkg")
            importlib.import_module("guarded_module")
        """
    )
    (checkout.path / "pkg").mkdir()
    (checkout.path / "pkg" / "guarded_module.py").write_text("")
    subprocess.run([*GIT, "add", "pkg"], cwd=checkout.path, check=True)
    result = checkout.runpytest()
    # pytest wrote its .pytest_cache and the test module's __pycache__ into the checkout: left out.
    assert (checkout.path / ".pytest_cache").is_dir() and (checkout.path / "pkg" / "__pycache__").is_dir()
    assert result.ret == pytest.ExitCode.OK
    result.stdout.no_fnmatch_line("*repository tree*")

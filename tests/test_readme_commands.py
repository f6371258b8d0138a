"""The README's commands are the ones a newcomer can copy: the contract its command lines keep.

Checked from a fresh clone by hand (issue 13 item 9); pinned here so that a later edit keeps it:

- programs of the environments are called by path (``.venv/bin/...``, ``.venv-deploy/bin/...``,
  ``.venv-label/bin/...``), never a bare ``python`` / ``pneumonia-monai`` / ``torchrun`` /
  ``monai-deploy`` that exists only in an activated environment;
- no path of the development machine (``../shared``, ``/work/``);
- every ``scripts/...`` file and ``make`` target named exists;
- ``storescu`` proposes the compressed syntaxes through the shipped profile.
"""

from __future__ import annotations

import re

from repo_paths import REPO

BARE = ("python ", "python3 ", "pneumonia-monai ", "torchrun ", "monai-deploy ", "monailabel ")


def _command_lines() -> list[str]:
    """The lines of the README's ``bash`` blocks, continuation lines joined, comments dropped."""
    lines: list[str] = []
    in_bash = False
    pending = ""
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_bash = line.strip() == "```bash" and not in_bash
            continue
        if not in_bash or line.lstrip().startswith("#") or not line.strip():
            continue
        text = line.split("  #")[0].rstrip()
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        lines.append((pending + text).strip())
        pending = ""
    return lines


def test_readme_commands_call_the_environments_by_path() -> None:
    lines = _command_lines()
    assert len(lines) > 20
    for line in lines:
        assert not line.startswith(BARE), line
        assert "../shared" not in line and "/work/" not in line, line


def test_readme_scripts_and_make_targets_exist() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    scripts = set(re.findall(r"\bscripts/[\w.-]+\.(?:py|sh|cfg)", text))
    assert {"scripts/benchmark_node.py", "scripts/storescu-chest.cfg"} <= scripts
    for script in scripts:
        assert (REPO / script).is_file(), script
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.MULTILINE))
    for target in set(re.findall(r"`make ([\w-]+)`|^make ([\w-]+)", text, flags=re.MULTILINE)):
        name = target[0] or target[1]
        assert name in targets, name


def test_readme_storescu_lines_propose_the_compressed_syntaxes() -> None:
    storescu = [line for line in _command_lines() if line.startswith("storescu ")]
    assert storescu
    for line in storescu:
        assert line.startswith("storescu -xf scripts/storescu-chest.cfg Chest "), line

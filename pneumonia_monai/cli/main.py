"""``pneumonia-monai``: one entry point, one sub-command per module of :mod:`pneumonia_monai.cli`.

Every sub-command module has ``main(argv: Sequence[str] | None = None) -> int`` so that tests can call it
directly as well as through a subprocess.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from pneumonia_monai import __version__

#: Sub-command name -> (module, one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "datalist": (
        "pneumonia_monai.cli.datalist",
        "scan a Kaggle/Mendeley JPEG tree and write a MONAI datalist",
    ),
    "convert": (
        "pneumonia_monai.cli.convert",
        "convert a Kaggle JPEG tree to DICOM studies, or DICOM + labels to a datalist",
    ),
    "select": (
        "pneumonia_monai.cli.select",
        "triage a DICOM folder: which files are chest frontal CR/DX, and why",
    ),
    "check-codecs": (
        "pneumonia_monai.cli.check_codecs",
        "name the DICOM transfer syntaxes this install cannot decode",
    ),
    "infer": ("pneumonia_monai.cli.infer", "run the bundle on files and folders of DICOM and JPEG/PNG films"),
    "evaluate": (
        "pneumonia_monai.cli.evaluate",
        "score predictions against labels and draw the report figures",
    ),
    "serve": ("pneumonia_monai.cli.serve", "run a DICOM node that receives studies and sends results back"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: pneumonia-monai [--version] COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'pneumonia-monai COMMAND --help' for the options of one command."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the sub-command named by the first argument."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        sys.stdout.write(_usage() + "\n")
        return 0 if args else 2
    if args[0] == "--version":
        sys.stdout.write(f"pneumonia-monai {__version__}\n")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"pneumonia-monai: unknown command {name!r}\n\n{_usage()}\n")
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

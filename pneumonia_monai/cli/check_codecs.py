"""``pneumonia-monai check-codecs``: which transfer syntaxes of CR/DX archives this install decodes.

Prints one row per transfer syntax of :data:`pneumonia_monai.dicom.codecs.TRANSFER_SYNTAXES` with the
licence-safe pydicom decoder plugins available for it, and exits 1 when any syntax has none (the row
says which package to install). The GPL-3.0 ``pylibjpeg-libjpeg`` is never needed; when it is
installed anyway a note says so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pneumonia_monai.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    add_verbosity_args,
    configure_logging,
    returns_exit_status,
)
from pneumonia_monai.dicom import codecs


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``check-codecs``."""
    parser = argparse.ArgumentParser(
        prog="pneumonia-monai check-codecs",
        description="List the DICOM transfer syntaxes common in CR/DX archives and the installed "
        "licence-safe decoders for each; exit 1 if any syntax has none.",
    )
    add_verbosity_args(parser)
    return parser


def format_table(decoders: dict[str, list[str]]) -> str:
    """Return the syntax -> plugins table as text."""
    rows = [("transfer syntax", "UID", "decoders")]
    for syntax, plugins in decoders.items():
        found = ", ".join(plugins) if plugins else f"MISSING - install {codecs.install_hint(syntax)}"
        rows.append((codecs.TRANSFER_SYNTAXES[syntax], syntax, found))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{name:<{widths[0]}}  {syntax:<{widths[1]}}  {found}" for name, syntax, found in rows)


@returns_exit_status
def main(argv: Sequence[str] | None = None) -> int:
    """Print the table; return 0 when every syntax can be decoded, 1 otherwise."""
    args = build_parser().parse_args(argv)
    configure_logging(args)
    decoders = codecs.check_decoders()
    sys.stdout.write(format_table(decoders) + "\n")
    if codecs.gpl_libjpeg_installed():
        sys.stdout.write(
            "\nnote: pylibjpeg-libjpeg (GPL-3.0) is installed; its 'pylibjpeg' plugin for the JPEG and "
            "JPEG-LS syntaxes is not listed above and is not required.\n"
        )
    missing = [syntax for syntax, plugins in decoders.items() if not plugins]
    if missing:
        sys.stderr.write(
            f"check-codecs: no decoder for {len(missing)} transfer syntax(es): "
            + ", ".join(codecs.syntax_label(s) for s in missing)
            + "\n"
        )
        return EXIT_FAILURES
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

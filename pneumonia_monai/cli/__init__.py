"""The ``pneumonia-monai`` command line: one module per sub-command."""

"""A DICOM node for hospital integration: receive studies, process each once, send the results back.

Modules:

- :mod:`~pneumonia_monai.node.config`: the node configuration (flags and/or a YAML/JSON file);
- :mod:`~pneumonia_monai.node.inbox`: the durable inbox, stable-study detection, the bounded queue,
  restart recovery and the done/failed/late folders;
- :mod:`~pneumonia_monai.node.scp`: the Storage SCP (C-ECHO, C-STORE, compressed transfer syntaxes);
- :mod:`~pneumonia_monai.node.processor`: what is done with a stable study (default: the bundle);
- :mod:`~pneumonia_monai.node.destinations`: C-STORE and STOW-RS senders, retries with backoff;
- :mod:`~pneumonia_monai.node.service`: :class:`~pneumonia_monai.node.service.DicomNode`, the whole.

``pneumonia-monai serve`` (:mod:`pneumonia_monai.cli.serve`) runs a node.
"""

"""Helpers for the tests and benchmarks, not used by the product.

- :mod:`pneumonia_monai.devtools.netns`: a private network namespace (Linux, root) and loopback
  forwarders into it, for servers that cannot be told where to listen;
- :mod:`pneumonia_monai.devtools.orthanc`: a private Orthanc (Debian's ``orthanc`` and
  ``orthanc-dicomweb``) in such a namespace, reached on 127.0.0.1 only.

They live in the package so that both ``tests/`` and ``scripts/`` (``scripts/benchmark_node.py``) use
them without importing each other.
"""

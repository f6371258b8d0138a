"""DICOMweb client side: :mod:`pneumonia_monai.dicomweb.pull` (QIDO-RS search, WADO-RS retrieval, STOW-RS)."""

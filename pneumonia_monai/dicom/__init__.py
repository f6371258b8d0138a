"""DICOM input and output: the pixel pipeline, codecs, study selection, converters, SR and SC writers."""

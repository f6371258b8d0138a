"""Data ingest: Kaggle/Mendeley trees, patient-grouped splits and MONAI datalists."""

"""Code of the pneumonia MONAI Label app (MONAI Label puts the app folder on the path)."""

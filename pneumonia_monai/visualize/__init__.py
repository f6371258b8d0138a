"""Drawing for people: Grad-CAM maps, their overlays on films, and montages for reports.

Below both :mod:`pneumonia_monai.inference` and :mod:`pneumonia_monai.evaluation` (and training's
evaluation handler), which all draw with it:

- :mod:`~pneumonia_monai.visualize.gradcam`: the Grad-CAM of the classifier, leaving no trace on it;
- :mod:`~pneumonia_monai.visualize.overlay`: a map laid over a film (the network input, or the whole
  film at its own geometry, with a colour bar and captions), and the PNG writer;
- :mod:`~pneumonia_monai.visualize.montage`: a grid of titled tiles as one PNG.

The images are 8-bit RGB *for people* (PNG, DICOM Secondary Capture); the model never sees them.
"""

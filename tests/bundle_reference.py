"""What the bundle's own config keys give for one film, run in the main environment.

The optional-environment apps (MONAI Deploy, MONAI Label) must give the same probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser


def reference_probabilities(bundle: Path, film: Path) -> np.ndarray:
    """Class probabilities of ``film``: the bundle's preprocessing -> network -> inferer -> postprocessing."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    net.eval()
    image = parser.get_parsed_content("preprocessing")({"image": str(film)})["image"]
    with torch.no_grad():
        logits = parser.get_parsed_content("inferer")(image[None], net)
    probs = parser.get_parsed_content("postprocessing")({"pred": logits[0]})["pred"]
    return np.asarray(probs, dtype=np.float64)

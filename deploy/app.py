"""MONAI Deploy application: chest X-ray DICOM in, pneumonia DICOM SR out.

Pipeline (one run over the input folder)::

    DICOMDataLoaderOperator        every DICOM file under the input folder -> studies / series / instances
    -> ChestFilmSelectorOperator   chest frontal CR/DX instances (pneumonia_monai selection rules)
    -> PneumoniaClassifierOperator the bundle on each film's file (the probability of `pneumonia-monai infer`)
    -> PneumoniaSRWriterOperator   one TID 1500 Comprehensive SR per study, in the output folder

Run it (in the environment of ``scripts/make_optional_env.sh deploy``)::

    python deploy/app.py -i INPUT_DICOM_FOLDER -o OUTPUT_FOLDER -m bundle

``-m`` names the bundle folder (or its ``models/model.pt``); the SDK's ``HOLOSCAN_INPUT_PATH``,
``HOLOSCAN_OUTPUT_PATH`` and ``HOLOSCAN_MODEL_PATH`` environment variables are the defaults. Two more
environment variables tune it: ``PNEUMONIA_MONAI_SELECTION_RULES`` (a site's YAML selection rules) and
``PNEUMONIA_MONAI_DEVICE`` (torch device; default CUDA when available, else CPU).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from chest_operators import ChestFilmSelectorOperator, PneumoniaClassifierOperator, PneumoniaSRWriterOperator
from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator

import pneumonia_monai

logger = logging.getLogger(__name__)

#: Environment variable naming a site's YAML selection rules.
RULES_ENV = "PNEUMONIA_MONAI_SELECTION_RULES"
#: Environment variable naming the torch device.
DEVICE_ENV = "PNEUMONIA_MONAI_DEVICE"


class PneumoniaDeployApp(Application):
    """Classify the chest frontal CR/DX films of a DICOM folder and write a pneumonia SR per study."""

    name = "pneumonia_monai_deploy"
    description = "Pediatric chest X-ray pneumonia classification (research use, not for diagnosis)"
    #: The bundle's version (one version: ``pneumonia_monai.__version__`` is ``metadata.json``'s).
    version = pneumonia_monai.__version__

    def compose(self) -> None:
        """Build the operators and connect them."""
        context = Application.init_app_context(self.argv)
        input_path = Path(context.input_path)
        output_path = Path(context.output_path)
        logger.info("input %s, output %s, model %s", input_path, output_path, context.model_path)
        rules = os.environ.get(RULES_ENV) or None

        loader = DICOMDataLoaderOperator(
            self, CountCondition(self, 1), input_folder=input_path, name="dicom_loader"
        )
        selector = ChestFilmSelectorOperator(self, rules_file=rules, name="chest_film_selector")
        classifier = PneumoniaClassifierOperator(
            self,
            bundle_path=context.model_path,
            device=os.environ.get(DEVICE_ENV) or None,
            name="pneumonia_classifier",
        )
        writer = PneumoniaSRWriterOperator(
            self,
            output_folder=output_path,
            classifier_op=classifier,
            selection_rules=selector.selection_rules,
            name="pneumonia_sr_writer",
        )
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(
            selector, classifier, {("study_selected_series_list", PneumoniaClassifierOperator.INPUT)}
        )
        self.add_flow(
            classifier, writer, {(PneumoniaClassifierOperator.OUTPUT, PneumoniaSRWriterOperator.INPUT)}
        )


def main() -> None:
    """Run the application with the command line arguments of the MONAI Deploy SDK."""
    PneumoniaDeployApp().run()


if __name__ == "__main__":
    main()

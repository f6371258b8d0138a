# Two commands for a fresh machine:
#   make demo   set everything up, then run the shipped model on the embedded sample DICOM studies
#   make test   set everything up, then run the linters and the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Debian packages the tests use for real: dcmtk (storescu, echoscu, dcmcjpeg), dicom3tools (dciodvfy),
# Orthanc and its DICOMweb plugin (the PACS of the round-trip tests).
SYSTEM_PACKAGES := dcmtk dicom3tools orthanc orthanc-dicomweb
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_OUT ?= demo-output
BENCH_DIR ?= /tmp/pneumonia-monai-benchmark

.PHONY: install system-deps demo train-demo test test-fast lint benchmark benchmark-node clean

install: $(VENV)/.installed

# No pip cache: a fresh machine installs once, and a cache would hold every downloaded wheel twice on disk.
$(VENV)/.installed: pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	PIP_NO_CACHE_DIR=1 $(PY) -m pip install --quiet -e '.[test,ray]'
	touch $@

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: install
	$(PY) -m pneumonia_monai infer bundle/sample_data/dicom --output $(DEMO_OUT) --heatmaps
	@echo "results: $(DEMO_OUT)/results.csv, $(DEMO_OUT)/studies.csv, SRs in $(DEMO_OUT)/sr/"

train-demo: install
	$(PY) -m monai.bundle run training --config_file bundle/configs/train.json \
		--ckpt_dir $(DEMO_OUT)/train --output_dir $(DEMO_OUT)/train/runs

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy pneumonia_monai scripts

test: install system-deps lint
	$(PY) -m pytest

# Everyday work: the suite without the tests marked slow (real trainings, bundle and CLI subprocesses,
# load tests, the optional environments); make test and CI run every test.
test-fast: install system-deps
	$(PY) -m pytest -m "not slow"

benchmark: install
	$(PY) scripts/benchmark_train.py
	$(PY) scripts/benchmark_infer.py --n 120 --batch-size 8 --workers 2 --workdir $(BENCH_DIR)

# The node's study latency against a private Orthanc (root: Orthanc runs in a network namespace).
benchmark-node: install system-deps
	$(PY) scripts/benchmark_node.py --studies 3 --stable-seconds 2 --workdir $(BENCH_DIR)-node

clean:
	rm -rf $(DEMO_OUT) bundle/runs bundle/eval .pytest_cache .ruff_cache

# Optional environments: MONAI Deploy App SDK (with Holoscan) and MONAI Label each break or pin
# packages of the main environment, so each lives in its own virtualenv.
.PHONY: deploy-env label-env test-deploy test-label
deploy-env: .venv-deploy/.installed
.venv-deploy/.installed: pyproject.toml deploy/requirements.txt scripts/make_optional_env.sh
	PYTHON=$(PYTHON) bash scripts/make_optional_env.sh deploy
	touch $@

label-env: .venv-label/.installed
.venv-label/.installed: pyproject.toml monailabel_app/requirements.txt monailabel_app/requirements-nodeps.txt \
		monailabel_app/compat/pneumonia_label_compat.py scripts/make_optional_env.sh
	PYTHON=$(PYTHON) bash scripts/make_optional_env.sh label
	touch $@

test-deploy: install deploy-env
	PNEUMONIA_MONAI_REQUIRE_OPTIONAL_ENVS=deploy $(PY) -m pytest tests/test_deploy_app.py

test-label: install label-env
	PNEUMONIA_MONAI_REQUIRE_OPTIONAL_ENVS=label $(PY) -m pytest tests/test_monailabel.py

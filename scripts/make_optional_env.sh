#!/usr/bin/env bash
# Build one of the project's optional virtual environments beside the main .venv.
#
#   scripts/make_optional_env.sh deploy   # .venv-deploy: MONAI Deploy App SDK + Holoscan (CUDA 13 runtime)
#   scripts/make_optional_env.sh label    # .venv-label:  MONAI Label
#
# They are separate environments because each brings dependencies that must not sit beside the main
# one: Holoscan (CUDA 13 runtime, CuPy, Triton client) and MONAI Label (a server stack, torchvision,
# and declared pins that conflict with the project's: see monailabel_app/requirements.txt). Every environment pins
# torch 2.13.0 (the project's pin) through a constraints file so that no other torch is ever resolved:
# - deploy: torch==2.13.0, which this machine's wheel folder answers with the CPU build (2.13.0+cpu);
# - label: torch===2.13.0 (arbitrary equality: the exact string, so never the local "+cpu" build),
#   i.e. the registry's CUDA build. It runs on a machine without a GPU (torch.cuda.is_available() is
#   False), and it is what the registry's torchvision 0.28.0 (MONAI Label imports torchvision) was
#   built against: its operators need libtorch_cuda.so, which the CPU build lacks. About 7 GB.
# The label environment also gets monailabel_app/compat/pneumonia_label_compat.py (with a .pth that
# imports it at start-up): an import alias for pydicom._storage_sopclass_uids, removed in pydicom 3 and
# imported by pydicom-seg 0.4.1 (which MONAI Label 0.8.5 imports); see that module.
#
# PYTHON selects the interpreter (default: python3). The environment is created in the repository
# root; an existing one is reused (pip makes it match the pins).
set -euo pipefail

usage() {
    echo "usage: $0 deploy|label" >&2
    exit 2
}

[[ $# -eq 1 ]] || usage
kind="$1"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"

case "$kind" in
    deploy)
        env_dir="$root/.venv-deploy"
        requirements="$root/deploy/requirements.txt"
        torch_pin="torch==2.13.0"
        ;;
    label)
        env_dir="$root/.venv-label"
        requirements="$root/monailabel_app/requirements.txt"
        torch_pin="torch===2.13.0"
        ;;
    *)
        usage
        ;;
esac

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "$torch_pin" >"$constraints"
# Also for the isolated build environments of source distributions.
export PIP_CONSTRAINT="$constraints"
# No copy of the downloaded wheels in pip's cache: the label environment's CUDA torch and its nvidia-*
# libraries alone are about 4 GB of downloads, which a cache would hold twice on disk (CI ran out of disk).
export PIP_NO_CACHE_DIR=1

if [[ ! -x "$env_dir/bin/python" ]]; then
    "$python" -m venv "$env_dir"
fi
"$env_dir/bin/python" -m pip install --quiet --upgrade "pip>=25.1.1"
"$env_dir/bin/python" -m pip install --quiet -c "$constraints" "$torch_pin"
"$env_dir/bin/python" -m pip install --quiet -c "$constraints" -e "$root[test]" -r "$requirements"
# Packages whose declared dependencies conflict with the project's (each file says why).
nodeps="${requirements%.txt}-nodeps.txt"
if [[ -f "$nodeps" ]]; then
    "$env_dir/bin/python" -m pip install --quiet --no-deps -r "$nodeps"
fi
if [[ "$kind" == label ]]; then
    site="$("$env_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    install -m 644 "$root/monailabel_app/compat/pneumonia_label_compat.py" "$site/pneumonia_label_compat.py"
    echo "import pneumonia_label_compat" >"$site/pneumonia_label_compat.pth"
fi

echo "$env_dir ready"

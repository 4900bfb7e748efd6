#!/usr/bin/env bash
# One-command set-up of the OpenMMLab stack for MMHisto (CPU by default).
#
#   bash tools/setup_env.sh          # idempotent: returns in about a second once done
#
# Installs into the active virtual environment, or creates/uses .venv/ in the repo root.
# Environment variables:
#   PYTHON            interpreter used to create .venv (default: python3)
#   TORCH_SPEC        pip requirement for torch (default: torch==2.13.0, CPU build).
#                     CUDA users: e.g. TORCH_SPEC="torch==2.1.2" TORCH_INDEX_URL=<their index>
#   TORCH_INDEX_URL   index used when TORCH_SPEC is not found in the local wheel directory
#                     (default: the PyTorch CPU index), so a CUDA build is never pulled by accident.
#   MMHISTO_FORCE_SETUP=1  redo every step even if the stamp says it is done.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if [ -n "${VIRTUAL_ENV:-}" ]; then
    venv="$VIRTUAL_ENV"
else
    venv="$repo/.venv"
    if [ ! -x "$venv/bin/python" ]; then
        echo "[mmhisto] creating virtual environment $venv"
        "${PYTHON:-python3}" -m venv "$venv"
    fi
fi
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check)

torch_spec="${TORCH_SPEC:-torch==2.13.0}"
torch_index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"

# The stamp records what this set-up was made from; any change re-runs the (idempotent) steps.
stamp="$venv/.mmhisto-setup"
want="$(cat tools/setup_env.sh setup.py requirements/*.txt | sha256sum | cut -c1-16) $torch_spec"
if [ "${MMHISTO_FORCE_SETUP:-0}" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && "$py" -c "import mmcv.ops, mmdet, mmseg, projects" 2>/dev/null; then
    exit 0
fi

t0=$(date +%s)
echo "[mmhisto] setting up $venv (torch: $torch_spec)"

# 1. torch, CPU build unless TORCH_SPEC says otherwise. --no-index first: a local wheel
#    directory (pip's find-links) is used without touching any index (its dependencies then
#    come from the normal index); otherwise the CPU index. A plain PyPI "torch" would be a multi-GB CUDA build on Linux.
if ! "$py" -c "import torch" 2>/dev/null; then
    if "${pip[@]}" install --no-index --no-deps "$torch_spec" 2>/dev/null; then
        "${pip[@]}" install "$torch_spec"     # its pure-Python dependencies
    else
        echo "[mmhisto] $torch_spec is not in a local wheel directory; using $torch_index"
        "${pip[@]}" install "$torch_spec" --index-url "$torch_index"
    fi
fi
if "${pip[@]}" show torchvision >/dev/null 2>&1; then
    echo "[mmhisto] WARNING: torchvision is installed in $venv; if mmengine fails to import," \
         "remove it (pip uninstall torchvision): MMHisto does not use it." >&2
fi

# 2. build tools and mmengine
"${pip[@]}" install -r requirements/build.txt "$(grep -E '^mmengine' requirements/mminstall.txt)"

# 3. mmcv with compiled ops: from pip's cache if built before, else from the sdist.
mmcv_ok() { "$py" -c "import mmcv; assert mmcv.__version__ == '2.1.0'; from mmcv.ops import RoIAlign, nms, batched_nms" 2>/dev/null; }
if ! mmcv_ok; then
    echo "[mmhisto] building mmcv 2.1.0 with its C++ ops from source: this takes about" \
         "5-7 minutes on 2 cores (once; pip caches the wheel afterwards)"
    CFLAGS="${CFLAGS:--g0 -O2}" CXXFLAGS="${CXXFLAGS:--g0 -O2}" MMCV_WITH_OPS=1 \
        FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "${pip[@]}" install --no-build-isolation "mmcv==2.1.0"
    if ! mmcv_ok; then
        echo "[mmhisto] ERROR: mmcv 2.1.0 installed but 'from mmcv.ops import RoIAlign, nms," \
             "batched_nms' fails; see the error below" >&2
        "$py" -c "from mmcv.ops import RoIAlign, nms, batched_nms"
        exit 1
    fi
fi

# 4. mmdet, mmseg, the scientific stack, the tests' needs, the optional "slide" extra
#    (OpenSlide + its bundled C library, so the tests run the OpenSlide reader too) and
#    MMHisto itself (editable).
"${pip[@]}" install -r requirements/mminstall.txt -r requirements/tests.txt \
    -r requirements/optional.txt -e .
# test references whose metadata pins an old torch (see the file): without dependencies
"${pip[@]}" install --no-deps -r requirements/tests_nodeps.txt

if "${pip[@]}" show torchvision >/dev/null 2>&1; then
    echo "[mmhisto] ERROR: a dependency pulled torchvision into $venv; it does not match" \
         "the CPU torch. Remove it: $py -m pip uninstall -y torchvision" >&2
    exit 1
fi
"$py" -c "import mmcv.ops, mmdet, mmseg, projects; print('[mmhisto] ok: torch', __import__('torch').__version__, 'mmcv', mmcv.__version__, 'mmdet', mmdet.__version__, 'mmseg', mmseg.__version__)"
echo "$want" > "$stamp"
echo "[mmhisto] set-up done in $(( $(date +%s) - t0 )) s"

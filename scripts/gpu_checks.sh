#!/usr/bin/env bash
# GPU checks in one go (CUDA tests + benchmark), as run on a lent H100/H200 machine.
# Optional wheels for packages the machine lacks may be placed in .whl/ (pytorch-msssim, monai).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider ${TESTS:-tests/test_ssim.py tests/test_losses.py} 2>&1 | tail -15
python3 scripts/bench_ssim.py --device cuda --size 128 256 --repeat 30 --loss
VOLQA_COMPILE=1 python3 scripts/bench_ssim.py --device cuda --size 256 --repeat 30 --loss --impls volqa
python3 scripts/bench_ssim.py --device cuda --size 512 --impls volqa
# #11's batch ratio with SSIM on the GPU (reading stays on the CPU cores); needs volqa's I/O deps
if python3 -c "import nibabel, SimpleITK, pandas, pyarrow" 2>/dev/null; then
  python3 scripts/bench_batch.py --device cuda --skip threads --pairs 6 --workers 1,2,4 \
    --executors threads,processes
else
  echo "bench_batch skipped: nibabel, SimpleITK, pandas or pyarrow missing (add wheels to .whl/)"
fi

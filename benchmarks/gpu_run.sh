#!/usr/bin/env bash
# Every GPU check of the CUDA path in one prepared run (device time is scarce: minutes).
#
#   bash benchmarks/gpu_run.sh [STAGES]        # STAGES: comma-separated, default all below
#
# Stages, in order: env (versions), tests (the gpu-marked tests, with the rest of the suite
# run beside them with CUDA visible: correctness only, no timings), probe (where a step and an
# inference pass spend their time), speed (the engine against the published loop, and
# inference; alone on the machine), real (benchmarks/real.py rows with
# a time-to-quality curve; alone), stacks (FMDD field 1). Each stage has its own time limit and
# writes $OUT/<stage>.log, so one that fails or runs over does not cost the others.
# Real data: .gpu/data (a copy of ../shared/data/real's pairs, W2S channel 0 and FMDD field 1;
# ignored by git, carried to the machine). Wheels of packages the machine lacks: .whl (README of
# the device tool); the machine's own torch is used. Prepared once here (~40 MB in all):
#   R=../shared/data/real; mkdir -p .gpu/data/w2s/noisy .gpu/data/w2s/gt .gpu/data/fmdd_bpae_b
#   cp -r $R/pairs .gpu/data/; cp $R/fmdd_bpae_b/*field01* .gpu/data/fmdd_bpae_b/
#   for k in noisy gt; do cp $R/w2s/$k/w2s_0{0[1-9],1[0-9],20}_ch0.tif $R/w2s/$k/w2s_003_ch1.tif \
#       $R/w2s/$k/w2s_012_ch2.tif .gpu/data/w2s/$k/; done
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform any -d .whl  dask distributed zarr numcodecs \
#       donfig google-crc32c partd locket tblib zict tornado ome-zarr ome-zarr-models \
#       pydantic pydantic-core pydantic-zarr annotated-types typing-inspection typing-extensions \
#       Deprecated     # (the versions of the project's venv; see docs/benchmarks.md, GPU)
# and run through the device tool with carry [".gpu", ".whl"].
set -u
STAGES=${1:-env,tests,speed,real}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src"
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
DATA=${B2U_REAL_DATA:-.gpu/data}
CASES=${CASES:-w2s-stack,pair:gigadb_actin_confocal,pair:isim_er,pair:gigadb_mito_60x,w2s:003_ch1}
# the GPU default (48x5 from scratch) against the CPU recipe (24x4, warm-started from the
# pretrained network) on the GPU: on 2026-12-04 the first at 20 s was 0.5-1.0 dB below the
# CPU default at 120 s on three cases (docs/benchmarks.md, GPU): the next run decides the preset
CPU_RECIPE='default[width=24;depth=4;patch_size=64;lr=0.001;warm_start=pretrained;warm_lr=0.0003]'
ROWS=${ROWS:-default,$CPU_RECIPE}
BUDGET=${BUDGET:-20}
DEV=${DEV:-cuda}  # DEV=cpu B2U_TEST_DEVICE=cpu: a dry run here before the GPU

has() { [[ ",$STAGES," == *",$1,"* ]]; }
run() {  # run NAME LIMIT CMD...: the command's output in $OUT/NAME.log, its tail here
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s) $(date +%T)"
    timeout -k 5 "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "== $name rc=$? $(date +%T)"
    tail -n "${TAIL:-30}" "$OUT/$name.log"
}

if has env; then
    { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
      $PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__,
torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.is_bf16_supported())"
      nproc; } >"$OUT/env.log" 2>&1
    cat "$OUT/env.log"
fi
if has tests; then
    # the rest of the suite with CUDA visible, beside the gpu tests (widgets need napari/Qt,
    # which the machine lacks); --timeout: a test that compiles for minutes is cut, not waited;
    # --session-timeout (pytest-timeout >= 2.3) ends the run in time to print its failures
    limit=${SUITE_LIMIT:-150}
    timeout -k 5 "$limit" taskset -c "${SUITE_CPUS:-8-15}" $PY -m pytest -p no:cacheprovider --tb=short -v \
        -n 6 --timeout 90 --session-timeout $((limit - 20)) --maxfail "${SUITE_MAXFAIL:-3}" \
        -m "not gui and not gpu" \
        --ignore=tests/smoke ${SUITE_ARGS:-} \
        --ignore-glob='tests/test_widget*' --continue-on-collection-errors \
        >"$OUT/suite.log" 2>&1 &
    suite=$!
    run tests "${TESTS_LIMIT:-150}" taskset -c "${TEST_CPUS:-0-7}" $PY -m pytest -q -p no:cacheprovider -m gpu \
        -rs tests/test_gpu.py
    wait $suite
    echo "== suite rc=$?"
    grep -E "FAILED|ERROR|passed|failed" "$OUT/suite.log" | tail -n 40
fi
if has probe; then
    run probe "${PROBE_LIMIT:-100}" $PY benchmarks/gpu_probe.py --device "$DEV" \
        --parts "${PROBE_PARTS:-steps,profile,net,pipeline}"
fi
if has speed; then
    run speed "${SPEED_LIMIT:-150}" $PY benchmarks/speed.py --device "$DEV" --full \
        --parts "${SPEED_PARTS:-train,inference}" --steps "${SPEED_STEPS:-100}"
fi
if has real; then
    TAIL=60 run real "${REAL_LIMIT:-170}" $PY benchmarks/real.py --data "$DATA" --device "$DEV" \
        --budget "$BUDGET" --curve "${CURVE:-25}" --methods "$ROWS" --cases "$CASES" \
        --json "$OUT/real_gpu.json"
fi
if has stacks; then
    run stacks "${STACKS_LIMIT:-120}" $PY benchmarks/stacks.py --data "$DATA" --device "$DEV" \
        --budget "$BUDGET" --cases fmdd:01 --methods default --json "$OUT/stacks_gpu.json"
fi

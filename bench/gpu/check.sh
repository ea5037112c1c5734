#!/usr/bin/env bash
# The whole GPU check of the CUDA backend (issue 12) in one call, about 5 minutes on an H100/H200 with 16 cores:
#   0. node and the production node_modules: .carry/unpack.sh when present (machines without Node.js or network;
#      see ../shared/gpu/pack.sh and bench/README.md)
#   1. the addon with CUDA: used as it is when build/Release/moeserve.node has the CUDA backend compiled in and
#      build/Release/backend-ops is there, else built here with plain CMake (cmake-js would download Node's
#      headers; node-api-headers in node_modules has them) when nvcc is on PATH or in /usr/local/cuda
#   2. build/Release/backend-ops --a cpu --b cuda: every Backend op against its CPU twin
#   3. compute-sanitizer memcheck over backend-ops (skipped, with the reason, where it is absent or unsupported)
#   4. bench/gpu/gpu-check.ts: teacher-forced top-5 logprobs of generated checkpoints (CUDA vs CPU, both vs
#      transformers where python3 has torch + transformers), 32 concurrent greedy requests vs one at a time,
#      a 32K-token prompt served
#   5. compute-sanitizer memcheck over a small end-to-end pass through the addon (tiny checkpoint)
# and prints a table last (check, figure, limit, result). Exit status 1 when any check fails.
# Logs go to $OUT when set (the lent GPU machines bring it back), else to $MOESERVE_GPU_CHECK_LOGS or a temp folder.
# Environment: MOESERVE_GPU_CHECK_BUILD=1 rebuilds even when the addon has CUDA; MOESERVE_GPU_CHECK_DEADLINE (540 s)
# bounds the whole run, so that the table is printed inside a 10-minute command limit; MOESERVE_GPU_CHECK_DRY_RUN=1
# runs the same steps with no GPU (the scalar CPU kernels as the backend under test, small checkpoints), to try the
# script itself. Extra arguments are passed to gpu-check.ts (e.g. --no-hf, --shapes tiny,slice).
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
start=$SECONDS
deadline=${MOESERVE_GPU_CHECK_DEADLINE:-540}
logs=${OUT:-${MOESERVE_GPU_CHECK_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/moeserve-gpu-check.XXXXXX")}}
mkdir -p "$logs"
rows=$(mktemp "${TMPDIR:-/tmp}/moeserve-gpu-rows.XXXXXX")
if [ "${MOESERVE_GPU_CHECK_DRY_RUN:-0}" = 1 ]; then
  dry=1 under=cpu:scalar e2e=(--backends cpu:scalar,cpu --shapes tiny,dense,yarn --engine-shape tiny --long-tokens 4096)
else
  dry=0 under=cuda e2e=(--backends cuda,cpu)
fi
prep=
trap 'rm -f "$rows"; [ -n "$prep" ] && kill "$prep" 2>/dev/null' EXIT

step() { printf '\n=== [%dm%02ds] %s\n' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)) "$*"; }
row() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$rows"; }
last_line() { grep -v '^[[:space:]]*$' "$1" | tail -n 1 | cut -c1-110; }
# Seconds a step may take: its own limit, or what is left before the deadline less a reserve for the table.
budget() { local left=$((deadline - (SECONDS - start) - 15)); ((left < 1)) && left=1; ((left < $1)) && echo "$left" || echo "$1"; }

table() {
  echo
  echo "GPU check ($(date -u +%Y-%m-%dT%H:%MZ), $((SECONDS - start)) s; logs in $logs)"
  # Columns padded by characters (Δ, ≥ are one each), with node where there is one, else awk.
  if command -v node >/dev/null; then
    node -e '
      const rows = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean).map((l) => l.split("\t"));
      const all = [["check", "figure", "limit", "result"], ...rows];
      const w = [0, 1, 2, 3].map((i) => Math.max(...all.map((r) => [...(r[i] ?? "")].length)));
      const line = (r) => "| " + w.map((n, i) => (r[i] ?? "") + " ".repeat(n - [...(r[i] ?? "")].length)).join(" | ") + " |";
      console.log([line(all[0]), "|" + w.map((n) => "-".repeat(n + 2)).join("|") + "|", ...rows.map(line)].join("\n"));' "$rows"
  else
    awk -F'\t' 'BEGIN { print "| check | figure | limit | result |" } { printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$rows"
  fi | tee "$logs/table.md"
  if grep -q $'\tFAIL$' "$rows"; then echo "$(grep -c $'\tFAIL$' "$rows") check(s) failed"; return 1; fi
  echo "no check failed"
}
finish() { table; exit $?; }

# ---- 0. node and node_modules
step "node and node_modules"
if [ -f .carry/unpack.sh ]; then bash .carry/unpack.sh || row "unpack .carry" "unpack.sh failed" "node + node_modules" FAIL; fi
if ! command -v node >/dev/null; then
  row "node" "not found (on a machine without Node.js: bash ../shared/gpu/pack.sh here, carry .carry)" "node on PATH" FAIL
  finish
fi
[ -d node_modules ] || { row "node_modules" "missing (npm install, or carry .carry)" "present" FAIL; finish; }
echo "node $(node -v); $(ls node_modules | wc -l) packages"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader || true
else
  echo "nvidia-smi not found"
fi

# The checkpoints of step 4 (the real-shape slice is 3.7 GB, a minute to write) are generated meanwhile.
node bin/run-ts.js bench/gpu/gpu-check.ts --prepare-only "${e2e[@]}" "$@" >"$logs/gpu-check.log" 2>&1 &
prep=$!

cuda_field() {
  node -e '
    const a = require("./build/Release/moeserve.node");
    const c = a.backends().find((b) => b.name === "cuda") || {};
    const d = (c.devices || [])[0];
    const v = { compiled: c.compiled === true, available: c.available === true, archs: c.archs || "", detail: c.detail || "",
                device: d ? `${d.name}, ${(d.memoryBytes / 2 ** 30).toFixed(0)} GiB, sm ${d.computeCapability}` : "" }[process.argv[1]];
    process.stdout.write(String(v));' "$1" 2>/dev/null
}
find_ops() { for f in build/Release/backend-ops build/backend-ops; do [ -x "$f" ] && { echo "$f"; return; }; done; }

# ---- 1. the addon with CUDA
step "the addon"
if ((dry)); then
  [ -n "$(find_ops)" ] || { row "addon" "no backend-ops beside it (npm run build:native)" "built" FAIL; finish; }
  row "addon" "dry run: no GPU; $under checked against cpu" "" skip
elif [ "$(cuda_field compiled)" = true ] && [ -n "$(find_ops)" ] && [ "${MOESERVE_GPU_CHECK_BUILD:-0}" != 1 ]; then
  row "addon" "prebuilt, CUDA for $(cuda_field archs)" "CUDA compiled in" pass
else
  command -v nvcc >/dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"; }
  if ! command -v nvcc >/dev/null; then
    row "build (CUDA)" "no nvcc on PATH or in /usr/local/cuda, and the addon has no CUDA" "CUDA compiled in" FAIL
    finish
  fi
  echo "building with $(nvcc --version | tail -n 1), $(cmake --version | head -n 1), $(nproc) cores (log: $logs/build.log)"
  t0=$SECONDS
  inc=$(node -p "require('node-api-headers').include_dir")
  export MOESERVE_CUDA=1
  if timeout "$(budget 300)" cmake -S native -B build/gpu-check -DCMAKE_BUILD_TYPE=Release \
       -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$root/build/Release" -DCMAKE_RUNTIME_OUTPUT_DIRECTORY="$root/build/Release" \
       -DCMAKE_JS_INC="$inc" >"$logs/build.log" 2>&1 &&
     timeout "$(budget 300)" cmake --build build/gpu-check --parallel "$(nproc)" >>"$logs/build.log" 2>&1 &&
     [ "$(cuda_field compiled)" = true ] && [ -n "$(find_ops)" ]; then
    row "build (CUDA)" "$((SECONDS - t0)) s, for $(cuda_field archs)" "CUDA compiled in" pass
  else
    tail -n 30 "$logs/build.log"
    row "build (CUDA)" "failed after $((SECONDS - t0)) s: $(last_line "$logs/build.log")" "CUDA compiled in" FAIL
    finish
  fi
fi
if ((!dry)) && [ "$(cuda_field available)" != true ]; then
  row "CUDA usable" "$(cuda_field detail)" "a device" FAIL
  finish
fi
((dry)) || echo "CUDA: $(cuda_field device); compiled for $(cuda_field archs)"
ops=$(find_ops)

# ---- 2. op conformance
step "$ops --a cpu --b $under"
timeout "$(budget 120)" "$ops" --a cpu --b "$under" 2>&1 | tee "$logs/backend-ops.log"
rc=${PIPESTATUS[0]}
label="ops: $under vs cpu (backend-ops)"
case $rc in
  0) row "$label" "$(last_line "$logs/backend-ops.log")" "every op within bf16 limits" pass ;;
  124) row "$label" "timed out" "every op within bf16 limits" FAIL ;;
  *) row "$label" "exit $rc: $(last_line "$logs/backend-ops.log")" "every op within bf16 limits" FAIL ;;
esac

# ---- 3, 5. compute-sanitizer
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer /opt/nvidia/*/compute-sanitizer 2>/dev/null | head -n 1)
# memcheck LABEL LOG LIMIT_S COMMAND...: one row, clean / errors / unsupported (skip) / timed out.
memcheck() {
  local label=$1 log=$2 limit=$3; shift 3
  if ((dry)); then row "$label" "not run: dry run (no GPU)" "0 errors" skip; return; fi
  if [ -z "$sanitizer" ]; then row "$label" "not run: compute-sanitizer not found" "0 errors" skip; return; fi
  local t; t=$(budget "$limit")
  if ((t < 30)); then row "$label" "not run: the ${deadline} s deadline is near" "0 errors" skip; return; fi
  step "compute-sanitizer memcheck: $*"
  timeout "$t" "$sanitizer" --tool memcheck --error-exitcode 97 --print-limit 20 "$@" >"$log" 2>&1
  local rc=$? summary
  summary=$(grep -o 'ERROR SUMMARY: [0-9]* error[s]*' "$log" | tail -n 1)
  tail -n 5 "$log"
  # The sanitizer's own lines start with '========='; gVisor machines answer 'Device not supported'.
  if grep -qiE '^=+ .*(not supported|unable to (initialize|attach))' "$log"; then
    row "$label" "not run: $(grep -iE -m1 '^=+ .*(not supported|unable to)' "$log" | sed 's/^=* *//' | cut -c1-90)" "0 errors" skip
  elif ((rc == 124)); then
    row "$label" "timed out after $t s${summary:+ ($summary so far)}" "0 errors" FAIL
  elif ((rc == 0)) && [ -n "$summary" ] && [ "${summary#ERROR SUMMARY: 0 }" != "$summary" ]; then
    row "$label" "$summary" "0 errors" pass
  else
    row "$label" "exit $rc: ${summary:-$(last_line "$log")}" "0 errors" FAIL
  fi
}
memcheck "memcheck: backend-ops" "$logs/memcheck-ops.log" 150 "$ops" --a cpu --b "$under"

# ---- 4. end to end
step "bench/gpu/gpu-check.ts: waiting for its checkpoints"
wait "$prep" || echo "generating the checkpoints failed (gpu-check.ts retries): $(last_line "$logs/gpu-check.log")"
prep=
cat "$logs/gpu-check.log"
t=$(budget 420)
step "bench/gpu/gpu-check.ts (limit $t s)"
timeout "$t" node bin/run-ts.js bench/gpu/gpu-check.ts "${e2e[@]}" --rows "$rows" --json "$logs/gpu-check.json" "$@" 2>&1 |
  tee -a "$logs/gpu-check.log"
rc=${PIPESTATUS[0]}
((rc == 124)) && row "gpu-check.ts" "timed out after $t s (the rows above finished)" "done in time" FAIL
((rc != 0 && rc != 1 && rc != 124)) && row "gpu-check.ts" "exit $rc: $(last_line "$logs/gpu-check.log")" "exit 0" FAIL

memcheck "memcheck: addon end to end (tiny)" "$logs/memcheck-e2e.log" 150 \
  node bin/run-ts.js bench/gpu/gpu-check.ts --backends cuda,cpu --shapes tiny --engine-shape tiny --concurrent 4 --long-tokens 2048 --no-hf

finish

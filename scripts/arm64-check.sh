#!/usr/bin/env bash
# Check spoofsdk on arm64 (Raspberry Pi OS 64-bit userland = Debian bookworm arm64) under QEMU
# user-mode emulation, from an x86_64 Debian/Ubuntu host. Needs root (debootstrap, chroot, mounts).
#
#   scripts/arm64-check.sh [--quick] [--rebuild] [--no-tests] [--no-compare] [EXTRA_MODEL.onnx ...]
#
# What it does:
#   1. installs qemu-user-static, debootstrap, binfmt-support on the host if missing, and makes
#      the kernel's binfmt_misc run aarch64 binaries through qemu; if that is not possible here,
#      every arm64 program is started through qemu-aarch64-static explicitly instead;
#   2. builds (once) a Debian bookworm arm64 root with python3 (3.11, as on Raspberry Pi OS
#      bookworm) in $ARM64_ROOT (default: <repo>/arm64-root, git-ignored) and reuses it later;
#   3. downloads the aarch64 wheels of the runtime's dependencies plus onnx/pytest/psutil for the
#      tests (pinned to the versions in the host venv) into $ARM64_WHEELS (default: <repo>/.whl-arm64,
#      cached), builds the spoofsdk wheel from the working tree (`pip wheel --no-deps`), and installs
#      them into a venv in the root (/opt/spoofsdk-venv) with the root's own pip;
#   4. runs the runtime's tests in the root (tests/test_*.py except trainer/quantize/benchmark/export
#      ones, this script's own test, and any that import torch or trainer), with the data
#      bind-mounted read-only;
#   5. compares every model's outputs on arm64 with the x86 outputs (scripts/compare_outputs.py):
#      every spoofsdk/assets/*.onnx, the EXTRA_MODEL arguments, and the tiny test fixture model
#      (fp32, plus fp16/int8 variants), on NUAA frames (runtime detector + crop) and gc535 crops,
#      once per emulated CPU in $ARM64_QEMU_CPUS (default: cortex-a72 = Pi 4, cortex-a76 = Pi 5).
#   Exits non-zero when a test fails or an output differs beyond tolerance.
#
# --quick      reuse the root (build it if absent), run only a handful of tests ($ARM64_QUICK_TESTS,
#              default test_crop*.py test_model*.py, on the first CPU of $ARM64_QEMU_CPUS) and the
#              full output comparison (every CPU of $ARM64_QEMU_CPUS).
# --rebuild    delete and rebuild the arm64 root.
#
# Environment: ARM64_ROOT, ARM64_WHEELS, ARM64_MIRROR (Debian mirror), ARM64_QEMU_CPUS,
#   ARM64_QUICK_TESTS, ARM64_NICE (niceness of the heavy steps, default 15),
#   ARM64_ROOT_BUILD=extract (build the root by unpacking packages without running their maintainer
#   scripts: ~30 s instead of ~5 min; a full debootstrap is the default),
#   ARM64_FORCE_QEMU=1 (do not use binfmt_misc; start programs through qemu-aarch64-static, as on
#   hosts where binfmt_misc is unavailable; implies the extract build), ARM64_KEEP_WORK=1,
#   SPOOFSDK_DATA, SPOOFSDK_YUNET_MODEL, HOST_PYTHON (x86 python with spoofsdk's deps + onnx).
# Timings under emulation say nothing about a board and are not reported.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${ARM64_ROOT:-$REPO/arm64-root}
WHEELS=${ARM64_WHEELS:-$REPO/.whl-arm64}
MIRROR=${ARM64_MIRROR:-http://deb.debian.org/debian}
DATA=${SPOOFSDK_DATA:-$REPO/../shared/data}
YUNET=${SPOOFSDK_YUNET_MODEL:-$REPO/../shared/models/yunet/face_detection_yunet_2023mar.onnx}
HOST_PY=${HOST_PYTHON:-$REPO/.venv/bin/python}
CPUS=(${ARM64_QEMU_CPUS:-cortex-a72 cortex-a76})
QUICK_TESTS=${ARM64_QUICK_TESTS:-"test_crop*.py test_model*.py"}
NICE=${ARM64_NICE:-15}
ROOT_BUILD=${ARM64_ROOT_BUILD:-debootstrap}   # or "extract": debootstrap --foreign + unpack, no emulated second stage           # emulation is CPU-heavy; the machine may be shared
SUITE=bookworm
VENV=/opt/spoofsdk-venv          # inside the root
CHECK=/opt/spoofsdk-check        # inside the root: tests, scripts, work dir (bind mount)
MARKER=.spoofsdk-arm64-root      # written when the root is complete

QUICK=0 REBUILD=0 RUN_TESTS=1 RUN_COMPARE=1
EXTRA_MODELS=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1 ;;
    --rebuild) REBUILD=1 ;;
    --no-tests) RUN_TESTS=0 ;;
    --no-compare) RUN_COMPARE=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) EXTRA_MODELS+=("$(realpath "$1")") ;;
  esac
  shift
done

log() { printf '\n[arm64-check %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '[arm64-check] ERROR: %s\n' "$*" >&2; exit 2; }
SECONDS=0

[[ $EUID -eq 0 ]] || die "needs root (debootstrap, chroot, bind mounts); run with sudo"
[[ $(uname -m) == x86_64 ]] || die "this script emulates arm64 on an x86_64 host; on a real arm64 board just pip install and run pytest"
[[ -d $DATA/nuaa && -d $DATA/gc535 ]] || die "data not found at $DATA (set SPOOFSDK_DATA)"
[[ -x $HOST_PY ]] || die "host python $HOST_PY not found (set HOST_PYTHON to a venv with spoofsdk's deps and onnx)"
case $ROOT in /|/usr|/usr/*|/etc|/etc/*|/bin|/lib|"") die "refusing ARM64_ROOT=$ROOT" ;; esac
ROOT=$(realpath -m "$ROOT")

# --- 1. host tools and binfmt_misc -----------------------------------------------------------
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
if [[ ${#need[@]} -gt 0 ]]; then
  log "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
QEMU=$(command -v qemu-aarch64-static)
CHROOT=$(command -v chroot)

binfmt_ok() {
  [[ -r /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] && head -1 /proc/sys/fs/binfmt_misc/qemu-aarch64 | grep -q enabled
}
MODE=binfmt
if [[ ${ARM64_FORCE_QEMU:-0} == 1 ]]; then
  MODE=qemu
else
  if [[ ! -e /proc/sys/fs/binfmt_misc/status ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
  fi
  if ! binfmt_ok; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  fi
  binfmt_ok || MODE=qemu
fi
log "arm64 programs run via: $([[ $MODE == binfmt ]] && echo "binfmt_misc ($(sed -n 2,3p /proc/sys/fs/binfmt_misc/qemu-aarch64 | tr '\n' ' '))" || echo "explicit $QEMU (binfmt_misc unavailable or ARM64_FORCE_QEMU=1: programs that start other programs will fail)")"

# --- mounts (always undone on exit) ------------------------------------------------------------
MOUNTS=()
WORK=""
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || echo "warning: could not unmount ${MOUNTS[i]}" >&2
  done
  MOUNTS=()
  if [[ -n $WORK && ${ARM64_KEEP_WORK:-0} != 1 ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mounted_under() { findmnt -rn -o TARGET | awk -v r="$1" 'index($0, r "/") == 1 || $0 == r' ; }
bind() {  # bind SRC DST [ro]
  mkdir -p "$2"
  mount --bind "$1" "$2" || die "cannot bind-mount $1 on $2"
  MOUNTS+=("$2")
  if [[ ${3:-} == ro ]]; then mount -o remount,bind,ro "$2" || die "cannot make $2 read-only"; fi
}

# run an arm64 program inside the root: in_root VAR=value ... -- program args...
in_root() {
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  local base=(HOME=/root LANG=C.UTF-8 PATH=$VENV/bin:/usr/local/bin:/usr/bin:/bin "${envs[@]}")
  if [[ $MODE == binfmt ]]; then
    nice -n "$NICE" env -i "${base[@]}" "$CHROOT" "$ROOT" "$@"
  else
    nice -n "$NICE" env -i "${base[@]}" "$CHROOT" "$ROOT" /usr/bin/qemu-aarch64-static "$@"
  fi
}

# --- 2. the arm64 root -----------------------------------------------------------------------------
if [[ $REBUILD == 1 && -e $ROOT ]]; then rm -f "$ROOT/$MARKER"; fi
if [[ ! -f $ROOT/$MARKER ]]; then
  if [[ -e $ROOT ]]; then
    [[ -z $(mounted_under "$ROOT") ]] || die "something is still mounted under $ROOT; unmount it first: $(mounted_under "$ROOT" | tr '\n' ' ')"
    log "removing incomplete or outdated root $ROOT"
    rm -rf --one-file-system "$ROOT"
  fi
  log "building Debian $SUITE arm64 root in $ROOT from $MIRROR (takes a few minutes)"
  mkdir -p "$(dirname "$ROOT")"
  include=python3,python3-venv,ca-certificates
  DEBOOTSTRAP_LOG=${TMPDIR:-/tmp}/spoofsdk-arm64-debootstrap.log
  if [[ $MODE == binfmt && $ROOT_BUILD == debootstrap ]]; then
    nice -n "$NICE" debootstrap --arch=arm64 --variant=minbase --include=$include $SUITE "$ROOT" "$MIRROR" >"$DEBOOTSTRAP_LOG" 2>&1 \
      || { tail -20 "$DEBOOTSTRAP_LOG" >&2; die "debootstrap failed (log: $DEBOOTSTRAP_LOG)"; }
  else
    # Without binfmt_misc the second stage (maintainer scripts) cannot run; with ARM64_ROOT_BUILD=extract
    # it is skipped to save ~5 minutes of emulation. Unpack every downloaded package instead:
    # enough for python3 and pip-installed wheels (no maintainer scripts, so e.g. no /etc/passwd).
    nice -n "$NICE" debootstrap --foreign --arch=arm64 --variant=minbase --include=$include $SUITE "$ROOT" "$MIRROR" >"$DEBOOTSTRAP_LOG" 2>&1 \
      || { tail -20 "$DEBOOTSTRAP_LOG" >&2; die "debootstrap --foreign failed (log: $DEBOOTSTRAP_LOG)"; }
    for deb in "$ROOT"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
    # /bin, /lib are symlinks into /usr on bookworm (merged /usr); the unpack keeps them.
  fi
  cp "$QEMU" "$ROOT/usr/bin/qemu-aarch64-static"   # for explicit use, and binfmt without the F flag
  mkdir -p "$ROOT/usr/libexec/qemu-binfmt" && ln -sf /usr/bin/qemu-aarch64-static "$ROOT/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
  rm -rf "$ROOT"/var/cache/apt/archives/*.deb
  printf 'suite=%s\nmirror=%s\nmode=%s\nbuild=%s\nbuilt=%s\n' $SUITE "$MIRROR" $MODE \
    "$([[ $MODE == binfmt && $ROOT_BUILD == debootstrap ]] && echo debootstrap || echo extract)" "$(date -Is)" >"$ROOT/$MARKER"
  log "root ready ($(du -sh --one-file-system "$ROOT" | cut -f1))"
else
  log "reusing arm64 root $ROOT (built $(grep built= "$ROOT/$MARKER" | cut -d= -f2); --rebuild to start over)"
fi
[[ -x $ROOT/usr/bin/qemu-aarch64-static ]] || cp "$QEMU" "$ROOT/usr/bin/qemu-aarch64-static"

# --- 3. wheels ----------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/spoofsdk-arm64.XXXXXX)   # outside the repo: data-derived files go here only
mkdir -p "$WHEELS"
reqs=$("$HOST_PY" - <<'EOF'
from importlib.metadata import version, PackageNotFoundError
for name in ("numpy", "onnxruntime", "opencv-python-headless", "click", "onnx", "pytest", "psutil"):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)
EOF
)
if [[ -f $WHEELS/requirements.txt && $(cat "$WHEELS/requirements.txt") == "$reqs" ]]; then
  log "aarch64 wheels cached in $WHEELS ($(echo $reqs | tr '\n' ' '))"
else
  log "downloading aarch64 wheels into $WHEELS: $(echo $reqs | tr '\n' ' ')"
  plats=()
  for v in $(seq 36 -1 17); do plats+=(--platform "manylinux_2_${v}_aarch64"); done   # bookworm: glibc 2.36
  plats+=(--platform manylinux2014_aarch64)
  echo "$reqs" >"$WORK/requirements.txt"
  nice -n "$NICE" "$HOST_PY" -m pip download -q --only-binary=:all: "${plats[@]}" --python-version 3.11 \
      --implementation cp --abi cp311 --abi abi3 --abi none -d "$WHEELS" -r "$WORK/requirements.txt" 2>&1 \
      | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
  # pip download's own exit status is lost in the pipe: check the result
  "$HOST_PY" - "$WHEELS" "$WORK/requirements.txt" <<'EOF' || die "aarch64 wheels are missing (see above)"
import sys, re, pathlib
have = {re.sub(r"[-_.]+", "_", p.name.split("-")[0]).lower() for p in pathlib.Path(sys.argv[1]).glob("*.whl")}
want = [re.sub(r"[-_.]+", "_", l.split("==")[0]).lower() for l in open(sys.argv[2]).read().split()]
missing = [w for w in want if w not in have]
sys.exit(f"missing: {missing}" if missing else 0)
EOF
  cp "$WORK/requirements.txt" "$WHEELS/requirements.txt"
fi
if ! grep -qx '/.whl-arm64/' "$REPO/.git/info/exclude" 2>/dev/null && [[ $WHEELS == "$REPO/.whl-arm64" ]]; then
  mkdir -p "$REPO/.git/info" && echo '/.whl-arm64/' >>"$REPO/.git/info/exclude"
fi

log "building the spoofsdk wheel from the working tree"
mkdir -p "$WORK/src" "$WORK/dist"
for f in pyproject.toml README.md LICENSE setup.py setup.cfg MANIFEST.in spoofsdk; do
  [[ -e $REPO/$f ]] && cp -r "$REPO/$f" "$WORK/src/"
done
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
"$HOST_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src" >"$WORK/wheel.log" 2>&1 \
  || { cat "$WORK/wheel.log" >&2; die "pip wheel failed"; }
SDK_WHEEL=$(basename "$(ls "$WORK"/dist/spoofsdk-*.whl)")
rm -rf "$WORK/src"

# --- mounts for the run ------------------------------------------------------------------------------
[[ -z $(mounted_under "$ROOT") ]] || die "something is already mounted under $ROOT (another run?): $(mounted_under "$ROOT" | tr '\n' ' ')"
mount -t proc proc "$ROOT/proc" && MOUNTS+=("$ROOT/proc")
# No /sys: onnxruntime's cpuinfo then reads the host's x86 /proc/cpuinfo against the host's CPU
# topology and crashes (SIGSEGV on import); without /sys it gives up with a warning and MLAS picks
# its kernels from the emulated CPU's HWCAP bits, as on a board.
bind /dev "$ROOT/dev"
bind "$WHEELS" "$ROOT/opt/spoofsdk-wheels" ro
bind "$(realpath "$DATA")" "$ROOT/mnt/spoofsdk-data" ro
YUNET_IN=""
if [[ -f $YUNET ]]; then
  bind "$(realpath "$(dirname "$YUNET")")" "$ROOT/mnt/spoofsdk-yunet" ro
  YUNET_IN=/mnt/spoofsdk-yunet/$(basename "$YUNET")
fi
mkdir -p "$WORK/check"
bind "$WORK" "$ROOT$CHECK"

# --- install into the root's venv ---------------------------------------------------------------
if [[ ! -x $ROOT$VENV/bin/python ]]; then
  log "creating $VENV in the root"
  in_root -- /usr/bin/python3 -m venv --without-pip $VENV
fi
PIP_WHEEL=$(cd "$ROOT/usr/share/python-wheels" && ls pip-*.whl | head -1)
PIP=($VENV/bin/python /usr/share/python-wheels/$PIP_WHEEL/pip --disable-pip-version-check --no-cache-dir)
if ! cmp -s "$WHEELS/requirements.txt" "$ROOT$VENV/.spoofsdk-requirements.txt"; then
  log "installing the aarch64 dependencies into $VENV (pip inside the root)"
  in_root -- "${PIP[@]}" install -q --no-index --find-links /opt/spoofsdk-wheels --find-links /usr/share/python-wheels \
      pip -r /opt/spoofsdk-wheels/requirements.txt
  cp "$WHEELS/requirements.txt" "$ROOT$VENV/.spoofsdk-requirements.txt"
fi
log "installing $SDK_WHEEL into $VENV"
in_root -- "${PIP[@]}" install -q --no-index --no-deps --force-reinstall "$CHECK/dist/$SDK_WHEEL"
in_root -- $VENV/bin/python -c "import platform, spoofsdk, numpy, onnxruntime, cv2; print('arm64 root:', platform.machine(), 'python', platform.python_version(), '| spoofsdk', spoofsdk.__version__, 'from', spoofsdk.__file__, '| onnxruntime', onnxruntime.__version__, '| numpy', numpy.__version__, '| opencv', cv2.__version__)" 2> >(grep -v -e "^Error in cpuinfo" -e "cpuinfo" >&2)

RUN_ENV=(SPOOFSDK_DATA=/mnt/spoofsdk-data PYTHONDONTWRITEBYTECODE=1 ${YUNET_IN:+SPOOFSDK_YUNET_MODEL=$YUNET_IN})
[[ -n ${CI:-} ]] && RUN_ENV+=(CI=$CI)
TEST_RC=0 CMP_RC=0
TEST_SUMMARY="not run" 
CMP_SUMMARY=()

# --- 4. tests -------------------------------------------------------------------------------------
if [[ $RUN_TESTS == 1 ]]; then
  cp -r "$REPO/tests" "$WORK/check/tests"
  cp "$REPO/pyproject.toml" "$WORK/check/"    # pytest settings (markers); no spoofsdk/ here, so imports use the wheel
  find "$WORK/check/tests" -name __pycache__ -prune -exec rm -rf {} +
  selected=() skipped=()
  for f in "$WORK"/check/tests/test_*.py; do
    [[ -e $f ]] || continue
    b=$(basename "$f")
    if [[ $b =~ (train|quantiz|bench|export|arm64) ]]; then skipped+=("$b(name)"); continue; fi
    if grep -Eq '^\s*(import|from)\s+(torch|spoofsdk_train|pytest_benchmark)\b' "$f"; then skipped+=("$b(imports torch/trainer)"); continue; fi
    if [[ $QUICK == 1 ]]; then
      keep=0
      read -ra globs <<<"$QUICK_TESTS"   # no pathname expansion here
      for g in "${globs[@]}"; do [[ $b == $g ]] && keep=1; done
      [[ $keep == 1 ]] || { skipped+=("$b(--quick)"); continue; }
    fi
    selected+=("tests/$b")
  done
  [[ ${#skipped[@]} -gt 0 ]] && log "test files left out: ${skipped[*]}"
  if [[ ${#selected[@]} -eq 0 ]]; then
    log "no runtime test files to run yet"
    TEST_SUMMARY="no test files"
  else
    log "pytest in the arm64 root (QEMU_CPU=${CPUS[0]}): ${selected[*]}"
    set +e
    in_root "${RUN_ENV[@]}" QEMU_CPU="${CPUS[0]}" -- $VENV/bin/python -m pytest -p no:cacheprovider -q -ra \
        --rootdir $CHECK/check -c $CHECK/check/pyproject.toml "${selected[@]/#/$CHECK/check/}" \
      2> >(grep -v -e "^Error in cpuinfo" -e "cpuinfo" >&2) | tee "$WORK/pytest.log"
    TEST_RC=${PIPESTATUS[0]}
    set -e
    TEST_SUMMARY="$(grep -E ' in [0-9.]+s' "$WORK/pytest.log" | tail -1 | tr -d '=' | sed 's/^ *//') (${#selected[@]} files, rc $TEST_RC)"
  fi
fi

# --- 5. output comparison ----------------------------------------------------------------------------
if [[ $RUN_COMPARE == 1 ]]; then
  mkdir -p "$WORK/scripts" && cp "$REPO/scripts/compare_outputs.py" "$WORK/scripts/"
  log "x86 reference: preparing models and images, dumping outputs"
  PYTHONPATH=$REPO nice -n "$NICE" "$HOST_PY" "$REPO/scripts/compare_outputs.py" prepare --workdir "$WORK/cmp" --data "$DATA" "${EXTRA_MODELS[@]}" 2>&1 | grep -v "consider.*pre-processing before quantization"
  PYTHONPATH=$REPO SPOOFSDK_YUNET_MODEL="$YUNET" nice -n "$NICE" "$HOST_PY" "$REPO/scripts/compare_outputs.py" dump --workdir "$WORK/cmp" --side x86 --yunet "$YUNET"
  for cpu in "${CPUS[@]}"; do
    log "arm64 (QEMU_CPU=$cpu): dumping and comparing with x86"
    set +e
    in_root "${RUN_ENV[@]}" QEMU_CPU="$cpu" -- $VENV/bin/python $CHECK/scripts/compare_outputs.py check \
        --workdir $CHECK/cmp --side "arm64-$cpu" --ref x86 ${YUNET_IN:+--yunet $YUNET_IN} \
      2> >(grep -v -e "^Error in cpuinfo" -e "cpuinfo" >&2) | tee "$WORK/compare-$cpu.log"
    rc=${PIPESTATUS[0]}
    set -e
    [[ $rc -ne 0 ]] && CMP_RC=1
    CMP_SUMMARY+=("$cpu: $([[ $rc == 0 ]] && echo OK || echo "DIFFERENCES (rc $rc)")")
  done
fi

# --- summary -----------------------------------------------------------------------------------
echo
echo "================ arm64 check summary ================"
echo "root:        $ROOT ($MODE mode)"
echo "wheel:       $SDK_WHEEL"
echo "tests:       $TEST_SUMMARY"
if [[ $RUN_COMPARE == 1 ]]; then
  for s in "${CMP_SUMMARY[@]}"; do echo "comparison:  $s"; done
  for cpu in "${CPUS[@]}"; do
    echo "--- outputs arm64 ($cpu) vs x86"
    sed -n '/^model /,/^(detectors row/p' "$WORK/compare-$cpu.log" | grep -v '^(detectors row'
  done
fi
echo "elapsed:     ${SECONDS}s wall (emulation: no board timings)"
echo "======================================================"
[[ $TEST_RC == 0 && $CMP_RC == 0 ]] || exit 1

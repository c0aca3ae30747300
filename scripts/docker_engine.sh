#!/usr/bin/env bash
# A Docker engine and the runtime image, on a machine that reaches no container registry.
#
#   scripts/docker_engine.sh            # engine running + fanout-base:bookworm + fanout-runtime:dev
#   scripts/docker_engine.sh engine     # only the engine
#
# Steps, each skipped when already done (so a second run costs seconds):
#   1. Debian's docker.io (the daemon) and debootstrap, when missing.
#   2. dockerd as root in the background with no iptables and no bridge (containers use host
#      networking), logging to $FANOUT_DOCKERD_LOG; waits for its socket.
#   3. fanout-base:bookworm: `debootstrap --variant=minbase bookworm` from Debian's archive plus
#      python3 and python3-venv, then `docker import` (no registry needed).
#   4. fanout-runtime:dev (deploy/runtime.Dockerfile): the project's wheel and its dependencies,
#      built on this host into a wheelhouse, installed in the image without any network.
#      Rebuilt when the wheel's sources change (the image is labelled with their digest).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=fanout-base:bookworm
RUNTIME_IMAGE=${FANOUT_RUNTIME_IMAGE:-fanout-runtime:dev}
DOCKERD_LOG=${FANOUT_DOCKERD_LOG:-/var/log/fanout-dockerd.log}
CACHE=${FANOUT_DOCKER_CACHE:-/var/cache/fanout-docker}
MIRROR=${FANOUT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3}

log() { echo "docker_engine: $*" >&2; }

install_packages() {
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
    # The packaged service must not run beside ours (no systemd here in CI anyway).
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
      systemctl disable --now docker.service docker.socket containerd.service || true
    fi
  fi
}

start_engine() {
  if docker info >/dev/null 2>&1; then
    return
  fi
  log "starting dockerd (log: $DOCKERD_LOG)"
  mkdir -p "$(dirname "$DOCKERD_LOG")"
  # setsid: the daemon outlives this script and the CI step that ran it.
  setsid dockerd --iptables=false --ip6tables=false --bridge=none >>"$DOCKERD_LOG" 2>&1 </dev/null &
  for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then
      return
    fi
    sleep 0.5
  done
  log "dockerd did not answer within 60 s; last lines of $DOCKERD_LOG:"
  tail -n 30 "$DOCKERD_LOG" >&2
  exit 1
}

build_base() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    return
  fi
  local root="$CACHE/rootfs-bookworm"
  log "building $BASE_IMAGE with debootstrap (a few minutes, once per machine)"
  rm -rf "$root"
  mkdir -p "$root"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$MIRROR" \
    >"$CACHE/debootstrap.log" 2>&1 || { tail -n 30 "$CACHE/debootstrap.log" >&2; exit 1; }
  # Nothing the image does not need: package caches and lists.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
}

source_digest() {
  # What the wheel is made of: a change to any of it rebuilds the runtime image.
  { git ls-files -z pyproject.toml client server quota dispatch proto deploy/runtime.Dockerfile 2>/dev/null \
      | xargs -0 sha256sum; } | sha256sum | cut -c1-16
}

build_runtime() {
  local digest
  digest=$(source_digest)
  if [ "$(docker image inspect -f '{{ index .Config.Labels "fanout.source" }}' "$RUNTIME_IMAGE" 2>/dev/null)" = "$digest" ]; then
    return
  fi
  log "building $RUNTIME_IMAGE (sources $digest)"
  local ctx="$CACHE/runtime-context"
  rm -rf "$ctx/wheels/fanout-"*.whl
  mkdir -p "$ctx/wheels"
  # The project's wheel, then every dependency as a binary wheel for the base image's exact Python
  # resolved and downloaded here; pip in the image then needs no network. Wheels already there are
  # reused. pip applies --python-version to python_version markers but not python_full_version
  # ones: redis needs async-timeout before 3.11.3 (bookworm has 3.11.2), so it is named here.
  local target
  target=$(docker run --rm --network none "$BASE_IMAGE" python3 -c 'import platform; print(platform.python_version())')
  { "$PYTHON" -m pip wheel --no-deps --wheel-dir "$ctx/wheels" . \
    && "$PYTHON" -m pip download --only-binary=:all: --python-version "$target" --implementation cp \
      --find-links "$ctx/wheels" --dest "$ctx/wheels" fanout 'async-timeout>=4.0.3'; } >"$CACHE/pip-wheel.log" 2>&1 \
    || { tail -n 30 "$CACHE/pip-wheel.log" >&2; exit 1; }
  cp deploy/runtime.Dockerfile "$ctx/Dockerfile"
  # The classic builder: Debian's engine has no BuildKit component.
  DOCKER_BUILDKIT=0 docker build --quiet --force-rm --build-arg "BASE=$BASE_IMAGE" --label "fanout.source=$digest" -t "$RUNTIME_IMAGE" "$ctx" >/dev/null
}

mkdir -p "$CACHE"
install_packages
start_engine
if [ "${1:-all}" = engine ]; then
  exit 0
fi
build_base
build_runtime
log "ready: engine up, $BASE_IMAGE and $RUNTIME_IMAGE present"

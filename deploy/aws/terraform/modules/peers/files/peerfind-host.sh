#!/usr/bin/env bash
# peerfind-host: set up and run the one peerfind peer of this EC2 host.
#
#   peerfind-host install   cloud-init, once: check out the repository, get the images,
#                           enable and start peerfind.service
#   peerfind-host start     peerfind.service, at every boot: advertise the public
#                           address, `docker compose up` and wait until healthy
#   peerfind-host stop      peerfind.service, at shutdown: `docker compose down`
#   peerfind-host status    the containers and their health
#
# Settings come from /etc/peerfind/host.env (written by cloud-init from Terraform).
set -euo pipefail

readonly ENV_FILE=/etc/peerfind/host.env
readonly PEER_CONFIG=/etc/peerfind/peer.json
readonly RUNTIME_DIR=/run/peerfind
readonly RUNTIME_ENV=$RUNTIME_DIR/runtime.env
readonly REPO_DIR=/opt/peerfind
readonly COMPOSE_FILE=$REPO_DIR/deploy/aws/host/compose.yaml
readonly SHARED_DIR=/srv/peerfind/shared
readonly IMDS=http://169.254.169.254/latest
# The services run as uid/gid 10001 (services/Dockerfile): they read peer.json by group.
readonly CONTAINER_GID=10001

log() { printf 'peerfind-host: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

# retry TRIES CMD...: run CMD until it succeeds, waiting 5 s, 10 s, ... between tries.
retry() {
  local tries=$1 n=1
  shift
  until "$@"; do
    if ((n >= tries)); then
      return 1
    fi
    log "retrying in $((n * 5)) s: $*"
    sleep $((n * 5))
    n=$((n + 1))
  done
}

load_env() {
  [[ -r $ENV_FILE ]] || die "$ENV_FILE is missing (cloud-init writes it)"
  set -a
  # shellcheck source=/dev/null
  . "$ENV_FILE"
  set +a
  local name
  for name in DEPLOY_PEER_ID DEPLOY_REPO_URL DEPLOY_GIT_REF DEPLOY_IMAGE_SOURCE \
    DEPLOY_SEED_SAMPLES DEPLOY_GRPC_PORT PEERFIND_IMAGE_PREFIX PEERFIND_VERSION; do
    [[ -n ${!name:-} ]] || die "$name is not set in $ENV_FILE"
  done
}

# imds PATH: one instance metadata value, through IMDSv2 (a session token first).
imds() {
  local token
  token=$(curl -fsS --max-time 5 -X PUT "$IMDS/api/token" \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 60') || return 1
  curl -fsS --max-time 5 -H "X-aws-ec2-metadata-token: $token" "$IMDS/meta-data/$1"
}

# The gRPC address handed to clients in search results: the public IPv4 of the instance
# (it changes when the instance is stopped and started, so it is read at every start),
# or the private one when the instance has no public address.
advertise() {
  local ip
  if ! ip=$(retry 3 imds public-ipv4); then
    log "no public IPv4: advertising the private address"
    ip=$(retry 3 imds local-ipv4) || die "cannot read the instance address from IMDS"
  fi
  [[ $ip =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "IMDS answered an unexpected address: $ip"
  export PEERFIND_GRPC_ADVERTISE="$ip:$DEPLOY_GRPC_PORT"
  install -d -m 0755 "$RUNTIME_DIR"
  printf 'PEERFIND_GRPC_ADVERTISE=%s\n' "$PEERFIND_GRPC_ADVERTISE" >"$RUNTIME_ENV"
  log "advertising gRPC at $PEERFIND_GRPC_ADVERTISE"
}

# Compose needs PEERFIND_GRPC_ADVERTISE to read the file: the running stack's value, if any.
load_runtime_env() {
  if [[ -r $RUNTIME_ENV ]]; then
    set -a
    # shellcheck source=/dev/null
    . "$RUNTIME_ENV"
    set +a
  else
    advertise
  fi
}

compose() {
  docker compose --project-name peerfind --file "$COMPOSE_FILE" "$@"
}

checkout() {
  if [[ ! -d $REPO_DIR/.git ]]; then
    git init --quiet "$REPO_DIR"
    git -C "$REPO_DIR" remote add origin "$DEPLOY_REPO_URL"
  fi
  # A shallow fetch of one ref works for branches, tags and full commit ids alike.
  retry 5 git -C "$REPO_DIR" fetch --quiet --depth 1 origin "$DEPLOY_GIT_REF"
  git -C "$REPO_DIR" checkout --quiet --detach FETCH_HEAD
  log "checked out $DEPLOY_GIT_REF ($(git -C "$REPO_DIR" rev-parse --short HEAD))"
  [[ -f $COMPOSE_FILE ]] || die "$DEPLOY_GIT_REF has no $COMPOSE_FILE"
}

seed_shared() {
  install -d -m 0755 "$SHARED_DIR"
  local samples=$REPO_DIR/deploy/samples/$DEPLOY_PEER_ID
  if [[ $DEPLOY_SEED_SAMPLES == true && -d $samples ]]; then
    cp -R --no-preserve=mode,ownership "$samples/." "$SHARED_DIR/"
    log "copied the sample files of $DEPLOY_PEER_ID into $SHARED_DIR"
  fi
  chmod -R u=rwX,go=rX "$SHARED_DIR"
}

get_images() {
  case $DEPLOY_IMAGE_SOURCE in
    build) retry 3 compose build ;;
    pull) retry 5 compose pull ;;
    *) die "DEPLOY_IMAGE_SOURCE must be build or pull, not $DEPLOY_IMAGE_SOURCE" ;;
  esac
}

cmd_install() {
  load_env
  [[ -r $PEER_CONFIG ]] || die "$PEER_CONFIG is missing (cloud-init writes it)"
  chgrp "$CONTAINER_GID" "$PEER_CONFIG"
  chmod 0640 "$PEER_CONFIG"
  systemctl enable --now docker.service
  checkout
  seed_shared
  advertise
  get_images
  systemctl daemon-reload
  systemctl enable peerfind.service
  systemctl start peerfind.service
  log "$DEPLOY_PEER_ID is up"
}

cmd_start() {
  load_env
  advertise
  compose up --detach --no-build --remove-orphans --wait --wait-timeout 300
}

cmd_stop() {
  load_env
  load_runtime_env
  compose down
}

cmd_status() {
  load_env
  load_runtime_env
  compose ps --all
}

main() {
  [[ $EUID -eq 0 ]] || die "run as root"
  case ${1:-} in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
      printf 'usage: %s install|start|stop|status\n' "${0##*/}" >&2
      exit 2
      ;;
  esac
}

main "$@"

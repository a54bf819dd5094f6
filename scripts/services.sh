#!/usr/bin/env bash
# Makes sure Postgres, Redis and NATS (with JetStream) run on loopback, as the tests expect:
# installs what is missing with apt-get, starts what is down, and leaves what runs alone.
# Idempotent: run it as often as you like.
set -euo pipefail

log() { printf 'services: %s\n' "$*"; }

missing=()
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server redis-tools)
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
# The sandbox repository code runs in (orion_services::sandbox), and what it uses inside.
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v prlimit >/dev/null 2>&1 || missing+=(util-linux)
# What building libgit2's vendored OpenSSL needs (its Configure is perl, with IPC::Cmd).
perl -MIPC::Cmd -e1 >/dev/null 2>&1 || missing+=(perl)
command -v make >/dev/null 2>&1 || missing+=(make)
# What the remote tests serve git with: over HTTPS (openssl makes their certificates) and
# over SSH (an unprivileged sshd of the test's own).
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
# The browser the dashboard's end-to-end test drives (headless, over WebDriver).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_until() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 150); do
    if "$@"; then return 0; fi
    sleep 0.2
  done
  log "$what did not come up" >&2
  return 1
}

# --- Postgres: the tests connect as postgres@127.0.0.1 without a password --------------
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    pg_createcluster "$version" main >/dev/null
  fi
  log "starting Postgres $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_until Postgres pg_isready -q -h 127.0.0.1 -p 5432
fi
if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  log "allowing trusted loopback connections in $hba"
  sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  wait_until "Postgres (trust)" psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1'
fi

# --- Redis ------------------------------------------------------------------------------
if ! port_open 6379; then
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_until Redis port_open 6379
fi

# --- NATS with JetStream ----------------------------------------------------------------
if ! port_open 4222; then
  log "starting NATS with JetStream"
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_until NATS port_open 4222
fi

log "Postgres, Redis and NATS are up"

#!/usr/bin/env bash
# Put a greenpipe device agent (a Prefect process worker) on this host, for one work pool and queue.
#
#   sudo infra/agent/install.sh --pool zcu104 --queue zcu104-1 --kind zcu104 \
#        --api-url http://prefect.example.internal:4200/api --s3-endpoint https://s3.example.internal:9000
#   infra/agent/install.sh --dry-run ...        # print every step, change nothing
#
# Idempotent: run it again to update the code; an existing venv is reused, an existing env file is kept.
# Steps: copy this checkout to PREFIX/src (the worker's flows and the GREENPIPE_AGENT_DIR of its jobs),
# create PREFIX/venv, install greenpipe there (light `board` group, or the full package on a GPU host),
# write the env file (mode 600) once and this queue's result-signing key (mode 600, ENVDIR/keys/QUEUE.key),
# install greenpipe-agent@.service and enable greenpipe-agent@QUEUE.
# Arguments fall back to the environment: GREENPIPE_POOL, GREENPIPE_QUEUE, PREFECT_API_URL,
# AWS_ENDPOINT_URL_S3. Secrets come from the environment only, never from arguments (a command line is
# visible to every user): PREFECT_API_AUTH_STRING (the Prefect server's basic-auth `user:password`),
# GREENPIPE_AGENT_KEY (this host's signing key, hex, as the controller holds it), AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY (this host's own S3 key). They are written with shell builtins only, so they never
# appear in a child process's argv either. See infra/agent/README.md for each kind of host.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: install.sh --pool POOL --queue QUEUE [options]
  --pool POOL            Prefect work pool (one per device kind)            [$GREENPIPE_POOL]
  --queue QUEUE          work queue = this host's name in params.yaml        [$GREENPIPE_QUEUE]
  --kind KIND            cpu | gpu | zcu104 | ultra96 | vck5000               [cpu]
  --api-url URL          Prefect API URL of the build host's server          [$PREFECT_API_URL]
  --s3-endpoint URL      S3 endpoint of the artifact store                   [$AWS_ENDPOINT_URL_S3]
  --python PATH          Python 3.11 interpreter for the venv                [python3.11, else python3]
  --prefix DIR           install root: DIR/src, DIR/venv                     [/opt/greenpipe-agent]
  --env-file FILE        worker environment (credentials live here)          [/etc/greenpipe/agent.env]
                         this queue's signing key goes to ENVDIR/keys/QUEUE.key
  secrets (environment only): PREFECT_API_AUTH_STRING, GREENPIPE_AGENT_KEY,
                              AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
  --unit-dir DIR         where the systemd unit goes                         [/etc/systemd/system]
  --user NAME            account the worker runs as (created if missing)     [greenpipe]
  --no-systemd           install the venv and env file only; start the worker yourself
  --dry-run              print what would be done, change nothing
EOF
}

die() { echo "install.sh: error: $*" >&2; exit 2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source_dir="$(cd "$here/../.." && pwd)"
pool="${GREENPIPE_POOL:-}"
queue="${GREENPIPE_QUEUE:-}"
kind=cpu
api_url="${PREFECT_API_URL:-}"
s3_endpoint="${AWS_ENDPOINT_URL_S3:-}"
python=""
prefix=/opt/greenpipe-agent
env_file=/etc/greenpipe/agent.env
unit_dir=/etc/systemd/system
user=greenpipe
systemd=1
dry_run=0

while [ $# -gt 0 ]; do
  case "$1" in
    --pool) pool="${2:?--pool needs a value}"; shift 2 ;;
    --queue) queue="${2:?--queue needs a value}"; shift 2 ;;
    --kind) kind="${2:?--kind needs a value}"; shift 2 ;;
    --api-url) api_url="${2:?--api-url needs a value}"; shift 2 ;;
    --s3-endpoint) s3_endpoint="${2:?--s3-endpoint needs a value}"; shift 2 ;;
    --python) python="${2:?--python needs a value}"; shift 2 ;;
    --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
    --env-file) env_file="${2:?--env-file needs a value}"; shift 2 ;;
    --unit-dir) unit_dir="${2:?--unit-dir needs a value}"; shift 2 ;;
    --user) user="${2:?--user needs a value}"; shift 2 ;;
    --no-systemd) systemd=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

[ -n "$pool" ] || die "no work pool: pass --pool (or set GREENPIPE_POOL), e.g. --pool zcu104"
[ -n "$queue" ] || die "no work queue: pass --queue (or set GREENPIPE_QUEUE), the host name params.yaml gives this device"
# The queue is the systemd instance name: keep it to characters that need no escaping.
[[ "$queue" =~ ^[A-Za-z0-9_.:-]+$ ]] || die "queue '$queue': use letters, digits and _ . : - only (it names the systemd instance)"
[[ "$pool" =~ ^[A-Za-z0-9_.:-]+$ ]] || die "pool '$pool': use letters, digits and _ . : - only"
case "$kind" in
  cpu|gpu|zcu104|ultra96|vck5000) ;;
  *) die "kind '$kind': expected cpu, gpu, zcu104, ultra96 or vck5000" ;;
esac
[ -n "$api_url" ] || die "no Prefect API: pass --api-url (or set PREFECT_API_URL), e.g. http://build-host:4200/api"
[ -f "$source_dir/pyproject.toml" ] || die "$source_dir has no pyproject.toml: run this script from a greenpipe checkout"

run() {  # print a step; run it unless --dry-run
  printf '+ %s\n' "$*"
  [ "$dry_run" = 1 ] || "$@"
}

# --- Python: greenpipe needs 3.11 (pyproject.toml requires-python).
if [ -z "$python" ]; then
  python="$(command -v python3.11 || command -v python3 || true)"
fi
[ -n "$python" ] && [ -x "$(command -v "$python" || echo "$python")" ] \
  || die "no Python interpreter found: install Python 3.11 or pass --python PATH"
py_version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$py_version" != "3.11" ]; then
  die "$python is Python $py_version; greenpipe needs 3.11 (pyproject.toml). Pass --python with a 3.11 interpreter.$(
    case "$kind" in zcu104|ultra96) echo " On a board image VART's Python modules are built for the image's own Python: see infra/agent/README.md (board hosts)." ;; esac)"
fi

board=()
if [ "$kind" != gpu ]; then
  # Read before any step, so a checkout without the group fails before it changes anything.
  board_deps="$("$python" - "$source_dir/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as fh:
    extras = tomllib.load(fh)["project"].get("optional-dependencies", {})
if "board" not in extras:
    sys.exit("pyproject.toml has no [project.optional-dependencies] board group")
print("\n".join(extras["board"]))
PY
)" || die "cannot read the board dependency group from $source_dir/pyproject.toml (the device side installs greenpipe with --no-deps plus that group)"
  mapfile -t board < <(printf '%s\n' "$board_deps" | sed '/^$/d')
fi

venv_flags=()
case "$kind" in
  zcu104|ultra96) venv_flags+=(--system-site-packages) ;;  # vart and xir come from the board image
  vck5000) venv_flags+=(--system-site-packages) ;;         # inside the Vitis AI container: its vart/xir
esac

echo "greenpipe agent: pool=$pool queue=$queue kind=$kind prefix=$prefix env=$env_file$([ "$dry_run" = 1 ] && echo ' (dry run)')"
if [ "$kind" = vck5000 ] && [ ! -e /opt/vitis_ai ] && [ "$dry_run" = 0 ]; then
  die "kind vck5000 installs inside the Vitis AI container (VART and XRT live there), and /opt/vitis_ai is absent here. Follow infra/agent/README.md (VCK5000 hosts): run this script in the container with --prefix on a mounted volume."
fi

if [ "$dry_run" = 0 ]; then
  for target in "$prefix" "$(dirname "$env_file")"; do
    probe="$target"; while [ ! -e "$probe" ]; do probe="$(dirname "$probe")"; done
    [ -w "$probe" ] || die "cannot write $target as $(id -un): run with sudo, or pass --prefix / --env-file under a directory you own"
  done
fi

# --- code: a copy of this checkout (flows/device_run.py is the deployment's entrypoint).
run mkdir -p "$prefix"
run rm -rf "$prefix/src.new"
run mkdir -p "$prefix/src.new"
if [ "$dry_run" = 1 ]; then
  printf '+ tar -C %s --exclude=.git --exclude=.venv ... -cf - . | tar -C %s --no-same-owner -xf -\n' "$source_dir" "$prefix/src.new"
else
  inside=()  # a prefix inside the checkout (the Vitis container's /workspace) must not copy itself
  case "$prefix" in "$source_dir"/*) inside+=(--exclude="./${prefix#"$source_dir"/}") ;; esac
  tar -C "$source_dir" "${inside[@]}" --exclude=./.git --exclude=./.venv --exclude=./.dvc/cache --exclude=./.prefect \
      --exclude=./.greenpipe --exclude=./artifacts --exclude=./data --exclude=./models --exclude=./metrics \
      --exclude=./reports --exclude='*.egg-info' --exclude='__pycache__' \
      --exclude=./infra/agent/agent.env --exclude=./infra/agent/keys -cf - . | tar -C "$prefix/src.new" --no-same-owner -xf -
fi
run rm -rf "$prefix/src.old"
if [ -d "$prefix/src" ]; then run mv "$prefix/src" "$prefix/src.old"; fi
run mv "$prefix/src.new" "$prefix/src"
run rm -rf "$prefix/src.old"

# --- venv: built by the service account, never by root (a package's build scripts run as whoever runs
# pip). The unit's ProtectSystem=strict keeps it read-only to the running worker all the same.
as_user=()
if [ "$(id -u)" = 0 ]; then
  if ! id -u "$user" >/dev/null 2>&1; then
    run useradd --system --home-dir /var/lib/greenpipe-agent --shell /usr/sbin/nologin "$user"
  fi
  as_user=(runuser -u "$user" -- env PIP_NO_CACHE_DIR=1)
  run mkdir -p "$prefix/venv"
  run chown -R "$user" "$prefix/venv"
fi
if [ -x "$prefix/venv/bin/python" ]; then
  echo "  venv $prefix/venv exists: reused"
else
  run "${as_user[@]}" "$python" -m venv "${venv_flags[@]}" "$prefix/venv"
fi
pip=("${as_user[@]}" "$prefix/venv/bin/python" -m pip install --disable-pip-version-check)

if [ "$kind" = gpu ]; then
  # A GPU host runs torch_cuda: the whole package plus NVML for power (PyPI's Linux torch wheel is a CUDA build).
  run "${pip[@]}" "$prefix/src[gpu]"
else
  # The device side stays light: greenpipe itself without its training dependencies, plus the board group.
  run "${pip[@]}" --no-deps "$prefix/src"
  [ "${#board[@]}" = 0 ] || run "${pip[@]}" "${board[@]}"
fi

# --- environment file: written once, never overwritten (it holds the credentials).
# Values are single-quoted (both systemd's EnvironmentFile and `. FILE` read them literally: `&`, `|`, `$`
# stay what they are) and written with the printf builtin: no secret is ever an argument of a program.
env_value() {  # NAME VALUE: refuse what cannot be quoted that way
  case "$2" in
    *"'"*|*$'\n'*) die "$1 contains a single quote or a newline, which the env file cannot hold literally" ;;
  esac
}
env_dir="$(dirname "$env_file")"
key_path="$env_dir/keys/$queue.key"
if [ -e "$env_file" ]; then
  echo "  $env_file exists: kept (edit it to change the API URL, endpoint or keys)"
else
  run mkdir -p "$env_dir"
  auth="${PREFECT_API_AUTH_STRING:-REPLACE_ME}"
  key_id="${AWS_ACCESS_KEY_ID:-REPLACE_ME}"
  secret="${AWS_SECRET_ACCESS_KEY:-REPLACE_ME}"
  for pair in "GREENPIPE_POOL=$pool" "PREFECT_API_URL=$api_url" "PREFECT_API_AUTH_STRING=$auth" \
              "AWS_ENDPOINT_URL_S3=$s3_endpoint" "AWS_ACCESS_KEY_ID=$key_id" "AWS_SECRET_ACCESS_KEY=$secret"; do
    env_value "${pair%%=*}" "${pair#*=}"
  done
  if [ "$dry_run" = 1 ]; then
    echo "+ write $env_file (mode 600): GREENPIPE_POOL=$pool PREFECT_API_URL=$api_url AWS_ENDPOINT_URL_S3=${s3_endpoint:-<unset>} auth string and AWS keys from the environment or REPLACE_ME"
  else
    (
      umask 077
      while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
          GREENPIPE_POOL=*) printf "GREENPIPE_POOL='%s'\n" "$pool" ;;
          PREFECT_API_URL=*) printf "PREFECT_API_URL='%s'\n" "$api_url" ;;
          PREFECT_API_AUTH_STRING=*) printf "PREFECT_API_AUTH_STRING='%s'\n" "$auth" ;;
          AWS_ENDPOINT_URL_S3=*) printf "AWS_ENDPOINT_URL_S3='%s'\n" "$s3_endpoint" ;;
          AWS_ACCESS_KEY_ID=*) printf "AWS_ACCESS_KEY_ID='%s'\n" "$key_id" ;;
          AWS_SECRET_ACCESS_KEY=*) printf "AWS_SECRET_ACCESS_KEY='%s'\n" "$secret" ;;
          *) printf '%s\n' "$line" ;;
        esac
      done <"$here/agent.env.example" >"$env_file"
    )
    chmod 600 "$env_file"
  fi
  [ "$auth" != REPLACE_ME ] || echo "  note: put the Prefect server's auth string into $env_file (PREFECT_API_AUTH_STRING)"
  [ "$key_id" != REPLACE_ME ] || echo "  note: put the S3 keys into $env_file (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
fi
# --- this queue's result-signing key (the controller holds the same one for this host).
if [ -n "${GREENPIPE_AGENT_KEY:-}" ]; then
  [[ "$GREENPIPE_AGENT_KEY" =~ ^[0-9a-f]{64}$ ]] || die "GREENPIPE_AGENT_KEY must be 64 lowercase hex digits (the key the controller holds for $queue)"
  if [ "$dry_run" = 1 ]; then
    echo "+ write $key_path (mode 600)"
  else
    (umask 077; mkdir -p "$env_dir/keys"; printf '%s\n' "$GREENPIPE_AGENT_KEY" >"$key_path.tmp")
    mv "$key_path.tmp" "$key_path"
  fi
elif [ -e "$key_path" ]; then
  echo "  $key_path exists: kept"
else
  echo "  note: no signing key: set GREENPIPE_AGENT_KEY and run again, or write $key_path (mode 600); the controller rejects unsigned results"
fi

# --- systemd
if [ "$systemd" = 0 ]; then
  echo "Installed without systemd. Start the worker with:"
  echo "  set -a; . $env_file; set +a; GREENPIPE_AGENT_DIR=$prefix/src GREENPIPE_AGENT_HOST=$queue GREENPIPE_AGENT_KEY_FILE=$key_path \\"
  echo "    $prefix/venv/bin/prefect worker start --pool $pool --work-queue $queue --type process"
  exit 0
fi
command -v systemctl >/dev/null || [ "$dry_run" = 1 ] \
  || die "systemctl not found: this host has no systemd; rerun with --no-systemd and start the worker as printed"
if ! id -u "$user" >/dev/null 2>&1; then
  run useradd --system --home-dir /var/lib/greenpipe-agent --shell /usr/sbin/nologin "$user"
fi
unit="$unit_dir/greenpipe-agent@.service"
if [ "$dry_run" = 1 ]; then
  echo "+ install $here/greenpipe-agent@.service -> $unit (prefix $prefix, env file $env_file, user $user)"
else
  mkdir -p "$unit_dir"
  sed -e "s|/opt/greenpipe-agent|$prefix|g" -e "s|/etc/greenpipe/agent.env|$env_file|g" -e "s|/etc/greenpipe/keys/|$env_dir/keys/|g" \
      -e "s|^User=greenpipe$|User=$user|" "$here/greenpipe-agent@.service" >"$unit.tmp"
  mv "$unit.tmp" "$unit"
fi
run systemctl daemon-reload
run systemctl enable "greenpipe-agent@$queue.service"
run systemctl restart "greenpipe-agent@$queue.service"
echo "Done. Check: systemctl status greenpipe-agent@$queue; journalctl -u greenpipe-agent@$queue -f"

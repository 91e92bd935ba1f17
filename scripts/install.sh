#!/usr/bin/env bash
# Install (or upgrade) pollerd as a systemd service. Run as root from a checkout:
#
#   sudo scripts/install.sh                    # install from this checkout
#   sudo scripts/install.sh --wheel FILE.whl   # install a built wheel instead
#
# What it does, each step safe to repeat (an upgrade is the same command):
#   - the system user `pollerd` (no login, no home), member of `dialout` for the serial ports;
#   - /etc/pollerd (root:pollerd 0750) and /etc/pollerd/credentials (root 0700, for LoadCredential=);
#     /var/lib/pollerd and /var/log/pollerd are created by systemd (StateDirectory=, LogsDirectory=);
#   - a venv at /opt/pollerd with pollerd installed into it, and /usr/local/bin/pollerd pointing at it;
#   - the unit file into /etc/systemd/system/pollerd.service (replaced on upgrade: put local changes in a
#     drop-in, `systemctl edit pollerd`);
#   - the example config into /etc/pollerd/pollerd.toml ONLY if there is none: a user's config is never
#     overwritten (the same for the АС СиОИ template it names, /etc/pollerd/sioi-template.xml);
#   - systemctl daemon-reload, and try-restart (restarts pollerd only if it was running: the upgrade case).
#     It does not enable or start a fresh install: edit the config first, then `systemctl enable --now pollerd`.
#
# Options:
#   --prefix DIR     install everything under DIR (like DESTDIR: files keep their final paths inside DIR);
#                    skips useradd, chown and systemctl. For tests and staging; a venv made there is not
#                    relocatable.
#   --no-systemctl   do not call systemctl (e.g. building an image)
#   --no-venv        do not create the venv or run pip (tests; the venv step is then the caller's business)
#   --wheel FILE     pip-install FILE instead of the checkout
#   --python PY      the interpreter for the venv (default: python3, >= 3.10)
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=""
SYSTEMCTL=1
VENV=1
WHEEL=""
PY="python3"

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX="$2"; shift 2 ;;
        --prefix=*) PREFIX="${1#--prefix=}"; shift ;;
        --no-systemctl) SYSTEMCTL=0; shift ;;
        --no-venv) VENV=0; shift ;;
        --wheel) [ $# -ge 2 ] || die "--wheel needs a file"; WHEEL="$2"; shift 2 ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PY="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

if [ -n "$PREFIX" ]; then
    mkdir -p "$PREFIX"
    PREFIX="$(cd "$PREFIX" && pwd)"
    SYSTEMCTL=0
    OWNED=0          # no chown: the pollerd user need not exist on the build host
else
    [ "$(id -u)" = 0 ] || die "run as root (or use --prefix DIR)"
    OWNED=1
fi
[ -z "$WHEEL" ] || [ -f "$WHEEL" ] || die "no such wheel: $WHEEL"

ETC="$PREFIX/etc/pollerd"
OPT="$PREFIX/opt/pollerd"
UNIT_DIR="$PREFIX/etc/systemd/system"

# 1. the user ------------------------------------------------------------------------------------------
if [ "$OWNED" = 1 ]; then
    getent group dialout >/dev/null || groupadd --system dialout
    if ! id pollerd >/dev/null 2>&1; then
        useradd --system --user-group --groups dialout --home-dir /var/lib/pollerd --no-create-home \
            --shell /usr/sbin/nologin --comment "pollerd metering gateway" pollerd
        say "created system user pollerd (groups: pollerd, dialout)"
    elif ! id -nG pollerd | tr ' ' '\n' | grep -qx dialout; then
        usermod -a -G dialout pollerd
        say "added pollerd to dialout"
    fi
fi

# 2. directories ---------------------------------------------------------------------------------------
install -d -m 0750 "$ETC"
install -d -m 0700 "$ETC/credentials"
install -d -m 0755 "$UNIT_DIR" "$OPT" "$OPT/share/doc/pollerd" "$PREFIX/usr/local/bin"
if [ "$OWNED" = 1 ]; then
    chown root:pollerd "$ETC"
    chown root:root "$ETC/credentials"
fi

# 3. the venv ------------------------------------------------------------------------------------------
if [ "$VENV" = 1 ]; then
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PY is older than Python 3.10"
    if [ ! -x "$OPT/bin/python" ]; then
        "$PY" -m venv "$OPT" || die "cannot create a venv (Debian: apt-get install python3-venv)"
        say "created venv $OPT"
    fi
    # --timeout bounds each network read. A checkout directory is always rebuilt and reinstalled.
    "$OPT/bin/python" -m pip install --quiet --disable-pip-version-check --timeout 60 --upgrade pip >/dev/null \
        || say "warning: could not upgrade pip; continuing with the venv's own"
    "$OPT/bin/python" -m pip install --quiet --disable-pip-version-check --timeout 60 --upgrade "${WHEEL:-$SRC}"
    if [ -n "$WHEEL" ]; then
        # pip keeps an installed wheel of the same version; a rebuilt one must still replace it.
        "$OPT/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$WHEEL"
    fi
    "$OPT/bin/pollerd" version >/dev/null || die "the installed pollerd does not run"
    say "installed $("$OPT/bin/pollerd" version | head -1) into $OPT"
fi
ln -sfn /opt/pollerd/bin/pollerd "$PREFIX/usr/local/bin/pollerd"

# 4. unit, docs, config --------------------------------------------------------------------------------
install -m 0644 "$SRC/systemd/pollerd.service" "$UNIT_DIR/pollerd.service"
install -m 0644 "$SRC/README.md" "$OPT/share/doc/pollerd/README.md"
# The README is the front door and links into docs/; without the reference beside it those links are dead.
(cd "$SRC" && find docs -name '*.md') | while read -r page; do
    install -D -m 0644 "$SRC/$page" "$OPT/share/doc/pollerd/$page"
done
install -m 0644 "$SRC/config/pollerd.example.toml" "$OPT/share/doc/pollerd/pollerd.example.toml"
install -m 0644 "$SRC/config/sioi-template.xml" "$OPT/share/doc/pollerd/sioi-template.xml"
if [ -e "$ETC/pollerd.toml" ]; then
    say "kept the existing $ETC/pollerd.toml (the new example is in $OPT/share/doc/pollerd/)"
else
    install -m 0640 "$SRC/config/pollerd.example.toml" "$ETC/pollerd.toml"
    [ "$OWNED" = 0 ] || chown root:pollerd "$ETC/pollerd.toml"
    say "wrote the example config to $ETC/pollerd.toml: edit it, then check it with pollerd check"
fi
# The example's sioi sink names template = "sioi-template.xml" next to the config, and the config loader
# checks that file: without it the fresh example fails `pollerd check` (and `pollerd run` exits 78).
if [ ! -e "$ETC/sioi-template.xml" ]; then
    install -m 0640 "$SRC/config/sioi-template.xml" "$ETC/sioi-template.xml"
    [ "$OWNED" = 0 ] || chown root:pollerd "$ETC/sioi-template.xml"
fi

# 5. systemd -------------------------------------------------------------------------------------------
if [ "$SYSTEMCTL" = 1 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        # Restarts only a running service (the upgrade case); `pollerd run` checks the config first.
        systemctl try-restart pollerd.service
        if ! systemctl is-enabled --quiet pollerd.service; then
            say "next: edit /etc/pollerd/pollerd.toml, then: systemctl enable --now pollerd"
        fi
    else
        say "systemd is not running here; skipped systemctl"
    fi
fi
say "done"

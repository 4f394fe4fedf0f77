#!/usr/bin/env bash
# Install, upgrade or remove the estate gateway on Raspberry Pi OS / Debian (bookworm).
#
#   sudo scripts/install.sh                       install or upgrade from this checkout
#   sudo scripts/install.sh --uninstall           remove program, unit and udev rule; keep data
#   sudo scripts/install.sh --uninstall --purge   also remove /etc/estate-gateway, the outbox
#                                                 in /var/lib/estate-gateway and the user
#   scripts/install.sh --root DIR [--no-systemctl] [--no-venv]   stage into DIR (tests, images)
#
# What goes where (paths relative to --root, default /):
#   opt/estate-gateway/venv              -> venvs/<time>: the daemon and its pinned deps (pip)
#   etc/estate-gateway/config.yaml       installed once, NEVER overwritten: it is the site's
#   etc/estate-gateway/config.yaml.dist  the shipped version, refreshed on every run
#   var/lib/estate-gateway/              state (gateway.data_dir): the outbox, 0750
#   etc/systemd/system/estate-gateway.service
#   etc/udev/rules.d/99-estate-gateway.rules
#   etc/modules-load.d/estate-gateway.conf   usbserial + cdc_acm at boot (see the unit)
#
# Options:
#   --root DIR       install below DIR instead of /. No host users are created, nothing is
#                    chowned and no service is touched: the commands skipped are printed.
#   --no-systemctl   do not run systemctl, udevadm or modprobe (e.g. in a container).
#   --no-venv        do not create the venv or pip install (tests; or you manage the venv).
#   --uninstall      remove the program, the unit, the udev rule; keep config and data.
#   --purge          with --uninstall: also remove config, data and the system user.
#
# Environment: PYTHON (default python3, must be >= 3.11). pip reads its own PIP_* variables,
# e.g. PIP_FIND_LINKS=/media/usb/wheels PIP_NO_INDEX=1 for an offline install.
set -euo pipefail

readonly APP=estate-gateway
readonly SERVICE_USER=estate-gateway
readonly UNIT_NAME=estate-gateway.service
readonly UDEV_RULE=99-estate-gateway.rules
readonly STATE_DIR=/var/lib/estate-gateway
readonly CONFIG_DIR=/etc/estate-gateway
readonly OPT_DIR=/opt/estate-gateway
# Site-owned files shipped in the checkout, installed below CONFIG_DIR (same relative path)
# only if absent. access/cards.txt is the card access list that config.yaml names
# relative to itself (access.cards). A file missing from the checkout is skipped.
readonly ETC_FILES=(config.yaml access/cards.txt)

SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly SRC_DIR

ROOT=""
LIVE=1        # 1: this machine (root is /): create users, chown, talk to systemd
SYSTEMCTL=1
VENV=1
ACTION=install
PURGE=0

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
# A command that only makes sense on the live system: run it, or print it when staging.
on_host() {
    if [[ $LIVE -eq 1 ]]; then
        "$@"
    else
        say "skipped (--root): $*"
    fi
}
# Like on_host(), and also skipped with --no-systemctl: systemctl, udevadm, modprobe.
live_service() {
    if [[ $LIVE -eq 1 && $SYSTEMCTL -eq 1 ]]; then
        "$@"
    else
        say "skipped: $*"
    fi
}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --root)
            [[ $# -ge 2 ]] || die "--root needs a directory"
            ROOT="$2"
            shift 2
            ;;
        --root=*) ROOT="${1#--root=}"; shift ;;
        --no-systemctl) SYSTEMCTL=0; shift ;;
        --no-venv) VENV=0; shift ;;
        --uninstall) ACTION=uninstall; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

[[ $PURGE -eq 0 || $ACTION == uninstall ]] || die "--purge only goes with --uninstall"

if [[ -n $ROOT ]]; then
    mkdir -p "$ROOT"
    ROOT="$(cd "$ROOT" && pwd)"
    [[ $ROOT == / ]] && ROOT=""
fi
[[ -z $ROOT ]] || LIVE=0
if [[ $LIVE -eq 1 && $EUID -ne 0 ]]; then
    die "run as root (sudo), or stage with --root DIR"
fi

readonly ROOT LIVE SYSTEMCTL VENV ACTION PURGE
readonly VENV_DIR="$ROOT$OPT_DIR/venv"

unit_active() { [[ $LIVE -eq 1 && $SYSTEMCTL -eq 1 ]] && systemctl is-active --quiet "$UNIT_NAME"; }

ensure_user() {
    if [[ $LIVE -eq 0 ]]; then
        # Never create users on the host for a throwaway root.
        say "skipped (--root): useradd --system --user-group --groups dialout" \
            "--home-dir $STATE_DIR --no-create-home --shell /usr/sbin/nologin $SERVICE_USER"
        return
    fi
    if getent passwd "$SERVICE_USER" >/dev/null; then
        usermod --append --groups dialout "$SERVICE_USER"
    else
        useradd --system --user-group --groups dialout --home-dir "$STATE_DIR" \
            --no-create-home --shell /usr/sbin/nologin \
            --comment "estate gateway daemon" "$SERVICE_USER"
        say "created system user $SERVICE_USER (groups: dialout)"
    fi
}

# Each install builds a fresh venv in venvs/<timestamp> and then atomically repoints the
# symlink venv -> venvs/<timestamp>. A failed pip install (no network, a wheel that won't
# build) leaves the running version untouched, and a running daemon never sees its files
# change underneath it. (A venv cannot be built elsewhere and moved: its scripts hard-code
# its path in their #! line.) The previous venv is kept for a manual rollback:
#   ln -sfn venvs/<previous> /opt/estate-gateway/venv && systemctl restart estate-gateway
install_venv() {
    if [[ $VENV -eq 0 ]]; then
        say "skipped (--no-venv): python3 -m venv + pip install $SRC_DIR into $VENV_DIR"
        return
    fi
    local python="${PYTHON:-python3}"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$python is older than 3.11"
    if [[ $LIVE -eq 0 ]]; then
        say "warning: venvs are not relocatable; this one works only below $ROOT"
    fi
    local venvs="$ROOT$OPT_DIR/venvs" release
    release="$(date -u +%Y%m%dT%H%M%SZ)"
    mkdir -p "$venvs"
    rm -rf "${venvs:?}/$release"
    if ! { "$python" -m venv "$venvs/$release" \
        && "$venvs/$release/bin/python" -m pip install --quiet --disable-pip-version-check \
            "$SRC_DIR" \
        && "$venvs/$release/bin/estate-gateway" --help >/dev/null; }; then
        rm -rf "${venvs:?}/$release"
        die "venv or pip install failed; the installed version (if any) is unchanged"
    fi
    if [[ -d $VENV_DIR && ! -L $VENV_DIR ]]; then
        rm -rf "$VENV_DIR"  # a plain directory from a hand-made install
    fi
    ln -sfn "venvs/$release" "$VENV_DIR.tmp"
    mv -T "$VENV_DIR.tmp" "$VENV_DIR"
    # Keep the new venv and the one before it.
    local old
    for old in $(find "$venvs" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -r \
        | tail -n +3); do
        rm -rf "${venvs:?}/$old"
    done
    say "installed the daemon into $venvs/$release ($VENV_DIR points there)"
}

# The repository's config.yaml points gateway.data_dir at a relative directory so it runs
# from a checkout against the simulators. Installed, it must be the StateDirectory= of the
# unit, the only writable path under ProtectSystem=strict. Rewrite just the value of that
# one key, keeping its indentation and any trailing comment; if the key is absent (the
# default is relative too), add it as the first key of the gateway: section.
shipped_config() {
    local src="$1" count
    count="$(grep -cE '^[[:space:]]+data_dir:' "$src" || true)"
    case "$count" in
        1) sed -E "s|^([[:space:]]+data_dir:[[:space:]]*)[^#[:space:]]+|\\1$STATE_DIR|" "$src" ;;
        0)
            grep -q '^gateway:' "$src" || die "$src: no gateway: section"
            awk -v dir="$STATE_DIR" '
                pending && /^[[:space:]]+[^[:space:]#]/ {
                    match($0, /^[[:space:]]+/)
                    print substr($0, 1, RLENGTH) "data_dir: " dir "  # added by install.sh"
                    pending = 0
                }
                { print }
                /^gateway:/ { pending = 1 }
            ' "$src"
            ;;
        *) die "$src: expected one data_dir: line, found $count" ;;
    esac
}

install_etc() {
    local dir="$ROOT$CONFIG_DIR" name src dist
    install -d -m 0750 "$dir"
    on_host chown "root:$SERVICE_USER" "$CONFIG_DIR"
    for name in "${ETC_FILES[@]}"; do
        src="$SRC_DIR/$name"
        if [[ ! -f $src ]]; then
            say "no $name in $SRC_DIR, skipped"
            continue
        fi
        if [[ $name == */* ]]; then
            install -d -m 0750 "$dir/$(dirname "$name")"
            on_host chown "root:$SERVICE_USER" "$CONFIG_DIR/$(dirname "$name")"
        fi
        dist="$dir/$name.dist"
        if [[ $name == config.yaml ]]; then
            shipped_config "$src" >"$dist.tmp"
        else
            cp "$src" "$dist.tmp"
        fi
        chmod 0640 "$dist.tmp"
        mv "$dist.tmp" "$dist"
        on_host chown "root:$SERVICE_USER" "$CONFIG_DIR/$name.dist"
        if [[ -e $dir/$name ]]; then
            if cmp -s "$dist" "$dir/$name"; then
                say "kept $CONFIG_DIR/$name (same as shipped)"
            else
                say "kept $CONFIG_DIR/$name (site-edited); shipped version: $CONFIG_DIR/$name.dist"
            fi
        else
            cp -p "$dist" "$dir/$name"
            say "installed $CONFIG_DIR/$name"
        fi
        on_host chown "root:$SERVICE_USER" "$CONFIG_DIR/$name"
    done
    if [[ $VENV -eq 1 && -f $dir/config.yaml ]]; then
        "$VENV_DIR/bin/estate-gateway" check-config "$dir/config.yaml" \
            || say "warning: $CONFIG_DIR/config.yaml does not validate; the unit will not start"
    fi
}

install_system_files() {
    install -d -m 0750 "$ROOT$STATE_DIR"
    on_host chown "$SERVICE_USER:$SERVICE_USER" "$STATE_DIR"
    install -D -m 0644 "$SRC_DIR/systemd/$UNIT_NAME" "$ROOT/etc/systemd/system/$UNIT_NAME"
    install -D -m 0644 "$SRC_DIR/udev/$UDEV_RULE" "$ROOT/etc/udev/rules.d/$UDEV_RULE"
    # DeviceAllow=char-ttyUSB / char-ttyACM are resolved when the unit starts; load the
    # drivers at boot so the majors exist even if the adapter is plugged in later.
    install -d -m 0755 "$ROOT/etc/modules-load.d"
    printf '# estate-gateway: serial drivers, see %s\nusbserial\ncdc_acm\n' "$UNIT_NAME" \
        >"$ROOT/etc/modules-load.d/$APP.conf"
    if [[ -f $SRC_DIR/README.md ]]; then
        install -D -m 0644 "$SRC_DIR/README.md" "$ROOT$OPT_DIR/README.md"
    fi
    say "installed unit, udev rule and modules-load.d entry"
}

activate() {
    live_service modprobe --all usbserial cdc_acm
    live_service udevadm control --reload
    live_service udevadm trigger --subsystem-match=tty --subsystem-match=usb-serial
    live_service systemctl daemon-reload
    live_service systemctl enable "$UNIT_NAME"
    if unit_active; then
        systemctl restart "$UNIT_NAME"
        say "restarted $UNIT_NAME on the new version"
    else
        say "next: edit $CONFIG_DIR/config.yaml, then: systemctl start $UNIT_NAME"
    fi
}

do_install() {
    ensure_user
    install_venv
    install_etc
    install_system_files
    activate
    say "done"
}

do_uninstall() {
    live_service systemctl disable --now "$UNIT_NAME"
    rm -f "$ROOT/etc/systemd/system/$UNIT_NAME" \
        "$ROOT/etc/udev/rules.d/$UDEV_RULE" \
        "$ROOT/etc/modules-load.d/$APP.conf"
    rm -rf "$ROOT$OPT_DIR"
    live_service systemctl daemon-reload
    live_service udevadm control --reload
    if [[ $PURGE -eq 1 ]]; then
        rm -rf "$ROOT$CONFIG_DIR" "$ROOT$STATE_DIR"
        if [[ $LIVE -eq 1 ]] && getent passwd "$SERVICE_USER" >/dev/null; then
            userdel "$SERVICE_USER"
        elif [[ $LIVE -eq 0 ]]; then
            say "skipped (--root): userdel $SERVICE_USER"
        fi
        say "purged config, data and user"
    else
        say "kept $CONFIG_DIR and $STATE_DIR (the outbox); --uninstall --purge removes them"
    fi
    say "done"
}

case "$ACTION" in
    install) do_install ;;
    uninstall) do_uninstall ;;
esac

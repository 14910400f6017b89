"""The boot environment's shell side: /init, its functions, and the DHCP client hook.

/init runs under busybox as PID 1 in the initramfs: it mounts the kernel filesystems, loads the
driver modules chosen at build time, gets an address by DHCP (busybox udhcpc) on the first
interface that answers, reads the `ka.*` options from /proc/cmdline, and runs `ka install`
up to `ka.retries` times. It reboots after a success, and also after the last failure, with a
clear message on the console, so that a node left on "boot ka" keeps trying until a golden
node serves it (the original stage1 did the same).

With two stages (the default of `ka bootenv build`), the initramfs is stage1: before `ka
install`, /init receives stage2 with `ka receive` from the session PREFIX-stage2 (or from
ka.host=, on the stage2 port, 30764 unless ka.stage2_port= says otherwise), into /run/ka; only
a stream that ended whole and signed (the session key, the golden identity baked in) is
unpacked over /, and its drivers loaded. A missing, cut or refused stage2 is retried
ka.retries times, then the node reboots like after a failed install.

The functions live in /etc/ka/boot.sh so that tests can run them with a stand-in `ka` and
`reboot` (KA_COMMAND, KA_REBOOT, KA_RETRY_DELAY) without booting anything.
"""

from __future__ import annotations

from ka.ports import STAGE2_PORT as STAGE2_PORT

BOOT_SH_PATH = "/etc/ka/boot.sh"
UDHCPC_SCRIPT_PATH = "/etc/ka/udhcpc.script"
MODULES_LIST_PATH = "/etc/ka/modules"
MODULES_STAGE2_PATH = "/etc/ka/modules.stage2"  # the drivers that come with stage2
STAGE2_MARKER_PATH = "/etc/ka/stage2"  # present in stage1: fetch stage2 before installing
KEY_PATH = "/etc/ka/key"
GOLDEN_KEY_PATH = "/etc/ka/golden.pub"  # the pinned golden identity, public by design
FIND_TIMEOUT_SECONDS = 120

INIT = """\
#!/bin/sh
# ka boot environment: network by DHCP, then `ka install`, then reboot (see /etc/ka/boot.sh).
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
. /etc/ka/boot.sh
ka_mount_basics
ka_parse_cmdline "$(cat "${KA_CMDLINE_FILE:-/proc/cmdline}")"
ka_load_modules /etc/ka/modules
ka_network_up || ka_give_up "no network interface got a DHCP lease"
ka_fetch_key || ka_give_up "could not fetch the session key from $KA_KEY_URL"
ka_fetch_stage2 || ka_give_up "could not receive stage2 after $KA_RETRIES attempts"
ka_load_modules /etc/ka/modules.stage2
ka_run_attempts
"""

BOOT_SH = f"""\
# Functions of the ka boot environment's /init (busybox sh).
KA_SESSION=
KA_HOST=
KA_RETRIES=5
KA_KEY_URL=
KA_DISKS=
KA_SHELL=0
KA_NAME=
KA_NEXT_SERVER=
KA_KEY_FILE=
KA_STAGE2_PORT={STAGE2_PORT}
: "${{KA_STAGE2_MARKER:={STAGE2_MARKER_PATH}}}"
: "${{KA_UNPACK_ROOT:=/}}"
: "${{KA_FIND_TIMEOUT:={FIND_TIMEOUT_SECONDS}}}"
: "${{KA_COMMAND:=ka}}"
: "${{KA_REBOOT:=reboot -f}}"
: "${{KA_RETRY_DELAY:=5}}"
: "${{KA_GIVE_UP_DELAY:=10}}"
: "${{KA_RUN:=/run/ka}}"

ka_say() {{
    echo "ka: $*"
}}

ka_mount_basics() {{
    mkdir -p /proc /sys /dev /run /tmp
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
    mount -t tmpfs tmpfs /run
    mkdir -p "$KA_RUN"
}}

ka_parse_cmdline() {{
    set -f
    for word in $1; do
        case "$word" in
            ka.session=*) KA_SESSION=${{word#*=}} ;;
            ka.host=*) KA_HOST=${{word#*=}} ;;
            ka.retries=*) KA_RETRIES=${{word#*=}} ;;
            ka.key_url=*|ka.key-url=*) KA_KEY_URL=${{word#*=}} ;;
            ka.disk=*) KA_DISKS=${{word#*=}} ;;
            ka.stage2_port=*|ka.stage2-port=*) KA_STAGE2_PORT=${{word#*=}} ;;
            ka.shell|ka.shell=1|ka.shell=yes) KA_SHELL=1 ;;
            ka.*) ka_say "warning: unknown boot option $word (ignored)" ;;
        esac
    done
    set +f
    case "$KA_RETRIES" in
        ''|*[!0-9]*|0) ka_say "warning: ka.retries=$KA_RETRIES is not a positive number, using 5"
                       KA_RETRIES=5 ;;
    esac
    case "$KA_STAGE2_PORT" in
        ''|*[!0-9]*|0) ka_say "warning: ka.stage2_port=$KA_STAGE2_PORT is not a port, using \
{STAGE2_PORT}"
                       KA_STAGE2_PORT={STAGE2_PORT} ;;
    esac
}}

ka_load_modules() {{
    [ -f "$1" ] || return 0
    while read -r module; do
        [ -n "$module" ] && insmod "$module" 2>/dev/null
    done < "$1"
    return 0
}}

# DHCP on each interface in turn; the hook writes what the server said to $KA_RUN/dhcp.env.
ka_network_up() {{
    ip link set lo up
    for path in /sys/class/net/*; do
        iface=${{path##*/}}
        [ "$iface" = lo ] && continue
        ip link set "$iface" up
        ka_say "asking for an address by DHCP on $iface"
        if udhcpc -i "$iface" -f -q -n -t 5 -T 3 -s {UDHCPC_SCRIPT_PATH}; then
            . "$KA_RUN/dhcp.env"
            [ -n "$KA_NAME" ] || KA_NAME=$(cat "$path/address")
            ka_say "$iface is $KA_ADDRESS, boot server $KA_NEXT_SERVER, name $KA_NAME"
            return 0
        fi
    done
    return 1
}}

ka_fetch_key() {{
    if [ -f {KEY_PATH} ]; then
        KA_KEY_FILE={KEY_PATH}
    elif [ -n "$KA_KEY_URL" ]; then
        ka_say "fetching the session key from $KA_KEY_URL"
        wget -q -O "$KA_RUN/key" "$KA_KEY_URL" || return 1
        chmod 600 "$KA_RUN/key"
        KA_KEY_FILE=$KA_RUN/key
    else
        ka_say "warning: no session key: this node joins open sessions only"
    fi
    return 0
}}

# The `ka install` command line, one argument a line (no value holds a newline or a space).
ka_install_args() {{
    echo install
    if [ -n "$KA_SESSION" ]; then
        echo --session-prefix; echo "$KA_SESSION"
    else
        echo --host; echo "${{KA_HOST:-$KA_NEXT_SERVER}}"
    fi
    ka_common_args
    set -f
    for disk in $(echo "$KA_DISKS" | tr , ' '); do
        echo --disk; echo "$disk"
    done
    set +f
}}

# What both `ka receive` (stage2) and `ka install` are told to find the golden node and trust it.
ka_common_args() {{
    [ -n "$KA_KEY_FILE" ] && {{ echo --key-file; echo "$KA_KEY_FILE"; }}
    golden=${{KA_GOLDEN_KEY_FILE:-{GOLDEN_KEY_PATH}}}
    [ -f "$golden" ] && {{ echo --golden-key; echo "$golden"; }}
    [ -n "$KA_NAME" ] && {{ echo --name; echo "$KA_NAME"; }}
    echo --find-timeout; echo "$KA_FIND_TIMEOUT"
}}

# The `ka receive` command line that fetches stage2, one argument a line.
ka_stage2_args() {{
    echo receive
    if [ -n "$KA_SESSION" ]; then
        echo --session; echo "$KA_SESSION-stage2"
    else
        echo --host; echo "${{KA_HOST:-$KA_NEXT_SERVER}}"
    fi
    echo --port; echo "$KA_STAGE2_PORT"
    echo --output; echo "$KA_RUN/stage2"
    ka_common_args
}}

# stage1 only: stage2 through the chain, unpacked over / once it arrived whole and signed.
ka_fetch_stage2() {{
    [ -f "$KA_STAGE2_MARKER" ] || return 0
    if [ -z "$KA_SESSION$KA_HOST$KA_NEXT_SERVER" ]; then
        ka_give_up "no ka.session= or ka.host= option and no DHCP next-server to contact"
    fi
    attempt=1
    while [ "$attempt" -le "$KA_RETRIES" ]; do
        ka_say "receiving stage2 through the chain (attempt $attempt of $KA_RETRIES)"
        rm -f "$KA_RUN/stage2"
        set -f
        # shellcheck disable=SC2046
        $KA_COMMAND $(ka_stage2_args | tr '\n' ' ')
        status=$?
        set +f
        if [ "$status" = 0 ]; then
            # Tested whole first (its CRC and length): a cut archive must not be half
            # unpacked over stage1.
            if gzip -t "$KA_RUN/stage2" 2>/dev/null \
                    && gzip -dc "$KA_RUN/stage2" | (cd "$KA_UNPACK_ROOT" && cpio -idmu 2>/dev/null)
            then
                rm -f "$KA_RUN/stage2" "$KA_STAGE2_MARKER"
                ka_say "stage2 received and unpacked"
                return 0
            fi
            ka_say "stage2 could not be unpacked (not a gzip cpio archive?)"
        else
            ka_say "stage2 was not received or was refused (ka exit status $status)"
        fi
        rm -f "$KA_RUN/stage2"
        attempt=$((attempt + 1))
        [ "$attempt" -le "$KA_RETRIES" ] && sleep "$KA_RETRY_DELAY"
    done
    return 1
}}

ka_give_up() {{
    ka_say "!!! $1 !!!"
    if [ "$KA_SHELL" = 1 ]; then
        ka_say "ka.shell is set: starting a shell instead of rebooting"
        setsid cttyhack sh || sh
    fi
    ka_say "rebooting in $KA_GIVE_UP_DELAY seconds"
    sleep "$KA_GIVE_UP_DELAY"
    $KA_REBOOT
    exit 1
}}

ka_run_attempts() {{
    if [ -z "$KA_SESSION$KA_HOST$KA_NEXT_SERVER" ]; then
        ka_give_up "no ka.session= or ka.host= option and no DHCP next-server to contact"
    fi
    attempt=1
    while [ "$attempt" -le "$KA_RETRIES" ]; do
        ka_say "install attempt $attempt of $KA_RETRIES"
        set -f
        # shellcheck disable=SC2046
        $KA_COMMAND $(ka_install_args | tr '\\n' ' ')
        status=$?
        set +f
        if [ "$status" = 0 ]; then
            ka_say "install succeeded; rebooting"
            sync
            $KA_REBOOT
            exit 0
        fi
        ka_say "install attempt $attempt of $KA_RETRIES failed (ka exit status $status)"
        attempt=$((attempt + 1))
        [ "$attempt" -le "$KA_RETRIES" ] && sleep "$KA_RETRY_DELAY"
    done
    ka_give_up "could not install this node after $KA_RETRIES attempts"
}}
"""

UDHCPC_SCRIPT = """\
#!/bin/sh
# busybox udhcpc hook: configure the interface and record what the DHCP server said.
run=${KA_RUN:-/run/ka}
ipcmd=${KA_IP:-ip}
case "$1" in
    deconfig)
        $ipcmd -4 addr flush dev "$interface"
        ;;
    bound|renew)
        $ipcmd -4 addr flush dev "$interface"
        $ipcmd addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
        for r in $router; do
            $ipcmd route add default via "$r" dev "$interface" && break
        done
        # /init sources this file: whatever the DHCP server sent is quoted, and only what
        # looks like an address or a host name is kept (a name like $(reboot) is dropped).
        server=${siaddr:-$serverid}
        {
            case "$ip" in *[!0-9.]*|"") ;; *) echo "KA_ADDRESS='$ip'" ;; esac
            case "$server" in *[!0-9.]*|"") ;; *) echo "KA_NEXT_SERVER='$server'" ;; esac
            case "$hostname" in *[!A-Za-z0-9._-]*|"") ;; *) echo "KA_NAME='$hostname'" ;; esac
        } > "$run/dhcp.env"
        ;;
esac
exit 0
"""

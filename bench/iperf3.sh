#!/bin/bash
# iperf3 throughput, guest network namespace <-> host loopback, of gvtap and of the
# peer user-mode stacks slirp4netns and pasta, measured side by side in one run.
#
#   bench/iperf3.sh [SECONDS] [STACK...]
#
#   SECONDS  length of each iperf3 measurement (default 5)
#   STACK    any of slirp4netns pasta gvtap (default: all three, in that order;
#            slirp4netns first, since every other figure is also given as a ratio
#            to slirp4netns for the same MTU and direction)
#
# For each stack, MTU (1500 and 65520; override with MTUS="...") and direction it prints
#
#   gvtap mtu=1500 dir=up gbps=0.412 vs_slirp4netns=0.38
#
# up = the guest namespace sends to the host (iperf3 -c in the namespace),
# down = the host sends to the namespace (iperf3 -c ... -R). A measurement that fails
# or hangs (every step is bounded by `timeout`) is reported as gbps=0 with a
# status=... field, never as a hang. `bench/summarize.py` turns the output into a
# markdown table.
#
# Needs root, /dev/net/tun, iproute2, iperf3, slirp4netns, pasta (Debian: passt) and
# the project importable by python3 (an editable install, or PYTHONPATH).
# Network rule: traffic goes only to the host's loopback and to namespaces made here.
# Nothing here opens an AF_VSOCK socket: the guest helper uses a unix socket.
# Environment: PYTHON (interpreter that runs twistd, default python3), MTUS,
# KEEP_LOGS=1 (keep the log directory even when every measurement succeeded),
# PROFILE=1 (run the gvtap daemon under cProfile and print its hottest functions;
# the profiler slows it down, so those figures are not comparable),
# GVTAP_ARGS="..." (more options for the gvtap daemon, split on spaces; e.g.
# "--pcap /tmp/x.pcap" -- which also slows it down).
set -u

T=5
STACKS=()
for arg in "$@"; do
    case "$arg" in
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        slirp4netns|pasta|gvtap) STACKS+=("$arg") ;;
        *[!0-9]*|"") echo "$0: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
        *) T=$arg ;;
    esac
done
[ ${#STACKS[@]} -eq 0 ] && STACKS=(slirp4netns pasta gvtap)
MTUS=${MTUS:-"1500 65520"}

if [ "$(id -u)" != 0 ]; then echo "$0: needs root (network namespaces, TAP)" >&2; exit 1; fi
for tool in ip ss iperf3 timeout; do
    command -v $tool >/dev/null || { echo "$0: needs $tool on PATH" >&2; exit 1; }
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=$(command -v "${PYTHON:-python3}") || { echo "$0: no python3" >&2; exit 1; }
PY=$("$PY" -c 'import sys; print(sys.executable)')
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
TWISTD=("$PY" -c 'import sys; from twisted.scripts.twistd import run; sys.argv[0] = "twistd"; run()')

WD=$(mktemp -d /tmp/gvbench-XXXXXX)
SOCK=$WD/gvtap.sock
NS=gvbench-$$
FAILED=0
# pids (of process groups where noted) that cleanup must end; only ours.
IPERF_PIDFILE=$WD/iperf3-server.pid
DAEMON_PID= ; HELPER_PID= ; SLIRP_PID= ; NSHOLD_PID= ; PASTA_PIDFILE=$WD/pasta.pid

kill_pid() { # pid [group]: TERM, then KILL after 3 s; only the given pid / its group
    local pid=$1 target=$1
    [ -n "$pid" ] || return 0
    [ "${2:-}" = group ] && target=-$pid
    kill -TERM -- $target 2>/dev/null || return 0
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- $target 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

stop_iperf_server() {
    [ -s "$IPERF_PIDFILE" ] && kill_pid "$(cat "$IPERF_PIDFILE")"
    rm -f "$IPERF_PIDFILE"
}

del_ns() { # name: kill what still runs inside (only that namespace's pids), delete it
    local name=$1
    ip netns list 2>/dev/null | grep -qw "^$name" || return 0
    for pid in $(ip netns pids "$name" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$name" 2>/dev/null
    rm -rf "/etc/netns/$name"
}

stop_gvtap() {
    kill_pid "$HELPER_PID" group; HELPER_PID=
    kill_pid "$DAEMON_PID" group; DAEMON_PID=
    rm -f "$SOCK"
}

cleanup() {
    trap - EXIT INT TERM
    stop_iperf_server
    stop_gvtap
    kill_pid "$SLIRP_PID"; kill_pid "$NSHOLD_PID"
    [ -s "$PASTA_PIDFILE" ] && kill_pid "$(cat "$PASTA_PIDFILE")"
    for suffix in gvtap slirp pasta; do del_ns "$NS-$suffix"; done
    if [ "$FAILED" = 0 ] && [ "${KEEP_LOGS:-0}" != 1 ]; then
        rm -rf "$WD"
    else
        echo "# logs kept in $WD"
    fi
}
trap cleanup EXIT
trap 'echo "# interrupted"; FAILED=1; exit 130' INT TERM

# A free port on the host's loopback for the iperf3 server.
PORT=
for p in $(seq $((20000 + $$ % 20000)) $((20100 + $$ % 20000))); do
    if ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then PORT=$p; break; fi
done
[ -n "$PORT" ] || { echo "$0: no free port" >&2; exit 1; }

start_iperf_server() {
    stop_iperf_server
    iperf3 -s -B 127.0.0.1 -p "$PORT" -D -I "$IPERF_PIDFILE" --logfile "$WD/iperf3-server.log"
    for _ in $(seq 50); do
        ss -Hltn "sport = :$PORT" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    echo "# iperf3 server did not start on 127.0.0.1:$PORT"
    return 1
}

declare -A SLIRP   # "mtu dir" -> gbps of slirp4netns, for the ratios
CPU_PIDS=()        # "name:pid" of the stack's own processes, whose CPU time is reported
HZ=$(getconf CLK_TCK)

cpu_ticks() { # pid: user + system clock ticks so far, or nothing
    [ -r "/proc/$1/stat" ] && sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

report() { # stack mtu dir bps status
    local stack=$1 mtu=$2 dir=$3 bps=$4 status=$5 gbps ratio=""
    gbps=$(awk -v b="$bps" 'BEGIN { printf "%.3f", b / 1e9 }')
    if [ "$stack" = slirp4netns ]; then
        SLIRP["$mtu $dir"]=$gbps
    elif [ -n "${SLIRP["$mtu $dir"]:-}" ]; then
        ratio=$(awk -v a="$gbps" -v b="${SLIRP["$mtu $dir"]}" \
            'BEGIN { if (b > 0) printf " vs_slirp4netns=%.2f", a / b; else printf " vs_slirp4netns=n/a" }')
    fi
    if [ "$status" = ok ]; then status=""; else status=" status=$status"; FAILED=1; fi
    echo "$stack mtu=$mtu dir=$dir gbps=$gbps$ratio$status"
}

measure() { # stack mtu dst netns: both directions
    local stack=$1 mtu=$2 dst=$3 ns=$4 dir flag out rc bps status
    for dir in up down; do
        flag=; [ $dir = down ] && flag=-R
        out=$WD/$stack-$mtu-$dir.json
        status=ok; bps=0
        if ! start_iperf_server; then
            status=no-server
        else
            local -A before=()
            for np in "${CPU_PIDS[@]}"; do before[$np]=$(cpu_ticks "${np#*:}"); done
            local start=$(date +%s.%N)
            timeout -k 3 $((T + 30)) ip netns exec "$ns" \
                iperf3 -c "$dst" -p "$PORT" -t "$T" $flag -J --connect-timeout 5000 >"$out" 2>&1
            rc=$?
            local cpu="" elapsed after
            elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
            for np in "${CPU_PIDS[@]}"; do
                after=$(cpu_ticks "${np#*:}")
                [ -n "$after" ] && [ -n "${before[$np]}" ] && cpu+=" ${np%%:*}=$(awk -v t=$((after - before[$np])) -v hz="$HZ" 'BEGIN { printf "%.1f", t / hz }')s"
            done
            [ -n "$cpu" ] && echo "# cpu $stack mtu=$mtu dir=$dir over ${elapsed}s:$cpu"
            bps=$("$PY" - "$out" <<'EOF'
import json, sys
try:
    print(int(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]))
except Exception:
    print(0)
EOF
)
            if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status=timeout
            elif [ "$rc" != 0 ]; then status=iperf3-exit-$rc
            elif [ "$bps" = 0 ]; then status=no-result
            fi
            if [ "$status" != ok ]; then
                "$PY" - "$out" <<'EOF'
import json, sys
try:
    print("#   iperf3:", json.load(open(sys.argv[1])).get("error", "(no error field)"))
except Exception:
    print("#   iperf3 output:", open(sys.argv[1], errors="replace").read()[-300:])
EOF
            fi
        fi
        stop_iperf_server
        report "$stack" "$mtu" "$dir" "$bps" "$status"
    done
}

fail_both() { # stack mtu status
    report "$1" "$2" up 0 "$3"; report "$1" "$2" down 0 "$3"
}

wait_until() { # seconds command...: poll every 0.1 s
    local n=$(( $1 * 10 )); shift
    for _ in $(seq $n); do "$@" && return 0; sleep 0.1; done
    return 1
}

run_slirp4netns() {
    local mtu=$1 ns=$NS-slirp
    command -v slirp4netns >/dev/null || { fail_both slirp4netns "$mtu" not-installed; return; }
    ip netns add "$ns"
    # slirp4netns attaches to a process's network namespace: hold one open.
    ip netns exec "$ns" sleep 100000 & NSHOLD_PID=$!
    sleep 0.3
    slirp4netns --configure --mtu="$mtu" "$NSHOLD_PID" tap0 >"$WD/slirp4netns-$mtu.log" 2>&1 &
    SLIRP_PID=$!
    CPU_PIDS=("slirp4netns:$SLIRP_PID")
    if wait_until 10 sh -c "ip -n '$ns' -4 addr show tap0 2>/dev/null | grep -q inet"; then
        measure slirp4netns "$mtu" 10.0.2.2 "$ns"   # 10.0.2.2 is the host's loopback
    else
        fail_both slirp4netns "$mtu" no-tap
    fi
    kill_pid "$SLIRP_PID"; SLIRP_PID=
    kill_pid "$NSHOLD_PID"; NSHOLD_PID=
    del_ns "$ns"
}

run_pasta() {
    local mtu=$1 ns=$NS-pasta gw
    command -v pasta >/dev/null || { fail_both pasta "$mtu" not-installed; return; }
    ip netns add "$ns"
    # No automatic port forwarding either way; the gateway address maps to the host.
    if ! timeout 10 pasta --runas 0 --config-net --netns "$ns" -m "$mtu" -q -P "$PASTA_PIDFILE" \
            -t none -u none -T none -U none >"$WD/pasta-$mtu.log" 2>&1; then
        fail_both pasta "$mtu" start-failed
    else
        wait_until 5 sh -c "ip -n '$ns' route | grep -q default"
        gw=$(ip -n "$ns" route | awk '/^default/ { print $3; exit }')
        CPU_PIDS=("pasta:$(cat "$PASTA_PIDFILE" 2>/dev/null)")
        if [ -n "$gw" ]; then measure pasta "$mtu" "$gw" "$ns"; else fail_both pasta "$mtu" no-route; fi
    fi
    [ -s "$PASTA_PIDFILE" ] && kill_pid "$(cat "$PASTA_PIDFILE")"
    rm -f "$PASTA_PIDFILE"
    del_ns "$ns"
}

run_gvtap() {
    local mtu=$1 ns=$NS-gvtap log=$WD/gvtap-$mtu.log hlog=$WD/gvtap-guest-$mtu.log prof=() extra=()
    # No default ssh forward (127.0.0.1:2222): a benchmark binds no host port it does not need.
    "${TWISTD[@]}" gvtap --help 2>/dev/null | grep -q -- --ssh-port && extra=(--ssh-port=-1)
    # shellcheck disable=SC2206  # GVTAP_ARGS is split on purpose
    extra+=(${GVTAP_ARGS:-})
    [ "${PROFILE:-0}" = 1 ] && prof=(--profile="$WD/gvtap-$mtu.pstats" --profiler=cprofile --savestats)
    (cd "$WD" && exec setsid "${TWISTD[@]}" -n --pidfile= "${prof[@]}" gvtap --listen "unix:$SOCK" --mtu "$mtu" "${extra[@]}") \
        >"$log" 2>&1 &
    DAEMON_PID=$!
    wait_until 20 sh -c "test -S '$SOCK' || ! kill -0 $DAEMON_PID 2>/dev/null"
    if ! test -S "$SOCK" || ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        echo "# gvtap did not start; its log:" ; tail -n 20 "$log" | sed 's/^/#   /'
        fail_both gvtap "$mtu" daemon-start-failed; stop_gvtap; return
    fi
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    (cd "$WD" && exec ip netns exec "$ns" setsid "${TWISTD[@]}" -n --pidfile= gvtap-guest \
        --connect "unix:$SOCK" --iface tap0 --mtu "$mtu" --stop-if-exist=) >"$hlog" 2>&1 &
    HELPER_PID=$!
    if ! wait_until 20 sh -c "ip -n '$ns' link show tap0 2>/dev/null | grep -q ',UP' || ! kill -0 $HELPER_PID 2>/dev/null" \
            || ! kill -0 "$HELPER_PID" 2>/dev/null; then
        echo "# gvtap-guest did not bring tap0 up; its log:" ; tail -n 20 "$hlog" | sed 's/^/#   /'
        fail_both gvtap "$mtu" guest-start-failed
    else
        ip -n "$ns" addr add 192.168.127.2/24 dev tap0
        ip -n "$ns" route add default via 192.168.127.1
        CPU_PIDS=("daemon:$DAEMON_PID" "guest-helper:$HELPER_PID")
        measure gvtap "$mtu" 192.168.127.254 "$ns"   # 192.168.127.254 is the host's 127.0.0.1
    fi
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        echo "# gvtap daemon died during the run (mtu $mtu); its log tail:"
        FAILED=1
    elif grep -qE 'Traceback|Unhandled|CRITICAL' "$log"; then
        echo "# gvtap's log shows errors (mtu $mtu); its tail:"
        FAILED=1
    else
        log=
    fi
    [ -n "$log" ] && tail -n 30 "$log" | sed 's/^/#   /'
    stop_gvtap
    if [ -s "$WD/gvtap-$mtu.pstats" ]; then
        echo "# profile of the gvtap daemon, mtu=$mtu (both directions), top functions by own time:"
        "$PY" -c 'import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats("tottime").print_stats(18)' \
            "$WD/gvtap-$mtu.pstats" 2>&1 | sed -n '/ncalls/,$p' | sed '/^$/d; s/^/#   /'
    fi
    del_ns "$ns"
}

echo "# machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r), $("$PY" --version 2>&1) ($PY)"
echo "# versions: $(iperf3 --version | head -1 | cut -d' ' -f1-2); slirp4netns $(slirp4netns --version 2>/dev/null | awk 'NR==1 { print $3 }'); pasta $(dpkg-query -W -f='${Version}' passt 2>/dev/null || echo '?'); twisted $("$PY" -c 'import twisted; print(twisted.__version__)' 2>/dev/null); gvtap $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')"
echo "# iperf3 -t $T, server on 127.0.0.1:$PORT; up = namespace sends, down = -R"
# Other work on the machine skews every figure (the ratios less so): say how busy it was.
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for stack in "${STACKS[@]}"; do
    for mtu in $MTUS; do
        CPU_PIDS=()
        case $stack in
            slirp4netns) run_slirp4netns "$mtu" ;;
            pasta) run_pasta "$mtu" ;;
            gvtap) run_gvtap "$mtu" ;;
        esac
    done
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $FAILED

#!/bin/bash
# iperf3 throughput, guest network namespace <-> host loopback, of gvtap and of the
# peer user-mode stacks slirp4netns and pasta, measured side by side in one run.
#
#   bench/iperf3.sh [SECONDS] [STACK...]
#
#   SECONDS  length of each iperf3 measurement (default 5)
#   STACK    any of slirp4netns pasta gvproxy gvtap (default: all of them, in that
#            order; slirp4netns first, since every other figure is also given as a
#            ratio to slirp4netns for the same MTU and direction, and gvproxy before
#            gvtap, whose figure is also given as a ratio to the better gvproxy)
#
# For each stack, MTU (1500 and 65520; override with MTUS="...") and direction it prints
#
#   gvtap mtu=1500 dir=up gbps=0.412 vs_slirp4netns=0.38 vs_gvproxy=0.51
#
# (vs_base: gvtap over gvtap-base, when GVTAP_BASE names another tree; see
# bench/stacks.sh.) gvtap-nooffload is gvtap with `gvtap-guest --no-offload`:
# plain frames on its link, for a side-by-side with offload (named only).
# mix (named only, with GVPROXY): each half of gvtap with the other half of each
# gvproxy build, to tell which half a difference comes from:
# mix-gvtap+gvforwarder-VERSION (gvtap's daemon, gvforwarder in the namespace) and
# mix-gvproxy-VERSION+gvtap-guest (gvproxy, gvtap-guest; plain frames).
#
# gvproxy: gvisor-tap-vsock's gvproxy with its gvforwarder as the guest helper, a
# peer only when GVPROXY names its binary (gvforwarder beside it). GVPROXY may
# name several builds, separated by spaces; each is a stack of its own, named
# gvproxy-VERSION (its -version, else its directory's name), and gvtap's
# vs_gvproxy is its ratio to the best of them in that cell of that round.
# ROUNDS=N repeats the whole sequence of stacks N times (default 1), so that
# every round compares the stacks under the same load.
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
# "--pcap /tmp/x.pcap" -- which also slows it down),
# PYSPY=1 (sample the gvtap daemon with py-spy at 200 Hz during each measurement
# and print the functions with the most samples of their own; py-spy runs
# beside the daemon, which it barely slows down; py-spy beside PYTHON, or on PATH).
set -u

T=5
STACKS=()
for arg in "$@"; do
    case "$arg" in
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        slirp4netns|pasta|gvproxy|gvtap-base|gvtap-nooffload|gvtap|mix) STACKS+=("$arg") ;;
        *[!0-9]*|"") echo "$0: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
        *) T=$arg ;;
    esac
done
[ ${#STACKS[@]} -eq 0 ] && STACKS=(slirp4netns pasta gvproxy gvtap-base gvtap)
MTUS=${MTUS:-"1500 65520"}
ROUNDS=${ROUNDS:-1}

command -v iperf3 >/dev/null || { echo "$0: needs iperf3 on PATH" >&2; exit 1; }
# shellcheck source=stacks.sh
. "$(dirname "$0")/stacks.sh"
IPERF_PIDFILE=$WD/iperf3-server.pid

stop_iperf_server() {
    [ -s "$IPERF_PIDFILE" ] && kill_pid "$(cat "$IPERF_PIDFILE")"
    rm -f "$IPERF_PIDFILE"
}

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
declare -A GVPBEST # "mtu dir" -> the best gbps of any gvproxy this round, for gvtap's ratio
declare -A BASE    # "mtu dir" -> gbps of gvtap-base this round
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
    if [ "$stack" != "${stack#gvproxy}" ] && [ "$status" = ok ]; then
        GVPBEST["$mtu $dir"]=$(awk -v a="$gbps" -v b="${GVPBEST["$mtu $dir"]:-0}" \
            'BEGIN { print (a > b ? a : b) }')
    elif [ "$stack" != "${stack#gvtap}" ] && [ -n "${GVPBEST["$mtu $dir"]:-}" ]; then
        ratio+=$(awk -v a="$gbps" -v b="${GVPBEST["$mtu $dir"]}" \
            'BEGIN { if (b > 0) printf " vs_gvproxy=%.2f", a / b; else printf " vs_gvproxy=n/a" }')
    fi
    if [ "$stack" = gvtap-base ]; then
        BASE["$mtu $dir"]=$gbps
    elif [ "$stack" = gvtap ] && [ -n "${BASE["$mtu $dir"]:-}" ]; then
        ratio+=$(awk -v a="$gbps" -v b="${BASE["$mtu $dir"]}" \
            'BEGIN { if (b > 0) printf " vs_base=%.2f", a / b; else printf " vs_base=n/a" }')
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
            local start=$(date +%s.%N) spy=
            if [ "$stack" != "${stack#gvtap}" ] && [ "${PYSPY:-0}" = 1 ] && [ -n "$DAEMON_PID" ] && [ -n "$PYSPY_BIN" ]; then
                "$PYSPY_BIN" record -p "$DAEMON_PID" -d $((T > 2 ? T - 1 : 1)) -r 200 -f raw --nonblocking \
                    -o "$WD/pyspy-$stack-$mtu-$dir.txt" >"$WD/pyspy-$stack-$mtu-$dir.log" 2>&1 &
                spy=$!
            fi
            timeout -k 3 $((T + 30)) ip netns exec "$ns" \
                iperf3 -c "$dst" -p "$PORT" -t "$T" $flag -J --connect-timeout 5000 >"$out" 2>&1
            rc=$?
            if [ -n "$spy" ]; then
                wait "$spy"
                profile_summary "$WD/pyspy-$stack-$mtu-$dir.txt" "$stack mtu=$mtu dir=$dir"
            fi
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

fail_stack() { # stack mtu status: both directions
    report "$1" "$2" up 0 "$3"; report "$1" "$2" down 0 "$3"
}

cleanup_bench() { stop_iperf_server; }
before_stacks() { GVPBEST=(); BASE=(); }

print_machine
echo "# iperf3 $(iperf3 --version | head -1 | cut -d' ' -f2), -t $T, server on 127.0.0.1:$PORT; up = namespace sends, down = -R"
run_rounds
exit $FAILED

#!/bin/bash
# Latency and connection rate, guest network namespace -> host loopback, of gvtap
# and of the peer user-mode stacks (gvproxy, slirp4netns, pasta), side by side in
# one run.
#
#   bench/rr.sh [STACK...]
#
#   STACK    any of slirp4netns pasta gvproxy gvtap (default: all, in that order;
#            gvproxy before gvtap, whose figures are also given as ratios to the
#            better gvproxy)
# mix (named only, with GVPROXY): each half of gvtap with the other half of each
# gvproxy build, to tell which half a difference comes from:
# mix-gvtap+gvforwarder-VERSION (gvtap's daemon, gvforwarder in the namespace) and
# mix-gvproxy-VERSION+gvtap-guest (gvproxy, gvtap-guest; plain frames).
#
# Through one NAT'd TCP connection from the namespace to an echo server on the
# host's 127.0.0.1: PINGS (3000) round trips of 1 byte, their median (rr_us) and
# 90th percentile; then CONNECTIONS (600) sequential connections, each connect,
# 1 byte each way, close (conn_per_s). One line per stack:
#
#   gvtap mtu=1500 rr_us=412 rr_p90_us=530 conn_per_s=597 rr_vs_gvproxy=2.51 conn_vs_gvproxy=0.45
#
# rr_vs_gvproxy is gvtap's latency over the lowest of the gvproxy builds in the
# same round (below 1 is better), conn_vs_gvproxy its rate over the highest
# (above 1 is better). Both ends are bench/rr.py (standard library only).
#
# Environment: GVPROXY="BIN..." (gvisor-tap-vsock builds, gvforwarder beside each;
# without it, no gvproxy), MTUS (default 1500), ROUNDS (default 1), PINGS,
# CONNECTIONS, PYTHON (the interpreter of twistd and rr.py), GVTAP_ARGS,
# KEEP_LOGS=1, GVTAP_BASE=DIR (another gvtap tree, run as the stack gvtap-base;
# see bench/stacks.sh), PYSPY=1 (py-spy at 200 Hz on the gvtap daemon and on
# gvtap-guest during the client's run: the functions with the most samples of
# their own, idle time in epoll_wait left out). Needs root, /dev/net/tun, iproute2; slirp4netns and pasta when
# asked for (a missing one is reported, not fatal).
set -u

STACKS=()
for arg in "$@"; do
    case "$arg" in
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        slirp4netns|pasta|gvproxy|gvtap-base|gvtap-nooffload|gvtap|mix) STACKS+=("$arg") ;;
        *) echo "$0: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done
[ ${#STACKS[@]} -eq 0 ] && STACKS=(slirp4netns pasta gvproxy gvtap-base gvtap)
MTUS=${MTUS:-1500}
ROUNDS=${ROUNDS:-1}
PINGS=${PINGS:-3000}
CONNECTIONS=${CONNECTIONS:-600}

# shellcheck source=stacks.sh
. "$(dirname "$0")/stacks.sh"
RR=$REPO/bench/rr.py
SERVER_PID=

start_server() {
    "$PY" "$RR" server "$PORT" >"$WD/rr-server.log" 2>&1 &
    SERVER_PID=$!
    wait_until 10 grep -q ready "$WD/rr-server.log" || { echo "$0: the echo server did not start" >&2; exit 1; }
}
cleanup_bench() { kill_pid "$SERVER_PID"; }

declare -A BEST_RR BEST_CONN   # mtu -> the best gvproxy figures this round
before_stacks() { BEST_RR=(); BEST_CONN=(); }

fail_stack() { # stack mtu status
    echo "$1 mtu=$2 rr_us=0 conn_per_s=0 status=$3"
    FAILED=1
}

measure() { # stack mtu dst netns
    local stack=$1 mtu=$2 dst=$3 ns=$4 out rr conn ratios="" spies=() np pid
    if [ "$stack" != "${stack#gvtap}" ] && [ "${PYSPY:-0}" = 1 ] && [ -n "$PYSPY_BIN" ]; then
        for np in "daemon:$DAEMON_PID" "guest:$HELPER_PID"; do
            pid=$(python_pid "${np#*:}")
            [ -n "$pid" ] || continue
            "$PYSPY_BIN" record -p "$pid" -d 600 -r 200 -f raw --nonblocking \
                -o "$WD/pyspy-$stack-$mtu-${np%%:*}.txt" >"$WD/pyspy-$stack-$mtu-${np%%:*}.log" 2>&1 &
            spies+=("${np%%:*}:$!")
        done
        sleep 1   # py-spy attaches
    fi
    out=$(timeout -k 3 $((60 + PINGS / 50 + CONNECTIONS / 5)) ip netns exec "$ns" \
        "$PY" "$RR" client "$dst" "$PORT" "$PINGS" "$CONNECTIONS" 2>"$WD/$stack-$mtu-rr.err")
    if [ $? != 0 ] || [ -z "$out" ]; then
        tail -n 3 "$WD/$stack-$mtu-rr.err" | sed 's/^/#   /'
        fail_stack "$stack" "$mtu" client-failed
        return
    fi
    for np in "${spies[@]}"; do
        kill -INT "${np#*:}" 2>/dev/null; wait "${np#*:}"
        profile_summary "$WD/pyspy-$stack-$mtu-${np%%:*}.txt" "$stack mtu=$mtu ${np%%:*}"
    done
    rr=$(echo "$out" | sed 's/.*rr_us=\([0-9]*\).*/\1/')
    conn=$(echo "$out" | sed 's/.*conn_per_s=\([0-9]*\).*/\1/')
    if [ "$stack" != "${stack#gvproxy}" ]; then
        if [ -z "${BEST_RR[$mtu]:-}" ] || [ "$rr" -lt "${BEST_RR[$mtu]}" ]; then BEST_RR[$mtu]=$rr; fi
        if [ -z "${BEST_CONN[$mtu]:-}" ] || [ "$conn" -gt "${BEST_CONN[$mtu]}" ]; then BEST_CONN[$mtu]=$conn; fi
    elif [ "$stack" != "${stack#gvtap}" ] && [ -n "${BEST_RR[$mtu]:-}" ]; then
        ratios=$(awk -v r="$rr" -v br="${BEST_RR[$mtu]}" -v c="$conn" -v bc="${BEST_CONN[$mtu]}" \
            'BEGIN { printf " rr_vs_gvproxy=%.2f conn_vs_gvproxy=%.2f", (br > 0 ? r / br : 0), (bc > 0 ? c / bc : 0) }')
    fi
    echo "$stack mtu=$mtu $out$ratios"
}

python_pid() { # pid: that process if it runs Python, else its first child that does
    local p
    for p in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        case "$(readlink /proc/"$p"/exe 2>/dev/null)" in *python*) echo "$p"; return ;; esac
    done
}

print_machine
echo "# rr.py: $PINGS pings of 1 byte on one connection, $CONNECTIONS sequential connections; server on 127.0.0.1:$PORT"
start_server
run_rounds
exit $FAILED

# Sourced by the benchmarks in this directory: starts and stops each user-mode
# stack with its guest helper around a network namespace, and calls back the
# benchmark for each (stack, MTU):
#
#   measure STACK MTU DST NETNS     measure through the stack; DST is the address
#                                   that reaches the host's 127.0.0.1 from NETNS
#   fail_stack STACK MTU STATUS     report that the stack could not be measured
#
# The benchmark sets STACKS, MTUS, ROUNDS and, optionally, before_stacks (run
# once before each round) and cleanup_bench (run on exit); it may add the pids of
# processes it started to its own cleanup. CPU_PIDS holds "name:pid" of the
# running stack's own processes while measure runs.
#
# Stacks: slirp4netns (dials 10.0.2.2), pasta (the namespace's gateway), gvproxy
# (GVPROXY="BIN..." builds of gvisor-tap-vsock's gvproxy, gvforwarder beside each;
# each is a stack named gvproxy-VERSION), gvtap (192.168.127.254) and gvtap-base
# (GVTAP_BASE=DIR: another source tree of gvtap, such as an older commit's
# `git archive`, run the same way, to measure a change before and after in one
# run; skipped when GVTAP_BASE is unset). Network
# rule: traffic goes only to the host's loopback and to namespaces made here;
# nothing opens an AF_VSOCK socket (the guest helpers use unix sockets).

if [ "$(id -u)" != 0 ]; then echo "$0: needs root (network namespaces, TAP)" >&2; exit 1; fi
for tool in ip ss timeout; do
    command -v $tool >/dev/null || { echo "$0: needs $tool on PATH" >&2; exit 1; }
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=$(command -v "${PYTHON:-python3}") || { echo "$0: no python3" >&2; exit 1; }
PY=$("$PY" -c 'import sys; print(sys.executable)')
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
TWISTD=("$PY" -c 'import sys; from twisted.scripts.twistd import run; sys.argv[0] = "twistd"; run()')
# twistd on another reactor (REACTOR, BASE_REACTOR, GUEST_REACTOR): default (no -r:
# gvtap's own reactor for a tree that has one, Twisted's epoll for an older tree),
# epoll (twistd -r epoll), gvtap (twistd -r gvtap), asyncio (Twisted's asyncio reactor
# on asyncio's own loop) or uvloop (the asyncio reactor on a uvloop loop; pip install
# uvloop). Services are the same Twisted protocols on each.
twistd_on() { # reactor: sets TW to the command that runs twistd on it
    case "${1:-default}" in
        default) TW=("${TWISTD[@]}") ;;
        epoll) TW=("${TWISTD[@]}" -r epoll) ;;
        gvtap) TW=("${TWISTD[@]}" -r gvtap) ;;
        asyncio|uvloop)
            TW=("$PY" -c "import sys, asyncio
if '$1' == 'uvloop':
    import uvloop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
from twisted.internet import asyncioreactor
asyncioreactor.install(asyncio.new_event_loop())
from twisted.scripts.twistd import run
sys.argv[0] = 'twistd'
run()") ;;
        *) echo "$0: unknown reactor '$1' (default, epoll, gvtap, asyncio, uvloop)" >&2; exit 2 ;;
    esac
}

WD=$(mktemp -d /tmp/gvbench-XXXXXX)
SOCK=$WD/gvtap.sock
NS=gvbench-$$
FAILED=0
# pids (of process groups where noted) that cleanup must end; only ours.
DAEMON_PID= ; HELPER_PID= ; SLIRP_PID= ; NSHOLD_PID= ; PASTA_PIDFILE=$WD/pasta.pid
GVP_PID= ; GVF_PID=
CPU_PIDS=()

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
    declare -F cleanup_bench >/dev/null && cleanup_bench
    stop_gvtap
    kill_pid "$GVF_PID"; kill_pid "$GVP_PID"
    kill_pid "$SLIRP_PID"; kill_pid "$NSHOLD_PID"
    [ -s "$PASTA_PIDFILE" ] && kill_pid "$(cat "$PASTA_PIDFILE")"
    for suffix in gvtap slirp pasta gvproxy; do del_ns "$NS-$suffix"; done
    if [ "$FAILED" = 0 ] && [ "${KEEP_LOGS:-0}" != 1 ]; then
        rm -rf "$WD"
    else
        echo "# logs kept in $WD"
    fi
}
trap cleanup EXIT
trap 'echo "# interrupted"; FAILED=1; exit 130' INT TERM

# A free port on the host's loopback for the benchmark's server.
PORT=
for p in $(seq $((20000 + $$ % 20000)) $((20100 + $$ % 20000))); do
    if ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then PORT=$p; break; fi
done
[ -n "$PORT" ] || { echo "$0: no free port" >&2; exit 1; }

wait_until() { # seconds command...: poll every 0.1 s
    local n=$(( $1 * 10 )); shift
    for _ in $(seq $n); do "$@" && return 0; sleep 0.1; done
    return 1
}

run_slirp4netns() {
    local mtu=$1 ns=$NS-slirp
    command -v slirp4netns >/dev/null || { fail_stack slirp4netns "$mtu" not-installed; return; }
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
        fail_stack slirp4netns "$mtu" no-tap
    fi
    kill_pid "$SLIRP_PID"; SLIRP_PID=
    kill_pid "$NSHOLD_PID"; NSHOLD_PID=
    del_ns "$ns"
}

run_pasta() {
    local mtu=$1 ns=$NS-pasta gw
    command -v pasta >/dev/null || { fail_stack pasta "$mtu" not-installed; return; }
    ip netns add "$ns"
    # No automatic port forwarding either way; the gateway address maps to the host.
    if ! timeout 10 pasta --runas 0 --config-net --netns "$ns" -m "$mtu" -q -P "$PASTA_PIDFILE" \
            -t none -u none -T none -U none >"$WD/pasta-$mtu.log" 2>&1; then
        fail_stack pasta "$mtu" start-failed
    else
        wait_until 5 sh -c "ip -n '$ns' route | grep -q default"
        gw=$(ip -n "$ns" route | awk '/^default/ { print $3; exit }')
        CPU_PIDS=("pasta:$(cat "$PASTA_PIDFILE" 2>/dev/null)")
        if [ -n "$gw" ]; then measure pasta "$mtu" "$gw" "$ns"; else fail_stack pasta "$mtu" no-route; fi
    fi
    [ -s "$PASTA_PIDFILE" ] && kill_pid "$(cat "$PASTA_PIDFILE")"
    rm -f "$PASTA_PIDFILE"
    del_ns "$ns"
}

gvproxy_name() { # binary: gvproxy-VERSION
    local v
    v=$("$1" -version 2>/dev/null | awk '{ print $NF; exit }')
    case "$v" in v[0-9]*) ;; *) v=$(basename "$(dirname "$1")") ;; esac
    echo "gvproxy-$v"
}

start_gvproxy() { # binary mtu sock log: gvisor-tap-vsock's gvproxy on unix:sock (GVP_PID)
    local bin=$1 mtu=$2 sock=$3 log=$4 ssh=(-ssh-port -1) p
    # Old builds refuse -ssh-port -1: give them a free port on the loopback instead.
    if "$bin" -help 2>&1 | grep -q 'between 1024 and 65535'; then
        for p in $(seq $((PORT + 1)) $((PORT + 100))); do
            ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || { ssh=(-ssh-port "$p"); break; }
        done
    fi
    rm -f "$sock"
    (cd "$WD" && exec "$bin" -listen "unix://$sock" -mtu "$mtu" "${ssh[@]}") >"$log" 2>&1 &
    GVP_PID=$!
    if ! wait_until 20 sh -c "test -S '$sock' || ! kill -0 $GVP_PID 2>/dev/null" || ! test -S "$sock"; then
        echo "# $(basename "$bin") did not start; its log:"; tail -n 20 "$log" | sed 's/^/#   /'
        kill_pid "$GVP_PID"; GVP_PID=; return 1
    fi
}

start_gvforwarder() { # fwd ns mtu sock log: gvforwarder on a TAP made here (GVF_PID)
    local fwd=$1 ns=$2 mtu=$3 sock=$4 hlog=$5
    # A TAP made here and given to gvforwarder with -preexisting: it then runs no
    # DHCP client, whose scripts would rewrite this machine's resolv.conf.
    ip -n "$ns" tuntap add dev tap0 mode tap
    ip -n "$ns" link set tap0 address 5a:94:ef:e4:0c:ee mtu "$mtu" up
    ip -n "$ns" addr add 192.168.127.2/24 dev tap0
    ip -n "$ns" route add default via 192.168.127.1
    ip netns exec "$ns" "$fwd" -preexisting -iface tap0 -mtu "$mtu" -stop-if-exist= \
        -url "unix://$sock" >"$hlog" 2>&1 &
    GVF_PID=$!
    if ! wait_until 10 sh -c "grep -q 'waiting for packets' '$hlog' || ! kill -0 $GVF_PID 2>/dev/null" \
            || ! kill -0 "$GVF_PID" 2>/dev/null; then
        echo "# gvforwarder did not start; its log:"; tail -n 20 "$hlog" | sed 's/^/#   /'
        return 1
    fi
}

run_gvproxy() { # binary mtu: gvisor-tap-vsock's gvproxy, its gvforwarder in the namespace
    local bin=$1 mtu=$2 ns=$NS-gvproxy name fwd sock=$WD/gvproxy.sock log hlog
    name=$(gvproxy_name "$bin")
    fwd=$(dirname "$bin")/gvforwarder
    log=$WD/$name-$mtu.log; hlog=$WD/$name-forwarder-$mtu.log
    if ! [ -x "$bin" ] || ! [ -x "$fwd" ]; then fail_stack "$name" "$mtu" not-built; return; fi
    start_gvproxy "$bin" "$mtu" "$sock" "$log" || { fail_stack "$name" "$mtu" daemon-start-failed; return; }
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    if start_gvforwarder "$fwd" "$ns" "$mtu" "$sock" "$hlog"; then
        CPU_PIDS=("daemon:$GVP_PID" "guest-helper:$GVF_PID")
        measure "$name" "$mtu" 192.168.127.254 "$ns"   # gvproxy's NAT to the host's 127.0.0.1
    else
        fail_stack "$name" "$mtu" guest-start-failed
    fi
    kill_pid "$GVF_PID"; GVF_PID=
    kill_pid "$GVP_PID"; GVP_PID=
    rm -f "$sock"
    del_ns "$ns"
}

start_gvtap() { # mtu name tree log: gvtap's daemon from tree on unix:$SOCK (DAEMON_PID)
    local mtu=$1 name=$2 tree=$3 log=$4 prof=() extra=() reactor TW=()
    local PYTHONPATH="$tree${PYTHONPATH#"$REPO"}"
    export PYTHONPATH
    if [ "$name" = gvtap-base ]; then reactor=${BASE_REACTOR:-default}; else reactor=${REACTOR:-default}; fi
    twistd_on "$reactor"
    # No default ssh forward (127.0.0.1:2222): a benchmark binds no host port it does not need.
    "${TWISTD[@]}" gvtap --help 2>/dev/null | grep -q -- --ssh-port && extra=(--ssh-port=-1)
    # shellcheck disable=SC2206  # GVTAP_ARGS is split on purpose
    extra+=(${GVTAP_ARGS:-})
    [ "${PROFILE:-0}" = 1 ] && prof=(--profile="$WD/gvtap-$mtu.pstats" --profiler=cprofile --savestats)
    (cd "$WD" && exec setsid "${TW[@]}" -n --pidfile= "${prof[@]}" gvtap --listen "unix:$SOCK" --mtu "$mtu" "${extra[@]}") \
        >"$log" 2>&1 &
    DAEMON_PID=$!
    wait_until 20 sh -c "test -S '$SOCK' || ! kill -0 $DAEMON_PID 2>/dev/null"
    if ! test -S "$SOCK" || ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        echo "# gvtap did not start; its log:" ; tail -n 20 "$log" | sed 's/^/#   /'
        return 1
    fi
}

start_gvtap_guest() { # mtu name tree ns sock log [guest-args]: gvtap-guest in ns (HELPER_PID)
    local mtu=$1 name=$2 tree=$3 ns=$4 sock=$5 hlog=$6 gextra=() reactor TW=()
    # shellcheck disable=SC2206  # guest options (e.g. --no-offload) are split on purpose
    gextra=(${7:-} ${GVTAP_GUEST_ARGS:-})
    local PYTHONPATH="$tree${PYTHONPATH#"$REPO"}"
    export PYTHONPATH
    if [ "$name" = gvtap-base ]; then reactor=${BASE_REACTOR:-default}; else reactor=${REACTOR:-default}; fi
    twistd_on "${GUEST_REACTOR:-$reactor}"
    (cd "$WD" && exec ip netns exec "$ns" setsid "${TW[@]}" -n --pidfile= gvtap-guest \
        --connect "unix:$sock" --iface tap0 --mtu "$mtu" --stop-if-exist= "${gextra[@]}") >"$hlog" 2>&1 &
    HELPER_PID=$!
    if ! wait_until 20 sh -c "ip -n '$ns' link show tap0 2>/dev/null | grep -q ',UP' || ! kill -0 $HELPER_PID 2>/dev/null" \
            || ! kill -0 "$HELPER_PID" 2>/dev/null; then
        echo "# gvtap-guest did not bring tap0 up; its log:" ; tail -n 20 "$hlog" | sed 's/^/#   /'
        return 1
    fi
    ip -n "$ns" addr add 192.168.127.2/24 dev tap0
    ip -n "$ns" route add default via 192.168.127.1
}

gvtap_log_check() { # log mtu: FAILED=1 and the log's tail if the daemon died or logged errors
    local log=$1 mtu=$2
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        echo "# gvtap daemon died during the run (mtu $mtu); its log tail:"
        FAILED=1
    elif grep -qE 'Traceback|Unhandled|CRITICAL' "$log"; then
        echo "# gvtap's log shows errors (mtu $mtu); its tail:"
        FAILED=1
    else
        return 0
    fi
    tail -n 30 "$log" | sed 's/^/#   /'
}

run_gvtap() { # mtu [name source-tree guest-args]: gvtap and gvtap-guest, from this tree or another
    local mtu=$1 name=${2:-gvtap} tree=${3:-$REPO} gargs=${4:-}
    local ns=$NS-gvtap log=$WD/$name-$mtu.log hlog=$WD/$name-guest-$mtu.log reactor
    if [ "$name" = gvtap-base ]; then reactor=${BASE_REACTOR:-default}; else reactor=${REACTOR:-default}; fi
    echo "# $name: daemon on the $reactor reactor, gvtap-guest on ${GUEST_REACTOR:-$reactor}"
    if ! start_gvtap "$mtu" "$name" "$tree" "$log"; then
        fail_stack "$name" "$mtu" daemon-start-failed; stop_gvtap; return
    fi
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    if start_gvtap_guest "$mtu" "$name" "$tree" "$ns" "$SOCK" "$hlog" "$gargs"; then
        CPU_PIDS=("daemon:$DAEMON_PID" "guest-helper:$HELPER_PID")
        measure "$name" "$mtu" 192.168.127.254 "$ns"   # 192.168.127.254 is the host's 127.0.0.1
    else
        fail_stack "$name" "$mtu" guest-start-failed
    fi
    gvtap_log_check "$log" "$mtu"
    stop_gvtap
    if [ -s "$WD/gvtap-$mtu.pstats" ]; then
        echo "# profile of the gvtap daemon, mtu=$mtu (both directions), top functions by own time:"
        "$PY" -c 'import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats("tottime").print_stats(18)' \
            "$WD/gvtap-$mtu.pstats" 2>&1 | sed -n '/ncalls/,$p' | sed '/^$/d; s/^/#   /'
        rm -f "$WD/gvtap-$mtu.pstats"
    fi
    del_ns "$ns"
}

run_mix() { # mtu: each half of gvtap with the other half of each gvproxy build
    # Which half a difference comes from: gvtap's daemon with gvforwarder
    # (mix-gvtap+gvforwarder-VERSION), and gvproxy with gvtap-guest
    # (mix-gvproxy-VERSION+gvtap-guest, plain frames: gvproxy has no offload).
    local mtu=$1 bin name fwd ns=$NS-gvtap sock=$WD/gvproxy.sock stack
    for bin in ${GVPROXY:-}; do
        name=$(gvproxy_name "$bin"); fwd=$(dirname "$bin")/gvforwarder
        stack=mix-gvtap+gvforwarder-${name#gvproxy-}
        if ! [ -x "$bin" ] || ! [ -x "$fwd" ]; then fail_stack "$stack" "$mtu" not-built; continue; fi
        if start_gvtap "$mtu" "$stack" "$REPO" "$WD/$stack-$mtu.log"; then
            ip netns add "$ns"; ip -n "$ns" link set lo up
            if start_gvforwarder "$fwd" "$ns" "$mtu" "$SOCK" "$WD/$stack-forwarder-$mtu.log"; then
                CPU_PIDS=("daemon:$DAEMON_PID" "guest-helper:$GVF_PID")
                measure "$stack" "$mtu" 192.168.127.254 "$ns"
            else
                fail_stack "$stack" "$mtu" guest-start-failed
            fi
            gvtap_log_check "$WD/$stack-$mtu.log" "$mtu"
            kill_pid "$GVF_PID"; GVF_PID=
            del_ns "$ns"
        else
            fail_stack "$stack" "$mtu" daemon-start-failed
        fi
        stop_gvtap
        stack=mix-$name+gvtap-guest
        if start_gvproxy "$bin" "$mtu" "$sock" "$WD/$stack-$mtu.log"; then
            ip netns add "$ns"; ip -n "$ns" link set lo up
            if start_gvtap_guest "$mtu" "$stack" "$REPO" "$ns" "$sock" "$WD/$stack-guest-$mtu.log"; then
                CPU_PIDS=("daemon:$GVP_PID" "guest-helper:$HELPER_PID")
                measure "$stack" "$mtu" 192.168.127.254 "$ns"
            else
                fail_stack "$stack" "$mtu" guest-start-failed
            fi
            kill_pid "$HELPER_PID" group; HELPER_PID=
            del_ns "$ns"
        else
            fail_stack "$stack" "$mtu" daemon-start-failed
        fi
        kill_pid "$GVP_PID"; GVP_PID=
        rm -f "$sock"
    done
}

print_machine() { # the lines that say what ran where
    echo "# machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r), $("$PY" --version 2>&1) ($PY)"
    echo "# versions: slirp4netns $(slirp4netns --version 2>/dev/null | awk 'NR==1 { print $3 }'); pasta $(dpkg-query -W -f='${Version}' passt 2>/dev/null || echo '?'); twisted $("$PY" -c 'import twisted; print(twisted.__version__)' 2>/dev/null); gvtap $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')"
    [ -n "${GVPROXY:-}" ] && for bin in $GVPROXY; do echo "# $(gvproxy_name "$bin"): $bin"; done
    [ -n "${GVTAP_BASE:-}" ] && echo "# gvtap-base: $GVTAP_BASE"
    # Other work on the machine skews every figure (the ratios less so): say how busy it was.
    echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}

run_rounds() { # every stack of STACKS at every MTU of MTUS, ROUNDS times
    local round stack mtu bin
    for round in $(seq "$ROUNDS"); do
        [ "$ROUNDS" -gt 1 ] && echo "# round $round of $ROUNDS"
        declare -F before_stacks >/dev/null && before_stacks
        for stack in "${STACKS[@]}"; do
            for mtu in $MTUS; do
                CPU_PIDS=()
                case $stack in
                    slirp4netns) run_slirp4netns "$mtu" ;;
                    pasta) run_pasta "$mtu" ;;
                    gvproxy) for bin in ${GVPROXY:-}; do run_gvproxy "$bin" "$mtu"; done ;;
                    gvtap) run_gvtap "$mtu" ;;
                    # gvtap with plain frames on its link (offload not negotiated).
                    gvtap-nooffload) run_gvtap "$mtu" gvtap-nooffload "$REPO" --no-offload ;;
                    gvtap-base) [ -n "${GVTAP_BASE:-}" ] && run_gvtap "$mtu" gvtap-base "$GVTAP_BASE" ;;
                    mix) run_mix "$mtu" ;;
                esac
            done
        done
    done
    echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
}

PYSPY_BIN=$(command -v "$(dirname "$PY")/py-spy" || command -v py-spy || true)

profile_summary() { # raw py-spy output, label: the top functions by own samples
    [ -s "$1" ] || { echo "# py-spy $2: no samples"; return; }
    "$PY" - "$1" "$2" <<'EOF'
import collections, sys
own, inclusive, total, idle = collections.Counter(), collections.Counter(), 0, 0
for line in open(sys.argv[1]):
    stack, _, count = line.rstrip("\n").rpartition(" ")
    if not stack or not count.isdigit():
        continue
    n = int(count)
    frames = []
    for f in stack.split(";"):
        name, _, where = f.partition(" (")
        frames.append(f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else name)
    if frames[-1].startswith(("EPollReactor.doPoll", "GvtapReactor._wait")):
        idle += n  # waiting in epoll_wait: not work
        continue
    total += n
    own[frames[-1]] += n
    for f in set(frames):
        inclusive[f] += n
print(f"# py-spy {sys.argv[2]}: {total} busy samples ({idle} idle in epoll left out);"
      " top functions by own share of the busy samples (inclusive share)")
for name, n in own.most_common(15):
    print(f"#   {100 * n / max(total, 1):5.1f} %  ({100 * inclusive[name] / max(total, 1):5.1f} %)  {name}")
EOF
}

#!/usr/bin/env python3
"""
Turn the output of bench/iperf3.sh into a markdown table.

    bench/iperf3.sh 5 | tee run.txt
    python3 bench/summarize.py run.txt [more runs...]

One row per (MTU, direction), one column per stack: Gbit/s and, for stacks other
than slirp4netns, the ratio to slirp4netns measured in the same run. With several
runs, each cell is the median over the runs (ratios are taken within each run, then
their median). The machine, versions and settings lines of the first run are
listed above the table (other '#' diagnostics are left out); a failed measurement
shows its status.
"""

import re
import statistics
import sys

LINE = re.compile(r"^(?P<stack>\S+) mtu=(?P<mtu>\d+) dir=(?P<dir>up|down) gbps=(?P<gbps>[\d.]+)"
                  r"(?: vs_slirp4netns=(?P<ratio>[\d.]+|n/a))?(?: vs_gvproxy=(?P<gvp>[\d.]+|n/a))?"
                  r"(?: status=(?P<status>\S+))?")
CPU = re.compile(r"^# cpu (?P<stack>\S+) mtu=(?P<mtu>\d+) dir=(?P<dir>up|down) over (?P<elapsed>[\d.]+)s:"
                 r"(?P<procs>(?: \S+=[\d.]+s)+)")
ORDER = ["slirp4netns", "pasta", "gvtap"]
DIRECTIONS = {"up": "up (guest → host)", "down": "down (host → guest)"}


def parse(lines):
    """
    The results of one run: {(stack, mtu, dir): (gbps, ratio, status)}, the CPU
    seconds of the stack's processes and the wall time of each measurement
    {(stack, mtu, dir): (cpu seconds, elapsed seconds)}, and the comments.
    """
    results, cpu, comments = {}, {}, []
    for line in lines:
        line = line.rstrip("\n")
        if line.startswith("#"):
            comments.append(line)
            m = CPU.match(line)
            if m:
                cpu[(m["stack"], int(m["mtu"]), m["dir"])] = (sum(
                    float(p.split("=")[1].rstrip("s")) for p in m["procs"].split()),
                    float(m["elapsed"]))
            continue
        m = LINE.match(line)
        if m:
            ratio = m["ratio"]
            results[(m["stack"], int(m["mtu"]), m["dir"])] = (
                float(m["gbps"]), float(ratio) if ratio not in (None, "n/a") else None, m["status"])
    return results, cpu, comments


def efficiency(runs, cpus):
    """
    Gbit per CPU-second of the stack's own processes (the data moved over the CPU
    time they used, kernel time in their system calls included): how much a core
    buys, which other work on the machine skews far less than the throughput.
    """
    stacks = sorted({k[0] for r in cpus for k in r},
                    key=lambda s: (ORDER.index(s) if s in ORDER else len(ORDER), s))
    rows = sorted({(k[1], k[2]) for r in cpus for k in r}, key=lambda k: (k[0], k[1] != "up"))
    if not stacks:
        return ""
    head = ["MTU", "direction"] + [f"{s}" for s in stacks]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mtu, direction in rows:
        cells = [str(mtu), DIRECTIONS[direction]]
        for stack in stacks:
            key = (stack, mtu, direction)
            values = []
            for run, cpu in zip(runs, cpus):
                if key in run and key in cpu and run[key][2] is None and cpu[key][0] > 0:
                    seconds, elapsed = cpu[key]
                    values.append(run[key][0] * elapsed / seconds)
            cells.append(f"{statistics.median(values):.2f}" if values else "–")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def table(runs):
    stacks = sorted({k[0] for r in runs for k in r},
                    key=lambda s: (ORDER.index(s) if s in ORDER else len(ORDER), s))
    rows = sorted({(k[1], k[2]) for r in runs for k in r}, key=lambda k: (k[0], k[1] != "up"))
    head = ["MTU", "direction"] + [f"{s} Gbit/s" + ("" if s == "slirp4netns" else " (× slirp4netns)")
                                   for s in stacks]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mtu, direction in rows:
        cells = [str(mtu), DIRECTIONS[direction]]
        for stack in stacks:
            found = [r[(stack, mtu, direction)] for r in runs if (stack, mtu, direction) in r]
            ok = [f for f in found if f[2] is None]
            if not found:
                cells.append("–")
            elif not ok:
                cells.append(f"failed ({found[0][2]})")
            else:
                cell = f"{statistics.median(f[0] for f in ok):.3f}"
                ratios = [f[1] for f in ok if f[1] is not None]
                if ratios:
                    cell += f" ({statistics.median(ratios):.2f}×)"
                if len(ok) < len(found):
                    cell += f", {len(found) - len(ok)} of {len(found)} runs failed"
                cells.append(cell)
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv):
    paths = argv[1:] or ["-"]
    runs, cpus, firstComments = [], [], None
    for path in paths:
        with (sys.stdin if path == "-" else open(path)) as f:
            results, cpu, comments = parse(f)
        runs.append(results)
        cpus.append(cpu)
        if firstComments is None:
            firstComments = comments
    for line in firstComments or []:
        if line.startswith(("# machine", "# versions", "# iperf3 -t", "# load average")):
            print("- " + line[2:])
    if len(runs) > 1:
        print(f"median of {len(runs)} runs")
    print()
    print(table(runs))
    eff = efficiency(runs, cpus)
    if eff:
        print()
        print("Gbit per CPU-second: the data moved over the CPU time of the stack's own"
              " processes (gvtap: daemon + guest helper; system time included)")
        print()
        print(eff)


if __name__ == "__main__":
    main(sys.argv)

"""``python -m bench [SCENARIO ...]``: Roost against Mosquitto, side by side."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from bench.brokers import (
    MOSQUITTO_INFLIGHT,
    BrokerProcess,
    Mosquitto,
    Roost,
    cpu_plan,
    find_mosquitto,
    mosquitto_version,
    raise_nofile,
    stop_all,
)
from bench.cluster import CLUSTER_SCENARIOS
from bench.runner import Ctx
from bench.scenarios import SCENARIOS, Metric, Outcome, Scenario
from bench.workers import WORKERS_SCENARIOS, RoostWorkers

SCENARIOS.update(CLUSTER_SCENARIOS)
SCENARIOS.update(WORKERS_SCENARIOS)
GROUPS = {"cluster": list(CLUSTER_SCENARIOS)}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    default = [s.name for s in SCENARIOS.values() if s.default]
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark Roost against Mosquitto on 127.0.0.1.",
        epilog=f"scenarios: {', '.join(SCENARIOS)}; 'all' = every one but "
        "the cluster group; "
        f"'cluster' = {' '.join(GROUPS['cluster'])}; 'workers' (roost --workers 2) is run "
        f"only when named; default: {' '.join(default)}",
    )
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO")
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement window (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up, excluded (1)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (2)")
    parser.add_argument("--json", metavar="FILE", help="write every number to FILE")
    parser.add_argument("--no-mosquitto", action="store_true", help="Roost only")
    parser.add_argument("--no-roost", action="store_true", help="Mosquitto only")
    parser.add_argument("--soak", action="store_true", help="add the soak scenario")
    parser.add_argument("--soak-seconds", type=float, default=60.0, help="soak length (60)")
    parser.add_argument("--soak-rate", type=float, default=5000.0, help="soak msg/s (5000)")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="idle window (10)")
    parser.add_argument("--connections", type=int, default=10_000, help="idle-10k clients")
    parser.add_argument("--wildcard-subs", type=int, default=10_000, help="wildcard clients")
    parser.add_argument("--latency-rate", type=float, default=2000.0, help="latency msg/s")
    parser.add_argument(
        "--qos1-window", type=int, default=64, help="unacked QoS 1 PUBLISHes per publisher (64)"
    )
    parser.add_argument(
        "--qos0-window", type=int, default=4096, help="fan-in deliveries outstanding (4096)"
    )
    parser.add_argument(
        "--wildcard-window", type=int, default=16384, help="wildcard deliveries outstanding"
    )
    parser.add_argument("--workers", type=int, default=0, help="generator processes (cores)")
    parser.add_argument("--roost-arg", action="append", default=[], help="extra roost flag")
    parser.add_argument(
        "--roost-workers",
        type=int,
        default=1,
        help="roost serve --workers N, pinned to the broker core (idle-10k: more clients than "
        "one process may open files for)",
    )
    parser.add_argument(
        "--cluster-spread",
        action="store_true",
        help="cluster scenarios: node A and node B on different cores (default: both nodes "
        "and Redis on the broker core)",
    )
    parser.add_argument(
        "--mosquitto-nodelay",
        action="store_true",
        help="set_tcp_nodelay true (default: Mosquitto's stock Nagle behaviour)",
    )
    parser.add_argument(
        "--mosquitto-inflight",
        type=int,
        default=MOSQUITTO_INFLIGHT,
        help="max_inflight_messages (0 = no limit; see bench/README.md)",
    )
    args = parser.parse_args(argv)
    names: list[str] = []
    for name in args.scenarios or default:
        if name == "all":
            names.extend(
                s for s in SCENARIOS if s not in CLUSTER_SCENARIOS and s not in WORKERS_SCENARIOS
            )
        elif name in GROUPS:
            names.extend(GROUPS[name])
        elif name in SCENARIOS:
            names.append(name)
        else:
            choices = ", ".join([*SCENARIOS, "all", *GROUPS])
            parser.error(f"unknown scenario {name!r}; choose from {choices}")
    if args.soak:
        names.append("soak")
    args.selected = list(dict.fromkeys(names))
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be >= 1 and --seconds > 0")
    return args


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def median(outcomes: list[Outcome], key: str) -> float | None:
    values = [o.metrics[key] for o in outcomes if not o.failed and key in o.metrics]
    return statistics.median(values) if values else None


def ratio(roost: float | None, mosq: float | None) -> str:
    if roost is None or mosq is None or mosq == 0:
        return "n/a"
    return f"{roost / mosq:.2f}"


def render(header: tuple[str, ...], rows: list[tuple[str, ...]], out: Any) -> None:
    """A plain-text table; a rule before each row that starts a new group (first cell)."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)

    def show(row: tuple[str, ...]) -> str:
        cells = [
            row[i].ljust(widths[i]) if i < 2 or i == len(row) - 1 else row[i].rjust(widths[i])
            for i in range(len(row))
        ]
        return "  ".join(cells).rstrip()

    print(show(header), file=out)
    for index, row in enumerate(rows):
        if index == 0 or row[0]:
            print(line, file=out)
        print(show(row), file=out)


def round_ratios(roost: list[Outcome], mosq: list[Outcome], key: str) -> str:
    """Roost / Mosquitto for each round (runs of a round are adjacent, so comparable)."""
    parts = []
    for r, m in zip(roost, mosq, strict=False):
        rv, mv = r.metrics.get(key), m.metrics.get(key)
        parts.append(f"{rv / mv:.2f}" if rv is not None and mv and not r.failed else "-")
    return " ".join(parts) if len(parts) > 1 else ""


def print_table(
    results: dict[str, dict[str, list[Outcome]]], brokers: list[str], out: Any = sys.stdout
) -> None:
    def label(metric: Metric) -> str:
        return metric.label + {"higher": " (+)", "lower": " (-)", "": ""}[metric.better]

    for name, per_broker in results.items():
        scenario = SCENARIOS[name]
        if scenario.per_broker:
            continue
        rows = []
        for i, metric in enumerate(scenario.metrics):
            value = median(per_broker.get("generator", []), metric.key)
            rows.append((name if i == 0 else "", label(metric), fmt(value, metric.digits)))
        print(f"{name}: {scenario.summary}", file=out)
        render(("scenario", "metric", "value"), rows, out)
        print(file=out)

    header = ("scenario", "metric", "roost", "mosquitto", "ratio R/M", "by round")
    rows = []
    for name, per_broker in results.items():
        scenario = SCENARIOS[name]
        if not scenario.per_broker:
            continue
        roost_runs = per_broker.get("roost", [])
        mosq_runs = per_broker.get("mosquitto", [])
        for i, metric in enumerate(scenario.metrics):
            r = median(roost_runs, metric.key)
            m = median(mosq_runs, metric.key)
            rows.append(
                (
                    name if i == 0 else "",
                    label(metric),
                    fmt(r, metric.digits) if "roost" in brokers else "-",
                    fmt(m, metric.digits) if "mosquitto" in brokers else "-",
                    ratio(r, m) if metric.better else "",
                    round_ratios(roost_runs, mosq_runs, metric.key) if metric.better else "",
                )
            )
    if rows:
        render(header, rows, out)
        print(
            "(+) higher is better, (-) lower is better; roost and mosquitto are medians over "
            "rounds; ratio = roost / mosquitto of the medians; by round = the ratio in each round",
            file=out,
        )


def run_one(scenario: Scenario, ctx: Ctx, broker: BrokerProcess | None) -> Outcome:
    try:
        if broker is not None:
            broker.start()
        outcome = scenario.run(ctx, broker)
        if broker is not None and not broker.alive():
            assert broker.proc is not None
            outcome.notes.append(
                f"{broker.name} was not running at the end (exit code {broker.proc.returncode})"
                f": {broker.log() or 'empty log'}"
            )
    except Exception as exc:
        outcome = Outcome(failed=True, notes=[f"FAILED: {exc}"])
        if os.environ.get("BENCH_DEBUG"):
            traceback.print_exc()
    finally:
        if broker is not None:
            broker.stop()
    return outcome


def brief(scenario: Scenario, outcome: Outcome) -> str:
    if outcome.failed:
        return "failed"
    shown = []
    for metric in scenario.metrics[:3]:
        if metric.key in outcome.metrics:
            shown.append(f"{metric.label}={fmt(outcome.metrics[metric.key], metric.digits)}")
    return ", ".join(shown)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it

    broker_cpus, gen_cpus = cpu_plan()
    os.sched_setaffinity(0, gen_cpus)
    nofile = raise_nofile()
    workers = args.workers or len(gen_cpus)
    ctx = Ctx(
        seconds=args.seconds,
        warmup=args.warmup,
        rounds=args.rounds,
        workers=workers,
        broker_cpus=broker_cpus,
        gen_cpus=gen_cpus,
        qos0_window=args.qos0_window,
        qos1_window=args.qos1_window,
        wildcard_window=args.wildcard_window,
        wildcard_subs=args.wildcard_subs,
        connections=args.connections,
        idle_seconds=args.idle_seconds,
        latency_rate=args.latency_rate,
        soak_seconds=args.soak_seconds,
        soak_rate=args.soak_rate,
        roost_args=list(args.roost_arg),
        cluster_spread=args.cluster_spread,
    )
    mosq_path = None if args.no_mosquitto else find_mosquitto()
    mosq_version = mosquitto_version(mosq_path) if mosq_path else None
    ctx.mosquitto = mosq_path
    brokers = [] if args.no_roost else ["roost"]
    if mosq_path:
        brokers.append("mosquitto")
    elif not args.no_mosquitto:
        print("mosquitto not found: Roost-only run (ratios n/a)", file=sys.stderr)
    if not brokers:
        print("nothing to run: both brokers disabled", file=sys.stderr)
        return 2

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log(
        f"bench: broker on cpu {sorted(broker_cpus)}, generator on cpu {sorted(gen_cpus)} "
        f"({workers} worker process(es)), open files {nofile}; mosquitto: "
        f"{mosq_path or 'absent'} {mosq_version or ''}"
    )
    if broker_cpus == gen_cpus:
        log("bench: WARNING single core: broker and generator share it")

    def make(kind: str) -> BrokerProcess:
        broker: BrokerProcess
        if kind == "roost":
            broker = (
                RoostWorkers(broker_cpus, args.roost_workers, args.roost_arg)
                if args.roost_workers > 1
                else Roost(broker_cpus, args.roost_arg)
            )
        else:
            assert mosq_path is not None
            broker = Mosquitto(
                broker_cpus, mosq_path, args.mosquitto_nodelay, args.mosquitto_inflight
            )
        broker.connections = max(broker.connections, args.connections)
        return broker

    started = time.monotonic()
    results: dict[str, dict[str, list[Outcome]]] = {}
    try:
        for name in args.selected:
            scenario = SCENARIOS[name]
            per: dict[str, list[Outcome]] = {}
            results[name] = per
            if not scenario.per_broker:
                outcome = run_one(scenario, ctx, None)
                per["generator"] = [outcome]
                log(f"[{name}] {brief(scenario, outcome)}")
                for note in outcome.notes:
                    log(f"    note: {note}")
                continue
            rounds = 1 if scenario.single_round else ctx.rounds
            for r in range(rounds):
                for kind in brokers:
                    t0 = time.monotonic()
                    outcome = run_one(scenario, ctx, make(kind))
                    per.setdefault(kind, []).append(outcome)
                    log(
                        f"[{name}] round {r + 1}/{rounds} {kind:9s} "
                        f"({time.monotonic() - t0:4.1f} s): {brief(scenario, outcome)}"
                    )
                    for note in outcome.notes:
                        log(f"    note: {note}")
    finally:
        stop_all()
    elapsed = time.monotonic() - started

    print()
    print_table(results, brokers)
    notes = [
        (name, kind, i + 1, note)
        for name, per in results.items()
        for kind, outcomes in per.items()
        for i, o in enumerate(outcomes)
        for note in o.notes
    ]
    if notes:
        print("\nnotes:")
        for name, kind, r, note in notes:
            print(f"  {name} / {kind} / round {r}: {note}")
    print(f"\ntotal time {elapsed:.0f} s")

    if args.json:
        report = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "uname": platform.uname()._asdict(),
            "python": sys.version,
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "mosquitto_version": mosq_version,
            "broker_cpus": sorted(broker_cpus),
            "generator_cpus": sorted(gen_cpus),
            "settings": {k: v for k, v in vars(args).items() if k != "scenarios"},
            "ctx": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(ctx).items()},
            "elapsed_seconds": elapsed,
            "scenarios": {
                name: {
                    "summary": SCENARIOS[name].summary,
                    "metrics": {
                        m.key: {"label": m.label, "better": m.better}
                        for m in SCENARIOS[name].metrics
                    },
                    "runs": {
                        kind: [
                            {
                                "metrics": o.metrics,
                                "notes": o.notes,
                                "failed": o.failed,
                                **o.extra,
                            }
                            for o in outcomes
                        ]
                        for kind, outcomes in per.items()
                    },
                    "median": {
                        kind: {m.key: median(outcomes, m.key) for m in SCENARIOS[name].metrics}
                        for kind, outcomes in per.items()
                    },
                }
                for name, per in results.items()
            },
        }
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"wrote {args.json}")
    failed = any(o.failed for per in results.values() for os_ in per.values() for o in os_)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; brokers and workers stopped", file=sys.stderr)
        sys.exit(130)

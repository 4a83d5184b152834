"""`hacs fuzz`: start the platform in a scratch directory and attack it (see campaign.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

from services.tooling.fuzz import launcher
from services.tooling.fuzz.campaign import Campaign, Report, answered, finish, prepare

HELP = "fuzz every RPC through Envoy and directly; fail on INTERNAL/UNKNOWN or a leak"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=10_000, help="how many (default 10,000)")
    parser.add_argument(
        "--seed", type=int, default=None, help="replay a run (default: a new one, printed)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight (default 8)")
    parser.add_argument(
        "--only", default="", help="replay only these request numbers (e.g. 17,4031)"
    )
    parser.add_argument(
        "--findings", type=Path, default=None, help="write every finding here (JSON lines)"
    )
    parser.add_argument("--json", action="store_true", help="end with the report as one JSON line")
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch data directory and its logs"
    )


def main(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    indices = [int(i) for i in args.only.split(",")] if args.only else list(range(args.requests))
    say(f"hacs fuzz: seed {seed}, {len(indices):,} requests, {args.concurrency} in flight")
    scratch = Path(tempfile.mkdtemp(prefix="hacs-fuzz-"))
    say(f"starting hacs up in {scratch} ...")
    running = launcher.start(scratch / "data", **launcher.RAISED_EDGE_LIMITS)
    try:
        report = asyncio.run(fuzz(running, seed, indices, args.concurrency))
    finally:
        running.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
        else:
            say(f"data and logs kept in {scratch}")
    print_report(report)
    if args.findings:
        with args.findings.open("w") as out:
            for kind, entries in (("finding", report.findings), ("unusual", report.unusual)):
                for entry in entries:
                    out.write(json.dumps({"kind": kind, **entry.as_dict()}) + "\n")
    if args.json:
        print(json.dumps(report.as_dict(with_requests=False)))
    return 0 if report.passed else 1


async def fuzz(
    running: launcher.Running, seed: int, indices: list[int], concurrency: int
) -> Report:
    targets = {"edge": running.edge, "direct": running.direct}
    world, builder, before, channel = await prepare(
        targets, running.operator_key, f"{seed % 100_000:05d}", say
    )
    try:
        campaign = Campaign(world, targets, seed)
        callers = len(campaign.identities)
        say(f"{len(campaign.methods)} RPCs, {callers} callers, through the edge and directly")
        report = Report(seed=seed, requests=len(indices))
        started = time.monotonic()
        step = max(1, len(indices) // 10)

        def progress(done: int, report: Report) -> None:
            if done % step == 0 or done == len(indices):
                top = ", ".join(f"{code} {n}" for code, n in report.codes.most_common(4))
                say(
                    f"  {done:,}/{len(indices):,} requests [{time.monotonic() - started:.0f} s] "
                    f"{top}; findings {len(report.findings)}"
                )

        await campaign.run(indices, concurrency, report, progress)
        await finish(report, targets, builder, world, before, running.alive)
        return report
    finally:
        await channel.close()


def print_report(report: Report) -> None:
    say("")
    say(f"seed {report.seed}: {report.requests:,} requests in {report.seconds:.0f} s")
    say("answers by status code:")
    for code, count in sorted(report.codes.items(), key=lambda item: -item[1]):
        say(f"  {code:<22} {count:>7,}")
    for note in report.unusual[:20]:
        say(
            f"  #{note.index} {note.method} via {note.target} as {note.identity}: "
            f"{note.code}: {note.detail[:160]}"
        )
    never = sorted(m for m, codes in report.by_method.items() if not answered(codes))
    say(
        f"RPCs answered OK at least once: {len(report.by_method) - len(never)} of "
        f"{len(report.by_method)}" + (f" (never: {', '.join(never)})" if never else "")
    )
    say(f"process alive: {report.alive}; health: {report.health}")
    say(
        "victim's data unchanged: "
        + ("yes" if report.victim_unchanged else f"NO ({', '.join(report.victim_changes)})")
    )
    if report.findings:
        say(f"{len(report.findings)} findings (replay one with --seed {report.seed} --only N):")
        for finding in report.findings[:20]:
            what = f"canary {finding.canary}" if finding.canary else finding.code
            say(
                f"  #{finding.index} {finding.method} via {finding.target} as "
                f"{finding.identity} ({finding.mode}): {what}: {finding.detail[:160]}"
            )
    say("PASSED" if report.passed else "FAILED")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

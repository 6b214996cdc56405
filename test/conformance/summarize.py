#!/usr/bin/env python3
"""Totals and failing specs of a critest run, from ginkgo's JSON report
(critest -ginkgo.json-report=FILE).

usage: summarize.py REPORT.json
Prints the counts by state, then one line per failed spec: its full name and
the reason, taken from the failure message (the gRPC status when there is
one, as that is what crius answered).
"""
import json
import re
import sys

SPEC = "It"
FAILED = {"failed", "panicked", "timedout", "interrupted", "aborted"}


def reason(failure):
    msg = (failure or {}).get("Message", "") or ""
    lines = [l.strip() for l in msg.splitlines() if l.strip()]
    if not lines:
        return "(no message)"
    # Ginkgo's message is what failed, then gomega's account of the value;
    # for an error that is a type line, the error's text and a struct dump.
    status = next((l for l in lines[1:] if "rpc error:" in l), None)
    if status:
        # What the runtime answered says it all.
        text = f"{lines[0]}: {status[status.index('rpc error:'):]}"
    else:
        kept = []
        for l in lines:
            if l == "{" or l.endswith("{"):
                break  # the dump repeats what came before
            if re.fullmatch(r"<\*[^>]*\| 0x[0-9a-f]+>:", l):
                continue  # "<*url.Error | 0x...>:" introduces the text that follows
            kept.append(l)
        text = " ".join(kept)
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= 300 else text[:297] + "..."


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        suites = json.load(f)
    counts, failures = {}, []
    for suite in suites:
        for spec in suite.get("SpecReports") or []:
            state = spec.get("State", "?")
            name = " ".join(t for t in spec.get("ContainerHierarchyTexts") or [] if t)
            name = f"{name} {spec.get('LeafNodeText', '')}".strip()
            kind = spec.get("LeafNodeType", "")
            if kind == SPEC:
                counts[state] = counts.get(state, 0) + 1
            if state in FAILED:
                label = name if kind == SPEC else f"[{kind}] {name}".strip()
                failures.append((label, state, reason(spec.get("Failure"))))
    order = ["passed", "failed", "skipped", "pending", "panicked", "timedout", "interrupted", "aborted"]
    states = sorted(counts, key=lambda s: order.index(s) if s in order else len(order))
    print("critest: " + ", ".join(f"{counts[s]} {s}" for s in states) + f" ({sum(counts.values())} specs)")
    if failures:
        print(f"\n{len(failures)} failing:")
        for label, state, why in sorted(failures):
            print(f"- {label}" + ("" if state == "failed" else f" [{state}]"))
            print(f"    {why}")


if __name__ == "__main__":
    main()

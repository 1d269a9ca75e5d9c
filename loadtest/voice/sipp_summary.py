"""Reads what sipp wrote for one voice-bench step and prints it as JSON (stdlib only).

    python3 sipp_summary.py <statistics CSV (-stf)> <response times CSV (-trace_rtt)>

From the statistics file's last row: calls attempted (OutgoingCall or IncomingCall),
successful and failed, with each failure counter that is not zero. From the response
times: INVITE → 200 (rtd 1) count, p50, p99 and max in ms.
"""
import csv
import json
import sys


def last_row(path):
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f, delimiter=";") if r]
    if len(rows) < 2:
        raise SystemExit(f"{path}: no statistics row")
    return dict(zip(rows[0], rows[-1]))


def quantile(sorted_values, q):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


def response_times(path):
    values = []
    with open(path, newline="") as f:
        for row in csv.reader(f, delimiter=";"):
            if len(row) >= 3 and row[2].strip() == "1":
                try:
                    values.append(float(row[1]))
                except ValueError:
                    pass
    values.sort()
    return {"count": len(values), "p50": quantile(values, 0.5), "p99": quantile(values, 0.99),
            "max": values[-1] if values else None}


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    stats = last_row(sys.argv[1])
    n = lambda k: int(float(stats.get(k, "0") or 0))
    failures = {k[:-3]: n(k) for k in stats if k.startswith("Failed") and k.endswith("(C)") and n(k)}
    out = {
        "attempted": n("OutgoingCall(C)") + n("IncomingCall(C)"),
        "successful": n("SuccessfulCall(C)"),
        "failed": n("FailedCall(C)"),
        "failures": failures,
        "invite_to_200_ms": response_times(sys.argv[2]),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

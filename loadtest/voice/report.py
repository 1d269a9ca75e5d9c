"""The voice benchmark's results: every step of a voice-bench.sh run directory in one JSON
(results.json) and a Markdown table on stdout (stdlib only).

    python3 report.py <run directory>
"""
import json
import pathlib
import sys


def load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def proc(rtp, name, key="cpu_percent_of_one_core"):
    return ((rtp or {}).get("processes") or {}).get(name, {}).get(key)


def main():
    run = pathlib.Path(sys.argv[1])
    steps = {}
    for d in sorted(run.iterdir()):
        if d.is_dir() and d.name.split("-")[0] in ("relay", "rate", "calls", "warmup"):
            steps[d.name] = {"rtp": load(d / "rtp.json"), "sipp": load(d / "sipp.json"), "cpu": load(d / "cpu.json")}
    (run / "results.json").write_text(json.dumps(steps, indent=2) + "\n")
    by_n = lambda prefix: sorted((int(k.split("-")[1]), v) for k, v in steps.items() if k.startswith(prefix + "-"))

    print("Set-up rate (sipp callers, each call held, audio both ways from voice-rtp):\n")
    print("| calls/s | attempted | successful | failed | INVITE→200 p50 / p99 / max ms | audio both ways | "
          "caller answered→agent audio p50 / p99 ms | agent answer→first audio p50 / p99 ms | media CPU % of a core |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r, s in by_n("rate"):
        sp, rtp, cpu = s["sipp"] or {}, s["rtp"] or {}, s["cpu"] or {}
        rt = sp.get("invite_to_200_ms") or {}
        aa = rtp.get("agent_answer_to_first_audio_ms") or {}
        qa = rtp.get("caller_answered_to_agent_audio_ms") or {}
        media = 100 * cpu["media_cpu_seconds"] / cpu["seconds"] if cpu.get("seconds") else None
        print(f"| {r} | {fmt(sp.get('attempted'))} | {fmt(sp.get('successful'))} | {fmt(sp.get('failed'))} | "
              f"{fmt(rt.get('p50'), 0)} / {fmt(rt.get('p99'), 0)} / {fmt(rt.get('max'), 0)} | "
              f"{fmt(rtp.get('calls_with_audio_both_ways'))} of {fmt(rtp.get('calls'))} | "
              f"{fmt(qa.get('p50'), 0)} / {fmt(qa.get('p99'), 0)} | {fmt(aa.get('p50'))} / {fmt(aa.get('p99'))} | {fmt(media)} |")

    print("\nConcurrent relayed G.711 calls (window of voice-rtp; media vs the raw relay at the same N):\n")
    print("| N | path | calls counted (audio both ways) | packets sent | lost | loss % | transit p50 / p99 ms | "
          "delay variation p99 ms | relay CPU % of a core | CPU ms per call-second | RSS MiB | generator CPU % | "
          "sessions / routing CPU % | sipp callers / phone CPU % | INVITE→200 p99 ms | answer→audio p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    relay = dict(by_n("relay"))
    calls = dict(by_n("calls"))
    for n in sorted(set(relay) | set(calls)):
        for path, s in (("raw relay", relay.get(n)), ("media", calls.get(n))):
            if not s or not s["rtp"]:
                continue
            rtp, sp = s["rtp"], s["sipp"] or {}
            who = "relay" if path == "raw relay" else "media"
            aa = rtp.get("agent_answer_to_first_audio_ms") or {}
            counted = rtp.get("calls_counted_in_window", rtp["calls_with_audio_both_ways"])
            print(f"| {n} | {path} | {counted} of {rtp['calls']} | "
                  f"{rtp['packets_sent_in_window']} | {rtp['packets_lost']} | {fmt(rtp['loss_percent'], 4)} | "
                  f"{fmt(rtp['transit_ms']['p50'], 2)} / {fmt(rtp['transit_ms']['p99'], 2)} | "
                  f"{fmt(rtp['delay_variation_ms']['p99'], 2)} | {fmt(proc(rtp, who))} | "
                  f"{fmt(proc(rtp, who, 'cpu_ms_per_call_second'), 3)} | {fmt(proc(rtp, who, 'rss_mib'))} | "
                  f"{fmt(proc(rtp, 'generator'))} | {fmt(proc(rtp, 'sessions'))} / {fmt(proc(rtp, 'routing'))} | "
                  f"{fmt(proc(rtp, 'sipp_callers'))} / {fmt(proc(rtp, 'sipp_phone'))} | "
                  f"{fmt((sp.get('invite_to_200_ms') or {}).get('p99'), 0)} | {fmt(aa.get('p50'))} / {fmt(aa.get('p99'))} |")


if __name__ == "__main__":
    main()

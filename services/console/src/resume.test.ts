import { describe, expect, it } from "vitest";
import { BACKOFF_MS, keepStreaming } from "./resume";

describe("keepStreaming", () => {
  it("reopens a stream that fails or ends, resetting the pause once events flow", async () => {
    const ctl = new AbortController();
    const seen: number[] = [];
    const drops: Array<[string, number]> = [];
    const sleeps: number[] = [];
    let opened = 0;
    async function* open(): AsyncGenerator<number> {
      opened += 1;
      if (opened === 1) {
        yield 1;
        throw new Error("network dropped");
      }
      if (opened === 2) throw new Error("refused");
      if (opened === 3) throw new Error("refused again");
      yield 2;
      yield 3;
      ctl.abort();
    }
    await keepStreaming(
      open,
      { event: (n) => seen.push(n), dropped: (e, ms) => drops.push([String((e as Error)?.message), ms]) },
      ctl.signal,
      async (ms) => {
        sleeps.push(ms);
      },
    );
    expect(seen).toEqual([1, 2, 3]);
    expect(drops).toEqual([
      ["network dropped", BACKOFF_MS[0]],
      ["refused", BACKOFF_MS[1]],
      ["refused again", BACKOFF_MS[2]],
    ]);
    expect(opened).toBe(4);
  });

  it("stops when aborted, without reporting a drop", async () => {
    const ctl = new AbortController();
    const drops: unknown[] = [];
    async function* open(signal: AbortSignal): AsyncGenerator<number> {
      ctl.abort();
      if (signal.aborted) throw new Error("aborted");
      yield 1;
    }
    await keepStreaming(open, { event: () => {}, dropped: (e) => drops.push(e) }, ctl.signal, async () => {});
    expect(drops).toEqual([]);
  });
});

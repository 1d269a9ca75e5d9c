// A server stream kept open: when it ends or fails, it is opened again after a short,
// growing pause (reset once events flow again), until the signal aborts. The caller learns
// of each drop and reconnect, so state folded from the stream can resync (desktop.ts).

export interface ResumeHandlers<T> {
  event(ev: T): void;
  /** The stream ended or failed; a new one opens after `delayMs`. */
  dropped(error: unknown, delayMs: number): void;
}

export const BACKOFF_MS = [250, 500, 1000, 2000, 5000];

export async function keepStreaming<T>(
  open: (signal: AbortSignal) => AsyncIterable<T>,
  on: ResumeHandlers<T>,
  signal: AbortSignal,
  sleep: (ms: number, signal: AbortSignal) => Promise<void> = abortableSleep,
): Promise<void> {
  let attempt = 0;
  while (!signal.aborted) {
    let error: unknown = undefined;
    try {
      for await (const ev of open(signal)) {
        attempt = 0;
        on.event(ev);
      }
    } catch (e) {
      error = e;
    }
    if (signal.aborted) return;
    const delay = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
    attempt += 1;
    on.dropped(error, delay);
    await sleep(delay, signal);
  }
}

export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}

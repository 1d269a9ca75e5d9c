// The platform's clock in the browser. An offer expires at a time the server set; the PC's
// clock may be off by seconds, so the console measures its offset from the server's clock
// (`serverTimeMs` of /api/config, taken mid-way through the request) and counts down on
// server time.

/** Offset to add to the local clock to get the server's, from one round trip. */
export function clockOffset(sentLocalMs: number, serverMs: number, receivedLocalMs: number): number {
  const midpoint = sentLocalMs + (receivedLocalMs - sentLocalMs) / 2;
  return serverMs - midpoint;
}

/** Whole seconds left until `expireMs` (server time), never below 0. */
export function secondsLeft(expireMs: number, localNowMs: number, offsetMs: number): number {
  return Math.max(0, Math.ceil((expireMs - (localNowMs + offsetMs)) / 1000));
}

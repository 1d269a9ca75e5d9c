import { describe, expect, it } from "vitest";
import { clockOffset, secondsLeft } from "./clock";

describe("server clock", () => {
  it("measures the offset at the round trip's midpoint", () => {
    // Sent at 1000, answered at 1200 (local); the server said 6100 at the midpoint 1100.
    expect(clockOffset(1000, 6100, 1200)).toBe(5000);
    expect(clockOffset(1000, 1000, 1000)).toBe(0);
  });
  it("counts down on the server's clock, not the PC's", () => {
    // The PC runs 5 s behind the server: local 10_000 is server 15_000.
    expect(secondsLeft(30_000, 10_000, 5_000)).toBe(15);
    expect(secondsLeft(30_000, 10_000, 0)).toBe(20);
    expect(secondsLeft(30_000, 10_001, 5_000)).toBe(15);
    expect(secondsLeft(30_000, 29_000, 5_000)).toBe(0);
  });
});

import { describe, expect, it } from "vitest";
import { clockTime, duration, num, optionalSeconds, percent } from "./format";

describe("format", () => {
  const instant = Date.UTC(2026, 11, 5, 18, 30, 5); // 18:30:05 UTC
  it("shows times in the tenant's time zone, whatever the browser's", () => {
    expect(clockTime(instant, "Europe/Madrid", "es")).toBe("19:30:05");
    expect(clockTime(instant, "America/New_York", "en")).toBe("13:30:05");
    expect(clockTime(instant, "UTC", "en")).toBe("18:30:05");
  });
  it("formats durations, percents and missing figures", () => {
    expect(duration(0)).toBe("0:00");
    expect(duration(65.4)).toBe("1:05");
    expect(duration(3725)).toBe("1:02:05");
    expect(optionalSeconds(undefined)).toBe("—");
    expect(percent(87.456)).toBe("87.5 %");
    expect(percent(undefined)).toBe("—");
    expect(num(12n)).toBe(12);
  });
});

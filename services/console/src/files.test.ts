import { describe, expect, it } from "vitest";
import { checkFile, fileSize, MAX_FILE_BYTES } from "./files";

describe("files", () => {
  it("takes the allowed types up to 5 MiB", () => {
    expect(checkFile("recibo.png", "image/png", 10)).toBeUndefined();
    expect(checkFile("parte.pdf", "Application/PDF; x=y", MAX_FILE_BYTES)).toBeUndefined();
    expect(checkFile("nota.ogg", "audio/ogg", 1)).toBeUndefined();
  });

  it("says why a file cannot go", () => {
    expect(checkFile("a.html", "text/html", 10)).toBe("type");
    expect(checkFile("a.svg", "image/svg+xml", 10)).toBe("type");
    expect(checkFile("a.exe", "", 10)).toBe("type");
    expect(checkFile("a.png", "image/png", 0)).toBe("empty");
    expect(checkFile("a.png", "image/png", MAX_FILE_BYTES + 1)).toBe("tooLarge");
    expect(checkFile(".hidden.png", "image/png", 1)).toBe("name");
    expect(checkFile("a/b.png", "image/png", 1)).toBe("name");
    expect(checkFile("x".repeat(201), "image/png", 1)).toBe("name");
  });

  it("shows sizes", () => {
    expect(fileSize(980)).toBe("980 B");
    expect(fileSize(12800)).toBe("12.5 KB");
    expect(fileSize(3250586)).toBe("3.1 MB");
  });
});

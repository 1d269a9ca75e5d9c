import { describe, expect, it } from "vitest";
import { DICTIONARIES, initialLang, translator } from "./i18n";

describe("i18n", () => {
  it("has every word in both languages, none empty", () => {
    const en = Object.keys(DICTIONARIES.en).sort();
    expect(Object.keys(DICTIONARIES.es).sort()).toEqual(en);
    for (const lang of ["en", "es"] as const) {
      for (const k of en) expect(DICTIONARIES[lang][k as keyof typeof DICTIONARIES.en].trim(), `${lang}.${k}`).not.toBe("");
    }
  });
  it("translates per language", () => {
    expect(translator("es")("accept")).toBe("Aceptar");
    expect(translator("en")("accept")).toBe("Accept");
  });
  it("keeps the user's choice, else follows the browser", () => {
    expect(initialLang("es", "en-US")).toBe("es");
    expect(initialLang("en", "es-ES")).toBe("en");
    expect(initialLang(null, "es-MX")).toBe("es");
    expect(initialLang(null, "fr-FR")).toBe("en");
    expect(initialLang("xx", undefined)).toBe("en");
  });
});

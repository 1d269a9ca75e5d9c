import { defineConfig } from "vite";

// The embeddable web chat widget (widget/widget.ts): one self-contained script, built after
// the app into dist/widget/ so centralita-console serves it at /widget/centralita-chat.js.
export default defineConfig({
  build: {
    outDir: "dist/widget",
    emptyOutDir: false,
    sourcemap: false,
    lib: { entry: "widget/widget.ts", name: "CentralitaChat", formats: ["iife"], fileName: () => "centralita-chat.js" },
  },
});

import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// The app is served by `centralita-console` (services/console-server) from dist/.
export default defineConfig({
  plugins: [react()],
  build: { outDir: "dist", sourcemap: false, chunkSizeWarningLimit: 600 },
  test: { environment: "node", include: ["src/**/*.test.ts", "widget/**/*.test.ts"] },
});

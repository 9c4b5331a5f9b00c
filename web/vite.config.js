import { defineConfig } from "vite";

// Built into the Python package so `medimg serve` works without npm; relative base so the app loads from "/".
export default defineConfig({
  base: "./",
  build: {
    outDir: "../src/medimg/web/static",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 4000,
  },
});

// Builds the GUI into static files (index.html + hashed assets) that the OMA serves on
// its GUI port. Everything is bundled: the page loads nothing from the internet.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  build: {
    outDir: process.env.MK_WEB_OUT_DIR || "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0, // no data: URLs for scripts; the CSP allows only 'self'
    sourcemap: false,
    chunkSizeWarningLimit: 400,
  },
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
});

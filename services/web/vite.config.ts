/// <reference types="vitest/config" />
// Vite: the production bundle goes to dist/ (embedded by services/api/build.rs), served under
// /static/ with hashed names in assets/. No inline scripts (the api's CSP forbids them).
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

declare const process: { env: Record<string, string | undefined> };
const apiUrl = process.env.COURIER_API_URL ?? 'http://127.0.0.1:8000';

export default defineConfig({
  base: '/static/',
  plugins: [react()],
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    // No data: URLs or inline assets: everything is a file of this origin.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
  server: {
    // `npm run dev` against an api on :8000 (COURIER_API_URL to change it).
    proxy: {
      '/api': apiUrl,
      '/app-config.json': apiUrl,
    },
  },
  test: {
    environment: 'jsdom',
    setupFiles: ['./src/test-setup.ts'],
    include: ['src/**/*.test.{ts,tsx}'],
  },
});

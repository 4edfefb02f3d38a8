/// <reference types="vitest/config" />
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// `SHOAL_URL` (default http://127.0.0.1:8080) is where `npm run dev` and `npm run preview`
// send /graphql (HTTP and WebSocket).
const target = process.env.SHOAL_URL ?? 'http://127.0.0.1:8080';
const proxy = {
  '/graphql': { target, ws: true, changeOrigin: true },
};

export default defineConfig({
  plugins: [react()],
  build: { outDir: 'dist', emptyOutDir: true, chunkSizeWarningLimit: 1200 },
  server: { proxy },
  preview: { proxy },
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.{ts,tsx}'],
  },
});

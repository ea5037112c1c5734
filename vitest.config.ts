import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // Native tests share two cores; running files one at a time keeps timings sane.
    fileParallelism: false,
  },
});

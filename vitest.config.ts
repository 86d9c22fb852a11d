import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: run test files one at a time so onnxruntime sessions do not fight over them.
    fileParallelism: false,
  },
});

import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 20_000,
    // Integration tests bind real sockets; forks keep a crashed test from taking the run down.
    pool: 'forks',
    globalSetup: ['test/global-setup.ts'],
    maxWorkers: 2,
  },
})

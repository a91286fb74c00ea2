/** @type {import('jest').Config} */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/__tests__'],
  testMatch: ['**/*.test.ts'],
  testTimeout: 60_000,
  reporters: ['default', '<rootDir>/scripts/jest-summary-reporter.js'],
  // Installs Chromium for the demo's end-to-end test when missing, and starts a real S3 server (Ceph
  // radosgw, installed with apt-get when missing) unless S3_ENDPOINT is set, and a Redis server
  // (redis-server, likewise) unless REDIS_URL is set.
  globalSetup: '<rootDir>/__tests__/setup/global-setup.ts',
  globalTeardown: '<rootDir>/__tests__/setup/global-teardown.ts',
};

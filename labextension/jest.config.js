/* Unit tests of the sidebar's model, API client, poller, tour copy and widgets, in jsdom.
   ts-jest compiles src/ as CommonJS for node; the JupyterLab packages (ES modules) are not
   imported by the modules under test, only @lumino ones (which ship CommonJS builds). */
module.exports = {
  testEnvironment: 'jsdom',
  roots: ['<rootDir>/test'],
  testRegex: '.*\\.spec\\.ts$',
  setupFiles: ['<rootDir>/test/setup.js'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  }
};

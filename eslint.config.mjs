// ESLint 9 flat config: typescript-eslint's type-checked rules (recommendedTypeChecked) over the TypeScript
// of src/, test/ and bench/ (the tsconfig.json project), ESLint's recommended rules over the few JavaScript
// files. Layout, quotes and commas are Prettier's job (.prettierrc.json), so no formatting rules here.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  { ignores: ['dist/', 'build/', 'node_modules/', 'models/', 'runs/', 'tmp/'] },
  { linterOptions: { reportUnusedDisableDirectives: 'error' } },
  js.configs.recommended,
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // node:test's test()/describe() return promises that the runner itself tracks and awaits.
      '@typescript-eslint/no-floating-promises': ['error', { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite'] }] }],
      // Error messages name the value they reject: numbers and number lists (`got 1,2,3`), and in exhaustive
      // switches the `never` value, which a JavaScript caller can still pass.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true, allowArray: true, allowNever: true }],
      // Lazy require() is deliberate: the addon is loaded from a path found at run time, and modules that must work
      // without it (safetensors' byte-level API, `diffuse --version`) load the tensor layer only when asked. Each
      // such require is typed with `as typeof import(...)`, so no `any` escapes (no-unsafe-* still checks that).
      '@typescript-eslint/no-require-imports': 'off',
      // Commands (`(argv) => Promise<number>`), benchmark sides and test callbacks share an async signature whether or
      // not they await; `async` also turns a synchronous throw into the rejection their callers handle.
      '@typescript-eslint/require-await': 'off',
      // `Device` is `string`, yet `DType | Device` in a signature documents what a caller may pass.
      '@typescript-eslint/no-redundant-type-constituents': 'off',
    },
  },
  {
    // Tests read JSON (PyTorch fixtures, the checkpoint.json a run wrote) as untyped data and check it field by field
    // with assertions; typing every fixture record would add casts, not safety. `any` written by hand stays an error.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: {
      globals: { require: 'readonly', module: 'writable', exports: 'writable', process: 'readonly', console: 'readonly', Buffer: 'readonly', __dirname: 'readonly', __filename: 'readonly' },
    },
  },
);

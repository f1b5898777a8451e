import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * Layers (docs/architecture.md): core <- storage, format, nbd, export, io, changetracking, protocol
 * <- store <- applications (vault, process-server, agent) <- cli.
 * Drivers and libraries never import the CLI; core imports nothing of ours.
 */
const layer = (files, forbidden) => ({
  files,
  rules: {
    'no-restricted-imports': [
      'error',
      { patterns: forbidden.map((group) => ({ group: [group], message: 'imports must point inwards (docs/architecture.md)' })) },
    ],
  },
});

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'build/', '.bench/', '.test-tmp/', 'web/dist/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', URL: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  layer(['src/core/**'], ['**/storage/**', '**/format/**', '**/store/**', '**/cli/**', '**/nbd/**', '**/export/**']),
  layer(['src/storage/**', 'src/format/**', 'src/nbd/**', 'src/export/**', 'src/io/**'], ['**/cli/**', '**/store/**', '**/vault/**', '**/agent/**', '**/process-server/**']),
  layer(['src/store/**'], ['**/cli/**', '**/vault/**']),
  // Compute drivers boot or export BlockSources: they never open the store themselves.
  layer(['src/compute/**'], ['**/cli/**', '**/store/**', '**/vault/**', '**/agent/**', '**/process-server/**']),
  layer(['src/changetracking/**', 'src/protocol/**'], ['**/cli/**', '**/store/**', '**/vault/**', '**/agent/**', '**/process-server/**']),
  // Applications never import each other; src/cli (lifeboat server) wires them together.
  layer(['src/agent/**'], ['**/cli/**', '**/vault/**', '**/process-server/**', '**/store/**']),
  layer(['src/process-server/**'], ['**/cli/**', '**/vault/**', '**/agent/**']),
  layer(['src/vault/**'], ['**/cli/**', '**/agent/**', '**/process-server/**']),
  layer(['src/vault/http/**'], ['**/vault/db/**']),
  // The portal runs in the browser and talks only to the REST API: of the vault's code it may name the domain types, nothing else.
  {
    files: ['web/**/*.{ts,tsx}'],
    languageOptions: {
      globals: { window: 'readonly', document: 'readonly', sessionStorage: 'readonly', fetch: 'readonly', TextDecoderStream: 'readonly', AbortController: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', Blob: 'readonly', HTMLElement: 'readonly', HTMLDialogElement: 'readonly', HTMLInputElement: 'readonly', navigator: 'readonly' },
    },
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['**/src/**'], message: 'the portal talks only to the REST API: take the API shapes from web/src/types.ts' }] },
      ],
    },
  },
  // ... which names them once: the vault's domain types, and the item state machine (pure rules, no I/O).
  {
    files: ['web/src/types.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { regex: '(^|/)src/(?!core/(model|item-state)$)', message: 'only src/core/model (types) and src/core/item-state' },
            { regex: '(^|/)src/core/model$', allowTypeImports: true, message: 'only types from src/core/model' },
          ],
        },
      ],
    },
  },
);

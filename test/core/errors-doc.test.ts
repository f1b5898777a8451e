import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../helpers/env.js';
import { errorsDoc } from '../../scripts/gen-errors-doc.js';

test('docs/errors.md documents exactly the error registry', () => {
  assert.equal(readFileSync(join(repoRoot, 'docs', 'errors.md'), 'utf8'), errorsDoc(), 'regenerate: npx tsx scripts/gen-errors-doc.ts > docs/errors.md');
});

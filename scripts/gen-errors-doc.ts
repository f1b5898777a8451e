/** Prints docs/errors.md from the error registry (test/core/errors-doc.test.ts checks they agree). */
import { ERROR_CODES, type ErrorSpec } from '../src/core/errors.js';

export function errorsDoc(): string {
  const rows = Object.entries(ERROR_CODES as Record<string, ErrorSpec>).map(
    ([code, s]) => `| \`${code}\` | ${s.exitCode} | ${s.retryable ? 'yes' : 'no'} | ${s.summary}${s.hint ? ` Try: \`${s.hint}\`.` : ''} |`,
  );
  return [
    '# Error codes',
    '',
    'Every error Lifeboat reports carries one of these stable codes. The CLI exits with the',
    'code\'s exit status, prints `lifeboat: CODE: message` on stderr (and a `Try:` hint where one',
    'helps), and with `--json` prints `{"error": {"code", "message", "retryable", "details"}}` on stdout.',
    'This file is generated from `src/core/errors.ts` (`npx tsx scripts/gen-errors-doc.ts > docs/errors.md`);',
    'a test fails when they disagree.',
    '',
    '| Code | Exit status | Retryable | Meaning |',
    '| --- | --- | --- | --- |',
    ...rows,
    '',
    'Exit status 0 is success; 1 is not used by Lifeboat itself (Node.js uses it for crashes).',
    '',
  ].join('\n');
}

if (process.argv[1]?.endsWith('gen-errors-doc.ts')) process.stdout.write(errorsDoc());

/** Plan scripts: only executables directly in the scripts directory, run without a shell, with a time-out and their output's tail on failure. */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isLifeboatError } from '../../../src/core/errors.js';
import { resolveScript, runScript } from '../../../src/vault/plans/scripts.js';
import { makeTempDir } from '../../helpers/env.js';

describe('plan scripts', () => {
  const tmp = makeTempDir('plan-scripts');
  const dir = join(tmp.path, 'scripts');
  const put = (name: string, body: string, mode = 0o755): void => {
    writeFileSync(join(dir, name), body);
    chmodSync(join(dir, name), mode);
  };
  const run = (name: string, timeoutMs = 10_000) => runScript({ dir, name, env: { LIFEBOAT_GROUP: 'web' }, timeoutMs, signal: new AbortController().signal });
  const refused = async (p: Promise<unknown>, code: string, pattern: RegExp): Promise<void> => {
    await assert.rejects(p, (err: unknown) => {
      assert.ok(isLifeboatError(err, code as never), String(err));
      assert.match((err as Error).message, pattern);
      return true;
    });
  };

  before(() => {
    mkdirSync(join(dir, 'sub'), { recursive: true });
    writeFileSync(join(tmp.path, 'outside.sh'), '#!/bin/sh\necho escaped\n');
    chmodSync(join(tmp.path, 'outside.sh'), 0o755);
  });
  after(() => tmp.cleanup());

  it('runs in the scripts directory with the plan variables and without the vault environment', async () => {
    process.env.LIFEBOAT_TEST_SECRET = 'must-not-leak';
    try {
      put('env.sh', `#!/bin/sh\necho "$(pwd) $LIFEBOAT_GROUP [$LIFEBOAT_TEST_SECRET]" > '${join(tmp.path, 'env.out')}'\n`);
      await run('env.sh');
      assert.equal(readFileSync(join(tmp.path, 'env.out'), 'utf8'), `${dir} web []\n`);
    } finally {
      delete process.env.LIFEBOAT_TEST_SECRET;
    }
  });

  it('accepts a symbolic link to another script of the directory; refuses one that leads out, a sub-directory path, a missing, non-executable or world-writable file', async () => {
    put('real.sh', '#!/bin/sh\nexit 0\n');
    symlinkSync('real.sh', join(dir, 'alias.sh'));
    assert.equal(await resolveScript(dir, 'alias.sh'), join(dir, 'real.sh'));
    symlinkSync(join(tmp.path, 'outside.sh'), join(dir, 'out.sh'));
    await refused(run('out.sh'), 'VALIDATION', /leads out of the vault's scripts directory/);
    symlinkSync('../outside.sh', join(dir, 'rel.sh'));
    await refused(run('rel.sh'), 'VALIDATION', /leads out/);
    put('sub/inner.sh', '#!/bin/sh\nexit 0\n');
    await refused(run('sub/inner.sh'), 'VALIDATION', /plain file name/);
    await refused(run('..'), 'VALIDATION', /plain file name/);
    await refused(run('missing.sh'), 'NOT_FOUND', /not in the vault's scripts directory/);
    put('plain.txt', 'echo hi\n', 0o644);
    await refused(run('plain.txt'), 'VALIDATION', /not an executable file/);
    await refused(run('sub'), 'VALIDATION', /not an executable file/);
    put('open.sh', '#!/bin/sh\nexit 0\n', 0o777);
    await refused(run('open.sh'), 'VALIDATION', /writable by everyone/);
  });

  it("fails with the exit code and the output's tail; a script past its time-out is killed", async () => {
    put('fail.sh', `#!/bin/sh\ni=0\nwhile [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done\necho last-words >&2\nexit 7\n`);
    await refused(run('fail.sh'), 'JOB_FAILED', /exited with code 7; stdout: ….*line 2999; stderr: last-words$/s);
    await assert.rejects(run('fail.sh'), (err: Error) => err.message.length < 5000);
    put('slow.sh', '#!/bin/sh\necho started\nsleep 30\n');
    await refused(run('slow.sh', 300), 'TIMEOUT', /script slow.sh timed out after 300 ms; stdout: started/);
  });
});

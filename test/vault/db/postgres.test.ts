import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isLifeboatError } from '../../../src/core/errors.js';
import { openDatabase } from '../../../src/vault/db/open.js';
import { MIGRATIONS } from '../../../src/vault/db/migrations.js';
import { startPostgres, type RunningPostgres } from '../../helpers/postgres.js';
import { expectCode, persistenceSuite } from './suite.js';

let server: RunningPostgres | undefined;
before(async () => {
  server = await startPostgres();
});
after(async () => {
  await server?.stop();
});

let counter = 0;
const running = (): RunningPostgres => {
  if (!server) throw new Error('PostgreSQL did not start (see the before hook)');
  return server;
};

persistenceSuite('postgresql', () => running().createDatabase(`suite_${++counter}`));

describe('vault database: postgresql specifics', () => {
  it('an unreachable server is DB_UNAVAILABLE (retryable) and the URL password is never shown', async () => {
    await assert.rejects(openDatabase('postgres://lifeboat:s3cret-canary@127.0.0.1:1/none'), (err: unknown) => {
      assert.ok(isLifeboatError(err, 'DB_UNAVAILABLE'), `expected DB_UNAVAILABLE, got ${String(err)}`);
      assert.equal(err.retryable, true);
      assert.doesNotMatch(JSON.stringify(err) + err.message, /s3cret-canary/);
      return true;
    });
  });

  it('a database that does not exist is DB_UNAVAILABLE', async () => {
    const url = running().url.replace(/\/lifeboat$/, '/no_such_database');
    await expectCode(openDatabase(url), 'DB_UNAVAILABLE');
  });

  it('two vault processes opening one fresh database migrate it once', async () => {
    const url = await running().createDatabase('race');
    const dbs = await Promise.all([openDatabase(url), openDatabase(url), openDatabase(url)]);
    try {
      assert.equal((await dbs[0]!.query('SELECT id FROM schema_migrations')).length, MIGRATIONS.length);
    } finally {
      await Promise.all(dbs.map((d) => d.close()));
    }
  });
});

import assert from 'node:assert/strict';
import { writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { openDatabase } from '../../../src/vault/db/open.js';
import { createRepositories } from '../../../src/vault/db/repositories/index.js';
import { makeTempDir } from '../../helpers/env.js';
import { expectCode, persistenceSuite } from './suite.js';

const temp = makeTempDir('vault-db-sqlite');
after(() => temp.cleanup());
let counter = 0;

persistenceSuite('sqlite file', async () => `sqlite://${join(temp.path, `db-${++counter}`, 'vault.db')}`);

describe('vault database: sqlite specifics and openDatabase', () => {
  it('opens an in-memory database, migrated', async () => {
    const db = await openDatabase('sqlite::memory:');
    try {
      const v = await createRepositories(db).vaults.create({ name: 'm', location: 'l', storeUrl: 'file:///s' });
      assert.equal((await createRepositories(db).vaults.get(v.id)).name, 'm');
    } finally {
      await db.close();
    }
  });

  it('uses WAL with foreign keys on, and creates the data folder', async () => {
    const path = join(temp.path, 'nested', 'deeper', 'vault.db');
    const db = await openDatabase(`sqlite://${path}`);
    try {
      assert.ok(existsSync(path));
      assert.deepEqual(await db.one('PRAGMA journal_mode'), { journal_mode: 'wal' });
      assert.deepEqual(await db.one('PRAGMA foreign_keys'), { foreign_keys: 1 });
    } finally {
      await db.close();
    }
  });

  it('refuses unknown schemes, relative paths and files that are not databases', async () => {
    await expectCode(openDatabase('mysql://localhost/x'), 'CONFIG_INVALID', /no vault database driver/);
    await expectCode(openDatabase('sqlite://relative/path.db'), 'CONFIG_INVALID');
    await expectCode(openDatabase('sqlite:vault.db'), 'CONFIG_INVALID');
    const junk = join(temp.path, 'junk.db');
    writeFileSync(junk, 'this is not a database, just text that is long enough to have a header'.repeat(20));
    await expectCode(openDatabase(`sqlite://${junk}`), 'CONFIG_INVALID', /not a SQLite database/);
  });

  it('two connections to one file see each other\'s commits', async () => {
    const url = `sqlite://${join(temp.path, 'shared', 'vault.db')}`;
    const a = await openDatabase(url);
    const b = await openDatabase(url);
    try {
      await createRepositories(a).settings.set('k', 'v');
      assert.equal(await createRepositories(b).settings.get('k'), 'v');
    } finally {
      await a.close();
      await b.close();
    }
  });
});

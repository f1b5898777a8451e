import assert from 'node:assert/strict';
import { readdir, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, it } from 'node:test';
import { FsStorage } from '../../src/storage/fs/fs-storage.js';
import { listAll } from '../../src/storage/storage.js';
import { makeTempDir } from '../helpers/env.js';
import { expectCode, storageContract } from './contract.js';

const temp = makeTempDir('fs-storage');
after(() => temp.cleanup());
let counter = 0;
const freshRoot = () => join(temp.path, `store-${++counter}`);

storageContract('fs', () => FsStorage.open(pathToFileURL(freshRoot())), { conditionalCreate: true });

describe('fs storage specifics', () => {
  it('maps keys to nested folders and leaves no temp files or empty folders behind', async () => {
    const root = freshRoot();
    const s = await FsStorage.open(pathToFileURL(root));
    await s.put('a/b/c', Buffer.from('x'));
    await s.put('a/b/c', Buffer.from('y'));
    await expectCode(s.put('a/b/c', Buffer.from('z'), { ifNoneMatch: true }), 'STORAGE_PRECONDITION');
    assert.deepEqual(await readdir(join(root, 'a', 'b')), ['c']);
    await s.delete('a/b/c');
    assert.deepEqual(await readdir(root), [], 'empty folders are pruned up to the root');
  });

  it('never lists foreign files whose names cannot be keys', async () => {
    const root = freshRoot();
    const s = await FsStorage.open(pathToFileURL(root));
    await s.put('k/one', Buffer.from('1'));
    await writeFile(join(root, 'k', '.tmp~dead'), 'leftover');
    await writeFile(join(root, 'k', 'with space'), 'foreign');
    assert.deepEqual((await listAll(s, '')).map((i) => i.key), ['k/one']);
  });

  it('refuses a key that collides with a folder of other keys', async () => {
    const s = await FsStorage.open(pathToFileURL(freshRoot()));
    await s.put('x/y', Buffer.from('1'));
    await expectCode(s.put('x', Buffer.from('2')), 'USAGE');
    await expectCode(s.put('x/y/z', Buffer.from('3')), 'USAGE');
    assert.equal(await s.stat('x'), undefined);
    await s.delete('x'); // a folder is not an object: deleting it as a key is a no-op
    assert.equal((await s.get('x/y')).toString(), '1');
  });

  it('refuses a root that is a file and URLs that are not file:///absolute', async () => {
    const file = join(temp.path, 'plain-file');
    await mkdir(temp.path, { recursive: true });
    await writeFile(file, 'x');
    await expectCode(FsStorage.open(pathToFileURL(file)), 'CONFIG_INVALID');
    await expectCode(FsStorage.open('file://otherhost/x'), 'CONFIG_INVALID');
    await expectCode(FsStorage.open('s3://bucket/x'), 'CONFIG_INVALID');
  });
});

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, it } from 'node:test';
import { openStorage, storageMetrics, STORAGE_SCHEMES } from '../../src/storage/registry.js';
import { MemoryStorage } from '../../src/storage/memory/memory-storage.js';
import { makeTempDir } from '../helpers/env.js';
import { expectCode, storageContract } from './contract.js';

const temp = makeTempDir('registry');
after(() => temp.cleanup());
let counter = 0;

// The wired stack (retry, limit, metrics) must keep the contract, with the limit at its tightest.
storageContract('registry file: stack', () => openStorage(pathToFileURL(join(temp.path, `c-${++counter}`)).href, { concurrency: 1 }), {
  conditionalCreate: true,
});

describe('openStorage', () => {
  it('knows exactly the file, azblob, s3 and memory schemes', () => {
    assert.deepEqual([...STORAGE_SCHEMES].sort(), ['azblob:', 'file:', 'memory:', 's3:']);
  });

  it('opens a plain absolute path as a local folder', async () => {
    const path = join(temp.path, 'plain');
    const s = await openStorage(path);
    await s.put('k', Buffer.from('v'));
    assert.equal(s.url, pathToFileURL(path).href);
    const again = await openStorage(pathToFileURL(path).href);
    assert.equal((await again.get('k')).toString(), 'v');
  });

  it('refuses unknown schemes, relative paths and memory unless allowed', async () => {
    await expectCode(openStorage('ftp://host/x'), 'UNSUPPORTED_SCHEME');
    await expectCode(openStorage('gs://bucket'), 'UNSUPPORTED_SCHEME');
    await expectCode(openStorage('memory://t'), 'UNSUPPORTED_SCHEME');
    await expectCode(openStorage('relative/path'), 'USAGE');
    const s = await openStorage('memory://t', { allowMemory: true });
    assert.equal(s.url, 'memory://t');
  });

  it('stops start-up for a misconfigured driver instead of failing later', async () => {
    await expectCode(openStorage('azblob://acct/container', { env: {} }), 'CONFIG_INVALID');
    await expectCode(openStorage('file://remote-host/x'), 'CONFIG_INVALID');
    await expectCode(openStorage('file:///x', { concurrency: 0 }), 'CONFIG_INVALID');
  });

  it('exposes the metrics of the stack it built, counting every attempt', async () => {
    const s = await openStorage('memory://m', { allowMemory: true, retry: { maxAttempts: 3, sleep: async () => {} } });
    await s.put('a', Buffer.alloc(7));
    await s.get('a');
    await expectCode(s.get('missing'), 'NOT_FOUND');
    const snap = storageMetrics(s);
    assert.equal(snap.bytesOut, 7);
    assert.equal(snap.bytesIn, 7);
    assert.equal(snap.ops.get.calls, 2, 'NOT_FOUND is not retried');
    assert.equal(snap.ops.get.errorsByCode.NOT_FOUND, 1);
    assert.throws(() => storageMetrics(new MemoryStorage()), /not opened by openStorage/);
  });
});

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { S3Storage } from '../../src/storage/s3/s3-storage.js';
import { startS3rver, type S3rverService } from '../helpers/services.js';
import { expectCode, storageContract } from './contract.js';

let s3rver: S3rverService;
before(async () => {
  s3rver = await startS3rver();
});
after(async () => {
  await s3rver?.stop();
});

let counter = 0;
const fresh = () => S3Storage.open(s3rver.url(`run-${++counter}/nested`), { env: s3rver.env });

// s3rver ignores If-None-Match, so the driver is configured to declare conditionalCreate=false;
// and s3rver writes objects (and their length) in place, unlike S3, whose puts are atomic.
storageContract('s3 (s3rver)', fresh, { conditionalCreate: false, atomicPutService: false });

describe('s3 specifics', () => {
  it('declares conditional create by default, as AWS S3 enforces it', async () => {
    const { LIFEBOAT_S3_CONDITIONAL_CREATE: _off, ...env } = s3rver.env;
    const s = await S3Storage.open(s3rver.url('default-caps'), { env });
    try {
      assert.equal(s.capabilities.conditionalCreate, true);
      assert.equal(s.capabilities.maxObjectSizeBytes, 5 * 2 ** 30);
    } finally {
      await s.close();
    }
  });

  it('stops start-up for a missing bucket, a malformed URL, a refused key or a dead endpoint', async () => {
    await expectCode(S3Storage.open('s3://no-such-bucket', { env: s3rver.env }), 'CONFIG_INVALID');
    await expectCode(S3Storage.open('s3:///prefix-only', { env: s3rver.env }), 'CONFIG_INVALID');
    // s3rver does not check SigV4 signatures, only the access key id.
    await expectCode(S3Storage.open(s3rver.url(), { env: { ...s3rver.env, AWS_ACCESS_KEY_ID: 'NOBODY' } }), 'STORAGE_AUTH');
    await expectCode(S3Storage.open(s3rver.url(), { env: { ...s3rver.env, LIFEBOAT_S3_ENDPOINT: 'http://127.0.0.1:1' } }), 'STORAGE_UNAVAILABLE');
  });
});

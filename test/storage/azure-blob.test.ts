import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AzureBlobStorage } from '../../src/storage/azure-blob/azure-blob-storage.js';
import { listAll } from '../../src/storage/storage.js';
import { AZURITE_ACCOUNT, startAzurite, type AzuriteService } from '../helpers/services.js';
import { expectCode, storageContract } from './contract.js';

let azurite: AzuriteService;
before(async () => {
  azurite = await startAzurite();
});
after(async () => {
  await azurite?.stop();
});

let counter = 0;
// Each store gets its own prefix in one container; every fifth one its own container,
// so both the prefix mapping and container creation are exercised.
const fresh = () => {
  const n = ++counter;
  const url = n % 5 === 0 ? azurite.url(`contract-${n}`) : azurite.url('contract', `run-${n}/nested`);
  return AzureBlobStorage.open(url, { env: azurite.env });
};

storageContract('azure-blob (Azurite)', fresh, { conditionalCreate: true });

describe('azure-blob specifics', () => {
  it('keeps stores under different prefixes apart', async () => {
    const a = await AzureBlobStorage.open(azurite.url('shared', 'a'), { env: azurite.env });
    const b = await AzureBlobStorage.open(azurite.url('shared', 'ab'), { env: azurite.env });
    await a.put('k', Buffer.from('a'));
    await b.put('k', Buffer.from('b'));
    assert.deepEqual((await listAll(a, '')).map((i) => i.key), ['k']);
    assert.equal((await a.get('k')).toString(), 'a');
    assert.equal((await b.get('k')).toString(), 'b');
  });

  it('refuses a wrong key with STORAGE_AUTH', async () => {
    const env = { ...azurite.env, AZURE_STORAGE_KEY: Buffer.alloc(64, 1).toString('base64') };
    await expectCode(AzureBlobStorage.open(azurite.url('auth'), { env }), 'STORAGE_AUTH');
  });

  it('reports a service that does not answer as STORAGE_UNAVAILABLE (retryable)', async () => {
    const env = { ...azurite.env, LIFEBOAT_AZURE_ENDPOINT: `http://127.0.0.1:1/${AZURITE_ACCOUNT}` };
    await expectCode(AzureBlobStorage.open(azurite.url('down'), { env }), 'STORAGE_UNAVAILABLE');
  });

  it('stops start-up without credentials or with a malformed URL', async () => {
    await expectCode(AzureBlobStorage.open(azurite.url('x'), { env: {} }), 'CONFIG_INVALID');
    await expectCode(AzureBlobStorage.open('azblob://account', { env: azurite.env }), 'CONFIG_INVALID');
    await expectCode(AzureBlobStorage.open(azurite.url('x'), { env: { ...azurite.env, AZURE_STORAGE_ACCOUNT: 'other' } }), 'CONFIG_INVALID');
  });
});

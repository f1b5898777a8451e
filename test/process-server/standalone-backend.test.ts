/**
 * The standalone process server's backend (src/process-server/http-backend.ts) against a
 * fake vault API and a fake clock: the grant cache, the revocation bound, the grace when
 * the vault does not answer, and the store opened once with the operator's passphrase.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'node:test';
import { LifeboatError } from '../../src/core/errors.js';
import type { AgentGrant } from '../../src/process-server/backend.js';
import { HttpBackend } from '../../src/process-server/http-backend.js';
import { openStorage } from '../../src/storage/registry.js';
import { Repository } from '../../src/store/repository.js';
import { makeTempDir } from '../helpers/env.js';
import { PASS, TEST_SCRYPT } from '../helpers/store.js';

const GRANT: AgentGrant = { machineId: 'm1', itemId: 'i1', vaultId: 'v1', generation: 1, disks: ['i1.sda'] };

function fakeApi() {
  const state = { answer: 'grant' as 'grant' | 'refuse' | 'down', asked: 0, storeAsked: 0, storeUrl: '' };
  return {
    state,
    api: {
      async authorize(_id: string, input: { machineId: string; certificateSerial: string }): Promise<AgentGrant> {
        state.asked++;
        if (state.answer === 'down') throw new LifeboatError('SERVER_UNREACHABLE', 'the vault did not answer');
        if (state.answer === 'refuse') throw new LifeboatError('AGENT_UNAUTHORIZED', `machine ${input.machineId} refused`);
        return GRANT;
      },
      async storeUrl(): Promise<string> {
        state.storeAsked++;
        return state.storeUrl;
      },
    },
  };
}

test('grants are reused for 10 s, a refusal ends them, a silent vault is covered for 5 minutes only', async () => {
  let now = 1_000_000;
  const { api, state } = fakeApi();
  const backend = new HttpBackend({ api, processServerId: 'ps1', passphrase: PASS, now: () => now });
  const input = { machineId: 'm1', certificateSerial: 'abc' };
  assert.deepEqual(await backend.authorize(input), GRANT);
  now += 9_000;
  await backend.authorize(input);
  assert.equal(state.asked, 1, 'within 10 s the grant is reused');
  now += 2_000;
  await backend.authorize(input);
  assert.equal(state.asked, 2, 'after 10 s the vault is asked again');

  // The vault down: the last grant admits the agent for up to 5 minutes.
  state.answer = 'down';
  now += 60_000;
  assert.deepEqual(await backend.authorize(input), GRANT);
  now += 250_000;
  await assert.rejects(backend.authorize(input), (e: LifeboatError) => e.code === 'SERVER_UNREACHABLE');

  // A refusal is final, and no stale grant overrides it afterwards.
  state.answer = 'grant';
  await backend.authorize(input);
  state.answer = 'refuse';
  now += 10_001;
  await assert.rejects(backend.authorize(input), (e: LifeboatError) => e.code === 'AGENT_UNAUTHORIZED');
  state.answer = 'down';
  await assert.rejects(backend.authorize(input), (e: LifeboatError) => e.code === 'SERVER_UNREACHABLE');
  // Another serial of the same machine is never served from this one's grant.
  state.answer = 'refuse';
  await assert.rejects(backend.authorize({ machineId: 'm1', certificateSerial: 'def' }), (e: LifeboatError) => e.code === 'AGENT_UNAUTHORIZED');
});

test("the store the vault names is opened once with the operator's passphrase; a wrong one is refused and retried", async () => {
  const tmp = makeTempDir('standalone-backend');
  try {
    const url = pathToFileURL(join(tmp.path, 'store')).href;
    await Repository.init(await openStorage(url), { passphrase: PASS, scrypt: TEST_SCRYPT });
    const wrong = fakeApi();
    wrong.state.storeUrl = url;
    const refused = new HttpBackend({ api: wrong.api, processServerId: 'ps1', passphrase: 'not the passphrase' });
    await assert.rejects(refused.repository('v1'), (e: LifeboatError) => e.code === 'WRONG_PASSPHRASE');
    await assert.rejects(refused.repository('v1'), (e: LifeboatError) => e.code === 'WRONG_PASSPHRASE');
    assert.equal(wrong.state.storeAsked, 2, 'a failed open is not cached');

    const { api, state } = fakeApi();
    state.storeUrl = url;
    const backend = new HttpBackend({ api, processServerId: 'ps1', passphrase: PASS });
    const a = await backend.repository('v1');
    const b = await backend.repository('v1');
    assert.equal(a, b);
    assert.equal(state.storeAsked, 1);
    await backend.close();
  } finally {
    tmp.cleanup();
  }
});

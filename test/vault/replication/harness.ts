import { join } from 'node:path';
import type { Role } from '../../../src/core/model.js';
import { DbTokens } from '../../../src/vault/services/db-services.js';
import { startVaultServer, type VaultServer, type VaultServerOptions } from '../../../src/vault/server.js';
import { TEST_SCRYPT } from '../../helpers/store.js';

/** The store passphrase seedBasics gives its vault (write-only: the vault seals it). */
export const STORE_PASSPHRASE = 'canary-store-Passphrase-5c1d';

/** A clock that runs with real time plus an offset the test moves forward. */
export function offsetClock(): { now: () => Date; advance(ms: number): void } {
  let offset = 0;
  return {
    now: () => new Date(Date.now() + offset),
    advance: (ms) => {
      offset += ms;
    },
  };
}

export interface Call {
  status: number;
  text: string;
  json: Record<string, unknown>;
}

export function client(url: string) {
  const responses: string[] = [];
  const call = async (method: string, path: string, token: string | undefined, body?: unknown): Promise<Call> => {
    const res = await fetch(url + path, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    responses.push(text);
    return { status: res.status, text, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };
  return { call, responses };
}

export async function start(dataDir: string, options: Partial<VaultServerOptions> = {}): Promise<VaultServer> {
  return startVaultServer({ dataDir, host: '127.0.0.1', port: 0, storeScrypt: TEST_SCRYPT, ...options });
}

/** A token of a new user with `role`. */
export async function tokenFor(server: VaultServer, role: Role, now: () => Date): Promise<string> {
  const user = await server.repos.users.create({ name: `${role}-${Math.random().toString(36).slice(2, 8)}`, role });
  return (await new DbTokens(server.repos, now).create({ userId: user.id, name: `${role} token`, expiresAt: null })).secret;
}

/** A vault with a store passphrase (through the API), a configuration server (in the database: registration is another route), a policy. */
export async function seedBasics(server: VaultServer, token: string, storeDir: string) {
  const { call } = client(server.url);
  const vault = await call('POST', '/api/v1/vaults', token, {
    name: 'recovery-west',
    location: 'west',
    storeUrl: `file://${join(storeDir, 'store')}`,
    storePassphrase: STORE_PASSPHRASE,
  });
  if (vault.status !== 201) throw new Error(vault.text);
  const configServer = await server.repos.configServers.create({ vaultId: String(vault.json.id), name: 'cs-1', address: '10.0.0.2', version: '0.1.0' });
  const policy = await call('POST', '/api/v1/policies', token, { vaultId: vault.json.id, name: 'gold', rpoThresholdSeconds: 600 });
  if (policy.status !== 201) throw new Error(policy.text);
  return { vaultId: String(vault.json.id), configServerId: configServer.id, policyId: String(policy.json.id) };
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A step handler that waits until released, and gives up when the vault stops. */
export function gate(): { handler: (ctx: { signal: AbortSignal }) => Promise<void>; release(): void; entered: Promise<void> } {
  let release!: () => void;
  let entered!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const enteredP = new Promise<void>((r) => (entered = r));
  return {
    release,
    entered: enteredP,
    handler: async ({ signal }) => {
      entered();
      await new Promise<void>((resolve, reject) => {
        void released.then(resolve);
        signal.addEventListener('abort', () => reject(new Error('vault stopping')));
      });
    },
  };
}

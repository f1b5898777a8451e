/**
 * The real assembled vault (startVaultServer: SQLite in a temp data dir, port 0)
 * with its logger writing debug-level JSON lines into memory, for the canary,
 * role-matrix and fuzz tests.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { ROLES, type Role } from '../../../src/core/model.js';
import { createVaultLogger } from '../../../src/vault/logging/logger.js';
import { DbTokens } from '../../../src/vault/services/db-services.js';
import { startVaultServer, type VaultServer } from '../../../src/vault/server.js';
import { makeTempDir } from '../../helpers/env.js';
import { TEST_SCRYPT } from '../../helpers/store.js';

export interface Call {
  status: number;
  type: string;
  text: string;
  json: Record<string, unknown>;
}

export interface LiveVault {
  server: VaultServer;
  dataDir: string;
  /** Every line the vault's logger wrote. */
  logLines: string[];
  /** Every response body the tests received through `call`. */
  responses: string[];
  ownerToken: string;
  call(method: string, path: string, token?: string, body?: unknown, headers?: Record<string, string>): Promise<Call>;
  /** A token for a new user of each role (owner: the initial admin token). */
  tokensByRole(): Promise<Record<Role, string>>;
  /** A vault, a registration key and a registered configuration server (its credential). */
  registerServer(): Promise<{ vaultId: string; serverId: string; credential: string; registrationKey: string; registrationResponse: string }>;
  /**
   * A protected machine with an enrolled agent, made through the API where the API
   * makes it (enrollment token, enrollment with a real CSR) and through the
   * repositories for the rest: its item is in initial replication.
   */
  enrollAgent(server: { vaultId: string; serverId: string }, disks?: { name: string; sizeBytes: number }[]): Promise<EnrolledAgent>;
  /** A scratch directory of this vault's test (removed by stop). */
  readonly tmpDir: string;
  /** Closes the vault, lets `inspect` read its data directory (database, key file), then deletes it. */
  stop(inspect?: (dataDir: string) => void): Promise<void>;
}

export interface EnrolledAgent {
  itemId: string;
  machineId: string;
  credential: string;
  certificatePem: string;
  keyPem: string;
  enrollResponse: string;
  token: string;
}

/** An agent's key pair and a CSR for it (what the agent makes; its key never leaves it). */
export async function agentCsr(subject = 'CN=agent-self-chosen'): Promise<{ csrPem: string; keyPem: string }> {
  const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: subject, keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
  return { csrPem: csr.toString('pem'), keyPem: `-----BEGIN PRIVATE KEY-----\n${pkcs8}\n-----END PRIVATE KEY-----\n` };
}

export async function startLiveVault(prefix: string): Promise<LiveVault> {
  const tmp = makeTempDir(prefix);
  const dataDir = join(tmp.path, 'data');
  const logLines: string[] = [];
  const logger = createVaultLogger({ level: 'debug', destination: { write: (line: string) => void logLines.push(line) } });
  const server = await startVaultServer({ dataDir, host: '127.0.0.1', port: 0, logger, alertIntervalMs: 50, jobs: { pollIntervalMs: 20 }, storeScrypt: TEST_SCRYPT });
  const ownerToken = server.initialAdminToken;
  if (!ownerToken) throw new Error('a fresh vault must return its admin token');
  const responses: string[] = [];
  const call = async (method: string, path: string, token?: string, body?: unknown, headers: Record<string, string> = {}): Promise<Call> => {
    const res = await fetch(server.url + path, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    responses.push(text);
    let json: Record<string, unknown> = {};
    try {
      json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
    } catch {
      json = {};
    }
    return { status: res.status, type: res.headers.get('content-type') ?? '', text, json };
  };
  let stopped = false;
  return {
    server,
    dataDir,
    tmpDir: tmp.path,
    logLines,
    responses,
    ownerToken,
    call,
    tokensByRole: async () => {
      const out = { owner: ownerToken } as Record<Role, string>;
      for (const role of ROLES) {
        if (role === 'owner') continue;
        const user = await call('POST', '/api/v1/users', ownerToken, { name: `${role}-${Math.random().toString(36).slice(2, 8)}`, role });
        if (user.status !== 201) throw new Error(user.text);
        out[role] = (await new DbTokens(server.repos, () => new Date()).create({ userId: String(user.json.id), name: `${role} token`, expiresAt: null })).secret;
      }
      return out;
    },
    registerServer: async () => {
      const vault = await call('POST', '/api/v1/vaults', ownerToken, {
        name: `v-${Math.random().toString(36).slice(2, 8)}`,
        location: 'west',
        storeUrl: `file://${join(tmp.path, 'store')}`,
      });
      if (vault.status !== 201) throw new Error(vault.text);
      const vaultId = String(vault.json.id);
      const key = await call('POST', `/api/v1/vaults/${vaultId}/registration-keys`, ownerToken, {});
      if (key.status !== 201) throw new Error(key.text);
      const registrationKey = String(key.json.key);
      const reg = await call('POST', '/api/v1/config-servers/register', undefined, {
        registrationKey,
        name: `cs-${Math.random().toString(36).slice(2, 8)}`,
        address: '10.0.0.5',
        version: '0.1.0',
        clock: new Date().toISOString(),
      });
      if (reg.status !== 201) throw new Error(reg.text);
      const serverId = String((reg.json.server as { id: string }).id);
      return { vaultId, serverId, credential: String(reg.json.credential), registrationKey, registrationResponse: reg.text };
    },
    enrollAgent: async ({ vaultId, serverId }, disks = [{ name: 'sda', sizeBytes: 1 << 20 }]) => {
      const repos = server.repos;
      const suffix = Math.random().toString(36).slice(2, 8);
      const machine = await repos.machines.create({ configServerId: serverId, name: `m-${suffix}`, privateIp: '10.0.0.7', os: 'debian-12', kernel: null, supported: true, supportReason: null });
      const policy = await repos.policies.create({ vaultId, name: `p-${suffix}`, rpoThresholdSeconds: 60, retentionHours: 24, appConsistentFrequencyMinutes: 60, crashConsistentFrequencySeconds: 30 });
      const item = await repos.items.create({
        vaultId,
        machineId: machine.id,
        policyId: policy.id,
        state: 'initial-replication',
        compute: { targetName: machine.name, size: 'small', network: null, subnet: null, ip: null },
        disks: [],
      });
      await repos.items.update(item.id, { generation: 1 });
      const tokenRes = await call('POST', `/api/v1/items/${item.id}/enrollment-token`, ownerToken, {});
      if (tokenRes.status !== 201) throw new Error(tokenRes.text);
      const token = String(tokenRes.json.token);
      const { csrPem, keyPem } = await agentCsr();
      const enroll = await call('POST', '/api/v1/agents/enroll', undefined, {
        itemId: item.id,
        token,
        csrPem,
        hostname: machine.name,
        disks: disks.map((d) => ({ ...d, tracker: 'scan' })),
      });
      if (enroll.status !== 201) throw new Error(enroll.text);
      return {
        itemId: item.id,
        machineId: machine.id,
        credential: String(enroll.json.credential),
        certificatePem: String(enroll.json.certificatePem),
        keyPem,
        enrollResponse: enroll.text,
        token,
      };
    },
    stop: async (inspect) => {
      if (stopped) return;
      stopped = true;
      try {
        await server.close();
        inspect?.(dataDir);
      } finally {
        tmp.cleanup();
      }
    },
  };
}

/** A concrete path for a route pattern: ":id" becomes a well-formed id that does not exist. */
export function concretePath(url: string, id = '01JAAAAAAAAAAAAAAAAAAAAAAA'): string {
  return url.replace(/:[A-Za-z0-9_]+/g, id);
}

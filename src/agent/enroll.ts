import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { openSync, closeSync, fstatSync, readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { basename } from 'node:path';
import * as x509 from '@peculiar/x509';
import { LifeboatError } from '../core/errors.js';
import type { AgentConfig, AgentFileConfig, DiskSpec } from './config.js';
import { StateDir } from './state.js';
import type { VaultClient } from './vault-client.js';

// The library is typed against the DOM `Crypto`, which node:crypto's webcrypto implements.
x509.cryptoProvider.set(webcrypto as unknown as x509.CryptoProvider extends { set(value: infer C): unknown } ? C : never);

const ALGORITHM: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGNING: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };

export interface EnrollOptions {
  readonly vaultUrl: string;
  readonly itemId: string;
  /** The one-time enrollment token (never printed, never logged). */
  readonly token: string;
  readonly config: AgentFileConfig;
  readonly stateDir: string;
  readonly vault: VaultClient;
  readonly hostname?: string;
  /** The size of each disk; default: read from the tracker's `path` option (file or block device). */
  readonly diskSize?: (disk: DiskSpec) => number;
  readonly now?: () => Date;
}

export interface EnrollResult {
  readonly machineId: string;
  readonly itemId: string;
  readonly config: AgentConfig;
  readonly stateDir: string;
}

/**
 * Enrollment (docs/replication.md, "Identity, enrollment"): an ECDSA P-256 key
 * made here, a CSR with CN `agent-pending`, the one-time token to the vault; the
 * answer (certificate, CA, credential, config) and the key are stored in the state
 * directory, secrets 0600, every file atomically. The key never leaves the machine.
 */
export async function enroll(options: EnrollOptions): Promise<EnrollResult> {
  if (!options.token.trim()) throw new LifeboatError('USAGE', 'the enrollment token is empty');
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=agent-pending',
    keys: keys as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]['keys'],
    signingAlgorithm: SIGNING,
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  const keyPem = x509.PemConverter.encode(pkcs8, 'PRIVATE KEY');
  const sizeOf = options.diskSize ?? diskSizeFromSpec;
  const answer = await options.vault.enroll({
    itemId: options.itemId,
    token: options.token.trim(),
    csrPem: csr.toString('pem'),
    hostname: options.hostname ?? osHostname(),
    disks: options.config.disks.map((d) => {
      const sizeBytes = typeof d.tracker.sizeBytes === 'number' ? d.tracker.sizeBytes : sizeOf(d);
      if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0)
        throw new LifeboatError('CONFIG_INVALID', `disk ${d.name}: its size is unknown; give tracker.path (a readable image or block device) or tracker.sizeBytes in agent.json`);
      return { name: d.name, sizeBytes, tracker: d.tracker.kind };
    }),
  });
  const state = new StateDir(options.stateDir);
  state.saveIdentity(
    {
      machineId: answer.machineId,
      itemId: answer.itemId,
      vaultUrl: options.vaultUrl,
      enrolledAt: (options.now?.() ?? new Date()).toISOString(),
      keyPem,
      certificatePem: answer.certificatePem,
      caPem: answer.caPem,
      credential: answer.credential,
    },
    answer.config,
  );
  return { machineId: answer.machineId, itemId: answer.itemId, config: answer.config, stateDir: options.stateDir };
}

/** The size of a disk from its tracker's `path` option: a file's length or a block device's size; 0 when unknown. */
export function diskSizeFromSpec(disk: DiskSpec): number {
  const path = disk.tracker.path;
  if (typeof path !== 'string') return 0;
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return 0;
  }
  try {
    const st = fstatSync(fd);
    if (st.isFile()) return st.size;
    if (st.isBlockDevice()) {
      const major = Math.floor(st.rdev / 256) & 0xfff;
      const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
      for (const sys of [`/sys/dev/block/${major}:${minor}/size`, `/sys/class/block/${basename(path)}/size`]) {
        try {
          return Number(readFileSync(sys, 'utf8').trim()) * 512;
        } catch {
          // try the next place
        }
      }
    }
    return 0;
  } finally {
    closeSync(fd);
  }
}

/** Reads KEY=value lines of a POSIX env file (agent.env): optional single or double quotes, # comments. */
export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) continue;
    let value = (m[2] as string).trim();
    if (value.startsWith("'")) value = value.replace(/^'|'$/g, '').replace(/'\\''/g, "'");
    else if (value.startsWith('"')) value = value.replace(/^"|"$/g, '').replace(/\\(["\\$`])/g, '$1');
    out[m[1] as string] = value;
  }
  return out;
}

export { StateDir };

import 'reflect-metadata';
import type { Command } from 'commander';
import { randomBytes, webcrypto } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { LifeboatError, isLifeboatError } from '../../core/errors.js';
import { HttpBackend, VaultProcessServerApi } from '../../process-server/http-backend.js';
import { startProcessServer, type ProcessServer } from '../../process-server/server.js';
import { createVaultLogger } from '../../vault/logging/logger.js';
import { registerSecret } from '../../vault/secrets/redact.js';
import { emit, parseBytes, secret, type Env, type StoreFlags } from '../context.js';

// The library is typed against the DOM `Crypto`, which node:crypto's webcrypto implements.
x509.cryptoProvider.set(webcrypto as unknown as x509.CryptoProvider extends { set(value: infer C): unknown } ? C : never);

const ALGORITHM: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGNING: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
/** How often the figures go to the vault (spool, throughput, heartbeat time). */
const HEARTBEAT_MS = 5000;
export const DEFAULT_PROCESS_SERVER_STATE_DIR = join(homedir(), '.local', 'share', 'lifeboat', 'process-server');

interface RunFlags extends Pick<StoreFlags, 'passphraseFile' | 'json' | 'quiet'> {
  vault?: string;
  credentialFile: string;
  name: string;
  listen: string;
  address?: string;
  san: string[];
  stateDir?: string;
  spoolDir?: string;
  spoolLimit: string;
  workers: string;
}

/** What the state directory keeps besides the key and certificates. */
interface SavedIdentity {
  readonly version: 1;
  readonly id: string;
  readonly name: string;
  readonly vaultUrl: string;
  readonly registeredAt: string;
}

/**
 * The state directory of a standalone process server (docs/replication.md, "Standalone
 * process server"): `key.pem` (its private key, PKCS#8, 0600: made here, never sent),
 * `cert.pem` and `ca.pem` (from the vault), `identity.json` ({ version, id, name, vaultUrl,
 * registeredAt }). Every file is written atomically (temp, fsync, rename, directory fsync).
 */
class ProcessServerState {
  constructor(readonly path: string) {}

  read(name: string): string | undefined {
    try {
      return readFileSync(join(this.path, name), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new LifeboatError('CONFIG_INVALID', `cannot read ${join(this.path, name)}`, { cause: err });
    }
  }

  write(name: string, text: string, mode = 0o644): void {
    mkdirSync(this.path, { recursive: true, mode: 0o700 });
    const path = join(this.path, name);
    const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      const fd = openSync(tmp, 'wx', mode);
      try {
        writeSync(fd, text);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, path);
      const dir = openSync(dirname(path), 'r');
      try {
        fsyncSync(dir);
      } finally {
        closeSync(dir);
      }
    } catch (err) {
      rmSync(tmp, { force: true });
      throw new LifeboatError('TARGET_UNWRITABLE', `cannot write ${path}`, { cause: err });
    }
  }

  identity(): SavedIdentity | undefined {
    const text = this.read('identity.json');
    if (text === undefined) return undefined;
    try {
      const parsed = JSON.parse(text) as SavedIdentity;
      if (parsed.version === 1 && typeof parsed.id === 'string') return parsed;
    } catch {
      // reported below
    }
    throw new LifeboatError('CONFIG_INVALID', `${join(this.path, 'identity.json')} is damaged`);
  }
}

/** The process server's key pair: the stored one, or a new one stored 0600 first. */
async function keyPair(state: ProcessServerState): Promise<{ keys: webcrypto.CryptoKeyPair; keyPem: string }> {
  let keyPem = state.read('key.pem');
  if (keyPem === undefined) {
    const fresh = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    keyPem = x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', fresh.privateKey), 'PRIVATE KEY');
    state.write('key.pem', keyPem, 0o600);
  }
  const der = x509.PemConverter.decodeFirst(keyPem);
  const privateKey = await webcrypto.subtle.importKey('pkcs8', der, ALGORITHM, true, ['sign']);
  // The public half from the private key's JWK (x, y), for the CSR.
  const { d: _d, key_ops: _ops, ...pub } = await webcrypto.subtle.exportKey('jwk', privateKey);
  const publicKey = await webcrypto.subtle.importKey('jwk', { ...pub, key_ops: ['verify'] }, ALGORITHM, true, ['verify']);
  return { keys: { privateKey, publicKey }, keyPem };
}

async function csrOf(keys: webcrypto.CryptoKeyPair, name: string): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${name.replace(/[,+="\\<>;#]/g, '_')}`,
    keys: keys as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]['keys'],
    signingAlgorithm: SIGNING,
  });
  return csr.toString('pem');
}

function firstLine(path: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new LifeboatError('USAGE', `cannot read the ${what} file ${path}`, { cause: err });
  }
  const line = (text.split(/\r?\n/)[0] ?? '').trim();
  if (line === '') throw new LifeboatError('USAGE', `the ${what} file ${path} is empty`);
  return line;
}

export function register(parent: Command, env: Env, signals: AbortSignal): void {
  parent
    .command('run')
    .description(
      'run a standalone process server: registers with the vault under a configuration server (its credential), receives agents over TLS, spools and uploads into the store; until SIGTERM',
    )
    .option('--vault <url>', 'the vault server URL (else LIFEBOAT_SERVER)')
    .requiredOption('--credential-file <file>', 'the configuration server credential (lifeboat config-server register --credential-out FILE)')
    .requiredOption('--name <name>', "this process server's name under its configuration server (the same name again replaces its certificate)")
    .option('--listen <host:port>', 'TLS address agents connect to (port 0 picks one)', '0.0.0.0:9443')
    .option('--address <host>', 'the host agents dial (a name or IP in its certificate); default the --listen host')
    .option('--san <name>', 'another name or address for the certificate (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--state-dir <dir>', `key, certificates and id (default $LIFEBOAT_PROCESS_SERVER_STATE_DIR or ${DEFAULT_PROCESS_SERVER_STATE_DIR})`)
    .option('--spool-dir <dir>', 'the spool (default <state dir>/spool)')
    .option('--spool-limit <size>', 'spool size limit (at 100 % agents are told to wait)', '10G')
    .option('--workers <n>', 'seal worker threads', '2')
    .option('--passphrase-file <file>', "the stores' passphrase from the first line of this file (else LIFEBOAT_PASSPHRASE): the vault never hands it out")
    .action(async (opts: RunFlags, cmd: Command) => {
      const vaultUrl = opts.vault ?? env.env.LIFEBOAT_SERVER;
      if (!vaultUrl) throw new LifeboatError('USAGE', 'no vault given: pass --vault URL or set LIFEBOAT_SERVER');
      const m = /^(.*):(\d+)$/.exec(opts.listen);
      if (!m) throw new LifeboatError('USAGE', '--listen must be HOST:PORT');
      const host = (m[1] as string).replace(/^\[|\]$/g, '');
      const listenPort = Number(m[2]);
      if (!Number.isSafeInteger(listenPort) || listenPort > 65535) throw new LifeboatError('USAGE', '--listen port must be 0-65535');
      const wildcard = host === '0.0.0.0' || host === '::' || host === '';
      const address = opts.address ?? (wildcard ? undefined : host);
      if (!address) throw new LifeboatError('USAGE', 'pass --address HOST: the host agents dial (the --listen host is a wildcard)');
      const workers = Number(opts.workers);
      if (!Number.isSafeInteger(workers) || workers < 1) throw new LifeboatError('USAGE', '--workers must be a whole number ≥ 1');
      const spoolLimitBytes = parseBytes(opts.spoolLimit);
      const credential = firstLine(opts.credentialFile, 'credential');
      const passphrase = secret(opts, env);
      registerSecret(credential);
      registerSecret(passphrase);
      const state = new ProcessServerState(opts.stateDir ?? env.env.LIFEBOAT_PROCESS_SERVER_STATE_DIR ?? DEFAULT_PROCESS_SERVER_STATE_DIR);
      const logger = createVaultLogger({ env: env.env, destination: env.stderr }).child({ component: 'process-server' });
      let root = cmd;
      while (root.parent) root = root.parent;
      const version = root.version() ?? '0.0.0';
      const api = new VaultProcessServerApi(vaultUrl, credential);

      // Registered on every start (address and port may have changed; a fresh certificate);
      // a vault that does not answer is not fatal when a certificate was stored before.
      const { keys, keyPem } = await keyPair(state);
      const csrPem = await csrOf(keys, `lifeboat-process-server-${opts.name}`);
      const registerAt = async (port: number): Promise<{ id: string; certPem: string; caPem: string }> => {
        const answer = await api.register({ name: opts.name, address, port, csrPem, sans: opts.san, version });
        state.write('cert.pem', answer.certificatePem);
        state.write('ca.pem', answer.caPem);
        state.write('identity.json', JSON.stringify({ version: 1, id: answer.id, name: opts.name, vaultUrl, registeredAt: new Date().toISOString() } satisfies SavedIdentity) + '\n');
        return { id: answer.id, certPem: answer.certificatePem, caPem: answer.caPem };
      };
      let registered: { id: string; certPem: string; caPem: string };
      try {
        registered = await registerAt(listenPort === 0 ? 1 : listenPort);
      } catch (err) {
        const saved = state.identity();
        const certPem = state.read('cert.pem');
        const caPem = state.read('ca.pem');
        if (!isLifeboatError(err, 'SERVER_UNREACHABLE') || !saved || saved.name !== opts.name || !certPem || !caPem) throw err;
        logger.warn({ err: (err as Error).message, id: saved.id }, 'vault unreachable: starting with the stored certificate');
        registered = { id: saved.id, certPem, caPem };
      }

      const backend = new HttpBackend({ api, processServerId: registered.id, passphrase, env: env.env, logger });
      let server: ProcessServer;
      try {
        server = await startProcessServer({
          host: wildcard ? undefined : host,
          port: listenPort,
          tls: { certPem: registered.certPem, keyPem, caPem: registered.caPem },
          spoolDir: opts.spoolDir ?? join(state.path, 'spool'),
          spoolLimitBytes,
          workers,
          backend,
          logger,
        });
      } catch (err) {
        await backend.close();
        throw err;
      }
      const ps = server;
      try {
        // A picked port is known only now: the vault must tell agents this one.
        if (listenPort === 0) await registerAt(ps.port);
      } catch (err) {
        await ps.close();
        await backend.close();
        throw err;
      }
      const tick = (): void => {
        const s = ps.stats();
        const stats = {
          bytesIn: s.bytesIn,
          segmentsIn: s.segmentsIn,
          segmentsUploaded: s.segmentsUploaded,
          spoolUsedBytes: s.spoolUsedBytes,
          spoolLimitBytes: s.spoolLimitBytes,
          spooledSegments: s.spooledSegments,
          uploadLagMs: s.uploadLagMs,
          connectedAgents: s.connectedAgents,
          uploadErrors: s.uploadErrors,
        };
        api.heartbeat(registered.id, stats, version).catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'process server heartbeat failed'));
      };
      tick();
      const heartbeats = setInterval(tick, HEARTBEAT_MS);
      heartbeats.unref();
      emit(
        opts,
        env,
        { id: registered.id, name: opts.name, port: ps.port, address, stateDir: state.path },
        `process server ${opts.name} (${registered.id}) listening on ${wildcard ? '*' : host}:${ps.port} (TLS; agents dial ${address}:${ps.port}); state in ${state.path}`,
      );
      await new Promise<void>((resolve) => {
        if (signals.aborted) resolve();
        signals.addEventListener('abort', () => resolve(), { once: true });
      });
      clearInterval(heartbeats);
      await ps.close();
      await backend.close();
    });
}

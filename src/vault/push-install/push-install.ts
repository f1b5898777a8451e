import { createHash } from 'node:crypto';
import { join, posix } from 'node:path';
import { Client, type ClientChannel, type ConnectConfig, type SFTPWrapper } from 'ssh2';
import { LifeboatError, isLifeboatError } from '../../core/errors.js';
import { redact } from '../secrets/redact.js';
import { manifest, readBundle, type Bundle } from './bundle.js';

/**
 * Push install: copies the mobility agent to a Linux machine over SSH and starts it,
 * the way the seed's configuration server does (docs/push-install.md).
 *
 * Contract:
 * - Nothing is written to the machine before its host key is checked and the account
 *   has logged in; a pinned key that differs stops everything with HOST_KEY_MISMATCH.
 * - The bundle is copied into `<remoteDir>.lifeboat-staging`, checked there with
 *   `sha256sum -c`, and only then renamed into `remoteDir`; an interrupted run leaves
 *   the previous install in place (or in `<remoteDir>.lifeboat-old`, which the next run
 *   cleans up). `remoteDir` is replaced whole: it holds the bundle, never agent state.
 * - Running it again with the same bundle gives the same result (idempotent), provided
 *   the start command is (e.g. `systemctl restart`, or one that stops an older agent).
 * - Runs for one machine must not overlap; the caller serialises them per machine.
 * - Errors: HOST_UNREACHABLE (refused, unreachable, no handshake in time),
 *   SSH_AUTH_FAILED, HOST_KEY_MISMATCH, PUSH_INSTALL_FAILED (step, exit status, the
 *   redacted end of stderr). No error or progress event ever carries a credential.
 */

export type PushInstallAuth = { readonly password: string } | { readonly privateKey: string | Buffer; readonly passphrase?: string };

/** Pin a known host key by its OpenSSH SHA256 fingerprint, or accept the first one seen (and store what is returned). */
export type HostKeyPolicy = { readonly sha256: string } | 'accept-new';

export type PushInstallStep = 'connect' | 'probe' | 'prepare' | 'copy' | 'verify' | 'activate' | 'start';

export interface PushInstallOptions {
  readonly host: string;
  /** Default 22. */
  readonly port?: number;
  /** Default root: the agent needs root to read block devices. */
  readonly username?: string;
  readonly auth: PushInstallAuth;
  readonly hostKey: HostKeyPolicy;
  /** Local directory whose contents become `remoteDir`. */
  readonly bundleDir: string;
  /** Absolute path on the machine; default /opt/lifeboat. */
  readonly remoteDir?: string;
  /**
   * Shell command run in `remoteDir` after the bundle is in place. It must return:
   * a background process must redirect its output (`nohup … >/dev/null 2>&1 &`),
   * or the SSH channel stays open until the timeout.
   */
  readonly startCommand?: string;
  /** TCP connect plus SSH handshake and login; default 20 s. */
  readonly connectTimeoutMs?: number;
  /** The whole push install; default 10 minutes. */
  readonly timeoutMs?: number;
  readonly onProgress?: (step: PushInstallStep, percent: number) => void;
}

/** /etc/os-release, the fields the supported-OS check needs. */
export interface OsRelease {
  readonly id: string;
  readonly idLike: readonly string[];
  readonly versionId?: string;
  readonly name?: string;
  readonly prettyName?: string;
}

export interface PushInstallResult {
  readonly os: OsRelease;
  /** `uname -r`. */
  readonly kernel: string;
  /** `uname -m`. */
  readonly arch: string;
  /** OpenSSH-style `SHA256:…` fingerprint of the host key that was seen: pin it next time. */
  readonly fingerprint: string;
  readonly remoteDir: string;
  readonly filesCopied: number;
  readonly bytesCopied: number;
}

export const DEFAULT_REMOTE_DIR = '/opt/lifeboat';
const DEFAULT_CONNECT_TIMEOUT_MS = 20_000;
const DEFAULT_TIMEOUT_MS = 10 * 60_000;
const STDERR_TAIL_CHARS = 2_000;
const MANIFEST_NAME = '.lifeboat-manifest.sha256';

const PROGRESS: Record<PushInstallStep, number> = { connect: 0, probe: 8, prepare: 10, copy: 12, verify: 88, activate: 94, start: 97 };

export async function pushInstall(options: PushInstallOptions): Promise<PushInstallResult> {
  const o = resolveOptions(options);
  const secrets = secretsOf(options.auth);
  const bundle = await readBundle(o.bundleDir);
  const target = `${o.username}@${o.host}:${o.port}`;
  const progress = (step: PushInstallStep, percent: number): void => options.onProgress?.(step, Math.min(100, Math.round(percent)));

  progress('connect', PROGRESS.connect);
  const { client, fingerprint } = await connect(o, options.auth, target);
  let step: PushInstallStep = 'probe';
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    client.destroy();
  }, Math.max(1, o.timeoutMs - (Date.now() - o.startedAt)));
  const fail = (message: string, details: Record<string, unknown> = {}, retryable?: boolean, cause?: unknown): LifeboatError =>
    new LifeboatError('PUSH_INSTALL_FAILED', `push install to ${target} failed at step "${step}": ${redact(message, secrets)}`, {
      details: { host: o.host, port: o.port, username: o.username, step, ...redact(details, secrets) as Record<string, unknown> },
      ...(retryable === undefined ? {} : { retryable }),
      ...(cause === undefined ? {} : { cause: redact(cause, secrets) }),
    });
  const exec = (command: string): Promise<string> => run(client, command, fail);

  try {
    progress('probe', PROGRESS.probe);
    const probed = parseProbe(await exec(PROBE_SCRIPT));
    if (probed.system !== 'Linux') throw fail(`the machine runs ${probed.system || 'an unknown system'}, not Linux`);
    if (!probed.hasSha256sum) throw fail('sha256sum is missing on the machine (package coreutils)');

    const staging = `${o.remoteDir}.lifeboat-staging`;
    const old = `${o.remoteDir}.lifeboat-old`;
    step = 'prepare';
    progress('prepare', PROGRESS.prepare);
    await exec(`set -e; mkdir -p -- ${q(posix.dirname(o.remoteDir))}; rm -rf -- ${q(staging)}; mkdir -m 0755 -- ${q(staging)}`);

    step = 'copy';
    progress('copy', PROGRESS.copy);
    const copied = await copyBundle(client, bundle, staging, (bytes) =>
      progress('copy', PROGRESS.copy + ((PROGRESS.verify - PROGRESS.copy) * bytes) / Math.max(1, bundle.totalBytes)),
    );

    step = 'verify';
    progress('verify', PROGRESS.verify);
    if (copied.files > 0) await exec(`cd -- ${q(staging)} && sha256sum --quiet --strict -c ${MANIFEST_NAME}`);

    step = 'activate';
    progress('activate', PROGRESS.activate);
    await exec(
      `set -e; sync; rm -rf -- ${q(old)}; ` +
        `if [ -e ${q(o.remoteDir)} ] || [ -L ${q(o.remoteDir)} ]; then mv -- ${q(o.remoteDir)} ${q(old)}; fi; ` +
        `mv -- ${q(staging)} ${q(o.remoteDir)}; rm -rf -- ${q(old)}; sync`,
    );

    if (o.startCommand !== undefined) {
      step = 'start';
      progress('start', PROGRESS.start);
      await exec(`cd -- ${q(o.remoteDir)} && ${o.startCommand}`);
    }
    progress(step, 100);
    return {
      os: probed.os,
      kernel: probed.kernel,
      arch: probed.arch,
      fingerprint,
      remoteDir: o.remoteDir,
      filesCopied: copied.files,
      bytesCopied: copied.bytes,
    };
  } catch (err) {
    if (timedOut) throw fail(`did not finish within ${o.timeoutMs} ms`, { timeoutMs: o.timeoutMs }, true, err);
    if (isLifeboatError(err)) throw err;
    const message = err instanceof Error ? err.message : String(err);
    // The connection went away under us (machine rebooting, network cut): worth another try.
    throw fail(message, {}, true, err);
  } finally {
    clearTimeout(timer);
    client.end();
  }
}

/**
 * Runs one shell command as the account over SSH, with the host key checked as for
 * push install (pinned or accepted on first sight); resolves with its stdout and the
 * host key's fingerprint. Failover and failback use it to shut a machine down or start
 * it when its agent cannot (docs/recovery.md). A non-zero exit is PUSH_INSTALL_FAILED
 * at step "start", with the redacted end of stderr; no error carries a credential.
 */
export async function runRemoteCommand(
  options: Pick<PushInstallOptions, 'host' | 'port' | 'username' | 'auth' | 'hostKey' | 'connectTimeoutMs' | 'timeoutMs'>,
  command: string,
): Promise<{ stdout: string; fingerprint: string }> {
  const o = resolveOptions({ ...options, bundleDir: '', timeoutMs: options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS * 3 });
  const secrets = secretsOf(options.auth);
  const target = `${o.username}@${o.host}:${o.port}`;
  const { client, fingerprint } = await connect(o, options.auth, target);
  const fail: Fail = (message, details = {}, retryable, cause) =>
    new LifeboatError('PUSH_INSTALL_FAILED', `the command on ${target} failed: ${redact(message, secrets)}`, {
      details: { host: o.host, port: o.port, username: o.username, step: 'start', ...(redact(details, secrets) as Record<string, unknown>) },
      ...(retryable === undefined ? {} : { retryable }),
      ...(cause === undefined ? {} : { cause: redact(cause, secrets) }),
    });
  const timer = setTimeout(() => client.destroy(), o.timeoutMs);
  try {
    return { stdout: await run(client, command, fail), fingerprint };
  } finally {
    clearTimeout(timer);
    client.end();
  }
}

// ---- options -----------------------------------------------------------------

interface Resolved {
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly hostKey: HostKeyPolicy;
  readonly bundleDir: string;
  readonly remoteDir: string;
  readonly startCommand?: string;
  readonly connectTimeoutMs: number;
  readonly timeoutMs: number;
  readonly startedAt: number;
}

function resolveOptions(o: PushInstallOptions): Resolved {
  const port = o.port ?? 22;
  const remoteDir = posix.normalize(o.remoteDir ?? DEFAULT_REMOTE_DIR).replace(/\/+$/, '');
  const invalid = (why: string): LifeboatError => new LifeboatError('CONFIG_INVALID', `push install: ${why}`);
  if (o.host.length === 0) throw invalid('the host is empty');
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(`port ${port} is not a TCP port`);
  if (!posix.isAbsolute(remoteDir) || remoteDir === '/' || /[\n\0]/.test(remoteDir)) {
    throw invalid(`the remote directory ${JSON.stringify(o.remoteDir)} must be an absolute path other than /`);
  }
  if (!('password' in o.auth) && !('privateKey' in o.auth)) throw invalid('the account has neither a password nor a private key');
  if (o.hostKey !== 'accept-new' && normaliseFingerprint(o.hostKey.sha256).length !== 43) {
    throw invalid(`the pinned host key ${JSON.stringify(o.hostKey.sha256)} is not a SHA256 fingerprint (SHA256:… as ssh-keygen -l prints it)`);
  }
  return {
    host: o.host,
    port,
    username: o.username ?? 'root',
    hostKey: o.hostKey,
    bundleDir: o.bundleDir,
    remoteDir,
    ...(o.startCommand === undefined ? {} : { startCommand: o.startCommand }),
    connectTimeoutMs: o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    timeoutMs: o.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    startedAt: Date.now(),
  };
}

function secretsOf(auth: PushInstallAuth): string[] {
  if ('password' in auth) return [auth.password];
  const key = typeof auth.privateKey === 'string' ? auth.privateKey : auth.privateKey.toString('utf8');
  return [key, ...key.split('\n').filter((line) => line.length >= 16), ...(auth.passphrase === undefined ? [] : [auth.passphrase])];
}

// ---- connection ----------------------------------------------------------------

/** OpenSSH's fingerprint: unpadded base64 of the SHA-256 of the key blob. */
export function fingerprintOf(keyBlob: Buffer): string {
  return `SHA256:${createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')}`;
}

function normaliseFingerprint(text: string): string {
  return text.trim().replace(/^SHA256:/i, '').replace(/=+$/, '');
}

const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNRESET', 'EPIPE', 'EADDRNOTAVAIL']);

function connect(o: Resolved, auth: PushInstallAuth, target: string): Promise<{ client: Client; fingerprint: string }> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    let seen: string | undefined;
    let mismatch = false;
    let settled = false;
    const details = { host: o.host, port: o.port, username: o.username };
    const settle = (err: LifeboatError): void => {
      if (settled) return;
      settled = true;
      client.destroy();
      reject(err);
    };
    // Stays attached for the connection's life: a late error must not crash the process.
    client.on('error', (err: Error & { level?: string; code?: string }) => {
      if (mismatch) {
        const expected = o.hostKey === 'accept-new' ? '' : `SHA256:${normaliseFingerprint(o.hostKey.sha256)}`;
        settle(
          new LifeboatError('HOST_KEY_MISMATCH', `${target} presented host key ${seen}, not the pinned ${expected}; nothing was sent`, {
            details: { ...details, expected, presented: seen },
          }),
        );
      } else if (err.level === 'client-authentication') {
        settle(
          new LifeboatError('SSH_AUTH_FAILED', `${target} refused the login of ${o.username} (${authKind(auth)} authentication)`, {
            cause: err,
            details: { ...details, method: authKind(auth) },
          }),
        );
      } else if (err.level === 'client-timeout') {
        settle(
          new LifeboatError('HOST_UNREACHABLE', `${target} did not complete an SSH handshake within ${o.connectTimeoutMs} ms`, {
            cause: err,
            details: { ...details, timeoutMs: o.connectTimeoutMs },
          }),
        );
      } else if (err.level === 'client-socket' || (err.code !== undefined && UNREACHABLE_CODES.has(err.code))) {
        settle(
          new LifeboatError('HOST_UNREACHABLE', `cannot connect to ${target}: ${err.code ?? err.message}`, {
            cause: err,
            details: { ...details, errno: err.code },
          }),
        );
      } else {
        settle(
          new LifeboatError('PUSH_INSTALL_FAILED', `push install to ${target} failed at step "connect": ${err.message}`, {
            cause: err,
            details: { ...details, step: 'connect' },
          }),
        );
      }
    });
    client.on('close', () =>
      settle(new LifeboatError('HOST_UNREACHABLE', `${target} closed the connection before login`, { details })),
    );
    client.on('ready', () => {
      if (settled) return;
      settled = true;
      resolve({ client, fingerprint: seen ?? '' });
    });
    const config: ConnectConfig = {
      host: o.host,
      port: o.port,
      username: o.username,
      readyTimeout: o.connectTimeoutMs,
      keepaliveInterval: 10_000,
      keepaliveCountMax: 3,
      tryKeyboard: false,
      hostVerifier: (key: Buffer): boolean => {
        seen = fingerprintOf(key);
        if (o.hostKey === 'accept-new') return true;
        mismatch = normaliseFingerprint(seen) !== normaliseFingerprint(o.hostKey.sha256);
        return !mismatch;
      },
      ...('password' in auth
        ? { password: auth.password }
        : { privateKey: auth.privateKey, ...(auth.passphrase === undefined ? {} : { passphrase: auth.passphrase }) }),
    };
    try {
      client.connect(config);
    } catch (err) {
      // ssh2 parses the private key synchronously; its messages never quote the key.
      const why = err instanceof Error ? err.message.replace(/^Cannot parse privateKey: /, '') : 'unknown reason';
      settle(
        new LifeboatError('SSH_AUTH_FAILED', `the private key of the push-install account for ${target} cannot be used: ${why}`, {
          details: { ...details, method: 'publickey' },
        }),
      );
    }
  });
}

function authKind(auth: PushInstallAuth): string {
  return 'password' in auth ? 'password' : 'publickey';
}

// ---- remote commands -------------------------------------------------------------

type Fail = (message: string, details?: Record<string, unknown>, retryable?: boolean, cause?: unknown) => LifeboatError;

/** Runs `command` with the account's login shell; resolves with stdout when it exits 0. */
function run(client: Client, command: string, fail: Fail): Promise<string> {
  return new Promise((resolve, reject) => {
    client.exec(command, (err, channel: ClientChannel) => {
      if (err) {
        reject(fail(`cannot open a command channel: ${err.message}`, {}, true, err));
        return;
      }
      let stdout = '';
      let stderr = '';
      let exit: { code: number | null; signal?: string } | undefined;
      channel.setEncoding('utf8');
      channel.stderr.setEncoding('utf8');
      channel.on('data', (chunk: string) => (stdout += chunk));
      channel.stderr.on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-4 * STDERR_TAIL_CHARS)));
      channel.on('exit', (code: number | null, signal?: string) => (exit = { code, ...(signal ? { signal } : {}) }));
      channel.on('close', () => {
        const tail = stderr.trim().slice(-STDERR_TAIL_CHARS);
        if (exit === undefined) {
          reject(fail('the connection closed before the command finished', { stderrTail: tail }, true));
        } else if (exit.code === 0) {
          resolve(stdout);
        } else {
          const status = exit.signal ? `was killed by signal ${exit.signal}` : `exited with status ${exit.code}`;
          reject(fail(`the command ${status}${tail ? `: ${tail}` : ''}`, { exitCode: exit.code, signal: exit.signal, stderrTail: tail }));
        }
      });
    });
  });
}

/** Single-quotes `text` for a POSIX shell. */
function q(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

const PROBE_SCRIPT = [
  'uname -s; uname -r; uname -m',
  'if command -v sha256sum >/dev/null 2>&1; then echo sha256sum=yes; else echo sha256sum=no; fi',
  'echo ---os-release---',
  'cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null || true',
].join('; ');

interface Probe {
  readonly system: string;
  readonly kernel: string;
  readonly arch: string;
  readonly hasSha256sum: boolean;
  readonly os: OsRelease;
}

function parseProbe(stdout: string): Probe {
  const [head = '', release = ''] = stdout.split('---os-release---\n');
  const [system = '', kernel = '', arch = '', tool = ''] = head.split('\n').map((line) => line.trim());
  return { system, kernel, arch, hasSha256sum: tool === 'sha256sum=yes', os: parseOsRelease(release) };
}

/** Parses os-release(5): KEY=value lines, values optionally quoted with shell escapes. */
export function parseOsRelease(text: string): OsRelease {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!m?.[1]) continue;
    let value = m[2] ?? '';
    const quoted = /^"(.*)"$/.exec(value) ?? /^'(.*)'$/.exec(value);
    if (quoted) value = (quoted[1] ?? '').replace(/\\(["\\`$])/g, '$1');
    fields.set(m[1], value);
  }
  const optional = (key: string, as: keyof OsRelease): Partial<OsRelease> => {
    const v = fields.get(key);
    return v === undefined ? {} : { [as]: v };
  };
  return {
    id: fields.get('ID') ?? 'linux',
    idLike: (fields.get('ID_LIKE') ?? '').split(/\s+/).filter(Boolean),
    ...optional('VERSION_ID', 'versionId'),
    ...optional('NAME', 'name'),
    ...optional('PRETTY_NAME', 'prettyName'),
  };
}

// ---- copy ------------------------------------------------------------------------

async function copyBundle(
  client: Client,
  bundle: Bundle,
  staging: string,
  onBytes: (bytes: number) => void,
): Promise<{ files: number; bytes: number }> {
  const sftp = await new Promise<SFTPWrapper>((resolve, reject) => client.sftp((err, s) => (err ? reject(err) : resolve(s))));
  const call = <T>(what: string, fn: (cb: (err: Error | null | undefined, value?: T) => void) => void): Promise<T | undefined> =>
    new Promise((resolve, reject) =>
      fn((err, value) => (err ? reject(new Error(`${what}: ${err.message}`, { cause: err })) : resolve(value))),
    );
  let files = 0;
  let bytes = 0;
  try {
    for (const entry of bundle.entries) {
      const remote = `${staging}/${entry.path}`;
      if (entry.kind === 'dir') {
        await call(`mkdir ${remote}`, (cb) => sftp.mkdir(remote, { mode: entry.mode }, cb));
        await call(`chmod ${remote}`, (cb) => sftp.chmod(remote, entry.mode, cb));
      } else if (entry.kind === 'symlink') {
        await call(`symlink ${remote}`, (cb) => sftp.symlink(entry.target, remote, cb));
      } else {
        const before = bytes;
        await call(`copy ${entry.path}`, (cb) =>
          sftp.fastPut(join(bundle.root, entry.path), remote, {
            mode: entry.mode,
            step: (transferred) => onBytes(before + transferred),
          }, cb),
        );
        // The remote umask narrows the mode given at creation: set it exactly.
        await call(`chmod ${remote}`, (cb) => sftp.chmod(remote, entry.mode, cb));
        files += 1;
        bytes += entry.size;
        onBytes(bytes);
      }
    }
    await call(`write ${MANIFEST_NAME}`, (cb) => sftp.writeFile(`${staging}/${MANIFEST_NAME}`, manifest(bundle), { mode: 0o644 }, cb));
  } finally {
    sftp.end();
  }
  return { files, bytes };
}

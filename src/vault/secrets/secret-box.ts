import { randomBytes, hkdfSync } from 'node:crypto';
import { mkdir, open as openFile, readFile, stat, link, unlink } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { LifeboatError, isLifeboatError } from '../../core/errors.js';
import { aad, open as openEnvelope, seal as sealEnvelope } from '../../format/crypto.js';
import { fsyncDir } from '../../io/durable.js';

/**
 * Encryption at rest for the credentials the vault keeps: push-install passwords and
 * private keys, storage credentials. One 32-byte vault key (a file readable by the
 * vault's user only) seals each secret into a text that is safe to put in the database.
 *
 * Sealed text: `lbs1:` + base64 of a crypto.ts envelope (AES-256-GCM, random nonce,
 * no compression: compressing secrets would leak their content through their length).
 * The AAD is the caller's `context` (e.g. `push-account:<id>`), so a sealed value copied
 * to another row or another field fails to open instead of being used in the wrong place.
 */

export const SEALED_PREFIX = 'lbs1:';
export const VAULT_KEY_BYTES = 32;

/** Vault key file: one line, `lifeboat-vault-key-v1 <base64 of 32 bytes>`. */
const KEY_FILE_TAG = 'lifeboat-vault-key-v1';
const KEY_FILE_MODE = 0o600;

export class SecretBox {
  private readonly key: Buffer;

  constructor(vaultKey: Buffer) {
    if (vaultKey.length !== VAULT_KEY_BYTES) {
      throw new LifeboatError('CONFIG_INVALID', `the vault key must be ${VAULT_KEY_BYTES} bytes, not ${vaultKey.length}`);
    }
    // A key of its own for secrets: the vault key may key other things later.
    this.key = Buffer.from(hkdfSync('sha256', vaultKey, Buffer.alloc(0), 'lifeboat secret box v1', 32));
  }

  static generateKey(): Buffer {
    return randomBytes(VAULT_KEY_BYTES);
  }

  seal(plaintext: string, context: string): string {
    checkContext(context);
    const envelope = sealEnvelope(this.key, Buffer.from(plaintext, 'utf8'), aad('secret', context), false);
    return SEALED_PREFIX + envelope.toString('base64');
  }

  /** Throws SECRET_UNREADABLE for a wrong key, damaged text, or another context. */
  open(sealed: string, context: string): string {
    checkContext(context);
    if (!sealed.startsWith(SEALED_PREFIX)) {
      const shown = /^[a-z0-9]{1,8}:/.exec(sealed)?.[0] ?? '(none)';
      throw unreadable(context, `it does not start with ${SEALED_PREFIX} (prefix ${shown})`);
    }
    const body = sealed.slice(SEALED_PREFIX.length);
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body)) throw unreadable(context, 'it is not base64');
    try {
      return openEnvelope(this.key, Buffer.from(body, 'base64'), aad('secret', context), `secret ${context}`).toString('utf8');
    } catch (err) {
      if (isLifeboatError(err, 'CORRUPT_OBJECT')) throw unreadable(context, 'it fails authentication', err);
      throw err;
    }
  }
}

export function isSealed(text: string): boolean {
  return text.startsWith(SEALED_PREFIX);
}

function checkContext(context: string): void {
  if (context.length === 0) throw new LifeboatError('INTERNAL', 'a secret needs a non-empty context');
}

function unreadable(context: string, why: string, cause?: unknown): LifeboatError {
  return new LifeboatError(
    'SECRET_UNREADABLE',
    `the stored secret ${context} cannot be opened: ${why} (another vault key, damaged, or stored for another place)`,
    { cause, details: { context } },
  );
}

/**
 * Reads the vault key from `path`, or creates it (mode 0600, parent directories 0700)
 * when the file does not exist. Creation is atomic and race-free: the key is written
 * and fsynced under a temporary name and then hard-linked into place, so two vaults
 * starting at once agree on one key and a crash never leaves a half-written key.
 * A key file readable by group or others is refused rather than silently used.
 */
export async function loadOrCreateVaultKey(path: string): Promise<Buffer> {
  const existing = await readKeyFile(path);
  if (existing) return existing;
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const key = SecretBox.generateKey();
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await openFile(tmp, 'wx', KEY_FILE_MODE);
  try {
    await handle.writeFile(`${KEY_FILE_TAG} ${key.toString('base64')}\n`);
    await handle.chmod(KEY_FILE_MODE); // the umask may have narrowed the open mode; never widened it
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await link(tmp, path);
  } catch (err) {
    // EEXIST: another process created the key first; theirs is the one to use.
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new LifeboatError('TARGET_UNWRITABLE', `cannot create the vault key file ${path}`, { cause: err });
    }
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  await fsyncDir(dirname(path));
  const stored = await readKeyFile(path);
  if (!stored) throw new LifeboatError('INTERNAL', `the vault key file ${path} vanished right after it was created`);
  return stored;
}

async function readKeyFile(path: string): Promise<Buffer | undefined> {
  let info;
  try {
    info = await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new LifeboatError('CONFIG_INVALID', `cannot read the vault key file ${path}`, { cause: err });
  }
  if ((info.mode & 0o077) !== 0) {
    throw new LifeboatError(
      'CONFIG_INVALID',
      `the vault key file ${path} is readable by others (mode ${(info.mode & 0o777).toString(8)}); chmod 600 it`,
      { details: { path } },
    );
  }
  const text = (await readFile(path, 'utf8')).trim();
  const [tag, body, ...rest] = text.split(' ');
  const key = body === undefined ? Buffer.alloc(0) : Buffer.from(body, 'base64');
  if (tag !== KEY_FILE_TAG || rest.length > 0 || key.length !== VAULT_KEY_BYTES) {
    throw new LifeboatError('CONFIG_INVALID', `the vault key file ${path} is not a Lifeboat vault key`, { details: { path } });
  }
  return key;
}


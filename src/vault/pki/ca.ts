import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
import { isIP } from 'node:net';
import { chmod, link, mkdir, open as openFile, readFile, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { LifeboatError } from '../../core/errors.js';
import type { SecretBox } from '../secrets/secret-box.js';

// The library is typed against the DOM `Crypto`, which node:crypto's webcrypto implements.
x509.cryptoProvider.set(webcrypto as unknown as x509.CryptoProvider extends { set(value: infer C): unknown } ? C : never);

/**
 * The vault's certificate authority (docs/replication.md, "Identity, enrollment and
 * certificates"): ECDSA P-256, created on the first start in the data directory.
 *
 * Files: `<dir>/ca.crt` (the CA certificate, PEM, public) and `<dir>/ca.key.sealed`
 * (the CA private key as PKCS#8 PEM sealed with the vault's SecretBox under the context
 * `vault-ca-key`, mode 0600). The key is never in the database and never in clear on disk.
 * Both are written under temporary names and linked into place, key first: a CA exists
 * once its certificate does, and two vaults starting at once agree on one CA.
 */

const ALGORITHM: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGNING: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
const CA_CONTEXT = 'vault-ca-key';
const CA_YEARS = 20;
const LEAF_DAYS = 365;
/** Certificates are valid from a little before issue: clocks of machines differ. */
const BACKDATE_MS = 5 * 60 * 1000;
const DAY_MS = 24 * 3600 * 1000;
const MAX_CSR_BYTES = 16 * 1024;

export interface IssuedCertificate {
  readonly certPem: string;
  /** Lower-case hex, no leading zeros stripped (as @peculiar/x509 and node:crypto's X509Certificate print it, upper-cased there). */
  readonly serial: string;
  readonly notAfter: string;
}

export interface ProcessServerTls {
  readonly certPem: string;
  /** PKCS#8 PEM: stays in the vault process (the built-in process server). */
  readonly keyPem: string;
  readonly caPem: string;
}

export class VaultCa {
  private constructor(
    private readonly cert: x509.X509Certificate,
    private readonly privateKey: CryptoKey,
    private readonly now: () => Date,
  ) {}

  /** The CA certificate, PEM: what agents and the process server trust. */
  get caPem(): string {
    return this.cert.toString('pem');
  }

  /** Loads the CA of `dir`, or creates it when there is none. SECRET_UNREADABLE when the key was sealed by another vault key. */
  static async loadOrCreate(dir: string, box: SecretBox, now: () => Date = () => new Date()): Promise<VaultCa> {
    const certPath = join(dir, 'ca.crt');
    const keyPath = join(dir, 'ca.key.sealed');
    const existing = await readIfExists(certPath);
    if (existing === undefined) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
      const at = now();
      const cert = await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber: newSerial(),
        name: 'CN=Lifeboat vault CA',
        notBefore: new Date(at.getTime() - BACKDATE_MS),
        notAfter: new Date(at.getTime() + CA_YEARS * 365 * DAY_MS),
        signingAlgorithm: SIGNING,
        keys,
        extensions: [
          new x509.BasicConstraintsExtension(true, 0, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
          await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        ],
      });
      const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
      const sealed = box.seal(pemOf('PRIVATE KEY', pkcs8), CA_CONTEXT);
      // Key first; the one whose certificate lands wins and its key is the one kept.
      const keyWon = await writeOnce(keyPath, `${sealed}\n`, 0o600);
      if (keyWon) await writeOnce(certPath, cert.toString('pem') + '\n', 0o644);
    }
    const certPem = await readIfExists(certPath);
    if (certPem === undefined) {
      throw new LifeboatError('CONFIG_INVALID', `the vault CA in ${dir} is incomplete (a key without ca.crt): another vault is creating it, or a start was cut short; remove ${keyPath} if no vault runs`, {
        details: { path: keyPath },
      });
    }
    const sealed = (await readFile(keyPath, 'utf8')).trim();
    const keyPem = box.open(sealed, CA_CONTEXT);
    const cert = new x509.X509Certificate(certPem);
    const privateKey = await webcrypto.subtle.importKey('pkcs8', derOf(keyPem), ALGORITHM, false, ['sign']);
    return new VaultCa(cert, privateKey, now);
  }

  /**
   * A new key pair and a serverAuth certificate for the process server, with `sans`
   * (host names or IP addresses) as subject alternative names.
   */
  async issueProcessServerCertificate(sans: readonly string[]): Promise<ProcessServerTls> {
    const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
    const cert = await this.issueServer(keys.publicKey, sans);
    const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
    return { certPem: cert.certPem, keyPem: pemOf('PRIVATE KEY', pkcs8), caPem: this.caPem };
  }

  /**
   * Signs a standalone process server's CSR (its key never leaves it): the same
   * serverAuth certificate as issueProcessServerCertificate, for `sans`. VALIDATION
   * when the CSR is malformed or its signature does not verify.
   */
  async signProcessServerCsr(csrPem: string, sans: readonly string[]): Promise<IssuedCertificate> {
    const publicKey = await csrPublicKey(csrPem, (why, cause) => new LifeboatError('VALIDATION', `the certificate request is refused: ${why}`, {
      cause,
      details: { errors: [{ in: 'body', field: '/csrPem', message: why }] },
    }));
    return this.issueServer(publicKey, sans);
  }

  /**
   * Signs an agent's CSR: subject CN `agent-<machineId>` (the CSR's subject is ignored),
   * clientAuth, valid about a year. ENROLLMENT_INVALID when the CSR is malformed, not
   * ECDSA P-256 / RSA, or its signature does not verify (proof the agent holds the key).
   */
  async signAgentCsr(csrPem: string, machineId: string): Promise<IssuedCertificate> {
    if (!/^[0-9A-Za-z_-]{1,64}$/.test(machineId)) throw new LifeboatError('INTERNAL', 'machine ids are 1-64 of A-Z a-z 0-9 _ -');
    const publicKey = await csrPublicKey(csrPem, badCsr);
    return this.issue({ subject: `CN=agent-${machineId}`, publicKey, usage: x509.ExtendedKeyUsage.clientAuth, extra: [] });
  }

  private issueServer(publicKey: CryptoKey, sans: readonly string[]): Promise<IssuedCertificate> {
    if (sans.length === 0) throw new LifeboatError('CONFIG_INVALID', 'a process-server certificate needs at least one address (SAN)');
    const names = sans.map((s) => {
      const bare = s.replace(/^\[|\]$/g, '');
      return isIP(bare) ? { type: 'ip' as const, value: bare } : { type: 'dns' as const, value: s };
    });
    return this.issue({
      subject: `CN=lifeboat-process-server`,
      publicKey,
      usage: x509.ExtendedKeyUsage.serverAuth,
      extra: [new x509.SubjectAlternativeNameExtension(names)],
    });
  }

  private async issue(o: { subject: string; publicKey: CryptoKey; usage: string; extra: x509.Extension[] }): Promise<IssuedCertificate> {
    const at = this.now();
    const notAfter = new Date(at.getTime() + LEAF_DAYS * DAY_MS);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: newSerial(),
      subject: o.subject,
      issuer: this.cert.subject,
      notBefore: new Date(at.getTime() - BACKDATE_MS),
      notAfter,
      signingAlgorithm: SIGNING,
      publicKey: o.publicKey,
      signingKey: this.privateKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
        new x509.ExtendedKeyUsageExtension([o.usage]),
        await x509.AuthorityKeyIdentifierExtension.create(this.cert.publicKey),
        await x509.SubjectKeyIdentifierExtension.create(o.publicKey),
        ...o.extra,
      ],
    });
    return { certPem: cert.toString('pem'), serial: normalizeSerial(cert.serialNumber), notAfter: notAfter.toISOString() };
  }
}

/** Serials compare as lower-case hex without leading zeros (node prints them upper-case). */
export function normalizeSerial(serial: string): string {
  return serial.toLowerCase().replace(/^0+(?=.)/, '');
}

/** 16 random bytes, first bit clear: a positive INTEGER of fixed length. */
function newSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] as number) & 0x7f) | 0x10;
  return bytes.toString('hex');
}

/** The public key of a CSR whose signature verifies (proof its sender holds the key); `fail` makes the refusal. */
async function csrPublicKey(csrPem: string, fail: (why: string, cause?: unknown) => LifeboatError): Promise<CryptoKey> {
  if (typeof csrPem !== 'string' || csrPem.length > MAX_CSR_BYTES) throw fail('too long');
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw fail('it is not a PEM certificate request', err);
  }
  let valid = false;
  try {
    valid = await csr.verify();
  } catch (err) {
    throw fail('its signature cannot be checked', err);
  }
  if (!valid) throw fail('its signature does not verify');
  try {
    return await csr.publicKey.export();
  } catch (err) {
    throw fail('its public key is not usable', err);
  }
}

function badCsr(why: string, cause?: unknown): LifeboatError {
  return new LifeboatError('ENROLLMENT_INVALID', `the certificate request is refused: ${why}`, { cause, details: { reason: why } });
}

function pemOf(label: string, der: Buffer): string {
  const body = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;
}

function derOf(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----(BEGIN|END) [A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new LifeboatError('CONFIG_INVALID', `cannot read ${path}`, { cause: err });
  }
}

/** Writes `path` atomically if it does not exist (temp, fsync, link); false when another process created it first. */
async function writeOnce(path: string, text: string, mode: number): Promise<boolean> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await openFile(tmp, 'wx', mode);
  try {
    await handle.writeFile(text);
    await handle.chmod(mode);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await link(tmp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new LifeboatError('TARGET_UNWRITABLE', `cannot create ${path}`, { cause: err });
  } finally {
    await unlink(tmp).catch(() => undefined);
    const dir = await openFile(dirname(path), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
    await chmod(path, mode).catch(() => undefined);
  }
}

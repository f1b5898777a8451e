import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

// The library is typed against the DOM `Crypto`, which node:crypto's webcrypto implements.
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CryptoKeyPair = webcrypto.CryptoKeyPair;
const ALGORITHM: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGNING: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
const DAY_MS = 24 * 3600 * 1000;

export interface TestCertificate {
  readonly certPem: string;
  readonly keyPem: string;
  /** Lower-case hex without leading zeros (as the process server passes it to authorize). */
  readonly serial: string;
}

async function keyPem(keys: CryptoKeyPair): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
}

function newSerial(): string {
  const b = randomBytes(12);
  b[0] = ((b[0] as number) & 0x7f) | 0x10; // positive, no leading zero byte
  return b.toString('hex');
}

/**
 * A throw-away certificate authority for tests: ECDSA P-256 like the vault's,
 * issuing a process-server certificate (localhost, 127.0.0.1) and agent
 * certificates (CN `agent-<machineId>`).
 */
export class TestCa {
  private constructor(
    private readonly cert: x509.X509Certificate,
    private readonly keys: CryptoKeyPair,
  ) {}

  static async create(name = 'Lifeboat test CA'): Promise<TestCa> {
    const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: newSerial(),
      name: `CN=${name}`,
      notBefore: new Date(Date.now() - DAY_MS),
      notAfter: new Date(Date.now() + 30 * DAY_MS),
      signingAlgorithm: SIGNING,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return new TestCa(cert, keys);
  }

  get caPem(): string {
    return this.cert.toString('pem');
  }

  private async issue(subject: string, extensions: x509.Extension[]): Promise<TestCertificate> {
    const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
    const serial = newSerial();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      subject,
      issuer: this.cert.subject,
      notBefore: new Date(Date.now() - DAY_MS),
      notAfter: new Date(Date.now() + 30 * DAY_MS),
      signingAlgorithm: SIGNING,
      publicKey: keys.publicKey,
      signingKey: this.keys.privateKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        await x509.AuthorityKeyIdentifierExtension.create(this.keys.publicKey),
        ...extensions,
      ],
    });
    return { certPem: cert.toString('pem'), keyPem: await keyPem(keys), serial: serial.replace(/^0+(?=.)/, '') };
  }

  serverCert(): Promise<TestCertificate> {
    return this.issue('CN=lifeboat-process-server', [
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        { type: 'dns', value: 'localhost' },
        { type: 'ip', value: '127.0.0.1' },
      ]),
    ]);
  }

  agentCert(machineId: string): Promise<TestCertificate> {
    return this.issue(`CN=agent-${machineId}`, [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth])]);
  }
}

import 'reflect-metadata';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, webcrypto } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { createServer, connect, type TLSSocket } from 'node:tls';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { isLifeboatError } from '../../../src/core/errors.js';
import { VaultCa, normalizeSerial } from '../../../src/vault/pki/ca.js';
import { SecretBox } from '../../../src/vault/secrets/secret-box.js';
import { makeTempDir } from '../../helpers/env.js';

const dirs: { cleanup(): void }[] = [];
after(() => dirs.forEach((d) => d.cleanup()));
function tempDir(): string {
  const d = makeTempDir('vault-ca');
  dirs.push(d);
  return d.path;
}

async function agentCsr(cn = 'CN=whatever-the-agent-says'): Promise<{ csrPem: string; keyPem: string }> {
  const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: cn, keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
  return { csrPem: csr.toString('pem'), keyPem: `-----BEGIN PRIVATE KEY-----\n${pkcs8}\n-----END PRIVATE KEY-----\n` };
}

test('the CA is created once, its key sealed on disk (0600, never in clear), and loads again', async () => {
  const dir = tempDir();
  const box = new SecretBox(SecretBox.generateKey());
  const ca = await VaultCa.loadOrCreate(dir, box);
  const sealed = readFileSync(join(dir, 'ca.key.sealed'), 'utf8');
  assert.ok(sealed.startsWith('lbs1:'));
  assert.ok(!sealed.includes('PRIVATE KEY'));
  assert.equal(statSync(join(dir, 'ca.key.sealed')).mode & 0o777, 0o600);
  const again = await VaultCa.loadOrCreate(dir, box);
  assert.equal(again.caPem, ca.caPem);
  const caCert = new X509Certificate(ca.caPem);
  assert.equal(caCert.ca, true);
  assert.match(caCert.publicKey.asymmetricKeyDetails?.namedCurve ?? '', /prime256v1|P-256/);
  // Another vault key cannot open the CA key.
  await assert.rejects(VaultCa.loadOrCreate(dir, new SecretBox(SecretBox.generateKey())), (err) => isLifeboatError(err, 'SECRET_UNREADABLE'));
});

test('an agent certificate: CN agent-<machineId> whatever the CSR says, clientAuth, ~1 year, chained to the CA', async () => {
  const ca = await VaultCa.loadOrCreate(tempDir(), new SecretBox(SecretBox.generateKey()));
  const { csrPem } = await agentCsr('CN=agent-someone-else');
  const issued = await ca.signAgentCsr(csrPem, 'm123');
  const cert = new X509Certificate(issued.certPem);
  const caCert = new X509Certificate(ca.caPem);
  assert.equal(cert.subject, 'CN=agent-m123');
  assert.ok(cert.checkIssued(caCert));
  assert.ok(cert.verify(caCert.publicKey));
  assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.2']);
  assert.equal(normalizeSerial(cert.serialNumber), issued.serial);
  const days = (Date.parse(cert.validTo) - Date.now()) / 86400000;
  assert.ok(days > 360 && days < 370, `valid ${days} days`);
});

test('a tampered or foreign CSR is refused with ENROLLMENT_INVALID', async () => {
  const ca = await VaultCa.loadOrCreate(tempDir(), new SecretBox(SecretBox.generateKey()));
  const { csrPem } = await agentCsr();
  const der = Buffer.from(csrPem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
  // Flip a byte of the subject (signed data): the signature no longer verifies.
  const at = der.indexOf(Buffer.from('whatever'));
  assert.ok(at > 0);
  der[at] = (der[at] as number) ^ 0x01;
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  await assert.rejects(ca.signAgentCsr(tampered, 'm1'), (err) => isLifeboatError(err, 'ENROLLMENT_INVALID'));
  await assert.rejects(ca.signAgentCsr('not a csr', 'm1'), (err) => isLifeboatError(err, 'ENROLLMENT_INVALID'));
});

test('process-server TLS: mutual TLS 1.3 with an agent certificate works; the SANs are the addresses', async () => {
  const ca = await VaultCa.loadOrCreate(tempDir(), new SecretBox(SecretBox.generateKey()));
  const tls = await ca.issueProcessServerCertificate(['127.0.0.1', 'ps.example']);
  const serverCert = new X509Certificate(tls.certPem);
  assert.match(serverCert.subjectAltName ?? '', /IP Address:127\.0\.0\.1/);
  assert.match(serverCert.subjectAltName ?? '', /DNS:ps\.example/);
  const agent = await agentCsr();
  const agentCert = await ca.signAgentCsr(agent.csrPem, 'm9');
  const server = createServer({ cert: tls.certPem, key: tls.keyPem, ca: tls.caPem, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (s) => {
    s.end(`hello ${(s as TLSSocket).getPeerCertificate().subject.CN}`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  try {
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, ca: tls.caPem, cert: agentCert.certPem, key: agent.keyPem, minVersion: 'TLSv1.3' });
      let text = '';
      socket.on('data', (d) => (text += d.toString()));
      socket.on('end', () => resolve(text));
      socket.on('error', reject);
    });
    assert.equal(answer, 'hello agent-m9');
  } finally {
    server.close();
  }
});

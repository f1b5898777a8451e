import 'reflect-metadata';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import * as x509 from '@peculiar/x509';
import { parseEnvFile } from '../../src/agent/enroll.js';
import { HttpVaultClient } from '../../src/agent/vault-client.js';
import { main } from '../../src/cli/main.js';
import { TestCa } from '../helpers/pki.js';
import { agentConfig, tempDir } from './fakes.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const TOKEN = 'lbenroll_TOKEN_never_printed_7f3a';
const CREDENTIAL = 'lbagent_CREDENTIAL_never_printed_91c2';

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

async function body(req: IncomingMessage): Promise<Record<string, unknown>> {
  let text = '';
  for await (const c of req) text += (c as Buffer).toString();
  return JSON.parse(text) as Record<string, unknown>;
}

/** The two agent routes of the vault, in miniature: checks the token and the CSR, answers as docs/replication.md says. */
class MiniVault {
  server!: Server;
  url = '';
  enrolls: Record<string, unknown>[] = [];
  heartbeats: { auth: string | undefined; body: Record<string, unknown> }[] = [];
  ca!: TestCa;

  async start(): Promise<void> {
    this.ca = await TestCa.create();
    const cert = await this.ca.agentCert('m-42');
    this.server = createServer(async (req, res) => {
      const json = await body(req);
      const send = (status: number, value: unknown): void => {
        res.writeHead(status, { 'content-type': status >= 400 ? 'application/problem+json' : 'application/json' });
        res.end(JSON.stringify(value));
      };
      if (req.url === '/api/v1/agents/enroll') {
        this.enrolls.push(json);
        if (json.token !== TOKEN) return send(401, { code: 'ENROLLMENT_INVALID', detail: 'the token is unknown', requestId: 'r1' });
        return send(201, {
          machineId: 'm-42',
          itemId: json.itemId,
          credential: CREDENTIAL,
          certificatePem: cert.certPem,
          caPem: this.ca.caPem,
          processServer: { host: '127.0.0.1', port: 9443, serverName: 'ps' },
          config: agentConfig({ disks: [{ name: 'root', storeDisk: `${String(json.itemId)}.root` }] }),
        });
      }
      if (req.url === '/api/v1/agents/self/heartbeat') {
        this.heartbeats.push({ auth: req.headers.authorization, body: json });
        if (req.headers.authorization !== `Bearer ${CREDENTIAL}`) return send(401, { code: 'UNAUTHENTICATED', detail: 'no' });
        return send(200, agentConfig({ paused: true }));
      }
      send(404, { code: 'NOT_FOUND', detail: req.url });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

async function cli(args: string[], envVars: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await main(args, { env: { PATH: process.env.PATH, ...envVars }, stdout, stderr });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

describe('lifeboat agent enroll', () => {
  const vault = new MiniVault();
  const dir = tempDir('enroll');
  const image = join(dir.path, 'root.img');
  const agentJson = join(dir.path, 'agent.json');
  const tokenFile = join(dir.path, 'token');
  before(async () => {
    await vault.start();
    writeFileSync(image, Buffer.alloc(2 * 2 ** 20));
    writeFileSync(agentJson, JSON.stringify({ disks: [{ name: 'root', tracker: { kind: 'scan', path: image } }] }));
    writeFileSync(tokenFile, TOKEN + '\n', { mode: 0o600 });
  });
  after(async () => {
    await vault.close();
    dir.cleanup();
  });

  it('makes a key here, sends a CSR (CN agent-pending) and stores key, certificate, CA, credential and config; no secret is printed', async () => {
    const stateDir = join(dir.path, 'state');
    const r = await cli(['agent', 'enroll', '--vault', vault.url, '--item', 'item-7', '--token-file', tokenFile, '--config', agentJson, '--state-dir', stateDir, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(out.machineId, 'm-42');
    assert.equal(out.itemId, 'item-7');
    for (const secret of [TOKEN, CREDENTIAL, 'PRIVATE KEY']) assert.ok(!(r.stdout + r.stderr).includes(secret), `${secret} printed`);

    const req = vault.enrolls.at(-1) as Record<string, unknown>;
    assert.equal(req.itemId, 'item-7');
    assert.equal(req.token, TOKEN);
    assert.deepEqual(req.disks, [{ name: 'root', sizeBytes: 2 * 2 ** 20, tracker: 'scan' }]);
    const csr = new x509.Pkcs10CertificateRequest(req.csrPem as string);
    assert.equal(csr.subject, 'CN=agent-pending');
    assert.ok(await csr.verify(), 'the CSR is signed by its key');

    const id = join(stateDir, 'identity');
    const keyPem = readFileSync(join(id, 'agent.key'), 'utf8');
    assert.equal(statSync(join(id, 'agent.key')).mode & 0o777, 0o600);
    assert.equal(statSync(join(id, 'credential')).mode & 0o777, 0o600);
    assert.equal(readFileSync(join(id, 'credential'), 'utf8').trim(), CREDENTIAL);
    assert.equal(readFileSync(join(id, 'ca.crt'), 'utf8'), vault.ca.caPem);
    // The stored key is the CSR's key: the private key never left, its public half went out.
    const spki = createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' });
    assert.ok(Buffer.from(csr.publicKey.rawData).equals(spki));
    assert.deepEqual(JSON.parse(readFileSync(join(stateDir, 'config.json'), 'utf8')).disks, [{ name: 'root', storeDisk: 'item-7.root' }]);

    const again = await cli(['agent', 'enroll', '--vault', vault.url, '--item', 'item-7', '--token-file', tokenFile, '--config', agentJson, '--state-dir', stateDir]);
    assert.equal(again.code, 2, 'enrolled already: refused without --force');
    assert.match(again.stderr, /enrolled already/);

    const status = await cli(['agent', 'status', '--state-dir', stateDir, '--json']);
    assert.equal(status.code, 0, status.stderr);
    const s = JSON.parse(status.stdout) as Record<string, unknown>;
    assert.equal(s.enrolled, true);
    assert.equal(s.machineId, 'm-42');
    assert.ok(!status.stdout.includes(CREDENTIAL));
  });

  it('reads the vault, item and token from agent.env, and agent.json from beside it', async () => {
    const bundle = join(dir.path, 'bundle');
    mkdirSync(bundle);
    writeFileSync(join(bundle, 'agent.json'), readFileSync(agentJson));
    writeFileSync(
      join(bundle, 'agent.env'),
      [`# written by push install`, `LIFEBOAT_VAULT_URL='${vault.url}'`, `LIFEBOAT_ITEM_ID='item-8'`, `LIFEBOAT_ENROLLMENT_TOKEN='${TOKEN}'`, ''].join('\n'),
      { mode: 0o600 },
    );
    const stateDir = join(dir.path, 'state-env');
    const r = await cli(['agent', 'enroll', '--env-file', join(bundle, 'agent.env'), '--state-dir', stateDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /enrolled machine m-42 for item item-8/);
    assert.ok(!(r.stdout + r.stderr).includes(TOKEN));
    assert.equal((vault.enrolls.at(-1) as Record<string, unknown>).itemId, 'item-8');
  });

  it('a refused token is ENROLLMENT_INVALID with its hint, and nothing is stored', async () => {
    const bad = join(dir.path, 'bad-token');
    writeFileSync(bad, 'lbenroll_wrong');
    const stateDir = join(dir.path, 'state-bad');
    const r = await cli(['agent', 'enroll', '--vault', vault.url, '--item', 'item-9', '--token-file', bad, '--config', agentJson, '--state-dir', stateDir]);
    assert.equal(r.code, 12);
    assert.match(r.stderr, /ENROLLMENT_INVALID/);
    assert.match(r.stderr, /Try: lifeboat item enroll-token ITEM/);
    assert.ok(!r.stderr.includes('lbenroll_wrong'));
    assert.throws(() => statSync(join(stateDir, 'identity', 'enrollment.json')));
  });

  it('the HTTP vault client sends the heartbeat with the bearer credential and parses the config; an unreachable vault is SERVER_UNREACHABLE', async () => {
    const client = new HttpVaultClient(vault.url);
    const config = await client.heartbeat(CREDENTIAL, { disks: [], version: '0.1.0' });
    assert.equal(config.paused, true);
    assert.equal(vault.heartbeats.at(-1)?.auth, `Bearer ${CREDENTIAL}`);
    await assert.rejects(client.heartbeat('wrong', { disks: [], version: '0.1.0' }), (e: Error & { code?: string }) => e.code === 'UNAUTHENTICATED' && !e.message.includes('wrong'));
    const down = new HttpVaultClient('http://127.0.0.1:1', { timeoutMs: 2000 });
    await assert.rejects(down.heartbeat(CREDENTIAL, { disks: [], version: '0.1.0' }), (e: Error & { code?: string }) => e.code === 'SERVER_UNREACHABLE');
  });

  it('parses agent.env quoting the way a POSIX shell does', () => {
    assert.deepEqual(parseEnvFile(`# c\nA='x y'\nB="q\\"r"\nexport C=plain\nD='it'\\''s'\n\nbad line\n`), { A: 'x y', B: 'q"r', C: 'plain', D: "it's" });
  });
});

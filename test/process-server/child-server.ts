/**
 * A process server in its own process, for the kill -9 test: started with
 * `node --import tsx child-server.ts <config.json>`, it prints `{"port":N}` once
 * listening. It exits when its stdin closes (the test runner died).
 */
import { readFileSync } from 'node:fs';
import { FsStorage } from '../../src/storage/fs/fs-storage.js';
import { Repository } from '../../src/store/repository.js';
import { startProcessServer } from '../../src/process-server/server.js';
import { PASS } from '../helpers/store.js';
import { DISK, DISK2, FakeBackend, ITEM, MACHINE, VAULT } from './harness.js';

export interface ChildConfig {
  storeUrl: string;
  spoolDir: string;
  certPem: string;
  keyPem: string;
  caPem: string;
  agentSerial: string;
}

const config = JSON.parse(readFileSync(process.argv[2] as string, 'utf8')) as ChildConfig;
const repo = await Repository.open(await FsStorage.open(config.storeUrl), PASS);
const backend = new FakeBackend(repo);
backend.machines.set(MACHINE, { serial: config.agentSerial, grant: { machineId: MACHINE, itemId: ITEM, vaultId: VAULT, generation: 1, disks: [DISK, DISK2] } });
const server = await startProcessServer({
  host: '127.0.0.1',
  port: 0,
  tls: { certPem: config.certPem, keyPem: config.keyPem, caPem: config.caPem },
  spoolDir: config.spoolDir,
  spoolLimitBytes: 1024 * 1024 * 1024,
  workers: 2,
  backend,
  uploadRetryBaseMs: 20,
  uploadRetryMaxMs: 200,
});
process.stdout.write(JSON.stringify({ port: server.port }) + '\n');
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));

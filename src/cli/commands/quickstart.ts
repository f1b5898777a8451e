import type { Command } from 'commander';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { exportImage } from '../../export/index.js';
import { openStorage } from '../../storage/registry.js';
import { backupPath } from '../../store/backup.js';
import { PointReader } from '../../store/point-reader.js';
import { writeDisk } from '../../store/restore.js';
import { Repository } from '../../store/repository.js';
import { verifyStore } from '../../store/verify.js';
import { formatBytes, type Env } from '../context.js';

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** A sparse sample disk: some random data, some text, the rest unallocated. */
async function writeSampleDisk(path: string, sizeBytes: number): Promise<void> {
  const f = await open(path, 'w');
  await f.truncate(sizeBytes);
  for (let mib = 0; mib < sizeBytes / 2 ** 20; mib += 4) {
    const text = Buffer.from(`lifeboat sample block ${mib} `.repeat(60000)).subarray(0, 2 ** 20);
    await f.write(mib % 8 === 0 ? randomBytes(2 ** 20) : text, 0, 2 ** 20, mib * 2 ** 20);
  }
  await f.close();
}

/** Overwrites `count` random 4 KiB blocks: a day's worth of change on the sample disk. */
async function churn(path: string, sizeBytes: number, count: number): Promise<void> {
  const f = await open(path, 'r+');
  for (let i = 0; i < count; i++) await f.write(randomBytes(4096), 0, 4096, Math.floor(Math.random() * (sizeBytes / 4096)) * 4096);
  await f.close();
}

export function register(program: Command, env: Env): void {
  program
    .command('quickstart')
    .description('walk through the replication core on embedded defaults: a local store, a sample disk, two recovery points, verify, restore, export')
    .option('--dir <dir>', 'where the store, sample disk and restored images go', 'lifeboat-quickstart')
    .action(async (opts: { dir: string }) => {
      const dir = resolve(opts.dir);
      mkdirSync(dir, { recursive: true });
      const say = (s: string): void => void env.stdout.write(s + '\n');
      const passFile = join(dir, 'passphrase');
      if (!existsSync(passFile)) writeFileSync(passFile, randomBytes(18).toString('base64url') + '\n', { mode: 0o600 });
      const pass = (readFileSync(passFile, 'utf8').split('\n')[0] as string).trim();
      const storeUrl = `file://${join(dir, 'store')}`;
      const storage = await openStorage(storeUrl);
      try {
        let repo: Repository;
        if (await storage.stat('config')) {
          repo = await Repository.open(storage, pass);
          say(`store   ${storeUrl} (existing)`);
        } else {
          const made = await Repository.init(storage, { passphrase: pass });
          repo = made.repo;
          writeFileSync(join(dir, 'recovery-key'), made.recoveryKey + '\n', { mode: 0o600 });
          say(`store   ${storeUrl} created; passphrase in ${passFile}, recovery key in ${join(dir, 'recovery-key')}`);
        }
        const disk = join(dir, 'sample-disk.img');
        const size = 256 * 2 ** 20;
        if (!existsSync(disk)) await writeSampleDisk(disk, size);
        const first = await backupPath(repo, disk, { disk: 'sample' });
        say(`point   ${first.manifest.pointId}  read ${formatBytes(first.bytesRead)} of ${formatBytes(size)}, stored ${formatBytes(first.bytesStored)}`);
        const sumFirst = await sha256(disk);
        await churn(disk, size, 512);
        const second = await backupPath(repo, disk, { disk: 'sample' });
        say(`point   ${second.manifest.pointId}  after 512 random 4 KiB writes: stored ${formatBytes(second.bytesStored)} (${second.newChunks} new chunks)`);
        const sumSecond = await sha256(disk);
        const report = await verifyStore(repo, { full: true });
        say(`verify  ${report.ok ? 'ok' : 'PROBLEMS'}: ${report.points} points, ${report.packs} packs, ${formatBytes(report.bytesRead)} read and authenticated`);
        for (const [m, expected] of [[first.manifest, sumFirst], [second.manifest, sumSecond]] as const) {
          const out = join(dir, `restored-${m.pointId}.img`);
          const reader = await PointReader.open(repo, m);
          await writeDisk(reader, out).finally(() => reader.close());
          const same = (await sha256(out)) === expected;
          say(`restore ${m.pointId} -> ${out}: ${same ? 'identical to the disk at backup time (sha256)' : 'MISMATCH'}`);
          if (!same) throw new Error('restore mismatch');
        }
        const vhd = join(dir, 'sample.vhd');
        const reader = await PointReader.open(repo, second.manifest);
        await exportImage(reader, { format: 'vhd', path: vhd }).finally(() => reader.close());
        say(`export  ${vhd} (dynamic VHD)`);
        say('');
        say('Next: serve the newest point over NBD and boot or inspect it with QEMU tools:');
        say(`  LIFEBOAT_STORE=${storeUrl} LIFEBOAT_PASSPHRASE=$(cat ${passFile}) node bin/lifeboat.js disk serve ${second.manifest.pointId}`);
        say('  qemu-img info nbd://127.0.0.1:10809/disk');
      } finally {
        await storage.close();
      }
    });
}

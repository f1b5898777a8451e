/**
 * The same CLI path as on a local folder, against Azure Blob (Azurite) and an
 * S3 endpoint (s3rver), both started on loopback by the test: init, two
 * backups, byte-identical restores, full verify.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir } from '../helpers/env.js';
import { lifeboat } from '../helpers/cli.js';
import { sha256File, scribble, writeMixedImage } from '../helpers/images.js';
import { startAzurite, startS3rver, type RunningService } from '../helpers/services.js';

const targets: [string, () => Promise<RunningService & { url: (a: string, b?: string) => string }>, string[]][] = [
  ['Azure Blob (Azurite)', startAzurite as never, ['backups', 'site-a']],
  ['S3 (s3rver)', startS3rver as never, ['site-a']],
];

for (const [name, start, urlArgs] of targets) {
  describe(`CLI against ${name}`, () => {
    let service: RunningService & { url: (a: string, b?: string) => string };
    let tmp: ReturnType<typeof makeTempDir>;
    let env: Record<string, string>;

    before(async () => {
      service = await start();
      tmp = makeTempDir('objstore');
      env = { ...service.env, LIFEBOAT_STORE: service.url(...(urlArgs as [string, string?])), LIFEBOAT_PASSPHRASE: 'object store test' };
    });
    after(async () => {
      await service.stop();
      tmp.cleanup();
    });

    it('backs up twice and restores both points byte for byte', () => {
      assert.equal(lifeboat(['store', 'init', '--json'], env).status, 0);
      const img = join(tmp.path, 'disk.img');
      const size = 12 * 2 ** 20;
      writeMixedImage(img, size, 3);
      const sums: [string, string][] = [];
      for (let round = 0; round < 2; round++) {
        if (round > 0) scribble(img, size, 16);
        const r = lifeboat(['disk', 'backup', img, '--disk', 'vm', '--json'], env);
        assert.equal(r.status, 0, r.stderr);
        sums.push([String(r.json().pointId), sha256File(img)]);
      }
      for (const [pointId, sum] of sums) {
        const out = join(tmp.path, `${pointId}.img`);
        const r = lifeboat(['disk', 'restore', pointId, '--to', out, '--json'], env);
        assert.equal(r.status, 0, r.stderr);
        assert.equal(sha256File(out), sum);
      }
      const v = lifeboat(['store', 'verify', '--full', '--json'], env);
      assert.equal(v.status, 0, v.stdout + v.stderr);
      assert.equal(v.json().points, 2);
    });
  });
}

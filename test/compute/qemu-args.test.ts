/**
 * The qemu driver's command line and availability, without booting: networks
 * (isolated is user networking with restrict=on and loopback-only forwards),
 * acceleration flags, disks as qcow2 overlays over the sources' NBD export, and
 * probe() naming the Debian packages when QEMU is missing.
 */
import assert from 'node:assert/strict';
import { realpathSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { isLifeboatError } from '../../src/core/errors.js';
import { accelArgs, diskArgs, networkArgs, qemuArgs } from '../../src/compute/qemu/args.js';
import { QemuComputeDriver } from '../../src/compute/qemu/driver.js';
import { shortStateDir } from '../../src/compute/qemu/short-path.js';
import { bufferSource } from '../helpers/compute.js';
import { makeTempDir } from '../helpers/env.js';

test('networks: isolated is restricted user networking with forwards on loopback only; none, user, bridge, tap', () => {
  const isolated = networkArgs({ kind: 'isolated' }, { '8080': 40001, '22': 40002 });
  assert.deepEqual(isolated, [
    '-netdev',
    'user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:40002-:22,hostfwd=tcp:127.0.0.1:40001-:8080',
    '-device',
    'virtio-net-pci,netdev=n0',
  ]);
  assert.deepEqual(networkArgs({ kind: 'none' }, {}), ['-nic', 'none']);
  const user = networkArgs({ kind: 'user' }, {});
  assert.equal(user[1], 'user,id=n0');
  assert.deepEqual(networkArgs({ kind: 'bridge', bridge: 'br0' }, {}).slice(0, 2), ['-netdev', 'bridge,id=n0,br=br0']);
  assert.deepEqual(networkArgs({ kind: 'tap', ifname: 'tap7' }, {}).slice(0, 2), ['-netdev', 'tap,id=n0,ifname=tap7,script=no,downscript=no']);
});

test('acceleration: tcg (multi-threaded with several cpus) or kvm with the host cpu', () => {
  assert.deepEqual(accelArgs('tcg', 1), ['-accel', 'tcg']);
  assert.deepEqual(accelArgs('tcg', 4), ['-accel', 'tcg,thread=multi']);
  assert.deepEqual(accelArgs('kvm', 2), ['-accel', 'kvm', '-cpu', 'host']);
});

test('disks: a qcow2 overlay backed by the NBD export until the copy is done; NVMe, the first one boots', () => {
  const disks = [
    { name: 'root', sizeBytes: 1 << 30 },
    { name: 'data', sizeBytes: 1 << 30 },
  ];
  const args = diskArgs('/s/m', disks, new Set(['data']), (d) => `/s/m/${d}.qcow2`);
  assert.deepEqual(args, [
    '-blockdev',
    'driver=nbd,node-name=src-0,server.type=unix,server.path=/s/m/nbd.sock,export=root,read-only=on,reconnect-delay=300',
    '-blockdev',
    'driver=file,node-name=file-0,filename=/s/m/root.qcow2',
    '-blockdev',
    'driver=qcow2,node-name=disk-0,file=file-0,backing=src-0',
    '-device',
    'nvme,drive=disk-0,serial=root,bootindex=0',
    '-blockdev',
    'driver=file,node-name=file-1,filename=/s/m/data.qcow2',
    '-blockdev',
    'driver=qcow2,node-name=disk-1,file=file-1',
    '-device',
    'nvme,drive=disk-1,serial=data',
  ]);
  assert.ok(diskArgs('/a,b', [disks[0] as { name: string; sizeBytes: number }], new Set(), (d) => `/a,b/${d}.qcow2`).includes('driver=file,node-name=file-0,filename=/a,,b/root.qcow2'));
});

test('the machine starts paused and detached, its console logged from the first byte', () => {
  const args = qemuArgs({
    dir: '/s/m',
    id: 'm',
    memoryMiB: 512,
    cpus: 1,
    disks: [{ name: 'root', sizeBytes: 1 << 20 }],
    accel: 'tcg',
    network: { kind: 'none' },
    forwardedPorts: {},
    independentDisks: new Set(),
  });
  for (const flag of ['-S', '-daemonize']) assert.ok(args.includes(flag), flag);
  assert.equal(args[args.indexOf('-pidfile') + 1], '/s/m/qemu.pid');
  assert.ok(args.includes('socket,id=ser0,path=/s/m/serial.sock,server=on,wait=off,logfile=/s/m/console.log,logappend=on'));
  assert.equal(args[args.indexOf('-serial') + 1], 'chardev:ser0');
  assert.equal(args[args.indexOf('-m') + 1], '512');
});

test('probe names the Debian packages when QEMU is missing; create fails with COMPUTE_UNAVAILABLE', async () => {
  const tmp = makeTempDir('compute-qemu-missing');
  const saved = process.env['PATH'];
  process.env['PATH'] = tmp.path;
  try {
    const driver = new QemuComputeDriver({ stateDir: tmp.path, env: {} });
    const probe = await driver.probe();
    assert.equal(probe.available, false);
    assert.match(probe.reason ?? '', /qemu-system-x86\b/);
    assert.match(probe.reason ?? '', /qemu-utils/);
    await assert.rejects(
      driver.create({ id: 'm', name: 'm', disks: [{ name: 'root', source: bufferSource(Buffer.alloc(4096)) }], network: { kind: 'none' } }),
      (err: unknown) => isLifeboatError(err, 'COMPUTE_UNAVAILABLE') && /apt-get install/.test(err.message),
    );
  } finally {
    process.env['PATH'] = saved;
    tmp.cleanup();
  }
});

test('a long state directory is reached through a short link in a directory only this user owns; a short one is used as it is', async () => {
  const tmp = makeTempDir('compute-short-path');
  try {
    const long = join(tmp.path, 'a-state-directory-whose-path-is-far-too-long-for-unix-sockets', 'compute');
    const link = await shortStateDir(long);
    assert.ok(link.length <= 40, link);
    assert.equal(realpathSync(link), realpathSync(long));
    assert.equal(await shortStateDir(long), link, 'the same link on every start');
    const base = statSync(dirname(link));
    assert.equal(base.mode & 0o077, 0, 'the links directory is private');
    assert.equal(await shortStateDir('/srv/lb'), '/srv/lb');
  } finally {
    tmp.cleanup();
  }
});

/**
 * Builds a tiny BIOS-bootable Linux disk image from Debian's packages, so that
 * end-to-end tests (restore, NBD serve, failover drills) can prove a recovered
 * disk BOOTS rather than merely compares equal.
 *
 * The image is a raw disk: an MBR partition table (sfdisk) with one bootable
 * ext4 partition holding extlinux, Debian's cloud kernel (NVMe, ext4 and the
 * 8250 serial console are built in, so no initramfs is needed), a static
 * busybox and an /sbin/init script. At boot the init prints
 *
 *     <marker> payload=<contents of /data/payload.txt>
 *
 * on the serial console and powers off. The payload is read from the disk, so
 * the line proves the data came from the booted disk, not from QEMU's command
 * line or the kernel. An optional workload (a shell snippet) runs before the
 * marker; if it fails, the marker is NOT printed and the boot fails.
 *
 * Long-running guests (the primary machine of the end-to-end proof): `dataDisk`
 * adds a second disk (GuestImage.dataImagePath: ext4 labelled lifeboat-data,
 * without a journal so a crash-consistent copy reads back with debugfs, no
 * replay needed) that init finds by label and mounts at /data before
 * anything else runs; `service` is a shell snippet started in the background
 * right after the marker (use with `shell`, which keeps the guest running);
 * `acpi` powers the guest off when QEMU presses its ACPI power button.
 *
 * Contracts:
 * - Tests never run apt-get install: a missing tool fails with the Debian
 *   package to install (.ci/run installs them). The kernel .deb is fetched with
 *   `apt-get download` from Debian's mirror once and cached under
 *   .test-tmp/cache/guest; a missing package list fails with "run apt-get update".
 * - Builds are cached by spec: the same spec twice copies the cached image.
 *   Builds are serialized across processes by a lock file, because tests run in
 *   parallel processes and the build uses loop devices and mounts.
 * - Needs root (losetup and mount to install extlinux; partition scanning on
 *   loop devices does not work here, so the partition is mapped by offset).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, constants as fsConstants, existsSync } from 'node:fs';
import {
  chmod,
  copyFile,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rename,
  rm,
  symlink,
  truncate,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { repoRoot, requireTool } from './env.js';

/** Bump when the image layout changes, so stale cached images are not reused. */
const LAYOUT_VERSION = 2;

const SECTOR_BYTES = 512;
const PARTITION_START_SECTOR = 2048;
const DEFAULT_SIZE_BYTES = 64 * 1024 * 1024;
const MIN_SIZE_BYTES = 32 * 1024 * 1024;
export const DEFAULT_MARKER = 'LIFEBOAT-GUEST-BOOTED';
const PAYLOAD_PATH = 'data/payload.txt';
const MBR_BIN = '/usr/lib/syslinux/mbr/mbr.bin';
const BUSYBOX = '/bin/busybox';
const LOCK_WAIT_MS = 10 * 60 * 1000;

export const cacheDir = join(repoRoot, '.test-tmp', 'cache', 'guest');

export interface GuestImageSpec {
  /** Directory that receives this test's private copy of the image. */
  dir: string;
  /** Whole disk size; default 64 MiB, at least 32 MiB. */
  sizeBytes?: number;
  /** Text that starts the line the guest prints when it is up; default LIFEBOAT-GUEST-BOOTED. */
  marker?: string;
  /** One line written to /data/payload.txt and echoed after the marker; default derived from the spec. */
  payload?: string;
  /** Extra files in the guest filesystem, keyed by path relative to its root (e.g. "data/blob.bin"). */
  dataFiles?: Record<string, string | Uint8Array>;
  /**
   * Shell snippet run by busybox sh -e as root before the marker, with /proc, /sys
   * and /dev mounted and / mounted read-write. Non-zero exit: no marker, power off.
   */
  workload?: string;
  /**
   * After the marker, keep a root shell (busybox sh) on the serial console instead
   * of powering off; `poweroff -f` in it ends the guest. Default false.
   */
  shell?: boolean;
  /** Bring up eth0 before the workload (see GuestNetworkSpec); default: no network setup. */
  network?: GuestNetworkSpec;
  /**
   * A second disk, built fresh for each call (GuestImage.dataImagePath): raw ext4
   * without a partition table or a journal, label lifeboat-data, holding
   * payload.txt (so the marker line and the TCP answer still show the payload)
   * and `files` (paths relative to its root). Init mounts it read-write at /data
   * before the network and the workload; no such disk at boot: no marker.
   */
  dataDisk?: { sizeBytes: number; files?: Record<string, string | Uint8Array> };
  /** Shell snippet started in the background (busybox sh, output on the console) right after the marker; it may run forever. */
  service?: string;
  /**
   * Power off when the hypervisor presses the ACPI power button (QMP
   * system_powerdown, a graceful stop): the kernel's evdev and ACPI button
   * modules are loaded and busybox acpid runs `sync; poweroff -f`.
   */
  acpi?: boolean;
}

/** Modules busybox acpid needs to see the ACPI power button, in load order (neither depends on another module). */
const ACPI_MODULES = ['kernel/drivers/input/evdev', 'kernel/drivers/acpi/button'] as const;

/**
 * The guest's network, for QEMU user networking: the kernel's virtio-net modules
 * (not built into the cloud kernel) are loaded, eth0 gets 10.0.2.15/24 with
 * 10.0.2.2 as gateway. No eth0 (no NIC plugged) is not an error: the boot goes on.
 */
export interface GuestNetworkSpec {
  /** A TCP port on which busybox nc answers every connection with the marker line. */
  listenPort?: number;
}

/** The address the guest gives eth0 when GuestImageSpec.network is set. */
export const GUEST_NETWORK = { address: '10.0.2.15', prefixLength: 24, gateway: '10.0.2.2' } as const;

/** Modules virtio-net needs, in load order (their depends= lines in the kernel package). */
const NET_MODULES = [
  'kernel/drivers/virtio/virtio_ring',
  'kernel/drivers/virtio/virtio',
  'kernel/drivers/virtio/virtio_pci_modern_dev',
  'kernel/drivers/virtio/virtio_pci_legacy_dev',
  'kernel/drivers/virtio/virtio_pci',
  'kernel/net/core/failover',
  'kernel/drivers/net/net_failover',
  'kernel/drivers/net/virtio_net',
] as const;

export interface GuestImage {
  /** This caller's copy of the raw disk image (inside spec.dir); free to boot or modify. */
  imagePath: string;
  /** The data disk (spec.dataDisk), inside spec.dir. */
  dataImagePath?: string;
  /** The guest kernel (bzImage), cached; usable with qemu -kernel. */
  kernelPath: string;
  /** e.g. "6.1.0-56-cloud-amd64". */
  kernelRelease: string;
  marker: string;
  payload: string;
  /** The exact console line a successful boot prints. */
  expectedLine: string;
  sizeBytes: number;
  /** Where the ext4 root partition lies in the image (the guest sees it as /dev/nvme0n1p1). */
  partition: { startBytes: number; sizeBytes: number };
  /** sha256 (hex) of the image as built. */
  sha256: string;
  /** True if the image was copied from the cache rather than built by this call. */
  fromCache: boolean;
  /** Time this call took, including waiting for the lock. */
  elapsedMs: number;
}

interface CachedMeta {
  layoutVersion: number;
  kernelRelease: string;
  sizeBytes: number;
  partition: { startBytes: number; sizeBytes: number };
  sha256: string;
  buildMs: number;
}

/** Builds (or copies from the cache) a bootable guest disk image. */
export async function buildGuestImage(spec: GuestImageSpec): Promise<GuestImage> {
  const started = Date.now();
  const sizeBytes = spec.sizeBytes ?? DEFAULT_SIZE_BYTES;
  if (!Number.isInteger(sizeBytes) || sizeBytes < MIN_SIZE_BYTES || sizeBytes % (1024 * 1024) !== 0) {
    throw new Error(`guest image sizeBytes must be a whole number of MiB and at least ${MIN_SIZE_BYTES}: ${sizeBytes}`);
  }
  const marker = spec.marker ?? DEFAULT_MARKER;
  if (!/^[A-Za-z0-9._:-]+$/.test(marker)) throw new Error(`guest marker must match [A-Za-z0-9._:-]+: ${marker}`);
  const dataFiles = normalizeDataFiles(spec.dataFiles ?? {});
  const tools = checkTools();
  const kernelPackage = await resolveKernelPackage();

  const keyHash = createHash('sha256');
  keyHash.update(JSON.stringify({ LAYOUT_VERSION, sizeBytes, marker, payload: spec.payload ?? null, workload: spec.workload ?? null, kernelPackage }));
  // Options added later join the key only when set, so images built without them keep their cache entries.
  if (spec.shell === true) keyHash.update('\0shell');
  if (spec.network !== undefined) keyHash.update(`\0network${JSON.stringify({ listenPort: spec.network.listenPort ?? null })}`);
  if (spec.dataDisk !== undefined) keyHash.update(`\0dataDisk\0${dataDiskScript()}`);
  if (spec.service !== undefined) keyHash.update(`\0service\0${spec.service}`);
  // The scripts these options put into init are keyed too, so changing them rebuilds the image.
  if (spec.acpi === true) keyHash.update(`\0acpi\0${ACPI_SCRIPT}`);
  for (const [path, data] of dataFiles) keyHash.update(`\0${path}\0${sha256Hex(data)}`);
  keyHash.update(await sha256File(BUSYBOX));
  keyHash.update(await sha256File(MBR_BIN));
  const key = keyHash.digest('hex');
  const payload = spec.payload ?? `lifeboat-payload-${key.slice(0, 16)}`;
  if (/[\n\r]/.test(payload)) throw new Error('guest payload must be a single line');

  const cachedImage = join(cacheDir, 'images', `${key}.raw`);
  const cachedMetaPath = `${cachedImage}.json`;
  let fromCache = true;
  const meta = await withLock(join(cacheDir, 'build.lock'), async () => {
    if (existsSync(cachedImage) && existsSync(cachedMetaPath)) {
      return JSON.parse(await readFile(cachedMetaPath, 'utf8')) as CachedMeta;
    }
    fromCache = false;
    const kernel = await fetchKernel(kernelPackage);
    const netModules = spec.network === undefined ? undefined : await fetchNetModules(kernelPackage);
    const acpiModules = spec.acpi === true ? await fetchModules(kernelPackage, ACPI_MODULES, 'acpi-modules', 'the ACPI power button') : undefined;
    const built = await buildImage({
      tools,
      kernel,
      sizeBytes,
      marker,
      payload,
      dataFiles,
      workload: spec.workload,
      out: cachedImage,
      shell: spec.shell === true,
      network: spec.network,
      netModules,
      dataDisk: spec.dataDisk !== undefined,
      service: spec.service,
      acpiModules,
    });
    // Meta is written last: an image without meta (crash mid-build) is rebuilt.
    await writeAtomic(cachedMetaPath, JSON.stringify(built, null, 2));
    return built;
  });

  await mkdir(spec.dir, { recursive: true });
  const imagePath = join(spec.dir, `guest-${key.slice(0, 12)}.raw`);
  await copyFile(cachedImage, imagePath, fsConstants.COPYFILE_FICLONE);
  let dataImagePath: string | undefined;
  if (spec.dataDisk !== undefined) {
    dataImagePath = join(spec.dir, `data-${key.slice(0, 12)}.raw`);
    const files = normalizeDataFiles({ ...(spec.dataDisk.files ?? {}), 'payload.txt': `${payload}\n` });
    await buildDataDisk(tools.mkfsExt4, dataImagePath, spec.dataDisk.sizeBytes, files);
  }
  return {
    imagePath,
    ...(dataImagePath === undefined ? {} : { dataImagePath }),
    kernelPath: kernelCachePath(meta.kernelRelease),
    kernelRelease: meta.kernelRelease,
    marker,
    payload,
    expectedLine: `${marker} payload=${payload}`,
    sizeBytes: meta.sizeBytes,
    partition: meta.partition,
    sha256: meta.sha256,
    fromCache,
    elapsedMs: Date.now() - started,
  };
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

interface Tools {
  sfdisk: string;
  mkfsExt4: string;
  extlinux: string;
  losetup: string;
  mount: string;
  umount: string;
}

/** Every host tool the build needs, checked before any work so the error names the package. */
function checkTools(): Tools {
  const tools: Tools = {
    sfdisk: requireTool('sfdisk', 'fdisk'),
    mkfsExt4: requireTool('mkfs.ext4', 'e2fsprogs'),
    extlinux: requireTool('extlinux', 'extlinux'),
    losetup: requireTool('losetup', 'mount'),
    mount: requireTool('mount', 'mount'),
    umount: requireTool('umount', 'mount'),
  };
  requireTool('apt-get', 'apt');
  requireTool('apt-cache', 'apt');
  requireTool('dpkg-deb', 'dpkg');
  if (!existsSync(MBR_BIN)) {
    throw new Error(`${MBR_BIN} is missing: apt-get install syslinux-common (.ci/run installs it)`);
  }
  if (!existsSync(BUSYBOX)) {
    throw new Error(`${BUSYBOX} is missing: apt-get install busybox-static (.ci/run installs it)`);
  }
  return tools;
}

/** Fails unless `path` is a statically linked ELF (no PT_INTERP): the guest has no libc. */
async function assertStaticElf(path: string): Promise<void> {
  const elf = await readFile(path);
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) throw new Error(`${path} is not a 64-bit ELF file`);
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    if (elf.readUInt32LE(phoff + i * phentsize) === 3 /* PT_INTERP */) {
      throw new Error(
        `${path} is dynamically linked (the "busybox" package?): apt-get install busybox-static (.ci/run installs it)`,
      );
    }
  }
}

function normalizeDataFiles(files: Record<string, string | Uint8Array>): [string, Uint8Array][] {
  const out: [string, Uint8Array][] = [];
  for (const [raw, data] of Object.entries(files)) {
    const path = posix.normalize(raw.replace(/^\/+/, ''));
    if (path === '.' || path.startsWith('..') || path === PAYLOAD_PATH || /^(bin|sbin|boot|dev|proc|sys)(\/|$)/.test(path)) {
      throw new Error(`guest dataFiles path not allowed (outside the root, or owned by the image layout): ${raw}`);
    }
    out.push([path, typeof data === 'string' ? Buffer.from(data, 'utf8') : data]);
  }
  return out.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** linux-image-cloud-amd64 is a metapackage; its dependency names the current kernel package. */
async function resolveKernelPackage(): Promise<string> {
  let out: string;
  try {
    out = (await run('apt-cache', ['depends', 'linux-image-cloud-amd64'])).stdout;
  } catch (err) {
    throw new Error(
      'cannot resolve the Debian cloud kernel: the apt package lists are missing or stale; run apt-get update (.ci/run does)',
      { cause: err },
    );
  }
  const match = /Depends:\s+(linux-image-[0-9][^\s]*-cloud-amd64)\b/.exec(out);
  if (!match?.[1]) throw new Error(`apt-cache depends linux-image-cloud-amd64 names no kernel package:\n${out}`);
  return match[1];
}

function kernelCachePath(release: string): string {
  return join(cacheDir, 'kernel', `vmlinuz-${release}`);
}

/** Downloads and extracts the kernel once; later calls reuse the cached bzImage. Runs under the build lock. */
async function fetchKernel(kernelPackage: string): Promise<{ release: string; path: string }> {
  const release = kernelPackage.replace(/^linux-image-/, '');
  const path = kernelCachePath(release);
  if (existsSync(path)) return { release, path };
  await mkdir(dirname(path), { recursive: true });
  const work = await mkdtemp(join(cacheDir, 'kernel-dl-'));
  try {
    try {
      await run('apt-get', ['download', kernelPackage], { cwd: work });
    } catch (err) {
      throw new Error(
        `apt-get download ${kernelPackage} failed: is Debian's mirror reachable and has apt-get update run?`,
        { cause: err },
      );
    }
    const debs = (await readdir(work)).filter((f) => f.endsWith('.deb'));
    if (debs.length !== 1 || !debs[0]) throw new Error(`apt-get download ${kernelPackage} left ${debs.length} .deb files`);
    const extracted = join(work, 'x');
    await run('dpkg-deb', ['-x', join(work, debs[0]), extracted]);
    const config = await readFile(join(extracted, 'boot', `config-${release}`), 'utf8');
    // The image relies on these being built in (no initramfs); fail loudly if Debian ever changes that.
    for (const option of ['CONFIG_BLK_DEV_NVME', 'CONFIG_EXT4_FS', 'CONFIG_SERIAL_8250_CONSOLE']) {
      if (!config.includes(`\n${option}=y\n`)) throw new Error(`${kernelPackage} does not build in ${option}; the guest image needs it`);
    }
    await copyFile(join(extracted, 'boot', `vmlinuz-${release}`), `${path}.tmp`);
    await rename(`${path}.tmp`, path);
    return { release, path };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** The virtio-net modules of the kernel, extracted once into the cache; returns their paths in load order. Runs under the build lock. */
function fetchNetModules(kernelPackage: string): Promise<string[]> {
  return fetchModules(kernelPackage, NET_MODULES, 'net-modules', 'the guest network');
}

/** Kernel modules (paths under lib/modules/<release>/ without .ko), extracted once into the cache as `<name>-<release>`; their paths in load order. */
async function fetchModules(kernelPackage: string, modules: readonly string[], name: string, neededBy: string): Promise<string[]> {
  const release = kernelPackage.replace(/^linux-image-/, '');
  const dir = join(cacheDir, 'kernel', `${name}-${release}`);
  const paths = modules.map((m) => join(dir, `${posix.basename(m)}.ko`));
  if (paths.every((p) => existsSync(p))) return paths;
  const work = await mkdtemp(join(cacheDir, 'kernel-dl-'));
  try {
    try {
      await run('apt-get', ['download', kernelPackage], { cwd: work });
    } catch (err) {
      throw new Error(`apt-get download ${kernelPackage} failed: is Debian's mirror reachable and has apt-get update run?`, { cause: err });
    }
    const debs = (await readdir(work)).filter((f) => f.endsWith('.deb'));
    if (debs.length !== 1 || !debs[0]) throw new Error(`apt-get download ${kernelPackage} left ${debs.length} .deb files`);
    const extracted = join(work, 'x');
    await run('dpkg-deb', ['-x', join(work, debs[0]), extracted]);
    await mkdir(dir, { recursive: true });
    for (const m of modules) {
      const from = join(extracted, 'lib', 'modules', release, `${m}.ko`);
      if (!existsSync(from)) throw new Error(`${kernelPackage} has no ${m}.ko; ${neededBy} needs it`);
      const to = join(dir, `${posix.basename(m)}.ko`);
      await copyFile(from, `${to}.tmp`);
      await rename(`${to}.tmp`, to);
    }
    return paths;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

interface InitExtras {
  shell?: boolean;
  network?: GuestNetworkSpec;
  dataDisk?: boolean;
  service?: boolean;
  acpi?: boolean;
}

/** The data disk's filesystem label; init finds the disk by it, whatever its device name. */
export const DATA_DISK_LABEL = 'lifeboat-data';

/** The data disk: raw ext4 without a partition table or a journal, filled by mkfs -d (no mount). */
async function buildDataDisk(mkfsExt4: string, out: string, sizeBytes: number, files: [string, Uint8Array][]): Promise<void> {
  if (!Number.isInteger(sizeBytes) || sizeBytes < 8 * 1024 * 1024 || sizeBytes % (1024 * 1024) !== 0) {
    throw new Error(`guest dataDisk.sizeBytes must be a whole number of MiB and at least 8 MiB: ${sizeBytes}`);
  }
  const staging = await mkdtemp(join(dirname(out), 'data-staging-'));
  try {
    for (const [path, data] of files) {
      await mkdir(dirname(join(staging, path)), { recursive: true });
      await writeFile(join(staging, path), data);
    }
    await rm(out, { force: true });
    await writeFile(out, '');
    await truncate(out, sizeBytes);
    await run(mkfsExt4, ['-q', '-F', '-b', '4096', '-O', '^has_journal', '-L', DATA_DISK_LABEL, '-d', staging, out]);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

// acpid looks for /dev/input/event* once, when it starts: wait for the button's node first.
const ACPI_SCRIPT = `for m in ${ACPI_MODULES.map((m) => `/lib/modules/acpi/${posix.basename(m)}.ko`).join(' ')}; do insmod $m; done
i=0
while [ ! -e /dev/input/event0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
acpid -c /etc/acpi -l /dev/console
`;

function dataDiskScript(): string {
  return `i=0
until DATA_DEV="$(findfs LABEL=${DATA_DISK_LABEL} 2>/dev/null)"; do
  i=$((i + 1))
  if [ $i -gt 100 ]; then echo "lifeboat-guest: no disk labelled ${DATA_DISK_LABEL}"; sync; poweroff -f; fi
  sleep 0.1
done
if ! mount -t ext4 "$DATA_DEV" /data; then echo "lifeboat-guest: cannot mount $DATA_DEV on /data"; sync; poweroff -f; fi
echo "lifeboat-guest: $DATA_DEV on /data"
`;
}

function networkScript(network: GuestNetworkSpec): string {
  const modules = NET_MODULES.map((m) => `/lib/modules/net/${posix.basename(m)}.ko`).join(' ');
  return `for m in ${modules}; do insmod $m; done
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  ip addr add ${GUEST_NETWORK.address}/${GUEST_NETWORK.prefixLength} dev eth0
  ip route add default via ${GUEST_NETWORK.gateway}
  echo "lifeboat-guest: eth0 ${GUEST_NETWORK.address}"
else
  echo "lifeboat-guest: no eth0"
fi
${network.listenPort === undefined ? '' : `nc -ll -p ${network.listenPort} -e /etc/lifeboat/answer.sh &
`}`;
}

function initScript(marker: string, hasWorkload: boolean, extras: InitExtras = {}): string {
  // /dev/console exists on the disk (the kernel opens it before init; this kernel
  // does not automount devtmpfs). devtmpfs is mounted for the workload's sake.
  return `#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "lifeboat-guest: kernel $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s, cmdline: $(cat /proc/cmdline)"
${extras.dataDisk === true ? dataDiskScript() : ''}${extras.acpi === true ? ACPI_SCRIPT : ''}${extras.network === undefined ? '' : networkScript(extras.network)}${
  hasWorkload
    ? `if ! sh -e /etc/lifeboat/workload.sh; then
  echo "lifeboat-guest: workload FAILED"
  sync; poweroff -f
fi
`
    : ''
}echo "${marker} payload=$(cat /${PAYLOAD_PATH})"
sync
${extras.service === true ? 'sh /etc/lifeboat/service.sh </dev/null >/dev/console 2>&1 &\n' : ''}${
  extras.shell === true
    ? `# A shell on the console for as long as the guest runs; a shell that exits is started again.
while :; do setsid cttyhack sh; done
`
    : `mount -o remount,ro / 2>/dev/null
poweroff -f
`
}`;
}

const EXTLINUX_CONF = `DEFAULT linux
TIMEOUT 1
PROMPT 0
LABEL linux
  KERNEL /boot/vmlinuz
  APPEND console=ttyS0 quiet root=/dev/nvme0n1p1 rootfstype=ext4 rootwait rw panic=-1
`;

interface BuildInput {
  tools: Tools;
  kernel: { release: string; path: string };
  sizeBytes: number;
  marker: string;
  payload: string;
  dataFiles: [string, Uint8Array][];
  workload: string | undefined;
  out: string;
  shell?: boolean;
  network?: GuestNetworkSpec;
  /** Paths of the virtio-net modules, in load order (with `network`). */
  netModules?: string[];
  dataDisk?: boolean;
  service?: string | undefined;
  /** Paths of the evdev and ACPI button modules, in load order (with `acpi`). */
  acpiModules?: string[] | undefined;
}

async function buildImage(input: BuildInput): Promise<CachedMeta> {
  const started = Date.now();
  const { tools } = input;
  await assertStaticElf(BUSYBOX);
  await mkdir(dirname(input.out), { recursive: true });
  const work = await mkdtemp(join(cacheDir, 'build-'));
  try {
    const root = join(work, 'root');
    await stageRootfs(root, input);

    const image = join(work, 'disk.raw');
    await writeFile(image, '');
    await truncate(image, input.sizeBytes);
    await run(tools.sfdisk, ['-q', image], { input: `label: dos\nstart=${PARTITION_START_SECTOR}, type=83, bootable\n` });
    const partition = await readPartition(tools.sfdisk, image);

    // mkfs.ext4 -d fills the filesystem without mounting; the mount is only for
    // extlinux, which must patch ldlinux.sys's own block list on a live fs.
    // ^64bit: syslinux 6.04 cannot read ext4 with 64-bit block numbers. -b 4096:
    // small filesystems default to 1 KiB blocks, which fragment the kernel.
    const loop = (
      await run(tools.losetup, ['-f', '--show', '-o', String(partition.startBytes), '--sizelimit', String(partition.sizeBytes), image])
    ).stdout.trim();
    try {
      await run(tools.mkfsExt4, ['-q', '-F', '-b', '4096', '-O', '^64bit', '-L', 'lifeboat-root', '-d', root, loop]);
      const mnt = join(work, 'mnt');
      await mkdir(mnt);
      await run(tools.mount, ['-t', 'ext4', loop, mnt]);
      try {
        // Written through the mounted fs, not by mkfs -d: mkfs -d punches holes for
        // zero blocks, and extlinux cannot load a kernel with holes (I/O error).
        await copyFile(input.kernel.path, join(mnt, 'boot', 'vmlinuz'));
        await run(tools.extlinux, ['--install', join(mnt, 'boot', 'extlinux')]);
      } finally {
        await run(tools.umount, [mnt]);
      }
    } finally {
      await run(tools.losetup, ['-d', loop]);
    }

    const mbr = await readFile(MBR_BIN);
    if (mbr.length > 440) throw new Error(`${MBR_BIN} is ${mbr.length} bytes; expected at most 440 (boot code only)`);
    const fh = await open(image, 'r+');
    try {
      await fh.write(mbr, 0, mbr.length, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }

    const sha256 = await sha256File(image);
    await rename(image, input.out);
    return {
      layoutVersion: LAYOUT_VERSION,
      kernelRelease: input.kernel.release,
      sizeBytes: input.sizeBytes,
      partition,
      sha256,
      buildMs: Date.now() - started,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function stageRootfs(root: string, input: BuildInput): Promise<void> {
  for (const d of ['bin', 'sbin', 'dev', 'proc', 'sys', 'tmp', 'root', 'etc/lifeboat', 'data', 'boot/extlinux']) {
    await mkdir(join(root, d), { recursive: true });
  }
  await copyFile(BUSYBOX, join(root, 'bin', 'busybox'));
  await chmod(join(root, 'bin', 'busybox'), 0o755);
  const applets = (await run(BUSYBOX, ['--list'])).stdout.split('\n').filter((a) => /^[\w.[-]+$/.test(a));
  for (const applet of applets) {
    // /sbin/init is our script; busybox's own init applet must not shadow it.
    if (applet === 'busybox' || applet === 'init' || applet === 'linuxrc') continue;
    await symlink('busybox', join(root, 'bin', applet));
  }
  // The kernel opens /dev/console for init before anything can mount devtmpfs.
  await run('mknod', ['-m', '600', join(root, 'dev', 'console'), 'c', '5', '1']);
  await run('mknod', ['-m', '666', join(root, 'dev', 'null'), 'c', '1', '3']);

  await writeFile(join(root, 'sbin', 'init'), initScript(input.marker, input.workload !== undefined, {
      shell: input.shell,
      network: input.network,
      dataDisk: input.dataDisk,
      service: input.service !== undefined,
      acpi: input.acpiModules !== undefined,
    }), {
    mode: 0o755,
  });
  if (input.network !== undefined) {
    await mkdir(join(root, 'lib', 'modules', 'net'), { recursive: true });
    for (const m of input.netModules ?? []) await copyFile(m, join(root, 'lib', 'modules', 'net', posix.basename(m)));
    await writeFile(join(root, 'etc', 'lifeboat', 'answer.sh'), `#!/bin/sh\necho "${input.marker} payload=$(cat /${PAYLOAD_PATH})"\n`, { mode: 0o755 });
  }
  if (input.workload !== undefined) await writeFile(join(root, 'etc', 'lifeboat', 'workload.sh'), `${input.workload}\n`);
  if (input.service !== undefined) await writeFile(join(root, 'etc', 'lifeboat', 'service.sh'), `${input.service}\n`);
  if (input.acpiModules !== undefined) {
    await mkdir(join(root, 'lib', 'modules', 'acpi'), { recursive: true });
    for (const m of input.acpiModules) await copyFile(m, join(root, 'lib', 'modules', 'acpi', posix.basename(m)));
    // busybox acpid runs CONFDIR/PWRF/00000080 for the power button.
    await mkdir(join(root, 'etc', 'acpi', 'PWRF'), { recursive: true });
    await writeFile(join(root, 'etc', 'acpi', 'PWRF', '00000080'), '#!/bin/sh\necho "lifeboat-guest: power button: powering off"\nsync\npoweroff -f\n', { mode: 0o755 });
  }
  await writeFile(join(root, PAYLOAD_PATH), `${input.payload}\n`);
  for (const [path, data] of input.dataFiles) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), data);
  }
  await writeFile(join(root, 'boot', 'extlinux', 'extlinux.conf'), EXTLINUX_CONF);
}

async function readPartition(sfdisk: string, image: string): Promise<{ startBytes: number; sizeBytes: number }> {
  const table = JSON.parse((await run(sfdisk, ['--json', image])).stdout) as {
    partitiontable: { sectorsize?: number; partitions: { start: number; size: number }[] };
  };
  const part = table.partitiontable.partitions[0];
  if (!part || table.partitiontable.partitions.length !== 1) throw new Error(`sfdisk did not create exactly one partition in ${image}`);
  const sector = table.partitiontable.sectorsize ?? SECTOR_BYTES;
  return { startBytes: part.start * sector, sizeBytes: part.size * sector };
}

/**
 * Runs `fn` holding an exclusive lock file (O_EXCL create). A lock whose holder
 * process is gone is stale and removed. Works across processes and within one.
 */
async function withLock<T>(lockPath: string, fn: () => Promise<T>): Promise<T> {
  await mkdir(dirname(lockPath), { recursive: true });
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const fh = await open(lockPath, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = Number.parseInt(await readFile(lockPath, 'utf8').catch(() => ''), 10);
    if (Number.isInteger(holder) && holder > 0 && !processAlive(holder)) {
      await unlink(lockPath).catch(() => undefined);
      continue;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${lockPath} (held by pid ${holder})`);
    await sleep(200);
  }
  try {
    return await fn();
  } finally {
    await unlink(lockPath);
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function writeAtomic(path: string, data: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

/** Runs a command to completion; a non-zero exit throws with its stderr. */
export function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; input?: string } = {},
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => reject(new Error(`${cmd}: ${err.message}`, { cause: err })));
    child.on('close', (code, signal) => {
      if (code === 0) resolve({ stdout, stderr });
      else reject(new Error(`${cmd} ${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${stderr.trim() || stdout.trim()}`));
    });
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on('error', () => undefined); // a command that exits early reports through its status
      child.stdin.end(opts.input);
    }
  });
}

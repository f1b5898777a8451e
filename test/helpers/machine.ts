/**
 * The primary machine of the end-to-end recovery proof: a tiny Linux guest
 * (test/helpers/guest.ts: Debian's cloud kernel + static busybox) with a boot
 * disk and an ext4 data disk, running under QEMU (TCG) on disk files the test
 * owns, while a workload inside it appends numbered, checksummed records to
 * /data/records.log and acknowledges each on the serial console.
 *
 * Records: one line per record, `<n> <payload> <sha256 of "<n> <payload>">`,
 * appended, then `sync`, then `ACK <n>` printed on the console: a record is
 * acknowledged once its ACK line is out. After a boot the workload resumes
 * after the last intact record (a torn last line, possible in a
 * crash-consistent copy, is dropped first), so a replica booted from a
 * recovery point continues the same numbering.
 *
 * The machine:
 * - QEMU runs detached (-daemonize, pid file) from a start script, so the
 *   agent's `startCommand` / `shutdownCommand` (agent.json `machine`) can start
 *   and stop it exactly as the test does; the serial console is appended to
 *   console.log, and the harness tails it, stamping every ACK line with the
 *   time it first saw it (never earlier than the guest printed it, so "acked
 *   before t" is never claimed for a record that was not).
 * - QMP sockets: one per disk for the agent's qemu change trackers (a QMP
 *   socket serves one client at a time; nodes `root` and `data`, raw format
 *   nodes), one for the test.
 * - Records are read from a disk image with debugfs (no mount, no loop device):
 *   the data disk is raw ext4 without a partition table or a journal.
 *
 * Contract: `dispose()` kills QEMU (SIGKILL) and stops the tailer; call it in
 * an after hook so no QEMU process outlives the test.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { requireTool } from './env.js';
import { buildGuestImage, run } from './guest.js';
import type { GuestImage } from './guest.js';

const MiB = 1024 * 1024;
/** The line the guest prints once /data is mounted and the workload started. */
export const PRIMARY_MARKER = 'LIFEBOAT-E2E-BOOTED';
export const RECORDS_FILE = 'records.log';

/**
 * The workload: resumes after the last intact record, then appends a record,
 * syncs and acknowledges it, about four times a second, forever.
 */
export const RECORDS_WORKLOAD = `F=/data/${RECORDS_FILE}
touch $F
intact() {
  set -- $1
  [ $# -eq 3 ] && [ "$(printf '%s %s' "$1" "$2" | sha256sum | cut -d' ' -f1)" = "$3" ]
}
# A crash-consistent copy may end in a torn record: drop it before going on.
while [ -s $F ]; do
  if [ -z "$(tail -c 1 $F)" ] && intact "$(tail -n 1 $F)"; then break; fi
  echo "lifeboat-records: dropping a torn last record"
  sed -i '$d' $F
done
n=$(tail -n 1 $F | cut -d' ' -f1)
[ -n "$n" ] || n=0
echo "lifeboat-records: resuming after record $n"
while :; do
  n=$((n + 1))
  p="rec-$n-$(cut -d' ' -f1 /proc/uptime)-0123456789abcdef0123456789abcdef0123456789abcdef"
  s=$(printf '%s %s' "$n" "$p" | sha256sum | cut -d' ' -f1)
  printf '%s %s %s\\n' "$n" "$p" "$s" >> $F
  sync
  echo "ACK $n"
  sleep 0.25
done`;

export interface PrimaryGuest {
  readonly image: GuestImage;
  readonly rootFile: string;
  readonly dataFile: string;
}

/** Builds the primary's disks (boot disk cached by guest.ts, data disk fresh) in `dir`. */
export async function buildPrimaryGuest(dir: string, options: { dataDiskBytes?: number } = {}): Promise<PrimaryGuest> {
  const image = await buildGuestImage({
    dir,
    marker: PRIMARY_MARKER,
    payload: 'lifeboat-e2e-primary',
    dataDisk: { sizeBytes: options.dataDiskBytes ?? 64 * MiB },
    service: RECORDS_WORKLOAD,
    shell: true,
    // A graceful stop (ACPI power button) powers it off at once instead of waiting for the hypervisor's time-out.
    acpi: true,
  });
  if (image.dataImagePath === undefined) throw new Error('buildGuestImage made no data disk');
  return { image, rootFile: image.imagePath, dataFile: image.dataImagePath };
}

export interface Ack {
  readonly n: number;
  /** When the harness first saw the ACK line (ms since the epoch). */
  readonly seenAtMs: number;
}

export interface PrimaryMachineOptions {
  /** The machine's own directory (scripts, sockets, console, pid file). */
  readonly dir: string;
  readonly guest: PrimaryGuest;
  readonly memoryMiB?: number;
}

/** A primary machine: QEMU on the test's disk files, started and stopped by scripts the agent can run too. */
export class PrimaryMachine {
  readonly dir: string;
  readonly rootFile: string;
  readonly dataFile: string;
  readonly consoleFile: string;
  readonly pidFile: string;
  /** QMP for the agent's qemu tracker of each disk. */
  readonly agentQmpSockets: { readonly root: string; readonly data: string };
  /** QMP for the test itself. */
  readonly testQmpSocket: string;
  /** Where the agent's trackers serve their point-in-time views (one NBD server for both disks). */
  readonly nbdSocket: string;
  readonly startScript: string;
  readonly stopScript: string;

  private readonly acksSeen: Ack[] = [];
  private consoleText = '';
  private consoleOffset = 0;
  private markersSeen = 0;
  private tailer: NodeJS.Timeout | undefined;

  private constructor(options: PrimaryMachineOptions) {
    this.dir = options.dir;
    this.rootFile = options.guest.rootFile;
    this.dataFile = options.guest.dataFile;
    this.consoleFile = join(this.dir, 'console.log');
    this.pidFile = join(this.dir, 'qemu.pid');
    this.agentQmpSockets = { root: join(this.dir, 'agent-root.qmp'), data: join(this.dir, 'agent-data.qmp') };
    this.testQmpSocket = join(this.dir, 'test.qmp');
    this.nbdSocket = join(this.dir, 'tracker-nbd.sock');
    this.startScript = join(this.dir, 'start.sh');
    this.stopScript = join(this.dir, 'stop.sh');
  }

  /** Writes the start and stop scripts; does not start QEMU. */
  static async create(options: PrimaryMachineOptions): Promise<PrimaryMachine> {
    const qemu = requireTool('qemu-system-x86_64', 'qemu-system-x86');
    requireTool('debugfs', 'e2fsprogs');
    const m = new PrimaryMachine(options);
    await mkdir(m.dir, { recursive: true });
    const q = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
    const opt = (s: string) => s.replaceAll(',', ',,');
    const drive = (name: string, file: string) =>
      `-blockdev driver=file,node-name=${name}-file,filename=${opt(file)} -blockdev driver=raw,node-name=${name},file=${name}-file`;
    // The serial console is appended to (never truncated): ACKs of every boot stay in one file.
    await writeFile(
      m.startScript,
      `#!/bin/sh
# Starts the primary machine detached; exits once QEMU runs (its pid in ${m.pidFile}).
set -e
if [ -f ${q(m.pidFile)} ] && kill -0 "$(cat ${q(m.pidFile)})" 2>/dev/null; then exit 0; fi
rm -f ${q(m.agentQmpSockets.root)} ${q(m.agentQmpSockets.data)} ${q(m.testQmpSocket)}
exec ${q(qemu)} -accel tcg -m ${options.memoryMiB ?? 256} -smp 1 -display none -nodefaults -no-user-config -no-reboot \\
  ${drive('root', m.rootFile)} -device nvme,drive=root,serial=lb-root,bootindex=0 \\
  ${drive('data', m.dataFile)} -device nvme,drive=data,serial=lb-data \\
  -chardev file,id=ser0,path=${opt(m.consoleFile)},append=on -serial chardev:ser0 \\
  -chardev socket,id=qmp-root,path=${opt(m.agentQmpSockets.root)},server=on,wait=off -mon chardev=qmp-root,mode=control \\
  -chardev socket,id=qmp-data,path=${opt(m.agentQmpSockets.data)},server=on,wait=off -mon chardev=qmp-data,mode=control \\
  -chardev socket,id=qmp-test,path=${opt(m.testQmpSocket)},server=on,wait=off -mon chardev=qmp-test,mode=control \\
  -pidfile ${q(m.pidFile)} -daemonize
`,
      { mode: 0o755 },
    );
    await writeFile(
      m.stopScript,
      `#!/bin/sh
# Stops the primary machine (SIGTERM: QEMU exits at once, the guest's synced writes are on the disk files).
[ -f ${q(m.pidFile)} ] || exit 0
pid="$(cat ${q(m.pidFile)})"
kill "$pid" 2>/dev/null || exit 0
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
kill -9 "$pid" 2>/dev/null || true
exit 0
`,
      { mode: 0o755 },
    );
    m.tailer = setInterval(() => m.tail(), 100);
    m.tailer.unref();
    return m;
  }

  /** agent.json `machine`: the commands the agent runs to start or shut down this machine. */
  get machineCommands(): { startCommand: string[]; shutdownCommand: string[] } {
    return { startCommand: ['/bin/sh', this.startScript], shutdownCommand: ['/bin/sh', this.stopScript] };
  }

  /** agent.json `disks`: both disks, tracked through QEMU's dirty bitmaps; `file` is the disk file (written back on failback). */
  agentDisks(): Array<{ name: string; file: string; tracker: Record<string, unknown> }> {
    const tracker = (node: 'root' | 'data', file: string) => ({
      kind: 'qemu',
      sizeBytes: statSync(file).size,
      qmpSocket: this.agentQmpSockets[node],
      node,
      nbdSocket: this.nbdSocket,
      workDir: join(this.dir, `tracker-work-${node}`),
    });
    return [
      { name: 'root', file: this.rootFile, tracker: tracker('root', this.rootFile) },
      { name: 'data', file: this.dataFile, tracker: tracker('data', this.dataFile) },
    ];
  }

  /** QEMU's pid while it runs, else null. */
  pid(): number | null {
    if (!existsSync(this.pidFile)) return null;
    const pid = Number.parseInt(readFileSync(this.pidFile, 'utf8'), 10);
    if (!Number.isInteger(pid) || pid <= 0) return null;
    try {
      process.kill(pid, 0);
      return pid;
    } catch {
      return null;
    }
  }

  running(): boolean {
    return this.pid() !== null;
  }

  /** Starts QEMU (if it is not running) and waits for the guest's marker line of this boot. */
  async start(timeoutMs = 180_000): Promise<void> {
    this.tail();
    const before = this.markersSeen;
    await run('/bin/sh', [this.startScript]);
    await this.waitForBoot(before, timeoutMs);
  }

  /** Waits for a boot marker beyond the first `after` markers of the console (a boot the agent's start command began). */
  async waitForBoot(after: number, timeoutMs = 180_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.markersSeen <= after) {
      this.tail();
      if (!this.running() && this.markersSeen <= after) {
        await sleep(200);
        this.tail();
        if (this.markersSeen <= after && !this.running()) throw new Error(`the primary machine stopped before booting\n${this.consoleTail()}`);
      }
      if (Date.now() > deadline) throw new Error(`the primary machine did not boot within ${timeoutMs} ms\n${this.consoleTail()}`);
      await sleep(100);
    }
  }

  /** How many boot markers the console shows so far. */
  boots(): number {
    this.tail();
    return this.markersSeen;
  }

  /** The record the workload of the current (last) boot resumed after; undefined until it said so. */
  resumedAfter(): number | undefined {
    this.tail();
    const lastBoot = this.consoleText.lastIndexOf(PRIMARY_MARKER);
    if (lastBoot < 0) return undefined;
    const m = /lifeboat-records: resuming after record (\d+)/.exec(this.consoleText.slice(lastBoot));
    return m ? Number(m[1]) : undefined;
  }

  /** Stops QEMU the way the agent's shutdownCommand does. */
  async stop(): Promise<void> {
    await run('/bin/sh', [this.stopScript]);
    this.tail();
  }

  /** Every ACK seen so far, in order (across boots). */
  acks(): readonly Ack[] {
    this.tail();
    return this.acksSeen;
  }

  /** The highest record acknowledged before `ms` (0 when none). */
  ackedBefore(ms: number): number {
    let max = 0;
    for (const a of this.acks()) if (a.seenAtMs < ms && a.n > max) max = a.n;
    return max;
  }

  lastAck(): number {
    const acks = this.acks();
    return acks.length === 0 ? 0 : (acks[acks.length - 1] as Ack).n;
  }

  /** Waits until the guest acknowledged record `n` (or a later one). */
  async waitForAck(n: number, timeoutMs = 120_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.lastAck() < n) {
      if (Date.now() > deadline) throw new Error(`record ${n} was not acknowledged within ${timeoutMs} ms (last ${this.lastAck()})\n${this.consoleTail()}`);
      await sleep(100);
    }
  }

  consoleTail(chars = 3000): string {
    this.tail();
    return this.consoleText.slice(-chars);
  }

  /** Kills QEMU and stops tailing the console. Idempotent. */
  async dispose(): Promise<void> {
    if (this.tailer) clearInterval(this.tailer);
    this.tailer = undefined;
    const pid = this.pid();
    if (pid !== null) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
      for (let i = 0; i < 100 && this.pid() !== null; i++) await sleep(50);
    }
  }

  /** Reads what the console file gained since the last call; stamps new ACK lines with now. */
  private tail(): void {
    if (!existsSync(this.consoleFile)) return;
    const buf = readFileSync(this.consoleFile);
    if (buf.length <= this.consoleOffset) return;
    const now = Date.now();
    const added = buf.subarray(this.consoleOffset).toString('latin1');
    // Only complete lines are consumed: a half-printed "ACK 12" must not count as record 1.
    const lastNl = added.lastIndexOf('\n');
    if (lastNl < 0) return;
    const complete = added.slice(0, lastNl + 1);
    this.consoleOffset += Buffer.byteLength(complete, 'latin1');
    this.consoleText = (this.consoleText + complete).slice(-1_000_000);
    for (const raw of complete.split('\n')) {
      const line = raw.replace(/\r$/, '');
      const ack = /^ACK (\d+)$/.exec(line);
      if (ack) this.acksSeen.push({ n: Number(ack[1]), seenAtMs: now });
      else if (line.startsWith(PRIMARY_MARKER)) this.markersSeen++;
    }
  }
}

/** ACK lines in a console text (a recovered machine's console), in order. */
export function acksIn(consoleText: string): number[] {
  const out: number[] = [];
  for (const m of consoleText.matchAll(/^ACK (\d+)\r?$/gm)) out.push(Number(m[1]));
  return out;
}

/** The records file of a data disk image (raw ext4), read with debugfs: no mount, no loop device. */
export async function readRecordsFile(image: string): Promise<string> {
  const debugfs = requireTool('debugfs', 'e2fsprogs');
  // -c: catastrophic mode, read-only, does not trust or need the block bitmaps.
  const { stdout } = await run(debugfs, ['-c', '-R', `cat /${RECORDS_FILE}`, image]);
  return stdout;
}

export interface RecordsCheck {
  /** Intact records 1..count. */
  readonly count: number;
  /** A torn last line (a crash-consistent copy caught mid-append), or null. */
  readonly torn: string | null;
}

/**
 * Checks a records file: lines 1..n contiguous, every checksum right; only the
 * very last line may be torn. Throws with the first problem.
 * `mustHold`: every record up to this number must be intact (acknowledged before the copy was taken).
 */
export function verifyRecords(text: string, mustHold = 0): RecordsCheck {
  const lines = text.split('\n');
  const complete = lines.slice(0, -1);
  const rest = lines[lines.length - 1] ?? '';
  let count = 0;
  let torn: string | null = rest.length > 0 ? rest : null;
  for (let i = 0; i < complete.length; i++) {
    const line = complete[i] as string;
    const parts = line.split(' ');
    const ok =
      parts.length === 3 &&
      parts[0] === String(i + 1) &&
      createHash('sha256').update(`${parts[0]} ${parts[1]}`).digest('hex') === parts[2];
    if (!ok) {
      if (i === complete.length - 1 && rest.length === 0) {
        torn = line;
        break;
      }
      throw new Error(`records file: line ${i + 1} is not record ${i + 1} intact: ${JSON.stringify(line.slice(0, 200))}`);
    }
    count = i + 1;
  }
  if (count < mustHold) {
    throw new Error(`records file holds records 1..${count}${torn === null ? '' : ' and a torn line'}, but record ${mustHold} was acknowledged before the copy was taken`);
  }
  return { count, torn };
}

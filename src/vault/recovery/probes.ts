import { connect } from 'node:net';
import { sleep } from '../../core/sleep.js';
import { asLifeboatError, isLifeboatError } from '../../core/errors.js';
import type { DrillSettings, Probe, ProbeResult } from '../../core/model.js';
import type { ComputeDriver, MachineStatus } from '../../compute/driver.js';

/**
 * A drill's checks of the recovered machine (docs/recovery.md, "Drill reports"): the
 * boot marker on the console, then every probe in order. A TCP probe connects to the
 * guest port's forward on loopback until the guest answers; a command probe runs in
 * the guest until it exits 0 (and prints what is expected). Each retries until its own
 * timeout, since the guest may still be starting its services.
 */

/** After connecting, how long a forward is watched: QEMU's user networking accepts at once and closes when the guest refuses. */
const ANSWER_WAIT_MS = 1000;
const RETRY_MS = 500;

export interface BootCheck {
  readonly ok: boolean;
  /** When the machine counted as booted (marker seen, or the last probe passed, or started): the end of the RTO. */
  readonly bootedAtMs: number | null;
  readonly probes: readonly ProbeResult[];
  readonly error: string | null;
}

export async function checkBoot(
  driver: ComputeDriver,
  status: MachineStatus,
  settings: DrillSettings | undefined,
  startedAtMs: number,
  signal: AbortSignal,
): Promise<BootCheck> {
  const marker = settings?.bootMarker ?? null;
  const probes = settings?.probes ?? [];
  let bootedAtMs: number | null = marker === null && probes.length === 0 ? startedAtMs : null;
  if (marker !== null) {
    try {
      const seen = await driver.waitForConsole(status.id, new RegExp(marker), { timeoutMs: (settings?.bootTimeoutSeconds ?? 600) * 1000, signal });
      bootedAtMs = seen.atMs;
    } catch (err) {
      return { ok: false, bootedAtMs: null, probes: [], error: `the boot marker /${marker}/ was not seen: ${asLifeboatError(err).message}` };
    }
  }
  const results: ProbeResult[] = [];
  for (const probe of probes) {
    if (signal.aborted) break;
    const started = Date.now();
    const outcome = probe.kind === 'tcp' ? await tcpProbe(status, probe, signal) : await commandProbe(driver, status.id, probe, signal);
    results.push({ name: probe.name, kind: probe.kind, ok: outcome.ok, detail: outcome.detail.slice(0, 2000), durationMs: Date.now() - started });
    if (outcome.ok && marker === null) bootedAtMs = Date.now();
  }
  const failed = results.filter((r) => !r.ok);
  if (signal.aborted && results.length < probes.length) {
    return { ok: false, bootedAtMs: null, probes: results, error: 'the drill was interrupted before every probe ran' };
  }
  if (failed.length > 0) {
    return { ok: false, bootedAtMs: marker === null ? null : bootedAtMs, probes: results, error: `probe${failed.length > 1 ? 's' : ''} failed: ${failed.map((r) => `${r.name} (${r.detail})`).join('; ')}` };
  }
  return { ok: true, bootedAtMs, probes: results, error: null };
}

async function tcpProbe(status: MachineStatus, probe: Extract<Probe, { kind: 'tcp' }>, signal: AbortSignal): Promise<{ ok: boolean; detail: string }> {
  const hostPort = status.forwardedPorts[String(probe.port)];
  if (hostPort === undefined) return { ok: false, detail: `guest port ${probe.port} is not forwarded to the host` };
  const deadline = Date.now() + probe.timeoutSeconds * 1000;
  let last = 'no attempt';
  for (;;) {
    const answer = await knock(hostPort, Math.max(1, deadline - Date.now()));
    if (answer.ok) return { ok: true, detail: `port ${probe.port} answered (${answer.detail})` };
    last = answer.detail;
    if (signal.aborted) return { ok: false, detail: `port ${probe.port}: interrupted (${last})` };
    if (Date.now() + RETRY_MS >= deadline) return { ok: false, detail: `port ${probe.port} did not answer within ${probe.timeoutSeconds} s (${last})` };
    await sleep(RETRY_MS);
  }
}

/** One connection to 127.0.0.1:port: answered when data comes or the connection stays open. */
function knock(port: number, timeoutMs: number): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    let connected = false;
    let done = false;
    let hold: NodeJS.Timeout | undefined;
    const finish = (ok: boolean, detail: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(hold);
      socket.destroy();
      resolve({ ok, detail });
    };
    const timer = setTimeout(() => finish(false, 'connect timed out'), Math.min(timeoutMs, ANSWER_WAIT_MS + 5000));
    socket.once('connect', () => {
      connected = true;
      clearTimeout(timer);
      hold = setTimeout(() => finish(true, 'connection held open'), ANSWER_WAIT_MS);
    });
    socket.once('data', () => finish(true, 'it sent data'));
    socket.once('end', () => finish(false, 'closed without a word'));
    socket.once('close', () => finish(false, connected ? 'closed without a word' : 'connection refused'));
    socket.once('error', (err: NodeJS.ErrnoException) => finish(false, err.code ?? err.message));
  });
}

async function commandProbe(driver: ComputeDriver, id: string, probe: Extract<Probe, { kind: 'command' }>, signal: AbortSignal): Promise<{ ok: boolean; detail: string }> {
  const deadline = Date.now() + probe.timeoutSeconds * 1000;
  for (;;) {
    let detail: string;
    try {
      const r = await driver.runInGuest(id, probe.command, { timeoutMs: Math.max(1, deadline - Date.now()), signal });
      const tail = r.output.trim().slice(-200);
      const printed = probe.expectOutput === undefined || r.output.includes(probe.expectOutput);
      if (r.exitCode === 0 && printed) return { ok: true, detail: `exit 0${tail ? `: ${tail}` : ''}` };
      detail = r.exitCode !== 0 ? `exit ${r.exitCode}${tail ? `: ${tail}` : ''}` : `exit 0 without ${JSON.stringify(probe.expectOutput)}${tail ? `: ${tail}` : ''}`;
    } catch (err) {
      const e = asLifeboatError(err);
      if (isLifeboatError(err, 'UNSUPPORTED')) return { ok: false, detail: e.message };
      detail = `${e.code}: ${e.message}`;
    }
    if (signal.aborted || Date.now() + RETRY_MS >= deadline) return { ok: false, detail };
    await sleep(RETRY_MS);
  }
}

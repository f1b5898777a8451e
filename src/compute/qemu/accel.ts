/**
 * Which accelerator the qemu driver boots guests under. Never decided from
 * /dev/kvm's existence: a host can open /dev/kvm and still hang every real
 * guest (nested virtualization that cannot run long mode, `-cpu host` aborting
 * on an MSR). The verdict comes from a trial boot of a real machine under KVM
 * (see QemuComputeDriver.decideAccel) and is kept in `<stateDir>/accel.json`;
 * `LIFEBOAT_QEMU_ACCEL=kvm|tcg` overrides both.
 */
import { readFile } from 'node:fs/promises';
import { LifeboatError } from '../../core/errors.js';
import { writeFileDurable } from '../../io/durable.js';

export type Accel = 'kvm' | 'tcg';

export const ACCEL_FILE = 'accel.json';
export const ACCEL_ENV = 'LIFEBOAT_QEMU_ACCEL';

export interface AccelVerdict {
  readonly accel: Accel;
  /** What the trial showed, for the operator. */
  readonly reason: string;
  readonly decidedAt: string;
}

/** The override from the environment; CONFIG_INVALID for anything but kvm or tcg. */
export function accelOverride(env: NodeJS.ProcessEnv = process.env): Accel | undefined {
  const value = env[ACCEL_ENV];
  if (value === undefined || value === '') return undefined;
  if (value !== 'kvm' && value !== 'tcg') {
    throw new LifeboatError('CONFIG_INVALID', `${ACCEL_ENV} must be kvm or tcg: ${JSON.stringify(value)}`, { details: { [ACCEL_ENV]: value } });
  }
  return value;
}

export async function readAccelVerdict(stateDir: string): Promise<AccelVerdict | undefined> {
  try {
    const verdict = JSON.parse(await readFile(`${stateDir}/${ACCEL_FILE}`, 'utf8')) as AccelVerdict;
    return verdict.accel === 'kvm' || verdict.accel === 'tcg' ? verdict : undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || err instanceof SyntaxError) return undefined;
    throw err;
  }
}

export async function writeAccelVerdict(stateDir: string, verdict: AccelVerdict): Promise<void> {
  await writeFileDurable(stateDir, ACCEL_FILE, `${JSON.stringify(verdict, null, 2)}\n`);
}

import { readFileSync } from 'node:fs';
import { cpus, availableParallelism, loadavg, release, totalmem } from 'node:os';
import { versionOf } from './exec.js';

export interface MachineFacts {
  readonly cpu: string;
  readonly nproc: number;
  readonly memory: string;
  readonly os: string;
  readonly kernel: string;
  readonly node: string;
  readonly filesystem: string;
  /** 1-minute load average when the run started and ended: other work on the box skews wall times. */
  readonly loadAverage: string;
  readonly loadAtStart: number;
  readonly tools: Readonly<Record<string, string>>;
}

/** What the numbers depend on, printed with every report. */
export function machineFacts(benchDir: string, toolVersions: Readonly<Record<string, string>>, loadAtStart: number): MachineFacts {
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    nproc: availableParallelism(),
    memory: `${(totalmem() / 1024 ** 3).toFixed(1)} GiB`,
    os: osName(),
    kernel: `Linux ${release()}`,
    node: process.version,
    filesystem: versionOf('findmnt', ['-n', '-o', 'FSTYPE,SOURCE', '-T', benchDir]).replace(/\s+/g, ' '),
    loadAtStart,
    loadAverage: `${loadAtStart.toFixed(2)} at start, ${(loadavg()[0] ?? 0).toFixed(2)} at end`,
    tools: {
      zstd: versionOf('zstd', ['--version']).replace(/^\*+\s*|\s*\*+$/g, ''),
      'mkfs.ext4': versionOf('mkfs.ext4', ['-V']),
      'GNU time': versionOf('/usr/bin/time', ['--version']),
      ...toolVersions,
    },
  };
}

function osName(): string {
  try {
    const m = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync('/etc/os-release', 'utf8'));
    return m?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

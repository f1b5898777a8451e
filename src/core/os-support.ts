/**
 * Supported operating systems for protected machines (seed step 1). A machine is
 * given as "distribution-version" (Machine.os, e.g. "debian-12", "ubuntu-22.04",
 * "rhel-9.3", "sles-15-sp5") and a kernel release ("5.15.0-91-generic").
 * The answer carries a reason a user can act on when it is no.
 *
 * The kernel floor is 4.18 (RHEL 8's kernel): change tracking needs a
 * kernel with reliable block-layer tracing and O_DIRECT on all the supported
 * filesystems. Windows is a later row, not a first one (DESIGN.md).
 */

export interface OsCheck {
  /** null: the distribution is supported but the kernel is not known yet (checked again at push install). */
  readonly supported: boolean | null;
  readonly reason: string | null;
}

export const MIN_KERNEL: readonly [number, number] = [4, 18];

interface Distro {
  readonly name: string;
  readonly aliases: readonly string[];
  /** Supported versions as matched against the version the user gave. */
  readonly versions: readonly string[];
  /** 'major': "9.3" matches "9"; 'exact': "22.04.3" matches "22.04". */
  readonly match: 'major' | 'major.minor';
}

export const SUPPORTED_DISTROS: readonly Distro[] = [
  { name: 'Debian', aliases: ['debian'], versions: ['11', '12'], match: 'major' },
  { name: 'Ubuntu', aliases: ['ubuntu'], versions: ['20.04', '22.04', '24.04'], match: 'major.minor' },
  { name: 'Red Hat Enterprise Linux', aliases: ['rhel', 'redhat', 'red-hat'], versions: ['8', '9'], match: 'major' },
  { name: 'Rocky Linux', aliases: ['rocky', 'rockylinux'], versions: ['8', '9'], match: 'major' },
  { name: 'AlmaLinux', aliases: ['alma', 'almalinux'], versions: ['8', '9'], match: 'major' },
  { name: 'SUSE Linux Enterprise Server', aliases: ['sles', 'suse', 'sle'], versions: ['15'], match: 'major' },
];

/** Splits "ubuntu-22.04" into distribution and version; the version starts at the first dash followed by a digit. */
export function parseOs(os: string): { distribution: string; version: string } {
  const m = /^(.*?)[-_ ]?(\d.*)?$/.exec(os.trim().toLowerCase());
  return { distribution: (m?.[1] ?? '').replace(/[-_ ]+$/, ''), version: m?.[2] ?? '' };
}

/** "5.15.0-91-generic" -> [5, 15]; undefined when it is not a kernel release. */
export function parseKernel(kernel: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)(?:[.\-+_~].*)?$/.exec(kernel.trim());
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

function versionKey(version: string, match: Distro['match']): string {
  // sles "15-sp5" / "15.5" -> "15"; rhel "9.3" -> "9"; ubuntu "22.04.3" -> "22.04".
  const parts = version.split(/[.\-_]/);
  return match === 'major' ? (parts[0] ?? '') : parts.slice(0, 2).join('.');
}

export function checkOsSupport(machine: { os: string; kernel: string | null }): OsCheck {
  const { distribution, version } = parseOs(machine.os);
  if (distribution.startsWith('windows') || distribution.startsWith('win')) {
    return no('Windows is not supported yet; Linux machines only (see the supported distributions)');
  }
  if (distribution === 'centos') return no('CentOS is not supported; Rocky Linux or AlmaLinux 8 and 9 are');
  const distro = SUPPORTED_DISTROS.find((d) => d.aliases.includes(distribution));
  if (!distro) {
    return no(`unknown distribution '${distribution || machine.os}'; supported: ${SUPPORTED_DISTROS.map((d) => `${d.name} ${d.versions.join('/')}`).join(', ')}`);
  }
  if (version === '') return no(`no version given for ${distro.name}; supported: ${distro.versions.join(', ')}`);
  if (!distro.versions.includes(versionKey(version, distro.match))) {
    return no(`${distro.name} ${version} is not supported; supported versions: ${distro.versions.join(', ')}`);
  }
  if (machine.kernel === null || machine.kernel.trim() === '') {
    return { supported: null, reason: 'kernel version not known yet; it is checked at push install' };
  }
  const k = parseKernel(machine.kernel);
  if (!k) return no(`kernel '${machine.kernel}' is not a kernel release such as 5.15.0-91-generic`);
  const [maj, min] = k;
  if (maj < MIN_KERNEL[0] || (maj === MIN_KERNEL[0] && min < MIN_KERNEL[1])) {
    return no(`kernel ${maj}.${min} is older than ${MIN_KERNEL.join('.')}`);
  }
  return { supported: true, reason: null };
}

function no(reason: string): OsCheck {
  return { supported: false, reason };
}

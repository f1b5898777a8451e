import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, makeTempDir } from './env.js';

/**
 * A real OpenSSH server on 127.0.0.1 for push-install tests, with its own host key,
 * config, pid file and authorized-keys directory in a temporary directory. Nothing of
 * the machine's own sshd setup is touched: root logs in with a key listed in this
 * server's AuthorizedKeysFile only, and password login is exercised with a dedicated
 * user (random name and password) that stop() deletes again. The root password of the
 * machine is never changed.
 *
 * Needs root (sshd checks passwords and switches users only as root) and the Debian
 * packages openssh-server and openssh-client; a missing one fails the test naming it.
 */
export interface TestSshd {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** `SHA256:…` of the host key, as `ssh-keygen -l` prints it. */
  readonly fingerprint: string;
  /** A user with a password (and a shell and a home directory it owns). */
  readonly user: { readonly name: string; readonly password: string; readonly home: string };
  /** Private keys accepted for root: one plain, one encrypted with `passphrase`. */
  readonly rootKey: string;
  readonly rootKeyEncrypted: { readonly privateKey: string; readonly passphrase: string };
  /** A private key no account accepts. */
  readonly strangerKey: string;
  /** A scratch directory (mode 0755) for the test's own files. */
  readonly dir: string;
  /** The server's log so far (sshd -e). */
  log(): string;
  stop(): Promise<void>;
}

const LOOPBACK = '127.0.0.1';
const START_TIMEOUT_MS = 15_000;
const START_ATTEMPTS = 3;

export async function startSshd(): Promise<TestSshd> {
  const sshd = findSshd();
  requireBinary('ssh-keygen', 'openssh-client');
  if (process.getuid?.() !== 0) throw new Error('the push-install tests start sshd, which needs root: run them as root');
  // Debian's sshd refuses to start without its privilege-separation directory, which
  // systemd normally creates; creating an empty root-owned directory is harmless.
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });

  const temp = makeTempDir('sshd');
  const cleanups: (() => void)[] = [temp.cleanup];
  const cleanup = (): void => {
    for (const fn of cleanups.reverse()) {
      try {
        fn();
      } catch {
        // best effort: the other cleanups must still run
      }
    }
  };
  try {
    const dir = temp.path;
    // The test user must be able to reach its home below this directory.
    chmodSync(dir, 0o755);
    const keygen = (file: string, passphrase = ''): string => {
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', passphrase, '-C', 'lifeboat-test', '-f', file], { stdio: 'pipe' });
      return readFileSync(file, 'utf8');
    };
    const hostKey = join(dir, 'ssh_host_ed25519_key');
    keygen(hostKey);
    const fingerprint = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${hostKey}.pub`], { encoding: 'utf8' }).split(' ')[1] ?? '';

    const keysDir = join(dir, 'authorized');
    mkdirSync(keysDir, { mode: 0o755 });
    const rootKey = keygen(join(dir, 'root_key'));
    const passphrase = `pp-${randomBytes(8).toString('hex')}`;
    const rootKeyEncrypted = keygen(join(dir, 'root_key_enc'), passphrase);
    const strangerKey = keygen(join(dir, 'stranger_key'));
    writeFileSync(
      join(keysDir, 'root_keys'),
      readFileSync(join(dir, 'root_key.pub'), 'utf8') + readFileSync(join(dir, 'root_key_enc.pub'), 'utf8'),
      { mode: 0o600 },
    );

    const name = `lbt${randomBytes(4).toString('hex')}`;
    const password = `Pw-${randomBytes(12).toString('base64url')}`;
    const home = join(dir, 'home');
    mkdirSync(home, { mode: 0o755 });
    execFileSync('useradd', ['-M', '-d', home, '-s', '/bin/sh', name], { stdio: 'pipe' });
    const removeUser = (): void => {
      execFileSync('userdel', ['-f', name], { stdio: 'pipe' });
    };
    cleanups.push(removeUser);
    exitCleanups.add(removeUser);
    cleanups.push(() => exitCleanups.delete(removeUser));
    execFileSync('chpasswd', { input: `${name}:${password}\n`, stdio: ['pipe', 'pipe', 'pipe'] });
    const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
    chownSync(home, uid, -1);

    const scratch = join(dir, 'scratch');
    mkdirSync(scratch, { mode: 0o755 });
    const config = join(dir, 'sshd_config');
    let lastError: unknown;
    for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
      const port = await freePort();
      writeConfig(sshd, config, [
        `ListenAddress ${LOOPBACK}`,
        `Port ${port}`,
        `HostKey ${hostKey}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${keysDir}/%u_keys`,
        'PasswordAuthentication yes',
        'KbdInteractiveAuthentication no',
        'PubkeyAuthentication yes',
        'PermitRootLogin yes',
        'UsePAM no',
        'StrictModes no',
        `AllowUsers root ${name}`,
        'MaxStartups 100',
        'LogLevel VERBOSE',
        'Subsystem sftp internal-sftp',
      ]);
      const child = spawn(sshd, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
      live.add(child);
      let log = '';
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (log = (log + chunk).slice(-64_000)));
      try {
        await waitUntilListening(child, () => log);
      } catch (err) {
        await kill(child);
        live.delete(child);
        lastError = err;
        continue;
      }
      return {
        host: LOOPBACK,
        port,
        fingerprint,
        user: { name, password, home },
        rootKey,
        rootKeyEncrypted: { privateKey: rootKeyEncrypted, passphrase },
        strangerKey,
        dir: scratch,
        log: () => log,
        stop: async () => {
          await kill(child);
          live.delete(child);
          cleanup();
        },
      };
    }
    throw lastError;
  } catch (err) {
    cleanup();
    throw err;
  }
}

/** A loopback port nothing listens on (bound and released just now). */
export function closedPort(): Promise<number> {
  return freePort();
}

function findSshd(): string {
  for (const path of ['/usr/sbin/sshd', '/usr/bin/sshd']) if (existsSync(path)) return path;
  throw new Error('sshd is not installed: apt-get install openssh-server (scripts/install-test-deps.sh installs it)');
}

function requireBinary(name: string, debianPackage: string): void {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'pipe' });
  } catch {
    throw new Error(`${name} is not installed: apt-get install ${debianPackage} (scripts/install-test-deps.sh installs it)`);
  }
}

/**
 * Writes the config, adding options that newer OpenSSH releases know: PerSourcePenalties
 * (9.8+) would otherwise lock 127.0.0.1 out after the tests' deliberate login failures.
 */
function writeConfig(sshd: string, path: string, lines: string[]): void {
  writeFileSync(path, [...lines, 'PerSourcePenalties no', ''].join('\n'), { mode: 0o600 });
  try {
    execFileSync(sshd, ['-t', '-f', path], { stdio: 'pipe' });
    return;
  } catch {
    // an older sshd: without the option
  }
  writeFileSync(path, [...lines, ''].join('\n'), { mode: 0o600 });
  try {
    execFileSync(sshd, ['-t', '-f', path], { stdio: 'pipe' });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? String(err);
    throw new Error(`sshd rejects the test configuration: ${stderr.trim()}`);
  }
}

async function waitUntilListening(child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`sshd exited at start (code ${child.exitCode}): ${log().trim() || '(no output)'}`);
    }
    if (/Server listening on/.test(log())) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`sshd did not listen within ${START_TIMEOUT_MS} ms: ${log().trim()}`);
}


async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

/** Servers and users still around if the test process exits without stop(). */
const live = new Set<ChildProcess>();
const exitCleanups = new Set<() => void>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
  for (const fn of exitCleanups) {
    try {
      fn();
    } catch {
      // the process is exiting anyway
    }
  }
});

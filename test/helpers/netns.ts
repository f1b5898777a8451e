import { execFile, execFileSync, spawn as spawnChild, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { requireTool } from './env.js';

/**
 * Two network namespaces joined by a cable the test can cut, for partition tests.
 *
 * Topology: `a` and `b` each get one veth end (`eth0`) with an address in 127.100.N.0/24
 * (loopback range, made routable across the veth with route_localnet=1: nothing of this
 * can ever leave the machine, and nothing in the host namespace changes). The other ends
 * sit on a bridge in a third "wire" namespace. setLinkDown() takes the wire's ports
 * down: both eth0s keep their address and route but lose carrier, as with a pulled
 * cable. Nothing crosses; a new connection fails with EHOSTUNREACH after about 3 s (ARP
 * gives up) or the caller's timeout, and an established connection is not reset: TCP
 * keeps retransmitting and delivers after setLinkUp(). Taking eth0 itself down would
 * instead drop its route, and 127.x traffic would then be delivered to the namespace's
 * own loopback.
 *
 * Needs root and iproute2 (`ip`); a missing one fails the test naming it.
 */
export interface NetnsEnd {
  /** Namespace name, `lb-<pid>-<n>-a` or `-b`; use with `ip netns exec`. */
  readonly name: string;
  /** This end's address on the link (reachable from the other end only). */
  readonly ip: string;
}

export type NetnsSide = 'a' | 'b' | NetnsEnd;

export interface NetnsExecResult {
  readonly stdout: string;
  readonly stderr: string;
}

export interface NetnsLink {
  readonly a: NetnsEnd;
  readonly b: NetnsEnd;
  /** Runs a command to completion in a namespace; rejects with its stderr on a non-zero exit. */
  exec(ns: NetnsSide, cmd: string, args?: readonly string[]): Promise<NetnsExecResult>;
  /**
   * Starts a process in a namespace. `ip netns exec` execs the command in place, so the
   * returned child's pid is the command's own pid: child.kill() reaches it directly.
   * destroy() SIGKILLs children still running.
   */
  spawn(ns: NetnsSide, cmd: string, args?: readonly string[], opts?: SpawnOptions): ChildProcess;
  /** Cuts the cable: nothing crosses between a and b until setLinkUp() (see above). */
  setLinkDown(): Promise<void>;
  setLinkUp(): Promise<void>;
  /** Kills children spawned here and deletes the namespaces; idempotent, never throws. */
  destroy(): Promise<void>;
}

const PREFIX = `lb-${process.pid}-`;
let linkCounter = 0;

/** Namespaces created by this process and not destroyed yet, deleted at process exit. */
const liveNamespaces = new Set<string>();
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of liveChildren) killQuietly(child);
    for (const name of liveNamespaces) deleteNamespaceSync(name);
  });
}

export async function createLink(): Promise<NetnsLink> {
  const ipPath = requireTool('ip', 'iproute2');
  requireTool('sysctl', 'procps');
  if (process.getuid?.() !== 0) throw new Error('network namespace tests need root (ip netns add): run them as root');
  installExitHook();
  removeStaleNamespaces();

  const n = ++linkCounter;
  const subnet = `127.100.${n % 250}`;
  const a: NetnsEnd = { name: `${PREFIX}${n}-a`, ip: `${subnet}.1` };
  const b: NetnsEnd = { name: `${PREFIX}${n}-b`, ip: `${subnet}.2` };
  const wire = `${PREFIX}${n}-wire`;
  const names = [a.name, b.name, wire];
  const children = new Set<ChildProcess>();

  const ip = (...args: string[]): Promise<NetnsExecResult> => run(ipPath, args);
  const inNs = (ns: string, ...args: string[]): Promise<NetnsExecResult> => run(ipPath, ['netns', 'exec', ns, ...args]);

  let destroyed = false;
  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    for (const child of children) {
      killQuietly(child);
      liveChildren.delete(child);
    }
    for (const name of names) {
      // Deleting a namespace also deletes the veth ends and the bridge inside it.
      await run(ipPath, ['netns', 'del', name]).catch(() => undefined);
      liveNamespaces.delete(name);
    }
  };

  try {
    for (const name of names) {
      await ip('netns', 'add', name);
      liveNamespaces.add(name);
      await inNs(name, 'ip', 'link', 'set', 'lo', 'up');
    }
    // Create each pair directly inside the namespaces, so no name is ever taken in the host namespace.
    await ip('link', 'add', 'eth0', 'netns', a.name, 'type', 'veth', 'peer', 'name', 'port-a', 'netns', wire);
    await ip('link', 'add', 'eth0', 'netns', b.name, 'type', 'veth', 'peer', 'name', 'port-b', 'netns', wire);
    await inNs(wire, 'ip', 'link', 'add', 'br0', 'type', 'bridge');
    for (const port of ['port-a', 'port-b']) {
      await inNs(wire, 'ip', 'link', 'set', port, 'master', 'br0');
      await inNs(wire, 'ip', 'link', 'set', port, 'up');
    }
    await inNs(wire, 'ip', 'link', 'set', 'br0', 'up');
    for (const end of [a, b]) {
      await inNs(end.name, 'sysctl', '-qw', 'net.ipv4.conf.all.route_localnet=1', 'net.ipv4.conf.eth0.route_localnet=1');
      await inNs(end.name, 'ip', 'addr', 'add', `${end.ip}/24`, 'dev', 'eth0');
      await inNs(end.name, 'ip', 'link', 'set', 'eth0', 'up');
    }
  } catch (err) {
    await destroy();
    throw new Error(`could not create the network namespaces ${names.join(', ')}: ${message(err)}`, { cause: err });
  }

  const nsName = (ns: NetnsSide): string => (ns === 'a' ? a.name : ns === 'b' ? b.name : ns.name);
  const setWire = async (state: 'up' | 'down'): Promise<void> => {
    if (destroyed) throw new Error(`link ${a.name} <-> ${b.name} was destroyed`);
    for (const port of ['port-a', 'port-b']) await inNs(wire, 'ip', 'link', 'set', port, state);
  };

  return {
    a,
    b,
    exec: (ns, cmd, args = []) => inNs(nsName(ns), cmd, ...args),
    spawn(ns, cmd, args = [], opts = {}) {
      if (destroyed) throw new Error(`link ${a.name} <-> ${b.name} was destroyed`);
      const child = spawnChild(ipPath, ['netns', 'exec', nsName(ns), cmd, ...args], opts);
      children.add(child);
      liveChildren.add(child);
      child.once('exit', () => {
        children.delete(child);
        liveChildren.delete(child);
      });
      return child;
    },
    setLinkDown: () => setWire('down'),
    setLinkUp: () => setWire('up'),
    destroy,
  };
}

function run(file: string, args: readonly string[]): Promise<NetnsExecResult> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')} failed: ${stderr.trim() || err.message}`, { cause: err }));
      else resolve({ stdout, stderr });
    });
  });
}

function killQuietly(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

function deleteNamespaceSync(name: string): void {
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  } catch {
    // at exit nothing can be reported any more; removeStaleNamespaces() catches leftovers
  }
}

/** Deletes `lb-<pid>-…` namespaces whose creating process is gone (a run killed with -9). */
function removeStaleNamespaces(): void {
  let entries: string[];
  try {
    entries = readdirSync('/run/netns');
  } catch {
    return;
  }
  for (const name of entries) {
    const pid = /^lb-(\d+)-\d+-(?:a|b|wire)$/.exec(name)?.[1];
    if (pid === undefined || Number(pid) === process.pid || isAlive(Number(pid))) continue;
    deleteNamespaceSync(name);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

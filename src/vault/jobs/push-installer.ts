import { LifeboatError, asLifeboatError } from '../../core/errors.js';
import type { Machine } from '../../core/model.js';
import { checkOsSupport } from '../../core/os-support.js';
import type { Repositories } from '../db/repositories/index.js';
import { DEFAULT_REMOTE_DIR, pushInstall, type HostKeyPolicy, type PushInstallAuth, type PushInstallResult } from '../push-install/push-install.js';
import { redact, registerSecret } from '../secrets/redact.js';
import type { DbAccounts, EnableParams } from '../services/replication-services.js';
import { enableParamsKey } from '../services/replication-services.js';
import { assembleAgentBundle, packageRoot, packageVersion } from './agent-bundle.js';
import type { MobilityInstaller } from './runner.js';

/**
 * The "Install the mobility service" step of Enable protection, done for real:
 * push install over SSH (src/vault/push-install) with the account chosen at
 * enable time. docs/push-install.md ("From a job") describes it for operators.
 *
 * Host keys: the first install accepts the key the machine presents and stores
 * its fingerprint under `machine-hostkey:<machineId>`; every later install pins
 * it, so a changed key fails with HOST_KEY_MISMATCH before any credential is sent.
 * What the probe reported (OS, kernel) updates the machine and the supported-OS
 * check runs again; an unsupported machine fails the step with the reason. The
 * result of the last successful install is kept under `machine-agent-install:<machineId>`.
 *
 * Errors become the step's error as `<CODE>: <message>`, with the account's
 * secret cut out; the secret is never stored, logged or returned.
 */

export interface PushInstallSettings {
  /** SSH port on every machine (machines have no port field); default 22. */
  readonly port?: number;
  /** A directory to push instead of the package's runtime files (agent.env is added either way). */
  readonly bundleDir?: string;
  /** Where the bundle goes on the machine; default /opt/lifeboat. */
  readonly remoteDir?: string;
  /** Where the default start command writes `agent-installed`; default /var/lib/lifeboat. */
  readonly stateDir?: string;
  /** Replaces the default start command (which records the install and starts the agent in the background). It must return promptly. */
  readonly startCommand?: string;
  readonly connectTimeoutMs?: number;
  readonly timeoutMs?: number;
  /** The vault URL written into agent.env: the address machines reach the vault at. */
  readonly vaultUrl?: string;
}

export const DEFAULT_STATE_DIR = '/var/lib/lifeboat';

export interface StoredHostKey {
  readonly sha256: string;
  readonly firstSeenAt: string;
  readonly lastSeenAt: string;
}

export interface AgentInstallRecord {
  readonly installedAt: string;
  readonly os: string;
  readonly kernel: string;
  readonly arch: string;
  readonly remoteDir: string;
  readonly filesCopied: number;
  readonly bytesCopied: number;
  readonly fingerprint: string;
  readonly username: string;
}

export function hostKeySettingKey(machineId: string): string {
  return `machine-hostkey:${machineId}`;
}

export function agentInstallSettingKey(machineId: string): string {
  return `machine-agent-install:${machineId}`;
}

function q(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/**
 * The default start command. It writes `<stateDir>/agent-installed` (version, install
 * time, machine id, install directory) atomically, a record that can be checked on the
 * machine, then starts `lifeboat agent run --env-file <remoteDir>/agent.env --state-dir
 * <stateDir>` (the bundle's bin/lifeboat.js under node) in the background (nohup, output appended to `<stateDir>/agent.log`), so it
 * returns at once. A running agent of an earlier install is stopped first (its pid file).
 */
export function defaultStartCommand(o: { stateDir: string; version: string; machineId: string; remoteDir: string }): string {
  const file = `${o.stateDir}/agent-installed`;
  const pidFile = `${o.stateDir}/agent.pid`;
  const run = `node ${q(`${o.remoteDir}/bin/lifeboat.js`)} agent run --env-file ${q(`${o.remoteDir}/agent.env`)} --state-dir ${q(o.stateDir)}`;
  return (
    `set -e; mkdir -p -- ${q(o.stateDir)}; ` +
    `printf 'version=%s\\ninstalledAt=%s\\nmachineId=%s\\nremoteDir=%s\\nagent=started\\n' ` +
    `${q(o.version)} "$(date -u +%Y-%m-%dT%H:%M:%SZ)" ${q(o.machineId)} ${q(o.remoteDir)} > ${q(`${file}.tmp`)}; ` +
    `mv -f -- ${q(`${file}.tmp`)} ${q(file)}; ` +
    `if [ -f ${q(pidFile)} ]; then kill "$(cat ${q(pidFile)})" 2>/dev/null || true; fi; ` +
    `nohup sh -c ${q(`exec ${run}`)} >> ${q(`${o.stateDir}/agent.log`)} 2>&1 < /dev/null & echo $! > ${q(pidFile)}`
  );
}

export class PushMobilityInstaller implements MobilityInstaller {
  constructor(
    private readonly deps: {
      readonly repos: Repositories;
      readonly accounts: DbAccounts;
      readonly now: () => Date;
      /** The vault URL for agent.env; undefined until the server listens (port 0). */
      readonly vaultUrl: () => string | undefined;
      readonly settings?: PushInstallSettings;
      /** A fresh one-time enrollment token for the item's agent, written into agent.env. */
      readonly enrollmentToken?: (itemId: string) => Promise<string>;
    },
  ) {}

  async install(target: Parameters<MobilityInstaller['install']>[0]): Promise<void> {
    const { repos, now } = this.deps;
    const s = this.deps.settings ?? {};
    const { item, machine } = target;
    const params = await repos.settings.get<EnableParams>(enableParamsKey(item.id));
    if (!params) throw new LifeboatError('NOT_FOUND', `the enable parameters of item ${item.id} are missing; enable replication again`);
    const vaultUrl = s.vaultUrl ?? this.deps.vaultUrl();
    if (vaultUrl === undefined) {
      throw new LifeboatError('CONFIG_INVALID', 'the vault does not know its own URL yet (it is not listening); enable replication again', { retryable: true });
    }
    if (params.accountId === null) throw new LifeboatError('INTERNAL', `item ${item.id} was enabled for a manual install; push install does not apply`);
    const { account, secret } = await this.deps.accounts.openSecret(params.accountId);
    // From now on masked in every log line (redact.ts), whatever logs it by mistake.
    registerSecret(secret);
    const auth: PushInstallAuth = account.kind === 'password' ? { password: secret } : { privateKey: secret };
    const pinned = await repos.settings.get<StoredHostKey>(hostKeySettingKey(machine.id));
    const hostKey: HostKeyPolicy = pinned ? { sha256: pinned.sha256 } : 'accept-new';
    const remoteDir = s.remoteDir ?? DEFAULT_REMOTE_DIR;
    const version = await packageVersion(await packageRoot());
    const enrollmentToken = this.deps.enrollmentToken ? await this.deps.enrollmentToken(item.id) : undefined;
    registerSecret(enrollmentToken);
    const bundle = await assembleAgentBundle({
      ...(s.bundleDir === undefined ? {} : { bundleDir: s.bundleDir }),
      env: {
        vaultUrl,
        vaultId: item.vaultId,
        configServerId: machine.configServerId,
        machineId: machine.id,
        machineName: machine.name,
        itemId: item.id,
        ...(enrollmentToken === undefined ? {} : { enrollmentToken }),
      },
    });

    // onProgress is synchronous; database writes are chained so they land in order.
    let progress = Promise.resolve();
    let reported = -1;
    const onProgress = (_step: string, percent: number): void => {
      if (!target.progress || percent <= reported) return;
      reported = percent;
      const report = target.progress;
      progress = progress.then(() => report(percent)).catch(() => undefined);
    };
    let result: PushInstallResult;
    try {
      result = await pushInstall({
        host: machine.privateIp,
        port: s.port ?? 22,
        username: account.username,
        auth,
        hostKey,
        bundleDir: bundle.dir,
        remoteDir,
        startCommand: s.startCommand ?? defaultStartCommand({ stateDir: s.stateDir ?? DEFAULT_STATE_DIR, version, machineId: machine.id, remoteDir }),
        ...(s.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: s.connectTimeoutMs }),
        ...(s.timeoutMs === undefined ? {} : { timeoutMs: s.timeoutMs }),
        onProgress,
      });
    } catch (err) {
      const e = asLifeboatError(err, 'PUSH_INSTALL_FAILED');
      // pushInstall already redacts; cut the secret out again so no path can leak it.
      throw new LifeboatError(e.code, redact(`${e.code}: ${e.message}`, [secret]), {
        retryable: e.retryable,
        details: redact(e.details ?? {}, [secret]) as Record<string, unknown>,
      });
    } finally {
      await bundle.cleanup();
      await progress;
    }

    const at = now().toISOString();
    await repos.settings.set(hostKeySettingKey(machine.id), {
      sha256: result.fingerprint,
      firstSeenAt: pinned?.firstSeenAt ?? at,
      lastSeenAt: at,
    } satisfies StoredHostKey);
    const os = result.os.versionId ? `${result.os.id}-${result.os.versionId}` : machine.os;
    const record: AgentInstallRecord = {
      installedAt: at,
      os,
      kernel: result.kernel,
      arch: result.arch,
      remoteDir: result.remoteDir,
      filesCopied: result.filesCopied,
      bytesCopied: result.bytesCopied,
      fingerprint: result.fingerprint,
      username: account.username,
    };
    await repos.settings.set(agentInstallSettingKey(machine.id), record);
    const updated = await this.recheck(machine, os, result.kernel);
    if (updated.supported === false) {
      throw new LifeboatError(
        'VALIDATION',
        `VALIDATION: machine ${machine.name} reports ${os} with kernel ${result.kernel}, which is not supported: ${updated.supportReason ?? 'no reason recorded'}`,
      );
    }
  }

  /** Records what the machine reported and runs the supported-OS check on it. */
  private async recheck(machine: Machine, os: string, kernel: string): Promise<Machine> {
    const check = checkOsSupport({ os, kernel });
    return this.deps.repos.machines.update(machine.id, { os, kernel, supported: check.supported, supportReason: check.reason });
  }
}

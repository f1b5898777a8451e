import { join } from 'node:path';
import { LifeboatError, asLifeboatError } from '../../core/errors.js';
import type { AgentCommandResult, ReplicatedItem } from '../../core/model.js';
import { hostKeySettingKey, type StoredHostKey } from '../jobs/push-installer.js';
import { runRemoteCommand, type HostKeyPolicy, type PushInstallAuth } from '../push-install/push-install.js';
import type { RecoveryDeps } from '../recovery/module.js';
import { redact, registerSecret } from '../secrets/redact.js';
import { SecretBox, loadOrCreateVaultKey } from '../secrets/secret-box.js';
import { DbAccounts, enableParamsKey, type EnableParams } from '../services/replication-services.js';

/**
 * Shutting the protected (source) machine down at failover, and starting it at
 * failback (docs/recovery.md, "Shutting down and starting the source"):
 *
 * 1. Through its agent: the vault puts `shutdownRequest: {id}` (or `startRequest`) in
 *    the item's AgentConfig; the agent runs its configured command once per id and
 *    reports `{id, ok, error}` in its next heartbeat. Waited for at most
 *    AGENT_COMMAND_WAIT_MS.
 * 2. Shutdown only, when the agent is silent, has no command or failed: over SSH with
 *    the item's push account (`poweroff`, through `sudo -n` for another user than
 *    root), the host key pinned as push install pinned it.
 * 3. Otherwise it throws saying why; failover records that on its optional step.
 */

/** How long the agent is given to run the command and report it. */
export const AGENT_COMMAND_WAIT_MS = 2 * 60_000;
/** An agent whose last heartbeat is older than this is taken as silent (it is never asked). */
export const AGENT_SILENT_MS = 30_000;

/** Resolves with how it was done ("agent", "ssh"); throws saying why it could not. */
export async function shutDownSource(deps: RecoveryDeps, item: ReplicatedItem, signal: AbortSignal): Promise<string> {
  const reasons: string[] = [];
  try {
    await viaAgent(deps, item, 'shutdown', signal);
    return 'agent';
  } catch (err) {
    if (signal.aborted) throw err;
    reasons.push(asLifeboatError(err, 'COMPUTE_FAILED').message);
  }
  try {
    await viaSsh(deps, item);
    return 'ssh';
  } catch (err) {
    reasons.push(asLifeboatError(err, 'COMPUTE_FAILED').message);
  }
  throw new LifeboatError('COMPUTE_FAILED', `the source machine of item ${item.id} could not be shut down: ${reasons.join('; ')}`, { details: { item: item.id } });
}

/** Starts the primary machine through its agent's start command (failback); throws telling the operator to start it otherwise. */
export async function startSource(deps: RecoveryDeps, item: ReplicatedItem, signal: AbortSignal): Promise<string> {
  try {
    await viaAgent(deps, item, 'start', signal);
    return 'agent';
  } catch (err) {
    if (signal.aborted) throw err;
    const e = asLifeboatError(err, 'COMPUTE_FAILED');
    throw new LifeboatError('COMPUTE_FAILED', `the primary machine of item ${item.id} was not started (${e.message}): start it yourself; replication in the original direction is running`, {
      details: { item: item.id },
    });
  }
}

async function viaAgent(deps: RecoveryDeps, item: ReplicatedItem, kind: 'shutdown' | 'start', signal: AbortSignal): Promise<void> {
  const agent = await deps.repos.agents.findByItem(item.id);
  if (!agent) throw new LifeboatError('NOT_FOUND', 'no agent has enrolled for the item');
  const last = agent.lastHeartbeatAt ? Date.parse(agent.lastHeartbeatAt) : null;
  if (last === null || deps.now().getTime() - last > AGENT_SILENT_MS) {
    throw new LifeboatError('TIMEOUT', `its agent is silent (last heartbeat ${agent.lastHeartbeatAt ?? 'never'})`);
  }
  const id = kind === 'shutdown' ? await deps.agents.requestShutdown(item.id) : await deps.agents.requestStart(item.id);
  const result = await deps.agents.waitForReport<AgentCommandResult>(item.id, (r) => (r[kind]?.id === id ? (r[kind] as AgentCommandResult) : undefined), { timeoutMs: AGENT_COMMAND_WAIT_MS, signal });
  if (!result) {
    await deps.agents.setRequests(item.id, kind === 'shutdown' ? { shutdownRequest: null } : { startRequest: null });
    throw new LifeboatError('TIMEOUT', `its agent did not report the ${kind} command within ${AGENT_COMMAND_WAIT_MS / 1000} s`);
  }
  if (!result.ok) throw new LifeboatError('COMPUTE_FAILED', `its agent's ${kind} command failed: ${result.error ?? 'no reason given'}`);
}

async function viaSsh(deps: RecoveryDeps, item: ReplicatedItem): Promise<void> {
  const params = await deps.repos.settings.get<EnableParams>(enableParamsKey(item.id));
  if (!params || params.accountId === null) throw new LifeboatError('NOT_FOUND', 'the item has no push account to shut it down over SSH');
  const machine = await deps.repos.machines.get(item.machineId);
  // The vault key (next to the database) opens the push account's secret, as for push install.
  const accounts = new DbAccounts(deps.repos, new SecretBox(await loadOrCreateVaultKey(join(deps.dataDir, 'vault.key'))));
  const { account, secret } = await accounts.openSecret(params.accountId);
  registerSecret(secret);
  const auth: PushInstallAuth = account.kind === 'password' ? { password: secret } : { privateKey: secret };
  const pinned = await deps.repos.settings.get<StoredHostKey>(hostKeySettingKey(machine.id));
  const hostKey: HostKeyPolicy = pinned ? { sha256: pinned.sha256 } : 'accept-new';
  // In the background after a second, so the command returns before sshd goes down with the machine.
  // For another user than root, `sudo -n true` first (in the foreground), so a missing sudo right fails the command.
  const halt = `nohup sh -c 'sleep 1; poweroff || shutdown -h now' >/dev/null 2>&1 &`;
  const command = account.username === 'root' ? halt : `sudo -n true && { nohup sudo -n sh -c 'sleep 1; poweroff || shutdown -h now' >/dev/null 2>&1 & }`;
  try {
    await runRemoteCommand({ host: machine.privateIp, username: account.username, auth, hostKey }, command);
  } catch (err) {
    const e = asLifeboatError(err, 'HOST_UNREACHABLE');
    throw new LifeboatError(e.code, redact(`over SSH as ${account.username}@${machine.privateIp}: ${e.message}`, [secret]), { retryable: e.retryable });
  }
}

import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { LifeboatError } from '../../core/errors.js';
import type { RecoveryPlan, ReplicatedItem } from '../../core/model.js';
import { connect, resolveRef, type ApiClient } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { planText } from './plan-common.js';

interface CreateFlags extends ApiFlags {
  vault: string;
  description?: string;
  file?: string;
  group: string[];
  preScript: string[];
  postScript: string[];
  manual: string[];
}

interface GroupBody {
  name: string;
  itemIds: string[];
  preScripts: string[];
  postScripts: string[];
  manualActions: string[];
}

const collect = (value: string, all: string[] = []): string[] => [...all, value];

/** `GROUP:VALUE` (the value may hold colons). */
function split(text: string, flag: string): [string, string] {
  const colon = text.indexOf(':');
  if (colon <= 0 || colon === text.length - 1) throw new LifeboatError('USAGE', `${flag} takes GROUP:VALUE, not ${JSON.stringify(text)}`);
  return [text.slice(0, colon), text.slice(colon + 1)];
}

/** Items by id or by machine (target) name, among the vault's items. */
async function itemIdsOf(client: ApiClient, vaultId: string, refs: string[]): Promise<string[]> {
  const items = await client.all<ReplicatedItem>(`/api/v1/items?vaultId=${encodeURIComponent(vaultId)}`);
  return refs.map((ref) => {
    if (items.some((i) => i.id === ref)) return ref;
    const named = items.filter((i) => i.compute.targetName === ref);
    if (named.length === 1) return named[0]!.id;
    if (named.length > 1) throw new LifeboatError('USAGE', `${named.length} items of the vault are named ${ref}; give the item id: ${named.map((i) => i.id).join(', ')}`);
    throw new LifeboatError('NOT_FOUND', `the vault has no replicated item with the id or machine name ${ref}`);
  });
}

/** The groups from --group/--pre-script/--post-script/--manual, in the order the --group flags came. */
async function groupsFromFlags(client: ApiClient, vaultId: string, opts: CreateFlags): Promise<GroupBody[]> {
  const groups: GroupBody[] = [];
  for (const text of opts.group) {
    const [name, list] = split(text, '--group');
    if (groups.some((g) => g.name === name)) throw new LifeboatError('USAGE', `--group ${name} is given twice`);
    groups.push({ name, itemIds: await itemIdsOf(client, vaultId, list.split(',').map((s) => s.trim()).filter(Boolean)), preScripts: [], postScripts: [], manualActions: [] });
  }
  const group = (name: string, flag: string): GroupBody => {
    const g = groups.find((x) => x.name === name);
    if (!g) throw new LifeboatError('USAGE', `${flag} names group ${name}, which no --group defines`);
    return g;
  };
  for (const text of opts.preScript) {
    const [name, script] = split(text, '--pre-script');
    group(name, '--pre-script').preScripts.push(script);
  }
  for (const text of opts.postScript) {
    const [name, script] = split(text, '--post-script');
    group(name, '--post-script').postScripts.push(script);
  }
  for (const text of opts.manual) {
    const [name, action] = split(text, '--manual');
    group(name, '--manual').manualActions.push(action);
  }
  return groups;
}

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'create <name>', "create a recovery plan: groups of items failed over in order, with scripts from the vault's scripts directory and manual actions")
    .requiredOption('--vault <vault>', 'the vault, by id or name')
    .option('--description <text>', 'what the plan is for')
    .option('--group <group>', "a group and its items (ids or machine names), in order, repeatable: 'web:ITEM1,ITEM2'", collect, [])
    .option('--pre-script <script>', 'a script run before a group, repeatable: GROUP:NAME (an executable in <data dir>/scripts/ on the vault)', collect, [])
    .option('--post-script <script>', 'a script run after a group, repeatable: GROUP:NAME', collect, [])
    .option('--manual <action>', 'a manual action after a group, repeatable: GROUP:TEXT; the plan waits until it is acknowledged (lifeboat job ack)', collect, [])
    .option('--file <file>', 'the groups as JSON instead: {"groups": [{"name", "itemIds", "preScripts", "postScripts", "manualActions"}], "description"}')
    .action(async (name: string, opts: CreateFlags) => {
      const client = connect(opts, env);
      const vaultId = await resolveRef(client, '/api/v1/vaults', 'vault', opts.vault);
      let groups: unknown;
      let description = opts.description;
      if (opts.file) {
        if (opts.group.length + opts.preScript.length + opts.postScript.length + opts.manual.length > 0) {
          throw new LifeboatError('USAGE', '--file gives the groups: leave out --group, --pre-script, --post-script and --manual');
        }
        let doc: { groups?: unknown; description?: string };
        try {
          doc = JSON.parse(readFileSync(opts.file, 'utf8')) as typeof doc;
        } catch (err) {
          throw new LifeboatError('USAGE', `--file ${opts.file} is not a readable JSON document: ${(err as Error).message}`);
        }
        groups = doc.groups;
        description ??= doc.description;
      } else {
        if (opts.group.length === 0) throw new LifeboatError('USAGE', "give at least one --group 'NAME:ITEM1,ITEM2' (or --file)");
        groups = await groupsFromFlags(client, vaultId, opts);
      }
      const plan = await client.post<RecoveryPlan>('/api/v1/plans', { vaultId, name, groups, ...(description === undefined ? {} : { description }) });
      emit(opts, env, plan, `created recovery plan ${plan.name}\n${planText(plan)}`);
    });
}

import type { Command } from 'commander';
import { closeSync, existsSync, fchmodSync, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs';
import { LifeboatError } from '../../core/errors.js';
import type { ConfigServer, ProcessServer } from '../../core/model.js';
import { connect } from '../api-client.js';
import { emit, type Env } from '../context.js';
import { apiCommand, type ApiFlags } from '../profile.js';
import { fields } from '../table.js';

/** The key itself when the argument looks like one, else the first line of the file it names. */
function readKey(arg: string): string {
  if (arg.startsWith('lbrk1.')) return arg.trim();
  if (!existsSync(arg)) throw new LifeboatError('USAGE', `--key ${JSON.stringify(arg)} is neither a registration key nor a file`);
  let text: string;
  try {
    text = readFileSync(arg, 'utf8');
  } catch (err) {
    throw new LifeboatError('USAGE', `cannot read the registration key file ${arg}`, { cause: err });
  }
  const key = (text.split(/\r?\n/)[0] ?? '').trim();
  if (key.length === 0) throw new LifeboatError('USAGE', `the registration key file ${arg} is empty`);
  return key;
}

function writeSecretFile(path: string, text: string): void {
  let fd: number;
  try {
    fd = openSync(path, 'w', 0o600);
  } catch (err) {
    throw new LifeboatError('TARGET_UNWRITABLE', `cannot write the server credential to ${path}`, { cause: err });
  }
  try {
    fchmodSync(fd, 0o600);
    writeSync(fd, text + '\n');
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

interface Registered {
  server: ConfigServer;
  processServer: ProcessServer;
  credential: string;
}

export function register(parent: Command, env: Env): void {
  apiCommand(parent, 'register', "register a configuration server with the vault its key belongs to; sends this machine's clock (seed step 3)")
    .requiredOption('--key <file|key>', 'the registration key, or a file holding it (lifeboat registration-key create --out FILE)')
    .requiredOption('--name <name>', "the configuration server's name")
    .requiredOption('--address <address>', 'where the vault reaches it (host or host:port)')
    .option('--credential-out <file>', 'write the server credential (shown once) to this file, mode 0600, instead of printing it')
    .action(async (opts: ApiFlags & { key: string; name: string; address: string; credentialOut?: string }) => {
      const { VERSION } = await import('../main.js');
      const body = { registrationKey: readKey(opts.key), name: opts.name, address: opts.address, version: VERSION, clock: new Date().toISOString() };
      // The registration key is the credential of this route: no bearer token is needed.
      const answer = await connect(opts, env, { tokenOptional: true }).post<Registered>('/api/v1/config-servers/register', body);
      if (opts.credentialOut) writeSecretFile(opts.credentialOut, answer.credential);
      const credential = opts.credentialOut ? `written to ${opts.credentialOut}` : answer.credential;
      emit(
        opts,
        env,
        { ...answer, credential },
        `registered configuration server ${answer.server.name}\n${fields([
          ['id', answer.server.id],
          ['vault', answer.server.vaultId],
          ['address', answer.server.address],
          ['version', answer.server.version],
          ['process server', `${answer.processServer.name} (${answer.processServer.id})`],
          ['credential', opts.credentialOut ? credential : `${credential} (shown once, keep it safe)`],
        ])}`,
      );
    });
}

import { ReplicationClient } from '../protocol/client.js';
import type { Identity } from './state.js';
import type { TransportFactory } from './transport.js';

/** The real transport: TLS 1.3 with the agent's certificate to the process server the vault named. */
export function replicationTransport(identity: Pick<Identity, 'certificatePem' | 'keyPem' | 'caPem'>, options: { window?: number } = {}): TransportFactory {
  return (request) =>
    ReplicationClient.connect({
      host: request.processServer.host,
      port: request.processServer.port,
      servername: request.processServer.serverName,
      tls: { certPem: identity.certificatePem, keyPem: identity.keyPem, caPem: identity.caPem },
      machineId: request.machineId,
      disks: request.disks,
      ...(options.window === undefined ? {} : { window: options.window }),
    });
}

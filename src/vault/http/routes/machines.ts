import { route } from '../route.js';
import type { RouteModule } from '../types.js';
import type { DbAccounts, DbMachines, MachineInput, AccountInput } from '../../services/replication-services.js';
import { idString, nameString, object, pageOf, pageQuery, timestamp } from './schemas.js';

const ip = { type: 'string', minLength: 2, maxLength: 45 };
const os = { type: 'string', minLength: 1, maxLength: 64 };
const kernel = { type: 'string', minLength: 1, maxLength: 128, nullable: true };
export const machineSchema = object({
  id: idString,
  configServerId: idString,
  name: nameString,
  privateIp: ip,
  os,
  kernel,
  discovered: { type: 'boolean' },
  supported: { type: 'boolean', nullable: true },
  supportReason: { type: 'string', nullable: true },
  createdAt: timestamp,
});
const listQuery = { ...pageQuery, properties: { ...(pageQuery.properties as object), configServerId: idString } };

/** Seed step 1: machines added by name + private IP + OS, with the supported-OS check. */
export function machinesRoutes(machines: DbMachines): RouteModule {
  return {
    name: 'machines',
    register(app) {
      route<unknown, { limit: number; after?: string; configServerId?: string }>(app, {
        id: 'machines.list',
        method: 'GET',
        url: '/api/v1/machines',
        permission: 'read',
        summary: 'List machines (optionally of one configuration server)',
        tags: ['machines'],
        schema: { querystring: listQuery, response: { 200: pageOf(machineSchema) } },
        handler: async (req) =>
          machines.list(
            { limit: req.query.limit, ...(req.query.after ? { after: req.query.after } : {}) },
            req.query.configServerId ? { configServerId: req.query.configServerId } : {},
          ),
      });
      route<{ id: string }>(app, {
        id: 'machines.show',
        method: 'GET',
        url: '/api/v1/machines/:id',
        permission: 'read',
        summary: 'Show a machine and its supported-OS check',
        tags: ['machines'],
        schema: { params: object({ id: idString }), response: { 200: machineSchema } },
        handler: async (req) => machines.get(req.params.id),
      });
      route<unknown, unknown, MachineInput>(app, {
        id: 'machines.create',
        method: 'POST',
        url: '/api/v1/machines',
        permission: 'configure',
        summary: 'Add a machine by name, private IP and OS; runs the supported-OS check',
        tags: ['machines'],
        successStatus: 201,
        schema: {
          body: object({ configServerId: idString, name: nameString, privateIp: ip, os, kernel }, ['configServerId', 'name', 'privateIp', 'os']),
          response: { 201: machineSchema },
        },
        handler: async (req) => machines.create(req.body),
      });
      route<{ id: string }, unknown, Record<string, never>>(app, {
        id: 'machines.check',
        method: 'POST',
        url: '/api/v1/machines/:id/check',
        permission: 'configure',
        summary: 'Run the supported-OS check of a machine again',
        tags: ['machines'],
        schema: { params: object({ id: idString }), body: object({}), response: { 200: machineSchema } },
        handler: async (req) => machines.check(req.params.id),
      });
    },
  };
}

const username = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[a-z_][a-z0-9_.-]*$' };
export const accountSchema = object({
  id: idString,
  configServerId: idString,
  name: nameString,
  username,
  kind: { type: 'string', enum: ['password', 'key'] },
  createdAt: timestamp,
});

/** Push-install accounts: the secret is sealed at rest and never part of any answer (the response schema has no field for it). */
export function accountsRoutes(accounts: DbAccounts): RouteModule {
  return {
    name: 'accounts',
    register(app) {
      route<unknown, { limit: number; after?: string; configServerId?: string }>(app, {
        id: 'accounts.list',
        method: 'GET',
        url: '/api/v1/accounts',
        permission: 'read',
        summary: 'List push-install accounts (never their secrets)',
        tags: ['accounts'],
        schema: { querystring: listQuery, response: { 200: pageOf(accountSchema) } },
        handler: async (req) =>
          accounts.list(
            { limit: req.query.limit, ...(req.query.after ? { after: req.query.after } : {}) },
            req.query.configServerId ? { configServerId: req.query.configServerId } : {},
          ),
      });
      route<{ id: string }>(app, {
        id: 'accounts.show',
        method: 'GET',
        url: '/api/v1/accounts/:id',
        permission: 'read',
        summary: 'Show a push-install account (never its secret)',
        tags: ['accounts'],
        schema: { params: object({ id: idString }), response: { 200: accountSchema } },
        handler: async (req) => accounts.get(req.params.id),
      });
      route<unknown, unknown, AccountInput>(app, {
        id: 'accounts.create',
        method: 'POST',
        url: '/api/v1/accounts',
        permission: 'configure',
        summary: 'Add a push-install account (root over SSH) with a password or a private key, stored encrypted',
        tags: ['accounts'],
        successStatus: 201,
        schema: {
          body: object(
            {
              configServerId: idString,
              name: nameString,
              username,
              password: { type: 'string', minLength: 1, maxLength: 1024 },
              privateKey: { type: 'string', minLength: 1, maxLength: 16384 },
            },
            ['configServerId', 'name', 'username'],
          ),
          response: { 201: accountSchema },
        },
        handler: async (req) => accounts.create(req.body),
      });
    },
  };
}

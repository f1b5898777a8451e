import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isLifeboatError } from '../../src/core/errors.js';
import { ROLES, type Role } from '../../src/core/model.js';
import { PERMISSIONS, can, requirePermission, type Permission } from '../../src/core/roles.js';

/** Written out by hand: a change to the matrix must be a change here too. */
const MATRIX: Record<Role, Record<Permission, boolean>> = {
  owner: { read: true, configure: true, operate: true, 'manage-users': true },
  contributor: { read: true, configure: true, operate: true, 'manage-users': false },
  operator: { read: true, configure: false, operate: true, 'manage-users': false },
  reader: { read: true, configure: false, operate: false, 'manage-users': false },
};

test('role x permission matrix, exhaustively, through can and requirePermission', () => {
  let n = 0;
  for (const role of ROLES) {
    for (const permission of PERMISSIONS) {
      const expected = MATRIX[role][permission];
      assert.equal(can(role, permission), expected, `${role}/${permission}`);
      const principal = { kind: 'user' as const, id: 'u1', role };
      if (expected) assert.equal(requirePermission(principal, permission), principal);
      else {
        assert.throws(
          () => requirePermission(principal, permission),
          (e: unknown) =>
            isLifeboatError(e, 'FORBIDDEN') && e.message.includes(`'${role}'`) && e.message.includes(`'${permission}'`) && e.details.role === role,
          `${role}/${permission}`,
        );
      }
      n++;
    }
  }
  assert.equal(n, 16);
});

test('no principal is UNAUTHENTICATED, not FORBIDDEN; an unknown role has no permission', () => {
  assert.throws(() => requirePermission(undefined, 'read'), (e: unknown) => isLifeboatError(e, 'UNAUTHENTICATED'));
  assert.throws(() => requirePermission(null, 'read'), (e: unknown) => isLifeboatError(e, 'UNAUTHENTICATED'));
  assert.equal(can('admin' as Role, 'read'), false);
  assert.equal(can('constructor' as Role, 'read'), false);
  assert.throws(() => requirePermission({ kind: 'token', id: 't', role: 'root' as Role }, 'read'), (e: unknown) => isLifeboatError(e, 'FORBIDDEN'));
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { checkOsSupport, parseKernel, parseOs } from '../../src/core/os-support.js';

const K = '5.15.0-91-generic';

test('the supported table: each distribution and version with a current kernel', () => {
  for (const os of [
    'debian-11', 'debian-12', 'debian-12.5',
    'ubuntu-20.04', 'ubuntu-22.04', 'ubuntu-22.04.3', 'ubuntu-24.04',
    'rhel-8', 'rhel-9.3', 'redhat-9', 'rocky-8.9', 'rockylinux-9', 'alma-9', 'almalinux-8.10',
    'sles-15', 'sles-15-sp5', 'suse-15.5', 'Debian 12', 'UBUNTU-22.04',
  ]) {
    assert.deepEqual(checkOsSupport({ os, kernel: K }), { supported: true, reason: null }, os);
  }
});

test('unsupported systems get a reason a user can act on', () => {
  const cases: [string, string | null, RegExp][] = [
    ['windows-2022', K, /^Windows is not supported yet/],
    ['win10', K, /^Windows is not supported yet/],
    ['foo-1', K, /^unknown distribution 'foo'; supported: Debian 11\/12, Ubuntu 20\.04\/22\.04\/24\.04/],
    ['centos-7', '3.10.0-1160.el7.x86_64', /CentOS is not supported; Rocky Linux or AlmaLinux/],
    ['debian-10', K, /^Debian 10 is not supported; supported versions: 11, 12$/],
    ['ubuntu-18.04', K, /^Ubuntu 18\.04 is not supported/],
    ['ubuntu-22.10', K, /^Ubuntu 22\.10 is not supported/],
    ['rhel-7.9', K, /^Red Hat Enterprise Linux 7\.9 is not supported/],
    ['sles-12-sp5', K, /^SUSE Linux Enterprise Server 12-sp5 is not supported/],
    ['debian', K, /^no version given for Debian/],
    ['debian-12', '3.10.0', /^kernel 3\.10 is older than 4\.18$/],
    ['rhel-8', '4.17.9', /^kernel 4\.17 is older than 4\.18$/],
    ['debian-12', 'banana', /^kernel 'banana' is not a kernel release/],
  ];
  for (const [os, kernel, reason] of cases) {
    const r = checkOsSupport({ os, kernel });
    assert.equal(r.supported, false, os);
    assert.match(r.reason ?? '', reason, `${os} ${kernel}`);
  }
  assert.deepEqual(checkOsSupport({ os: 'rhel-8', kernel: '4.18.0-513.el8.x86_64' }), { supported: true, reason: null }, 'the floor itself');
  assert.deepEqual(checkOsSupport({ os: 'debian-12', kernel: '6.1.0-18-amd64' }), { supported: true, reason: null });
  assert.equal(checkOsSupport({ os: 'debian-12', kernel: null }).supported, null, 'kernel unknown: undecided, not refused');
});

test('parsers', () => {
  assert.deepEqual(parseOs('ubuntu-22.04'), { distribution: 'ubuntu', version: '22.04' });
  assert.deepEqual(parseOs('sles-15-sp5'), { distribution: 'sles', version: '15-sp5' });
  assert.deepEqual(parseOs('debian'), { distribution: 'debian', version: '' });
  assert.deepEqual(parseKernel('6.8.0-31-generic'), [6, 8]);
  assert.deepEqual(parseKernel('4.18'), [4, 18]);
  assert.equal(parseKernel('v5'), undefined);
});

test('any input gets an answer, and a refusal always has a reason', () => {
  fc.assert(
    fc.property(fc.string(), fc.option(fc.string()), (os, kernel) => {
      const r = checkOsSupport({ os, kernel });
      if (r.supported === false) assert.ok(r.reason && r.reason.length > 0);
      if (r.supported === true) assert.equal(r.reason, null);
    }),
    { numRuns: 2000 },
  );
});

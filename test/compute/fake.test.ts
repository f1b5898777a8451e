/** The fake compute driver keeps the compute contract, so recovery jobs tested against it meet real drivers' behaviour. */
import { FakeComputeDriver } from '../../src/compute/fake.js';
import { bufferSource } from '../helpers/compute.js';
import { computeContractSuite } from './contract.js';

computeContractSuite('fake', async () => {
  const driver = new FakeComputeDriver();
  const data = Buffer.alloc(1024 * 1024, 0x5a);
  return {
    driver,
    disks: [{ name: 'root', source: bufferSource(data) }],
    bootPattern: /^FAKE-BOOTED contract-m1 /,
    leftovers: async () => (driver.size === 0 ? [] : [`${driver.size} machines held`]),
    cleanup: async () => undefined,
  };
});

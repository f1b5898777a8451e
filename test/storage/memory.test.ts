import { MemoryStorage } from '../../src/storage/memory/memory-storage.js';
import { storageContract } from './contract.js';

storageContract('memory', async () => new MemoryStorage(), { conditionalCreate: true });

import type { BlockSource } from '../core/block-source.js';
import { LifeboatError } from '../core/errors.js';
import { MAX_STRING_BYTES } from './protocol.js';
import type { WritableBlockTarget } from './writable-target.js';
import { isWritableTarget } from './writable-target.js';

/** One named export. Sources are borrowed: the server never closes them. */
export type NbdExport =
  | { readonly name: string; readonly writable: false; readonly source: BlockSource }
  | { readonly name: string; readonly writable: true; readonly source: WritableBlockTarget };

/**
 * The exports a server offers, fixed at start-up. The empty name (the protocol's
 * "default export", what `nbd://host:port` asks for) resolves to an export named ""
 * if there is one, else to the only export when there is exactly one.
 */
export class ExportTable {
  private readonly byName: ReadonlyMap<string, NbdExport>;

  constructor(sources: ReadonlyMap<string, BlockSource>) {
    if (sources.size === 0) throw new LifeboatError('CONFIG_INVALID', 'an NBD server needs at least one export');
    const byName = new Map<string, NbdExport>();
    for (const [name, source] of sources) {
      if (Buffer.byteLength(name, 'utf8') > MAX_STRING_BYTES || name.includes('\0')) {
        throw new LifeboatError('CONFIG_INVALID', 'NBD export names must be at most 4096 bytes without NUL', {
          details: { exportName: name.slice(0, 64) },
        });
      }
      if (!Number.isSafeInteger(source.sizeBytes) || source.sizeBytes < 0) {
        throw new LifeboatError('CONFIG_INVALID', 'NBD export size must be a non-negative safe integer', {
          details: { exportName: name, sizeBytes: source.sizeBytes },
        });
      }
      byName.set(name, isWritableTarget(source) ? { name, writable: true, source } : { name, writable: false, source });
    }
    this.byName = byName;
  }

  lookup(name: string): NbdExport | undefined {
    const exact = this.byName.get(name);
    if (exact !== undefined || name !== '' || this.byName.size !== 1) return exact;
    return this.byName.values().next().value;
  }

  list(): readonly NbdExport[] {
    return [...this.byName.values()];
  }
}

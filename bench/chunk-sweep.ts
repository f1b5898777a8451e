import type { ImageInfo } from './image.js';
import { measureTool } from './measure.js';
import type { MutationInfo } from './mutate.js';
import { sizeLabel } from './options.js';
import type { ChunkSweepRow } from './report.js';
import { lifeboatWithChunkSize } from './tools/lifeboat.js';

/**
 * The chunk-size sweep (`--chunk-sizes`): for each size, lifeboat on fresh stores made
 * with `store init --chunk-size <size>`, on the same image and the same changes.
 *
 * Each change pattern gets its own store and lineage (init, first backup, second
 * backup after that change), so both second backups have the first backup as parent
 * and differ only in where the changed blocks sit. The scattered lineage is also
 * restored and checked; its restore, first backup and final size are the ones the
 * report shows. The clustered lineage's first backup is a second sample of the same
 * work, kept in the JSON.
 */
export async function runChunkSweep(
  chunkSizesBytes: readonly number[],
  image: ImageInfo,
  scattered: MutationInfo,
  clustered: MutationInfo,
  log: (msg: string) => void,
): Promise<ChunkSweepRow[]> {
  const rows: ChunkSweepRow[] = [];
  for (const chunkSizeBytes of chunkSizesBytes) {
    const tool = lifeboatWithChunkSize(chunkSizeBytes);
    const label = sizeLabel(chunkSizeBytes);
    log(`chunk-size sweep: ${label}`);
    rows.push({
      chunkSizeBytes,
      scattered: await measureTool(tool, image, scattered, { slot: `lifeboat-chunk-${label}-scattered`, log }),
      clustered: await measureTool(tool, image, clustered, { slot: `lifeboat-chunk-${label}-clustered`, restore: false, log }),
    });
  }
  return rows;
}

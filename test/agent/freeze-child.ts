/** Freezes the mount point in argv[2] with a cut that never ends, says "frozen", and waits to be killed. */
import { systemClock } from '../../src/agent/clock.js';
import { Freezer, processRunner } from '../../src/agent/freeze.js';

const mnt = process.argv[2] as string;
const timeoutMs = Number(process.argv[3] ?? 60_000);
await new Freezer({ mountPoints: [mnt], preScripts: [], postScripts: [], timeoutMs }, systemClock, processRunner).frozen(async () => {
  process.stdout.write('frozen\n');
  await new Promise(() => undefined);
});

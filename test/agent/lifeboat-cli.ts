/** The CLI from source (no build needed): `node --import tsx test/agent/lifeboat-cli.ts ARGS`. */
import { main } from '../../src/cli/main.js';

process.exitCode = await main(process.argv.slice(2));

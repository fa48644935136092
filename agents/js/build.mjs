// Builds one JavaScript agent into a component with componentize-js
// (StarlingMonkey), against the WIT world its agent.toml calls for (written
// by `sovra plugin wit`). The HTTP features are left out: agents have no
// network, and the host refuses components importing wasi:http.
//
//   node build.mjs AGENT.js WIT_DIR WORLD OUT.wasm
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const [sourcePath, witPath, worldName, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node build.mjs AGENT.js WIT_DIR WORLD OUT.wasm');
  process.exit(2);
}
const { component } = await componentize({
  sourcePath,
  witPath,
  worldName,
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);

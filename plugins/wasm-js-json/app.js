// wasm-js-json: pretty-prints its input if it is JSON, with its keys sorted; refuses
// anything else. A DynPlug WebAssembly plugin in JavaScript (world
// dynplug:plugin/plugin), built with componentize-js by `cargo xtask wasm`.
import { log } from "dynplug:plugin/host@1.0.0";

function sorted(value) {
  if (Array.isArray(value)) return value.map(sorted);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value).sort().map((key) => [key, sorted(value[key])]),
    );
  }
  return value;
}

export function execute(input) {
  let value;
  try {
    value = JSON.parse(input);
  } catch (e) {
    // A thrown value is the `err` of result<string, string>.
    throw `not JSON: ${e.message}`;
  }
  log("debug", `parsed ${input.length} bytes`);
  return JSON.stringify(sorted(value), null, 2);
}

"""wasm-py-words: counts the words of its input, as a job with progress.

A DynPlug WebAssembly plugin in Python (world dynplug:plugin/plugin, built with
componentize-py): it logs, reports progress line by line, stops when its caller
cancels, and announces its result as the event `counted`.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host


class WitWorld(wit_world.WitWorld):
    def execute(self, input: str) -> str:
        lines = input.splitlines() or [""]
        host.log(host.Level.INFO, f"counting the words of {len(lines)} lines")
        words = 0
        for number, line in enumerate(lines, start=1):
            if host.cancelled():
                raise Err("cancelled")
            words += len(line.split())
            host.progress(number / len(lines), f"line {number} of {len(lines)}")
        result = json.dumps({"lines": len(lines), "words": words})
        host.emit("counted", result)
        return result

/*
 * wasm-c-hash: the FNV-1a 64-bit hash of its input, in hex. A DynPlug WebAssembly
 * plugin in freestanding C (see sdk/include/dynplug_wasm.h); built by `cargo xtask wasm`.
 */
#define DYNPLUG_WASM_IMPLEMENTATION
#include "dynplug_wasm.h"

int dynplug_execute(const char *input, size_t len, dynplug_answer *answer) {
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        hash ^= (unsigned char)input[i];
        hash *= 0x100000001b3ULL;
    }
    char *out = dynplug_alloc(16);
    if (!out) {
        answer->ptr = "out of memory";
        answer->len = 13;
        return 1;
    }
    for (int i = 15; i >= 0; i--) {
        out[i] = "0123456789abcdef"[hash & 15];
        hash >>= 4;
    }
    dynplug_log(DYNPLUG_DEBUG, "hashed");
    answer->ptr = out;
    answer->len = 16;
    return 0;
}

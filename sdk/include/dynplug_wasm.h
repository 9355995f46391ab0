/*
 * dynplug_wasm.h: write a DynPlug WebAssembly plugin in C without any library.
 *
 * The plugin is a core WebAssembly module built freestanding
 * (clang --target=wasm32 -nostdlib) that follows the component model's canonical
 * ABI for the world `dynplug:plugin/plugin` (sdk/wit/dynplug.wit); `cargo xtask wasm`
 * (or `wasm-tools component embed` + `component new`) turns it into a component.
 * No WASI, no adapter: the host functions below are all it imports.
 *
 * Define, in ONE file before including this header, DYNPLUG_WASM_IMPLEMENTATION, and
 * write:
 *
 *     int dynplug_execute(const char *input, size_t len, dynplug_answer *answer);
 *
 * returning 0 with `answer` set to the output, or non-zero with `answer` set to an
 * error message. Strings are UTF-8 and not NUL-terminated. Memory for answers comes
 * from dynplug_alloc (a bump allocator: a fresh instance serves every call, so
 * nothing needs freeing).
 *
 * Metadata: the component needs a `dynplug.meta` custom section (name, version,
 * description: see docs/wasm.md); `cargo xtask wasm-component` adds it from a
 * `plugin.meta` file when it makes the component.
 */
#ifndef DYNPLUG_WASM_H
#define DYNPLUG_WASM_H

#include <stddef.h>
#include <stdint.h>

#define DYNPLUG_WASM_IMPORT(name) \
    __attribute__((import_module("dynplug:plugin/host@1.0.0"), import_name(name)))

/* The levels of dynplug_log. */
enum dynplug_level {
    DYNPLUG_ERROR = 0,
    DYNPLUG_WARN = 1,
    DYNPLUG_INFO = 2,
    DYNPLUG_DEBUG = 3,
    DYNPLUG_TRACE = 4,
};

/* The host functions (interface dynplug:plugin/host@1.0.0). */
DYNPLUG_WASM_IMPORT("log") void dynplug_log_n(int32_t level, const char *message, size_t len);
DYNPLUG_WASM_IMPORT("progress") void dynplug_progress_n(float fraction, const char *text, size_t len);
DYNPLUG_WASM_IMPORT("cancelled") int32_t dynplug_cancelled(void);
DYNPLUG_WASM_IMPORT("emit") int32_t dynplug_emit_n(const char *event, size_t event_len,
                                                   const char *payload, size_t payload_len);

/* An answer: the output or the error message. */
typedef struct {
    const char *ptr;
    size_t len;
} dynplug_answer;

/* Written by the plugin. */
int dynplug_execute(const char *input, size_t len, dynplug_answer *answer);

/* Memory that lives until the call ends. */
void *dynplug_alloc(size_t size);

static inline size_t dynplug_strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

#define dynplug_log(level, text) dynplug_log_n((level), (text), dynplug_strlen(text))
#define dynplug_progress(fraction, text) dynplug_progress_n((fraction), (text), dynplug_strlen(text))

#ifdef DYNPLUG_WASM_IMPLEMENTATION

extern unsigned char __heap_base;
static uintptr_t dynplug_heap_top;

void *dynplug_alloc(size_t size) {
    if (dynplug_heap_top == 0) dynplug_heap_top = (uintptr_t)&__heap_base;
    uintptr_t start = (dynplug_heap_top + 7) & ~(uintptr_t)7;
    uintptr_t end = start + size;
    size_t have = __builtin_wasm_memory_size(0) * 65536;
    if (end > have) {
        size_t pages = (end - have + 65535) / 65536;
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) return 0;
    }
    dynplug_heap_top = end;
    return (void *)start;
}

/* The canonical ABI's allocator: the host copies the input in through it. */
__attribute__((export_name("cabi_realloc")))
void *cabi_realloc(void *old, size_t old_size, size_t align, size_t new_size) {
    (void)align;
    unsigned char *fresh = dynplug_alloc(new_size);
    if (!fresh) __builtin_trap();
    for (size_t i = 0; old && i < old_size && i < new_size; i++) fresh[i] = ((unsigned char *)old)[i];
    return fresh;
}

/* result<string, string>: a tag byte, then the string's pointer and length. */
static struct {
    uint8_t tag;
    const char *ptr;
    size_t len;
} dynplug_return_area;

__attribute__((export_name("execute")))
void *dynplug_export_execute(const char *input, size_t len) {
    dynplug_answer answer = {0, 0};
    int failed = dynplug_execute(input, len, &answer);
    dynplug_return_area.tag = failed ? 1 : 0;
    dynplug_return_area.ptr = answer.ptr;
    dynplug_return_area.len = answer.len;
    return &dynplug_return_area;
}

#endif /* DYNPLUG_WASM_IMPLEMENTATION */
#endif /* DYNPLUG_WASM_H */

/*
 * dynplug.h - the C ABI of DynPlug plugins (ABI versions 1 and 2).
 *
 * A plugin is a shared library that exports one function:
 *
 *     const struct dynplug_plugin *dynplug_plugin_entry(void);
 *
 * returning a pointer to a table that lives as long as the library. The host
 * checks magic, abi_version and struct_size before it touches anything else,
 * and refuses a mismatch. Rules:
 *   - every string is NUL-terminated UTF-8 and lives as long as the library;
 *   - every struct dynplug_buf a plugin fills is allocated by the plugin and
 *     released by the host through the plugin's free_buf (never by free());
 *   - input bytes are borrowed for the duration of the call only;
 *   - execute may be called from several threads at once: make it thread-safe;
 *   - no C++ exception or longjmp may cross these functions.
 * The library is never unloaded (dlclose) by the host.
 *
 * Versions. Version 1 is the table up to and including `stop`. Version 2 appends
 * `execute_ctx`, which the host calls instead of `execute` when it is set, with a
 * struct dynplug_context: the host's services for that call (log lines for the
 * journal, progress, cancellation, events). A host loads every version it knows side
 * by side and refuses a newer one, naming both. A plugin compiled against this header
 * declares version 2 and may leave `execute_ctx` NULL: it then runs as it did under
 * version 1. Binaries built against the version 1 header load unchanged.
 */
#ifndef DYNPLUG_H
#define DYNPLUG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DYNPLUG_MAGIC 0x4C505944u /* "DYPL" little-endian */
#define DYNPLUG_ABI_VERSION 2u

#define DYNPLUG_STATUS_OK 0    /* out holds the output */
#define DYNPLUG_STATUS_ERROR 1 /* out holds a UTF-8 error message */
#define DYNPLUG_STATUS_PANIC 2 /* out holds a UTF-8 message about an internal fault */

#define DYNPLUG_FLAG_SERVICE 1u /* the plugin runs a service via start/stop */

/* Levels of dynplug_context.log. */
#define DYNPLUG_LOG_ERROR 1u
#define DYNPLUG_LOG_WARN 2u
#define DYNPLUG_LOG_INFO 3u
#define DYNPLUG_LOG_DEBUG 4u
#define DYNPLUG_LOG_TRACE 5u

/*
 * The host's services for one call (version 2). Its functions may be called from any
 * thread while execute_ctx runs and never block for long. Every string is UTF-8 of the
 * given length (no NUL needed).
 *
 * A context kept after execute_ctx returned (by a thread the plugin started, say) is
 * inert, never dangerous: the pointer stays readable for the life of the process, and
 * every call through it does nothing and answers "dropped": log and progress are
 * ignored, emit returns 1, cancelled returns 1 (so a loop polling it ends). It never
 * speaks for a later call, not even a later call of the same plugin. Do not rely on
 * it: a context is for the call it was given to. The same holds for isolated plugins.
 */
struct dynplug_context {
    uint32_t struct_size; /* sizeof(struct dynplug_context) as the host laid it out */
    uint32_t reserved;    /* zero */
    /* A log line at a DYNPLUG_LOG_* level, filed under the plugin's name. */
    void (*log)(const struct dynplug_context *ctx, uint32_t level, const uint8_t *msg,
                size_t len);
    /* Progress: fraction in 0..1 (negative: unknown) and a short status text. */
    void (*progress)(const struct dynplug_context *ctx, double fraction,
                     const uint8_t *text, size_t len);
    /* 1 once the caller gave up (cancelled the job, or the timeout passed), else 0. */
    int32_t (*cancelled)(const struct dynplug_context *ctx);
    /* Publishes an event; returns 0, or 1 when the host dropped it (a name that is not
     * 1-64 of [A-Za-z0-9_.:-], a payload over 64 KiB, over the plugin's budget, or the
     * call is over). Isolated plugins get the same answers. */
    int32_t (*emit)(const struct dynplug_context *ctx, const uint8_t *event,
                    size_t event_len, const uint8_t *payload, size_t payload_len);
};

struct dynplug_buf {
    uint8_t *ptr; /* NULL when empty */
    size_t len;
};

struct dynplug_plugin {
    uint32_t magic;       /* DYNPLUG_MAGIC */
    uint32_t abi_version; /* DYNPLUG_ABI_VERSION */
    uint32_t struct_size; /* sizeof(struct dynplug_plugin) */
    uint32_t flags;       /* DYNPLUG_FLAG_* */
    const char *name;     /* [a-z0-9][a-z0-9_-]{0,63} */
    const char *version;  /* semantic version, e.g. "1.2.0" */
    const char *description;

    /* required */
    void *(*create)(void); /* NULL on failure */
    void (*destroy)(void *instance);
    int32_t (*execute)(void *instance, const uint8_t *input, size_t len,
                       struct dynplug_buf *out);
    void (*free_buf)(struct dynplug_buf buf);

    /* optional (may be NULL) */
    int32_t (*configure)(void *instance, const uint8_t *settings_json, size_t len,
                         struct dynplug_buf *out);
    /* start runs the service and returns only when it ends; stop asks it to end. */
    int32_t (*start)(void *instance, struct dynplug_buf *out);
    int32_t (*stop)(void *instance, struct dynplug_buf *out);

    /* version 2, optional (may be NULL): execute with the host's services in ctx */
    int32_t (*execute_ctx)(void *instance, const struct dynplug_context *ctx,
                           const uint8_t *input, size_t len, struct dynplug_buf *out);
};

/* Conveniences for NUL-terminated strings. */
static inline void dynplug_log(const struct dynplug_context *ctx, uint32_t level,
                               const char *msg) {
    size_t n = 0;
    while (msg[n]) n++;
    ctx->log(ctx, level, (const uint8_t *)msg, n);
}

static inline void dynplug_progress(const struct dynplug_context *ctx, double fraction,
                                    const char *text) {
    size_t n = 0;
    while (text[n]) n++;
    ctx->progress(ctx, fraction, (const uint8_t *)text, n);
}

static inline int32_t dynplug_emit(const struct dynplug_context *ctx, const char *event,
                                   const char *payload) {
    size_t e = 0, p = 0;
    while (event[e]) e++;
    while (payload[p]) p++;
    return ctx->emit(ctx, (const uint8_t *)event, e, (const uint8_t *)payload, p);
}

const struct dynplug_plugin *dynplug_plugin_entry(void);

/*
 * Metadata the host reads without loading the library or running any of its code
 * (the ELF section ".dynplug.meta"; `dynplugd --inspect FILE` shows it):
 *
 *     DYNPLUG_METADATA("rot13", "1.0.0", "ROT13 of its input", "false", "");
 *
 * Every argument is a string literal: name, version, description, service ("true" or
 * "false"), and a JSON Schema for the plugin's `settings` ("" for none), which the
 * host checks the configuration against before applying it. They must agree with the
 * table: the host refuses a plugin whose table says otherwise, naming both. The
 * layout: "DYNPLUG\0", then records "key=value\0", then an empty record; "abi=2"
 * is DYNPLUG_ABI_VERSION.
 */
#define DYNPLUG_METADATA(name, version, description, service, settings_schema)     \
    __attribute__((used, section(".dynplug.meta"), aligned(1)))                 \
    static const char dynplug_metadata_[] =                                     \
        "DYNPLUG\0" "meta=1\0" "name=" name "\0" "version=" version "\0"          \
        "description=" description "\0" "abi=2\0" "service=" service "\0"       \
        "settings_schema=" settings_schema "\0"

#ifdef __cplusplus
}
#endif

#endif /* DYNPLUG_H */

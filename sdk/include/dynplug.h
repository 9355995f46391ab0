/*
 * dynplug.h - the C ABI of DynPlug plugins (ABI version 1).
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
 */
#ifndef DYNPLUG_H
#define DYNPLUG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DYNPLUG_MAGIC 0x4C505944u /* "DYPL" little-endian */
#define DYNPLUG_ABI_VERSION 1u

#define DYNPLUG_STATUS_OK 0    /* out holds the output */
#define DYNPLUG_STATUS_ERROR 1 /* out holds a UTF-8 error message */
#define DYNPLUG_STATUS_PANIC 2 /* out holds a UTF-8 message about an internal fault */

#define DYNPLUG_FLAG_SERVICE 1u /* the plugin runs a service via start/stop */

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
};

const struct dynplug_plugin *dynplug_plugin_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* DYNPLUG_H */

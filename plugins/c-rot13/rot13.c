/*
 * rot13: a DynPlug plugin written in C against sdk/include/dynplug.h.
 * Build: cc -shared -fPIC -O2 -I sdk/include -o librot13.so plugins/c-rot13/rot13.c
 *
 * Applies ROT13 to ASCII letters and leaves every other byte (UTF-8 included) alone.
 */
#include <stdlib.h>
#include <string.h>

#include "dynplug.h"

static int instance_token;

static void *rot13_create(void) { return &instance_token; }

static void rot13_destroy(void *instance) { (void)instance; }

static int32_t rot13_execute(void *instance, const uint8_t *input, size_t len,
                             struct dynplug_buf *out) {
    (void)instance;
    out->ptr = NULL;
    out->len = 0;
    if (len == 0)
        return DYNPLUG_STATUS_OK;
    uint8_t *buf = malloc(len);
    if (buf == NULL) {
        static const char msg[] = "out of memory";
        out->ptr = (uint8_t *)strdup(msg);
        out->len = out->ptr ? sizeof msg - 1 : 0;
        return DYNPLUG_STATUS_ERROR;
    }
    for (size_t i = 0; i < len; i++) {
        uint8_t c = input[i];
        if (c >= 'a' && c <= 'z')
            c = (uint8_t)('a' + (c - 'a' + 13) % 26);
        else if (c >= 'A' && c <= 'Z')
            c = (uint8_t)('A' + (c - 'A' + 13) % 26);
        buf[i] = c;
    }
    out->ptr = buf;
    out->len = len;
    return DYNPLUG_STATUS_OK;
}

static void rot13_free_buf(struct dynplug_buf buf) { free(buf.ptr); }

DYNPLUG_METADATA("rot13", "1.0.0", "ROT13 of ASCII letters (a plugin written in C)", "false", "");

static const struct dynplug_plugin table = {
    .magic = DYNPLUG_MAGIC,
    .abi_version = DYNPLUG_ABI_VERSION,
    .struct_size = sizeof(struct dynplug_plugin),
    .flags = 0,
    .name = "rot13",
    .version = "1.0.0",
    .description = "ROT13 of ASCII letters (a plugin written in C)",
    .create = rot13_create,
    .destroy = rot13_destroy,
    .execute = rot13_execute,
    .free_buf = rot13_free_buf,
    .configure = NULL,
    .start = NULL,
    .stop = NULL,
};

const struct dynplug_plugin *dynplug_plugin_entry(void) { return &table; }
